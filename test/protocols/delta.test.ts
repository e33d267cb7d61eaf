import { describe, expect, it } from 'vitest'
import {
  DELTA_HEADER_BYTES,
  DeltaDecodeError,
  DeltaEncodeError,
  type DeltaMessage,
  decodeDelta,
  encodeDelta,
  encodedDeltaSize,
  MAX_TENSOR_COUNT,
} from '../../protocols/index.ts'
import {
  bitsOf,
  buildMessage,
  createRandom,
  filledHash,
  MLP_SHAPES,
  randomBitValues,
  sameBits,
  shapeSize,
} from './fixtures.ts'

// 80 header bytes + (1 + 8 + 4*156800) + (1 + 4 + 4*200) + (1 + 8 + 4*2000) + (1 + 4 + 4*10).
const MLP_ENCODED_BYTES = 636_148

/** Two tensors: shape [2] with values [1, -2], and a scalar 0.5. */
function smallMessage(): DeltaMessage {
  return {
    version: 1,
    codec: 'float32',
    specHash: filledHash(0xa1),
    round: 0x01020304,
    sampleCount: 0x0a0b0c0d,
    baseModelHash: filledHash(0xb2),
    tensors: [
      { shape: [2], values: Float32Array.of(1, -2) },
      { shape: [], values: Float32Array.of(0.5) },
    ],
  }
}

const SMALL_MESSAGE_BYTES = Uint8Array.from([
  ...[0x44, 0x4c, 0x44, 0x31], // magic "DLD1"
  0x01, // version
  0x00, // codec float32
  ...new Array(32).fill(0xa1), // specHash
  ...[0x01, 0x02, 0x03, 0x04], // round, big-endian
  ...[0x0a, 0x0b, 0x0c, 0x0d], // sampleCount, big-endian
  ...new Array(32).fill(0xb2), // baseModelHash
  ...[0x00, 0x02], // tensorCount
  0x01, // tensors[0].rank
  ...[0x00, 0x00, 0x00, 0x02], // tensors[0].dims[0]
  ...[0x00, 0x00, 0x80, 0x3f], // 1.0, little-endian
  ...[0x00, 0x00, 0x00, 0xc0], // -2.0, little-endian
  0x00, // tensors[1].rank
  ...[0x00, 0x00, 0x00, 0x3f], // 0.5, little-endian
])

/** Runs decodeDelta and returns the DeltaDecodeError it throws. */
function decodeError(bytes: Uint8Array): DeltaDecodeError {
  try {
    decodeDelta(bytes)
  } catch (error) {
    if (error instanceof DeltaDecodeError) {
      return error
    }
    throw new Error(`expected a DeltaDecodeError, got ${String(error)}`)
  }
  throw new Error('expected decodeDelta to throw, but it returned a message')
}

/** Runs encodeDelta and returns the DeltaEncodeError it throws. */
function encodeError(message: DeltaMessage): DeltaEncodeError {
  try {
    encodeDelta(message)
  } catch (error) {
    if (error instanceof DeltaEncodeError) {
      return error
    }
    throw new Error(`expected a DeltaEncodeError, got ${String(error)}`)
  }
  throw new Error('expected encodeDelta to throw, but it returned bytes')
}

function withByte(bytes: Uint8Array, offset: number, value: number): Uint8Array {
  const copy = bytes.slice()
  copy[offset] = value
  return copy
}

