import { describe, expect, it } from 'vitest'
import {
  CodecDecodeError,
  CodecEncodeError,
  type CodecSpec,
  CodecSpecError,
  codecFromWire,
  codecId,
  codecParam,
  decodeTensor,
  encodeTensor,
  formatCodec,
  parseCodec,
  payloadSize,
  topkCount,
} from '../../protocols/index.ts'
import {
  atOddOffset,
  bitsOf,
  createRandom,
  randomBitValues,
  randomFiniteValues,
  randomWideRangeValues,
  sameBits,
} from './fixtures.ts'

const FLOAT16: CodecSpec = { name: 'float16' }
const FLOAT16_MAX = 65_504

/** Runs `action` and returns the error it throws, checking its class. */
function thrownBy<T extends Error>(
  errorClass: new (...args: never[]) => T,
  action: () => unknown,
): T {
  try {
    action()
  } catch (error) {
    if (error instanceof errorClass) {
      return error
    }
    throw new Error(`expected a ${errorClass.name}, got ${String(error)}`)
  }
  throw new Error(`expected a ${errorClass.name}, but nothing was thrown`)
}

function decodeErrorOf(bytes: Uint8Array, count: number, codec: CodecSpec): CodecDecodeError {
  return thrownBy(CodecDecodeError, () => decodeTensor(bytes, count, codec))
}

/** Encodes one value as float16 and returns its bit pattern. */
function halfBits(value: number): number {
  const payload = encodeTensor(Float32Array.of(value), FLOAT16)
  return new DataView(payload.buffer).getUint16(0, true)
}

/** Decodes all 65536 float16 bit patterns, in bit-pattern order. */
function allHalfValues(): Float32Array {
  const payload = new Uint8Array(2 * 0x10000)
  const view = new DataView(payload.buffer)
  for (let bits = 0; bits < 0x10000; bits++) {
    view.setUint16(2 * bits, bits, true)
  }
  return decodeTensor(payload, 0x10000, FLOAT16)
}

function isHalfNaN(bits: number): boolean {
  return (bits & 0x7c00) === 0x7c00 && (bits & 0x3ff) !== 0
}

/** Reads the float32 scales at the start of an int8 payload. */
function int8Scales(payload: Uint8Array, count: number, blockSize: number): number[] {
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength)
  return Array.from({ length: Math.ceil(count / blockSize) }, (_, block) =>
    view.getFloat32(4 * block, true),
  )
}

/**
 * Checks the int8 bound |v - decoded| <= scale / 2 for every value, allowing for the float32
 * rounding of q * scale. Returns a description of the first violation, or undefined.
 */
function findInt8Violation(values: Float32Array, blockSize: number): string | undefined {
  const codec: CodecSpec = { name: 'int8', blockSize }
  const payload = encodeTensor(values, codec)
  const scales = int8Scales(payload, values.length, blockSize)
  const decoded = decodeTensor(atOddOffset(payload), values.length, codec)
  for (let i = 0; i < values.length; i++) {
    const scale = scales[Math.floor(i / blockSize)] as number
    const value = values[i] as number
    const result = decoded[i] as number
    const bound = scale / 2 + Math.abs(result) * 2 ** -24 + 2 ** -149
    if (!Number.isFinite(result) || Math.abs(value - result) > bound) {
      return `values[${i}] ${value} decoded as ${result}, scale ${scale}`
    }
  }
  return undefined
}

/** Indices of the k largest magnitudes, ties to the lower index, in ascending order. */
function largestIndices(values: Float32Array, k: number): number[] {
  const order = Array.from(values.keys())
  order.sort((a, b) => Math.abs(values[b] as number) - Math.abs(values[a] as number) || a - b)
  return order.slice(0, k).sort((a, b) => a - b)
}

function topkIndices(payload: Uint8Array): number[] {
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength)
  const k = payload.byteLength / 8
  return Array.from({ length: k }, (_, entry) => view.getUint32(4 * entry))
}

/** Builds a topk payload with these indices and values, bypassing the encoder's checks. */
function topkPayload(indices: number[], values: number[]): Uint8Array {
  const payload = new Uint8Array(4 * indices.length + 4 * values.length)
  const view = new DataView(payload.buffer)
  indices.forEach((index, entry) => {
    view.setUint32(4 * entry, index)
  })
  values.forEach((value, entry) => {
    view.setFloat32(4 * indices.length + 4 * entry, value, true)
  })
  return payload
}

