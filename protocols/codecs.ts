/**
 * Tensor codecs: how the float32 values of one tensor travel in a delta message.
 *
 * | codec         | wire id | codecParam        | payload for a tensor of n values                   |
 * | :------------ | ------: | :---------------- | :------------------------------------------------- |
 * | float32       |       0 | 0                 | n float32 values                                   |
 * | float16       |       1 | 0                 | n IEEE 754 binary16 bit patterns, 2 bytes each     |
 * | int8:BLOCK    |       2 | BLOCK, 1..65535   | ceil(n / BLOCK) float32 scales, then n int8 values |
 * | topk:FRACTION |       3 | FRACTION * 10^9   | k u32 indices, then k float32 values               |
 *
 * Byte order: integers (the topk indices) are big-endian like the rest of the delta layout.
 * Float32 values, int8 scales and float16 bit patterns are little-endian, the byte order of
 * x86 and little-endian ARM hosts, so a float32 payload copies straight into a Float32Array.
 *
 * - float16 rounds each value to the nearest binary16 value, ties to even. Values beyond
 *   ±65504 become ±Infinity, NaN stays NaN, and magnitudes below 2^-14 become subnormals.
 * - int8 cuts the values into blocks of BLOCK values (the last block may be shorter). Each
 *   block has one float32 scale, about max|v| / 127, and sends q = round(v / scale) clamped to
 *   -127..127. So |v - q * scale| <= scale / 2, up to float32 rounding, for every finite v.
 *   An all-zero block has scale 0.
 * - topk keeps the k = max(1, ceil(FRACTION * n)) values of largest magnitude, ties going to
 *   the lower index, and sends their indices in strictly ascending order with their exact
 *   float32 values. Every other value decodes as 0. An empty tensor keeps k = 0 values.
 *
 * FRACTION has at most 9 decimal places and travels as the integer FRACTION * 10^9, so sender
 * and receiver compute the same k with integer arithmetic. The fraction is not sent as float32
 * bits, because float32 has no exact 0.1 and ceil(float32(0.1) * 10) is 2, not 1.
 */

import {
  type CodecSpec,
  checkCodec,
  checkCount,
  FLOAT16_BYTES,
  FLOAT32_BYTES,
  formatCodec,
  payloadSize,
  TOPK_ENTRY_BYTES,
  topkCount,
} from './codec-spec.ts'
import { CodecDecodeError, CodecEncodeError } from './errors.ts'
import { float16Table, float32BitsToFloat16Bits } from './float16.ts'

// Re-exported because delta.ts and validator.ts import the codec spec from this module.
export {
  CODEC_IDS,
  type CodecSpec,
  checkCodec,
  codecFromWire,
  codecId,
  codecParam,
  DEFAULT_INT8_BLOCK_SIZE,
  formatCodec,
  MAX_CODEC_VALUE_COUNT,
  MAX_INT8_BLOCK_SIZE,
  parseCodec,
  payloadSize,
  topkCount,
} from './codec-spec.ts'

const INT8_MAX = 127
const HOST_IS_LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1

/**
 * Encodes float32 values with a codec and returns the payload, exactly payloadSize bytes.
 * The output is deterministic: the same values and codec always give the same bytes.
 *
 * Throws CodecSpecError for an invalid codec, and CodecEncodeError for a value the codec
 * cannot represent: NaN or ±Infinity for int8, NaN for topk.
 */
export function encodeTensor(values: Float32Array, codec: CodecSpec): Uint8Array {
  if (!(values instanceof Float32Array)) {
    throw new TypeError(`Expected values to be a Float32Array, got ${typeof values}`)
  }
  const out = new Uint8Array(payloadSize(values.length, codec))
  switch (codec.name) {
    case 'float32':
      writeFloat32(values, out)
      break
    case 'float16':
      writeFloat16(values, out)
      break
    case 'int8':
      writeInt8(values, codec.blockSize, out)
      break
    case 'topk':
      writeTopk(values, topkCount(values.length, codec.fraction), out)
      break
  }
  return out
}

/**
 * Decodes a payload of `count` values and returns them as a new Float32Array that shares no
 * memory with `bytes`. The input may be any Uint8Array view, including a Node Buffer at an odd
 * byteOffset, and is never read past its end.
 *
 * Throws CodecDecodeError, naming `field` or a part of it, when the length differs from
 * payloadSize, an int8 scale is negative, NaN or infinite, an int8 value is -128, or a topk
 * index is out of range or not strictly ascending. Throws CodecSpecError for an invalid codec
 * and RangeError for a count that is not an integer from 0 to 2^50.
 */