describe('encodeDelta', () => {
  it('writes the documented layout', () => {
    expect(encodeDelta(smallMessage())).toEqual(SMALL_MESSAGE_BYTES)
  })

  it('sizes the MLP message by the layout formula', () => {
    const encoded = encodeDelta(buildMessage(MLP_SHAPES))

    expect(encoded.byteLength).toBe(MLP_ENCODED_BYTES)
    expect(encodedDeltaSize(MLP_SHAPES)).toBe(MLP_ENCODED_BYTES)
    expect(encoded.buffer.byteLength).toBe(MLP_ENCODED_BYTES)
  })

  it('encodes values from an offset view', () => {
    const backing = new Float32Array([9, 1, -2, 9])
    const message = smallMessage()
    message.tensors[0] = { shape: [2], values: backing.subarray(1, 3) }

    expect(encodeDelta(message)).toEqual(SMALL_MESSAGE_BYTES)
  })

  it('rejects a short specHash', () => {
    const message = { ...smallMessage(), specHash: new Uint8Array(31) }
    const error = encodeError(message)

    expect(error.field).toBe('specHash')
    expect(error.message).toContain('31 bytes')
  })

  it('rejects a long baseModelHash', () => {
    const error = encodeError({ ...smallMessage(), baseModelHash: new Uint8Array(33) })

    expect(error.field).toBe('baseModelHash')
  })

  it('rejects out-of-range integers', () => {
    const cases: [Partial<DeltaMessage>, string][] = [
      [{ round: -1 }, 'round'],
      [{ round: 2 ** 32 }, 'round'],
      [{ round: 1.5 }, 'round'],
      [{ round: Number.NaN }, 'round'],
      [{ sampleCount: -1 }, 'sampleCount'],
      [{ sampleCount: 2 ** 32 }, 'sampleCount'],
    ]
    for (const [override, field] of cases) {
      const error = encodeError({ ...smallMessage(), ...override })
      expect(error.field, JSON.stringify(override)).toBe(field)
    }
  })

  it('accepts the u32 maximum', () => {
    const message = { ...smallMessage(), round: 2 ** 32 - 1, sampleCount: 2 ** 32 - 1 }
    const decoded = decodeDelta(encodeDelta(message))

    expect(decoded.round).toBe(2 ** 32 - 1)
    expect(decoded.sampleCount).toBe(2 ** 32 - 1)
  })

  it('rejects values of the wrong length', () => {
    const message = smallMessage()
    message.tensors[0] = { shape: [3], values: Float32Array.of(1, 2) }
    const error = encodeError(message)

    expect(error.field).toBe('tensors[0].values')
    expect(error.message).toContain('has 2 values, but shape [3] needs 3')
  })

  it('rejects values that are not a Float32Array', () => {
    const message = smallMessage()
    message.tensors[1] = { shape: [1], values: [1] as unknown as Float32Array }

    expect(encodeError(message).field).toBe('tensors[1].values')
  })

  it('rejects rank 9', () => {
    const shape = [1, 1, 1, 1, 1, 1, 1, 1, 1]
    const message = smallMessage()
    message.tensors[0] = { shape, values: Float32Array.of(1) }
    const error = encodeError(message)

    expect(error.field).toBe('tensors[0].shape')
    expect(error.message).toContain('rank 9')
  })

  it('rejects a fractional dimension', () => {
    const message = smallMessage()
    message.tensors[0] = { shape: [0.5, 4], values: Float32Array.of(1, 2) }

    expect(encodeError(message).field).toBe('tensors[0].shape[0]')
  })

  it('rejects version 2', () => {
    const message = { ...smallMessage(), version: 2 } as unknown as DeltaMessage

    expect(encodeError(message).field).toBe('version')
  })

  it('rejects an unknown codec', () => {
    const message = { ...smallMessage(), codec: 'int8' } as unknown as DeltaMessage

    expect(encodeError(message).field).toBe('codec')
  })
})

describe('encodedDeltaSize', () => {
  it('counts header, rank, dims and values', () => {
    expect(encodedDeltaSize([])).toBe(DELTA_HEADER_BYTES)
    expect(encodedDeltaSize([[]])).toBe(DELTA_HEADER_BYTES + 1 + 4)
    expect(encodedDeltaSize([[2, 3]])).toBe(DELTA_HEADER_BYTES + 1 + 8 + 24)
    expect(encodedDeltaSize([[0, 7]])).toBe(DELTA_HEADER_BYTES + 1 + 8)
  })

  it('rejects more tensors than tensorCount holds', () => {
    const shapes = new Array<number[]>(MAX_TENSOR_COUNT + 1).fill([])

    expect(() => encodedDeltaSize(shapes)).toThrow(/tensorCount is a u16/)
  })
})