describe('parseCodec', () => {
  it('parses every accepted form', () => {
    const cases: [string, CodecSpec][] = [
      ['float32', { name: 'float32' }],
      ['float16', { name: 'float16' }],
      ['int8', { name: 'int8', blockSize: 256 }],
      ['int8:1', { name: 'int8', blockSize: 1 }],
      ['int8:64', { name: 'int8', blockSize: 64 }],
      ['int8:65535', { name: 'int8', blockSize: 65_535 }],
      ['topk:0.01', { name: 'topk', fraction: 0.01 }],
      ['topk:1', { name: 'topk', fraction: 1 }],
      ['topk:.5', { name: 'topk', fraction: 0.5 }],
      ['topk:1e-9', { name: 'topk', fraction: 1e-9 }],
      ['topk:0.123456789', { name: 'topk', fraction: 0.123456789 }],
    ]
    for (const [text, spec] of cases) {
      expect(parseCodec(text), text).toEqual(spec)
    }
  })

  it('rejects other text with CodecSpecError', () => {
    const texts = [
      '',
      'x',
      'FLOAT32',
      'float32 ',
      'float64',
      'float16:2',
      ':float32',
      'int8:',
      'int8:0',
      'int8:65536',
      'int8:-1',
      'int8:1.5',
      'int8:0x10',
      'int8: 4',
      'topk',
      'topk:',
      'topk:0',
      'topk:1.5',
      'topk:-0.1',
      'topk:NaN',
      'topk:Infinity',
      'topk:0x1',
      'topk:0.1234567891',
      'topk:1e-10',
    ]
    for (const text of texts) {
      const error = thrownBy(CodecSpecError, () => parseCodec(text))
      expect(error.name, text).toBe('CodecSpecError')
    }
  })

  it('names the value and the accepted forms', () => {
    expect(() => parseCodec('x')).toThrow(
      "Expected codec to be float32, float16, int8[:BLOCK] or topk:FRACTION, got 'x'",
    )
    expect(() => parseCodec('int8:0')).toThrow(
      "Expected codec int8:BLOCK to have an integer BLOCK from 1 to 65535, got 'int8:0'",
    )
    expect(() => parseCodec('topk:2')).toThrow(
      "Expected codec topk:FRACTION to have 0 < FRACTION <= 1 with at most 9 decimal places, got 'topk:2'",
    )
  })
})

describe('formatCodec', () => {
  it('writes canonical text', () => {
    expect(formatCodec({ name: 'float32' })).toBe('float32')
    expect(formatCodec({ name: 'float16' })).toBe('float16')
    expect(formatCodec(parseCodec('int8'))).toBe('int8:256')
    expect(formatCodec(parseCodec('topk:0.10'))).toBe('topk:0.1')
  })

  it('is the inverse of parseCodec', () => {
    const texts = ['float32', 'float16', 'int8', 'int8:7', 'topk:0.01', 'topk:1', 'topk:1e-9']
    for (const text of texts) {
      const spec = parseCodec(text)
      expect(parseCodec(formatCodec(spec)), text).toEqual(spec)
    }
  })

  it('rejects invalid specs', () => {
    const specs = [
      { name: 'int8', blockSize: 0 },
      { name: 'int8', blockSize: 2.5 },
      { name: 'topk', fraction: 0 },
      { name: 'topk', fraction: Number.NaN },
      { name: 'int9' },
      null,
    ] as unknown as CodecSpec[]
    for (const spec of specs) {
      expect(() => formatCodec(spec), JSON.stringify(spec)).toThrow(CodecSpecError)
    }
    expect(() => formatCodec({ name: 'int9' } as unknown as CodecSpec)).toThrow(
      'Expected codec name to be float32, float16, int8 or topk, got "int9"',
    )
  })
})