export function decodeTensor(
  bytes: Uint8Array,
  count: number,
  codec: CodecSpec,
  field = 'payload',
): Float32Array {
  if (!(bytes instanceof Uint8Array)) {
    throw new CodecDecodeError(field, 0, 'is not a Uint8Array')
  }
  checkCount(count)
  checkCodec(codec)
  if (codec.name === 'topk') {
    return readTopk(bytes, count, codec.fraction, field)
  }

  const expected = payloadSize(count, codec)
  if (bytes.byteLength !== expected) {
    throw new CodecDecodeError(
      field,
      0,
      `has ${bytes.byteLength} bytes, but ${formatCodec(codec)} needs ${expected} bytes for ${count} values`,
    )
  }
  switch (codec.name) {
    case 'float32':
      return readFloat32(bytes, count)
    case 'float16':
      return readFloat16(bytes, count)
    case 'int8':
      return readInt8(bytes, count, codec.blockSize, field)
  }
}

function writeFloat32(values: Float32Array, out: Uint8Array): void {
  out.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength))
  if (!HOST_IS_LITTLE_ENDIAN) {
    swapFloat32ByteOrder(out)
  }
}

function readFloat32(bytes: Uint8Array, count: number): Float32Array {
  // Copying gives the Float32Array its own buffer at offset 0, which it needs because the
  // payload may start at an unaligned offset. Copying bytes also keeps NaN payload bits.
  const copy = new Uint8Array(count * FLOAT32_BYTES)
  copy.set(bytes)
  if (!HOST_IS_LITTLE_ENDIAN) {
    swapFloat32ByteOrder(copy)
  }
  return new Float32Array(copy.buffer, 0, count)
}

function writeFloat16(values: Float32Array, out: Uint8Array): void {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length)
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength)
  for (let i = 0; i < bits.length; i++) {
    view.setUint16(i * FLOAT16_BYTES, float32BitsToFloat16Bits(bits[i] as number), true)
  }
}

function readFloat16(bytes: Uint8Array, count: number): Float32Array {
  const table = float16Table()
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  // Writing float32 bit patterns through a Uint32Array keeps NaN payloads intact.
  const bits = new Uint32Array(count)
  for (let i = 0; i < count; i++) {
    bits[i] = table[view.getUint16(i * FLOAT16_BYTES, true)] as number
  }
  return new Float32Array(bits.buffer)
}

function writeInt8(values: Float32Array, blockSize: number, out: Uint8Array): void {
  const blockCount = Math.ceil(values.length / blockSize)
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength)
  const quantized = new Int8Array(out.buffer, out.byteOffset + FLOAT32_BYTES * blockCount)

  for (let block = 0; block < blockCount; block++) {
    const start = block * blockSize
    const end = Math.min(values.length, start + blockSize)
    let maxAbs = 0
    for (let i = start; i < end; i++) {
      const value = values[i] as number
      if (!Number.isFinite(value)) {
        throw new CodecEncodeError(
          `int8:${blockSize}`,
          `values[${i}]`,
          `is ${value}, but int8 encodes only finite values`,
        )
      }
      maxAbs = Math.max(maxAbs, Math.abs(value))
    }

    const scale = int8Scale(maxAbs)
    view.setFloat32(FLOAT32_BYTES * block, scale, true)
    for (let i = start; i < end; i++) {
      const q = scale === 0 ? 0 : Math.round((values[i] as number) / scale)
      quantized[i] = Math.min(INT8_MAX, Math.max(-INT8_MAX, q))
    }
  }
}

const scaleScratch = new Float32Array(1)
const scaleScratchBits = new Uint32Array(scaleScratch.buffer)

/**
 * Returns the float32 scale of a block whose largest magnitude is maxAbs: maxAbs / 127 rounded
 * to float32, then moved by one float32 step where needed.
 *
 * - Where rounding went below maxAbs / 127, the scale goes one step up, so every
 *   |v / scale| <= 127 and no value is clamped, even when the scale is subnormal.
 * - Where 127 * scale rounds to Infinity in float32 (maxAbs within a few steps of the largest
 *   float32), the scale goes one step down, so the decoder never makes Infinity out of a
 *   finite value. The largest values are then clamped to 127, which costs at most 127 float32
 *   steps of the scale, far below scale / 2.
 */
function int8Scale(maxAbs: number): number {
  let scale = Math.fround(maxAbs / INT8_MAX)
  if (scale * INT8_MAX < maxAbs) {
    scale = adjacentFloat32(scale, 1)
  }
  if (Math.fround(scale * INT8_MAX) === Number.POSITIVE_INFINITY) {
    scale = adjacentFloat32(scale, -1)
  }
  return scale
}

/** Returns the float32 one step above (+1) or below (-1) a finite float32 >= 0. */
function adjacentFloat32(value: number, direction: 1 | -1): number {
  // For float32 values >= 0, bit patterns are ordered like the values they encode.
  scaleScratch[0] = value
  scaleScratchBits[0] = (scaleScratchBits[0] as number) + direction
  return scaleScratch[0] as number
}