describe('decodeDelta round trip', () => {
  it('preserves every MLP field and value bit', () => {
    const random = createRandom(42)
    const message: DeltaMessage = {
      version: 1,
      codec: 'float32',
      specHash: Uint8Array.from({ length: 32 }, (_, i) => i),
      round: 123_456,
      sampleCount: 15_000,
      baseModelHash: Uint8Array.from({ length: 32 }, (_, i) => 255 - i),
      tensors: MLP_SHAPES.map((shape) => ({
        shape,
        values: randomBitValues(shapeSize(shape), random),
      })),
    }
    const decoded = decodeDelta(encodeDelta(message))

    expect(decoded.version).toBe(1)
    expect(decoded.codec).toBe('float32')
    expect(decoded.specHash).toEqual(message.specHash)
    expect(decoded.round).toBe(123_456)
    expect(decoded.sampleCount).toBe(15_000)
    expect(decoded.baseModelHash).toEqual(message.baseModelHash)
    expect(decoded.tensors.length).toBe(4)
    message.tensors.forEach((tensor, index) => {
      const actual = decoded.tensors[index]
      expect(actual?.shape, `tensors[${index}].shape`).toEqual(tensor.shape)
      expect(actual?.values.length, `tensors[${index}] length`).toBe(tensor.values.length)
      expect(sameBits(actual?.values, tensor.values), `tensors[${index}] value bits`).toBe(true)
    })
  })

  it('keeps NaN payloads and negative zero', () => {
    const words = Uint32Array.of(0x7fc00001, 0xffbfffff, 0x80000000, 0x00000001)
    const message = smallMessage()
    message.tensors = [{ shape: [4], values: new Float32Array(words.buffer) }]
    const decoded = decodeDelta(encodeDelta(message))
    const values = decoded.tensors[0]?.values ?? new Float32Array()

    expect(Array.from(bitsOf(values))).toEqual(Array.from(words))
  })

  it('round-trips zero-size and scalar tensors', () => {
    const message = smallMessage()
    message.tensors = [
      { shape: [0, 2 ** 31], values: new Float32Array(0) },
      { shape: [], values: Float32Array.of(3) },
    ]
    const decoded = decodeDelta(encodeDelta(message))

    expect(decoded.tensors[0]?.shape).toEqual([0, 2 ** 31])
    expect(decoded.tensors[0]?.values.length).toBe(0)
    expect(decoded.tensors[1]?.shape).toEqual([])
    expect(Array.from(decoded.tensors[1]?.values ?? [])).toEqual([3])
  })

  it('round-trips a message without tensors', () => {
    const message = { ...smallMessage(), tensors: [] }
    const encoded = encodeDelta(message)

    expect(encoded.byteLength).toBe(DELTA_HEADER_BYTES)
    expect(decodeDelta(encoded).tensors).toEqual([])
  })

  it('decodes from an odd byteOffset', () => {
    const encoded = encodeDelta(buildMessage(MLP_SHAPES, 7))
    const backing = new ArrayBuffer(encoded.byteLength + 8)
    const view = new Uint8Array(backing, 3, encoded.byteLength)
    view.set(encoded)
    new Uint8Array(backing).fill(0xee, 0, 3)
    new Uint8Array(backing).fill(0xee, 3 + encoded.byteLength)
    const decoded = decodeDelta(view)
    const expected = decodeDelta(encoded)

    expect(view.byteOffset).toBe(3)
    expect(decoded.tensors.map((tensor) => tensor.shape)).toEqual(MLP_SHAPES)
    decoded.tensors.forEach((tensor, index) => {
      const sameValues = sameBits(tensor.values, expected.tensors[index]?.values)
      expect(sameValues, `tensors[${index}].values`).toBe(true)
    })
  })

  it('decodes from a pooled Node Buffer', () => {
    const buffer = Buffer.concat([Buffer.alloc(1), SMALL_MESSAGE_BYTES]).subarray(1)
    const decoded = decodeDelta(buffer)

    expect(Array.from(decoded.tensors[0]?.values ?? [])).toEqual([1, -2])
  })

  it('returns arrays that share no memory with the input', () => {
    const input = SMALL_MESSAGE_BYTES.slice()
    const decoded = decodeDelta(input)
    input.fill(0)

    expect(decoded.specHash).toEqual(filledHash(0xa1))
    expect(decoded.baseModelHash).toEqual(filledHash(0xb2))
    expect(Array.from(decoded.tensors[0]?.values ?? [])).toEqual([1, -2])
    expect(decoded.specHash.buffer).not.toBe(decoded.baseModelHash.buffer)
  })
})