describe('codec wire fields', () => {
  it('round-trip id and parameter', () => {
    const cases: [CodecSpec, number, number][] = [
      [{ name: 'float32' }, 0, 0],
      [{ name: 'float16' }, 1, 0],
      [{ name: 'int8', blockSize: 256 }, 2, 256],
      [{ name: 'topk', fraction: 0.01 }, 3, 10_000_000],
      [{ name: 'topk', fraction: 1 }, 3, 1_000_000_000],
      [{ name: 'topk', fraction: 1e-9 }, 3, 1],
    ]
    for (const [spec, id, param] of cases) {
      const label = formatCodec(spec)
      expect(codecId(spec), label).toBe(id)
      expect(codecParam(spec), label).toBe(param)
      expect(codecFromWire(id, param), label).toEqual(spec)
    }
  })

  it('rejects an unknown id', () => {
    const error = thrownBy(CodecDecodeError, () => codecFromWire(4, 0))

    expect(error.field).toBe('codec')
    expect(error.problem).toBe('is 4, expected 0 (float32), 1 (float16), 2 (int8) or 3 (topk)')
  })

  it('rejects a parameter outside the codec range', () => {
    const cases: [number, number][] = [
      [0, 1],
      [1, 256],
      [2, 0],
      [2, 65_536],
      [3, 0],
      [3, 1_000_000_001],
    ]
    for (const [id, param] of cases) {
      const error = thrownBy(CodecDecodeError, () => codecFromWire(id, param))
      expect(error.field, `id ${id} param ${param}`).toBe('codecParam')
    }
  })
})

describe('topkCount', () => {
  it('keeps ceil(fraction * count), at least 1', () => {
    const cases: [number, number, number][] = [
      [10, 0.1, 1],
      [11, 0.1, 2],
      [3, 0.5, 2],
      [1, 1e-9, 1],
      [156_800, 0.01, 1568],
      [200, 1, 200],
      [0, 0.5, 0],
      // In doubles 0.07 * 100 is 7.000000000000001, whose ceiling would be 8.
      [100, 0.07, 7],
      // 2^50 / 10^9 = 1125899.906842624.
      [2 ** 50, 1e-9, 1_125_900],
    ]
    for (const [count, fraction, k] of cases) {
      expect(topkCount(count, fraction), `${fraction} of ${count}`).toBe(k)
    }
  })
})

describe('payloadSize', () => {
  it('follows each codec layout', () => {
    expect(payloadSize(10, { name: 'float32' })).toBe(40)
    expect(payloadSize(10, FLOAT16)).toBe(20)
    expect(payloadSize(10, { name: 'int8', blockSize: 4 })).toBe(3 * 4 + 10)
    expect(payloadSize(256, { name: 'int8', blockSize: 256 })).toBe(4 + 256)
    expect(payloadSize(257, { name: 'int8', blockSize: 256 })).toBe(8 + 257)
    expect(payloadSize(10, { name: 'topk', fraction: 0.25 })).toBe(3 * 8)
    expect(payloadSize(0, { name: 'int8', blockSize: 4 })).toBe(0)
  })

  it('rejects a count that is not an integer from 0 to 2^50', () => {
    for (const count of [-1, 1.5, Number.NaN, 2 ** 50 + 4]) {
      expect(() => payloadSize(count, FLOAT16), String(count)).toThrow(RangeError)
    }
  })
})

describe('float32 codec', () => {
  it('round-trips every bit pattern from odd offsets', () => {
    const values = randomBitValues(10_000, createRandom(1))
    const payload = encodeTensor(values, { name: 'float32' })
    const decoded = decodeTensor(atOddOffset(payload), values.length, { name: 'float32' })

    expect(payload.byteLength).toBe(40_000)
    expect(sameBits(decoded, values)).toBe(true)
  })

  it('writes little-endian values', () => {
    const payload = encodeTensor(Float32Array.of(1, -2), { name: 'float32' })

    expect(Array.from(payload)).toEqual([0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0])
  })

  it('decodes from a pooled Node Buffer', () => {
    const payload = encodeTensor(Float32Array.of(1, -2, 0.5), { name: 'float32' })
    const buffer = Buffer.concat([Buffer.alloc(1), payload]).subarray(1)

    expect(Array.from(decodeTensor(buffer, 3, { name: 'float32' }))).toEqual([1, -2, 0.5])
  })
})