function readInt8(
  bytes: Uint8Array,
  count: number,
  blockSize: number,
  field: string,
): Float32Array {
  const blockCount = Math.ceil(count / blockSize)
  const scalesBytes = FLOAT32_BYTES * blockCount
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const quantized = new Int8Array(bytes.buffer, bytes.byteOffset + scalesBytes, count)
  const out = new Float32Array(count)

  for (let block = 0; block < blockCount; block++) {
    const scaleOffset = FLOAT32_BYTES * block
    const scale = view.getFloat32(scaleOffset, true)
    if (!(scale >= 0 && scale < Number.POSITIVE_INFINITY)) {
      throw new CodecDecodeError(
        `${field}.scales[${block}]`,
        scaleOffset,
        `is ${scale}, expected a finite float32 >= 0`,
      )
    }
    const end = Math.min(count, (block + 1) * blockSize)
    for (let i = block * blockSize; i < end; i++) {
      const q = quantized[i] as number
      if (q < -INT8_MAX) {
        throw new CodecDecodeError(
          `${field}.values[${i}]`,
          scalesBytes + i,
          `is ${q}, expected an int8 from -${INT8_MAX} to ${INT8_MAX}`,
        )
      }
      out[i] = q * scale
    }
  }
  return out
}

function writeTopk(values: Float32Array, k: number, out: Uint8Array): void {
  if (k === 0) {
    return
  }
  const magnitudes = new Float32Array(values.length)
  for (let i = 0; i < values.length; i++) {
    const value = values[i] as number
    if (Number.isNaN(value)) {
      throw new CodecEncodeError(
        `topk`,
        `values[${i}]`,
        'is NaN, but topk ranks values by magnitude and NaN has none',
      )
    }
    magnitudes[i] = Math.abs(value)
  }

  // The k-th largest magnitude is the threshold. Every value above it is kept, and values
  // equal to it are kept from the lowest index up until k values are taken.
  const sorted = magnitudes.slice().sort()
  const threshold = sorted[values.length - k] as number
  let tiesToKeep = k
  for (const magnitude of magnitudes) {
    if (magnitude > threshold) {
      tiesToKeep -= 1
    }
  }

  const view = new DataView(out.buffer, out.byteOffset, out.byteLength)
  const valuesOffset = FLOAT32_BYTES * k
  let keptCount = 0
  for (let i = 0; i < values.length && keptCount < k; i++) {
    const magnitude = magnitudes[i] as number
    if (magnitude < threshold || (magnitude === threshold && tiesToKeep === 0)) {
      continue
    }
    if (magnitude === threshold) {
      tiesToKeep -= 1
    }
    view.setUint32(FLOAT32_BYTES * keptCount, i)
    view.setFloat32(valuesOffset + FLOAT32_BYTES * keptCount, values[i] as number, true)
    keptCount += 1
  }
}

function readTopk(bytes: Uint8Array, count: number, fraction: number, field: string): Float32Array {
  if (bytes.byteLength % TOPK_ENTRY_BYTES !== 0) {
    throw new CodecDecodeError(
      field,
      0,
      `has ${bytes.byteLength} bytes, but a topk payload has 8 bytes (index and value) per kept value`,
    )
  }
  const k = bytes.byteLength / TOPK_ENTRY_BYTES
  if (k > count) {
    throw new CodecDecodeError(
      field,
      0,
      `holds ${k} indices, but the tensor has only ${count} values`,
    )
  }
  const expected = topkCount(count, fraction)
  if (k !== expected) {
    throw new CodecDecodeError(
      field,
      0,
      `holds ${k} values, but topk:${fraction} keeps ${expected} of ${count} values`,
    )
  }

  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const valuesOffset = FLOAT32_BYTES * k
  const out = new Float32Array(count)
  let previous = -1
  for (let entry = 0; entry < k; entry++) {
    const indexOffset = FLOAT32_BYTES * entry
    const index = view.getUint32(indexOffset)
    if (index >= count) {
      throw new CodecDecodeError(
        `${field}.indices[${entry}]`,
        indexOffset,
        `is ${index}, but the tensor has only ${count} values`,
      )
    }
    if (index <= previous) {
      throw new CodecDecodeError(
        `${field}.indices[${entry}]`,
        indexOffset,
        `is ${index}, but indices must be strictly ascending and the previous one is ${previous}`,
      )
    }
    out[index] = view.getFloat32(valuesOffset + FLOAT32_BYTES * entry, true)
    previous = index
  }
  return out
}

/** Reverses each 4-byte group in place, converting float32 values between byte orders. */
function swapFloat32ByteOrder(bytes: Uint8Array): void {
  for (let i = 0; i + 3 < bytes.length; i += 4) {
    const b0 = bytes[i] as number
    const b1 = bytes[i + 1] as number
    bytes[i] = bytes[i + 3] as number
    bytes[i + 1] = bytes[i + 2] as number
    bytes[i + 2] = b1
    bytes[i + 3] = b0
  }
}