describe('decodeDelta rejects', () => {
  it('every truncation with DeltaDecodeError', () => {
    for (let length = 0; length < SMALL_MESSAGE_BYTES.length; length++) {
      const truncated = SMALL_MESSAGE_BYTES.subarray(0, length)
      expect(() => decodeDelta(truncated), `length ${length}`).toThrow(DeltaDecodeError)
    }
  })

  it('truncation naming the field and offset', () => {
    const error = decodeError(SMALL_MESSAGE_BYTES.subarray(0, 40))

    expect(error.field).toBe('round')
    expect(error.offset).toBe(38)
    expect(error.message).toBe(
      'invalid delta message: round at byte offset 38 needs 4 bytes, but only 2 remain in the message',
    )
  })

  it('a trailing byte', () => {
    const bytes = Uint8Array.from([...SMALL_MESSAGE_BYTES, 0])
    const error = decodeError(bytes)

    expect(error.field).toBe('trailing data')
    expect(error.offset).toBe(SMALL_MESSAGE_BYTES.length)
    expect(error.message).toContain('1 unexpected byte after the last of 2 tensors')
  })

  it('a wrong magic', () => {
    const error = decodeError(withByte(SMALL_MESSAGE_BYTES, 3, 0x32))

    expect(error.field).toBe('magic')
    expect(error.message).toContain('is 44 4c 44 32, expected 44 4c 44 31 ("DLD1")')
  })

  it('version 2', () => {
    const error = decodeError(withByte(SMALL_MESSAGE_BYTES, 4, 2))

    expect(error.field).toBe('version')
    expect(error.message).toContain('version at byte offset 4 is 2')
  })

  it('codec 7', () => {
    const error = decodeError(withByte(SMALL_MESSAGE_BYTES, 5, 7))

    expect(error.field).toBe('codec')
    expect(error.message).toContain('codec at byte offset 5 is 7')
  })

  it('rank 9', () => {
    const error = decodeError(withByte(SMALL_MESSAGE_BYTES, 80, 9))

    expect(error.field).toBe('tensors[0].rank')
    expect(error.message).toContain('tensors[0].rank at byte offset 80 is 9')
  })

  it('dims claiming 2^31 values', () => {
    const bytes = SMALL_MESSAGE_BYTES.slice()
    new DataView(bytes.buffer).setUint32(81, 2 ** 31) // tensors[0].dims[0]
    const error = decodeError(bytes)

    expect(error.field).toBe('tensors[0].dims')
    expect(error.offset).toBe(81)
    expect(error.message).toContain(
      '[2147483648] describe 2147483648 float32 values (8589934592 bytes), but only 13 bytes remain',
    )
  })

  it('dims whose product exceeds 2^53', () => {
    const bytes = Uint8Array.from([
      ...SMALL_MESSAGE_BYTES.subarray(0, 78),
      ...[0x00, 0x01], // tensorCount
      0x08, // rank
      ...new Array(32).fill(0xff), // eight dims of 2^32 - 1
    ])
    const error = decodeError(bytes)

    expect(error.field).toBe('tensors[0].dims')
  })

  it('a value that is not a Uint8Array', () => {
    const error = decodeError([1, 2, 3] as unknown as Uint8Array)

    expect(error.field).toBe('message')
  })
})