describe('float16 codec', () => {
  it('converts known values to their bit patterns', () => {
    const cases: [number, number][] = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [-2, 0xc000],
      [0.5, 0x3800],
      [0.1, 0x2e66],
      [FLOAT16_MAX, 0x7bff],
      [65_519.996, 0x7bff],
      // 65520 lies halfway between 65504 and the next step, 65536, so it rounds to Infinity.
      [65_520, 0x7c00],
      [-1e6, 0xfc00],
      [Number.POSITIVE_INFINITY, 0x7c00],
      [Number.NEGATIVE_INFINITY, 0xfc00],
      [2 ** -14, 0x0400],
      [2 ** -24, 0x0001],
      [1023 * 2 ** -24, 0x03ff],
      // Ties round to the even pattern.
      [2 ** -25, 0x0000],
      [3 * 2 ** -25, 0x0002],
      [1 + 2 ** -11, 0x3c00],
      [1 + 3 * 2 ** -11, 0x3c02],
      [2 ** -26, 0x0000],
      [1.0000001 * 2 ** -25, 0x0001],
      [1e-45, 0x0000],
      [-1e-45, 0x8000],
    ]
    for (const [value, bits] of cases) {
      expect(halfBits(value).toString(16), String(value)).toBe(bits.toString(16))
    }
  })

  it('keeps NaN as NaN', () => {
    // 0x7f800001 is a NaN whose payload sits only in bits that float16 drops.
    const words = Uint32Array.of(0x7fc00000, 0xffc00000, 0x7f800001, 0x7fbfffff)
    const values = new Float32Array(words.buffer)
    const payload = encodeTensor(values, FLOAT16)
    const view = new DataView(payload.buffer)
    const decoded = decodeTensor(payload, values.length, FLOAT16)

    for (let i = 0; i < values.length; i++) {
      expect(isHalfNaN(view.getUint16(2 * i, true)), `bits of values[${i}]`).toBe(true)
      expect(decoded[i], `values[${i}]`).toBeNaN()
    }
  })

  it('decodes known bit patterns', () => {
    const table = allHalfValues()

    expect(table[0x0001]).toBe(2 ** -24)
    expect(table[0x03ff]).toBe(1023 * 2 ** -24)
    expect(table[0x0400]).toBe(2 ** -14)
    expect(table[0x3c00]).toBe(1)
    expect(table[0x7bff]).toBe(FLOAT16_MAX)
    expect(table[0x7c00]).toBe(Number.POSITIVE_INFINITY)
    expect(table[0xfc00]).toBe(Number.NEGATIVE_INFINITY)
    expect(Object.is(table[0x8000], -0)).toBe(true)
    expect(table[0x7e00]).toBeNaN()
  })

  it('round-trips all 65536 bit patterns', () => {
    const table = allHalfValues()
    const payload = encodeTensor(table, FLOAT16)
    const view = new DataView(payload.buffer)
    const mismatches: string[] = []
    for (let bits = 0; bits < 0x10000; bits++) {
      const again = view.getUint16(2 * bits, true)
      const same = isHalfNaN(bits) ? isHalfNaN(again) : again === bits
      if (!same) {
        mismatches.push(`${bits.toString(16)} -> ${again.toString(16)}`)
      }
    }

    expect(mismatches.slice(0, 10)).toEqual([])
  })

  it('orders positive patterns by value', () => {
    const table = allHalfValues()
    let unordered = 0
    for (let bits = 1; bits <= 0x7c00; bits++) {
      if (!((table[bits] as number) > (table[bits - 1] as number))) {
        unordered += 1
      }
    }

    expect(unordered).toBe(0)
  })

  it('rounds random values to the nearest pattern, ties to even', () => {
    const table = allHalfValues()
    const values = randomWideRangeValues(50_000, createRandom(5), -27, 16)
    const payload = encodeTensor(values, FLOAT16)
    const decoded = decodeTensor(atOddOffset(payload), values.length, FLOAT16)
    const view = new DataView(payload.buffer)
    const problems: string[] = []
    for (let i = 0; i < values.length; i++) {
      const magnitude = Math.abs(values[i] as number)
      const bits = view.getUint16(2 * i, true) & 0x7fff
      // From halfway between 65504 and 65536 on, IEEE 754 rounds to Infinity.
      if (magnitude >= 65_520) {
        if (bits !== 0x7c00) {
          problems.push(`values[${i}] ${magnitude} -> ${bits.toString(16)}, expected Infinity`)
        }
        continue
      }
      const error = Math.abs(magnitude - (table[bits] as number))
      for (const neighbour of [bits - 1, bits + 1]) {
        if (neighbour < 0 || neighbour > 0x7bff) {
          continue
        }
        const other = Math.abs(magnitude - (table[neighbour] as number))
        if (other < error || (other === error && (bits & 1) === 1)) {
          problems.push(`values[${i}] ${magnitude} -> ${bits.toString(16)}`)
        }
      }
      if (Math.abs(decoded[i] as number) !== table[bits]) {
        problems.push(`values[${i}] decodes to ${decoded[i]}, not ${table[bits]}`)
      }
    }

    expect(problems.slice(0, 10)).toEqual([])
  })

  it('holds relative error 2^-11 in the normal range', () => {
    const values = randomWideRangeValues(50_000, createRandom(6), -14, 15.99)
    const decoded = decodeTensor(encodeTensor(values, FLOAT16), values.length, FLOAT16)
    let worst = 0
    for (let i = 0; i < values.length; i++) {
      const value = values[i] as number
      worst = Math.max(worst, Math.abs((decoded[i] as number) - value) / Math.abs(value))
    }

    expect(worst).toBeGreaterThan(0)
    expect(worst, `worst relative error ${worst}, bound 2^-11`).toBeLessThanOrEqual(2 ** -11)
  })

  it('holds absolute error 2^-25 among subnormals', () => {
    const values = randomWideRangeValues(20_000, createRandom(7), -30, -14)
    const decoded = decodeTensor(encodeTensor(values, FLOAT16), values.length, FLOAT16)
    let worst = 0
    for (let i = 0; i < values.length; i++) {
      worst = Math.max(worst, Math.abs((decoded[i] as number) - (values[i] as number)))
    }

    expect(worst, `worst absolute error ${worst}, bound 2^-25`).toBeLessThanOrEqual(2 ** -25)
  })
})

