/** Conversion between float32 and IEEE 754 binary16 (float16) bit patterns. */

/** Converts float32 bits to the nearest float16 bits, rounding ties to even. */
export function float32BitsToFloat16Bits(bits: number): number {
  const sign = (bits >>> 16) & 0x8000
  const exponent = (bits >>> 23) & 0xff
  const mantissa = bits & 0x7fffff

  if (exponent === 0xff) {
    if (mantissa === 0) {
      return sign | 0x7c00
    }
    // Keep the top 10 payload bits, and set one when they are all zero so NaN stays NaN.
    const payload = mantissa >>> 13
    return sign | 0x7c00 | (payload === 0 ? 0x200 : payload)
  }

  // Rebias the exponent from float32 (127) to float16 (15).
  const halfExponent = exponent - 112
  if (halfExponent >= 0x1f) {
    return sign | 0x7c00
  }
  if (halfExponent >= 1) {
    const rest = mantissa & 0x1fff
    let half = sign | (halfExponent << 10) | (mantissa >>> 13)
    // A carry out of the mantissa raises the exponent, and past 65504 it gives Infinity.
    if (rest > 0x1000 || (rest === 0x1000 && (half & 1) === 1)) {
      half += 1
    }
    return half
  }

  // The result is subnormal or zero: count units of 2^-24, the float16 subnormal step.
  // The float32 value is (mantissa | 2^23) * 2^(exponent - 150), so shift right by 14 - halfExponent.
  const shift = 14 - halfExponent
  if (shift > 24) {
    // Below half of 2^-24 (float32 subnormals included), so the value rounds to zero.
    return sign
  }
  const significand = mantissa | 0x800000
  const units = significand >>> shift
  const rest = significand & ((1 << shift) - 1)
  const halfway = 1 << (shift - 1)
  let half = sign | units
  if (rest > halfway || (rest === halfway && (units & 1) === 1)) {
    half += 1
  }
  return half
}

/** Converts float16 bits to the float32 bits of the same value; NaN keeps its payload bits. */
export function float16BitsToFloat32Bits(half: number): number {
  const sign = (half & 0x8000) << 16
  const exponent = (half >>> 10) & 0x1f
  const mantissa = half & 0x3ff

  if (exponent === 0x1f) {
    return (sign | 0x7f800000 | (mantissa << 13)) >>> 0
  }
  if (exponent !== 0) {
    return (sign | ((exponent + 112) << 23) | (mantissa << 13)) >>> 0
  }
  if (mantissa === 0) {
    return sign >>> 0
  }
  // A subnormal float16 is mantissa * 2^-24, a normal float32: shift the leading one into the
  // implicit bit position and lower the exponent of 2^-14 (biased 113) by the same amount.
  let significand = mantissa
  let float32Exponent = 113
  while ((significand & 0x400) === 0) {
    significand <<= 1
    float32Exponent -= 1
  }
  return (sign | (float32Exponent << 23) | ((significand & 0x3ff) << 13)) >>> 0
}

let float16ToFloat32Bits: Uint32Array | undefined

/** Float32 bits of all 65536 float16 bit patterns, built on first use (256 KiB). */
export function float16Table(): Uint32Array {
  if (float16ToFloat32Bits === undefined) {
    const table = new Uint32Array(0x10000)
    for (let half = 0; half < table.length; half++) {
      table[half] = float16BitsToFloat32Bits(half)
    }
    float16ToFloat32Bits = table
  }
  return float16ToFloat32Bits
}