describe('int8 codec', () => {
  it('holds scale / 2 on random blocks', () => {
    const random = createRandom(8)
    const cases: [Float32Array, number][] = [
      [randomFiniteValues(40_000, random), 256],
      [randomWideRangeValues(40_000, random, -20, 4), 256],
      [randomWideRangeValues(1000, random, -10, 10), 1],
      [randomWideRangeValues(1000, random, -10, 10), 7],
      [randomWideRangeValues(1000, random, -10, 10), 65_535],
    ]
    for (const [values, blockSize] of cases) {
      expect(findInt8Violation(values, blockSize), `block ${blockSize}`).toBeUndefined()
    }
  })

  it('holds the bound at the float32 extremes', () => {
    const cases = [
      // For these two largest float32 values, 127 * float32(maxAbs / 127) overflows float32.
      Float32Array.of(3.4028234663852886e38, -3.4028234663852886e38, 1e30, 0),
      Float32Array.of(-3.4028232635611926e38, 3e38, 1, 0),
      // Subnormal float32 values, where maxAbs / 127 rounds to a much coarser scale.
      Float32Array.of(2.5e-43, -1e-44, 1.4e-45, 0),
      Float32Array.of(1.4e-45, -1.4e-45, 0, 0),
    ]
    for (const values of cases) {
      expect(findInt8Violation(values, 4), String(Array.from(values))).toBeUndefined()
    }
  })

  it('writes scales, then values', () => {
    const values = Float32Array.of(127, -63.75, 0, 1, 0, 0, 0, 0, 63.5)
    const codec: CodecSpec = { name: 'int8', blockSize: 4 }
    const payload = encodeTensor(values, codec)
    const quantized = Array.from(new Int8Array(payload.buffer, 12, 9))

    expect(payload.byteLength).toBe(3 * 4 + 9)
    expect(int8Scales(payload, 9, 4)).toEqual([1, 0, 0.5])
    expect(quantized).toEqual([127, -64, 0, 1, 0, 0, 0, 0, 127])
    expect(Array.from(decodeTensor(payload, 9, codec))).toEqual([127, -64, 0, 1, 0, 0, 0, 0, 63.5])
  })

  it('rejects non-finite values', () => {
    const codec: CodecSpec = { name: 'int8', blockSize: 2 }
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      const error = thrownBy(CodecEncodeError, () =>
        encodeTensor(Float32Array.of(1, 2, bad), codec),
      )
      expect(error.field, String(bad)).toBe('values[2]')
      expect(error.message, String(bad)).toBe(
        `cannot encode tensor as int8:2: values[2] is ${bad}, but int8 encodes only finite values`,
      )
    }
  })
})

describe('topk codec', () => {
  it('keeps exactly k values, exact, and zeroes the rest', () => {
    const values = randomWideRangeValues(5000, createRandom(9), -10, 2)
    const codec: CodecSpec = { name: 'topk', fraction: 0.013 }
    const k = 65
    const payload = encodeTensor(values, codec)
    const decoded = decodeTensor(atOddOffset(payload), values.length, codec)
    const keptIndices = new Set(largestIndices(values, k))

    expect(payload.byteLength).toBe(8 * k)
    expect(topkIndices(payload)).toEqual(largestIndices(values, k))
    let wrong = 0
    for (let i = 0; i < values.length; i++) {
      const expected = keptIndices.has(i) ? (values[i] as number) : 0
      if (!Object.is(decoded[i], expected)) {
        wrong += 1
      }
    }
    expect(wrong).toBe(0)
  })

  it('breaks ties by the lower index', () => {
    const values = Float32Array.of(0.5, -1, 1, 0.25, -1, 1)
    const payload = encodeTensor(values, { name: 'topk', fraction: 0.5 })

    expect(topkIndices(payload)).toEqual([1, 2, 4])
  })

  it('keeps at least one value', () => {
    const values = Float32Array.of(0, -0, 0, 0)
    const codec: CodecSpec = { name: 'topk', fraction: 1e-9 }
    const payload = encodeTensor(values, codec)

    expect(topkIndices(payload)).toEqual([0])
    expect(Array.from(decodeTensor(payload, 4, codec))).toEqual([0, 0, 0, 0])
  })

  it('encodes an empty tensor as an empty payload', () => {
    const codec: CodecSpec = { name: 'topk', fraction: 0.5 }
    const payload = encodeTensor(new Float32Array(0), codec)

    expect(payload.byteLength).toBe(0)
    expect(decodeTensor(payload, 0, codec).length).toBe(0)
  })

  it('keeps infinities and rejects NaN', () => {
    const codec: CodecSpec = { name: 'topk', fraction: 0.5 }
    const infinite = Float32Array.of(1, Number.NEGATIVE_INFINITY, 2, 3)
    const error = thrownBy(CodecEncodeError, () =>
      encodeTensor(Float32Array.of(1, Number.NaN), codec),
    )

    expect(Array.from(decodeTensor(encodeTensor(infinite, codec), 4, codec))).toEqual([
      0,
      Number.NEGATIVE_INFINITY,
      0,
      3,
    ])
    expect(error.field).toBe('values[1]')
  })

  it('encodes the same values to the same bytes', () => {
    const values = randomFiniteValues(3000, createRandom(10))
    const codec: CodecSpec = { name: 'topk', fraction: 0.1 }

    expect(encodeTensor(values, codec)).toEqual(encodeTensor(values.slice(), codec))
  })
})

describe('decodeTensor rejects', () => {
  const CODECS: CodecSpec[] = [
    { name: 'float32' },
    FLOAT16,
    { name: 'int8', blockSize: 4 },
    { name: 'topk', fraction: 0.3 },
  ]

  it('every truncation and an extra byte', () => {
    const values = randomFiniteValues(10, createRandom(11))
    for (const codec of CODECS) {
      const payload = encodeTensor(values, codec)
      for (let length = 0; length < payload.length; length++) {
        const error = decodeErrorOf(payload.subarray(0, length), 10, codec)
        expect(error.name, `${formatCodec(codec)} length ${length}`).toBe('CodecDecodeError')
      }
      const longer = Uint8Array.from([...payload, 0])
      expect(decodeErrorOf(longer, 10, codec).field, formatCodec(codec)).toBe('payload')
    }
  })

  it('a length that disagrees with the count', () => {
    const payload = encodeTensor(Float32Array.of(1, 2, 3), FLOAT16)
    const error = decodeErrorOf(payload, 4, FLOAT16)

    expect(error.message).toBe(
      'invalid tensor payload: payload at payload byte offset 0 has 6 bytes, but float16 needs 8 bytes for 4 values',
    )
  })

  it('a topk index out of range', () => {
    const error = decodeErrorOf(topkPayload([0, 4], [1, 2]), 4, { name: 'topk', fraction: 0.5 })

    expect(error.field).toBe('payload.indices[1]')
    expect(error.offset).toBe(4)
    expect(error.problem).toBe('is 4, but the tensor has only 4 values')
  })

  it('topk indices out of order or repeated', () => {
    const codec: CodecSpec = { name: 'topk', fraction: 0.5 }
    const descending = decodeErrorOf(topkPayload([3, 1], [1, 2]), 4, codec)
    const repeated = decodeErrorOf(topkPayload([2, 2], [1, 2]), 4, codec)

    expect(descending.field).toBe('payload.indices[1]')
    expect(descending.problem).toBe(
      'is 1, but indices must be strictly ascending and the previous one is 3',
    )
    expect(repeated.field).toBe('payload.indices[1]')
  })

  it('a topk payload with more entries than values', () => {
    const payload = topkPayload([0, 1, 2], [1, 2, 3])
    const error = decodeErrorOf(payload, 2, { name: 'topk', fraction: 1 })

    expect(error.problem).toBe('holds 3 indices, but the tensor has only 2 values')
  })

  it('a topk payload with a k other than the codec keeps', () => {
    const payload = topkPayload([0, 1], [1, 2])
    const error = decodeErrorOf(payload, 10, { name: 'topk', fraction: 0.1 })

    expect(error.problem).toBe('holds 2 values, but topk:0.1 keeps 1 of 10 values')
  })

  it('a topk payload that is not whole entries', () => {
    const error = decodeErrorOf(new Uint8Array(12), 10, { name: 'topk', fraction: 0.1 })

    expect(error.problem).toContain('has 12 bytes, but a topk payload has 8 bytes')
  })

  it('int8 scales that are not finite and >= 0', () => {
    const codec: CodecSpec = { name: 'int8', blockSize: 2 }
    for (const scale of [Number.NaN, Number.POSITIVE_INFINITY, -1]) {
      const payload = encodeTensor(Float32Array.of(1, 2, 3), codec)
      new DataView(payload.buffer).setFloat32(4, scale, true)
      const error = decodeErrorOf(atOddOffset(payload), 3, codec)
      expect(error.field, String(scale)).toBe('payload.scales[1]')
      expect(error.offset, String(scale)).toBe(4)
      expect(error.problem, String(scale)).toBe(`is ${scale}, expected a finite float32 >= 0`)
    }
  })

  it('an int8 value of -128', () => {
    const codec: CodecSpec = { name: 'int8', blockSize: 2 }
    const payload = encodeTensor(Float32Array.of(1, 2, 3), codec)
    payload[8 + 1] = 0x80
    const error = decodeErrorOf(payload, 3, codec)

    expect(error.field).toBe('payload.values[1]')
    expect(error.offset).toBe(9)
  })

  it('input that is not a Uint8Array', () => {
    const error = decodeErrorOf([0, 0, 0, 0] as unknown as Uint8Array, 1, { name: 'float32' })

    expect(error.problem).toBe('is not a Uint8Array')
  })

  it('an invalid count or codec', () => {
    const payload = new Uint8Array(4)

    expect(() => decodeTensor(payload, -1, { name: 'float32' })).toThrow(RangeError)
    expect(() => decodeTensor(payload, 1, { name: 'int8', blockSize: 0 })).toThrow(CodecSpecError)
  })
})

describe('decodeTensor', () => {
  it('returns values that share no memory with the input', () => {
    for (const codec of [{ name: 'float32' }, FLOAT16] as CodecSpec[]) {
      const payload = encodeTensor(Float32Array.of(1, -2), codec)
      const decoded = decodeTensor(payload, 2, codec)
      payload.fill(0)
      expect(Array.from(decoded), formatCodec(codec)).toEqual([1, -2])
      expect(bitsOf(decoded).buffer, formatCodec(codec)).not.toBe(payload.buffer)
    }
  })
})
