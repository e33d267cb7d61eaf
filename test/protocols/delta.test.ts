import { describe, expect, it } from 'vitest'
import {
  type CodecSpec,
  DEFAULT_MAX_DELTA_VALUES,
  DELTA_HEADER_BYTES,
  DeltaDecodeError,
  DeltaEncodeError,
  type DeltaMessage,
  decodeDelta,
  decodeTensor,
  encodeDelta,
  encodedDeltaSize,
  encodeTensor,
  MAX_TENSOR_COUNT,
} from '../../protocols/index.ts'
import {
  atOddOffset,
  bitsOf,
  buildMessage,
  createRandom,
  filledHash,
  MLP_SHAPES,
  MLP_VALUE_COUNT,
  randomBitValues,
  sameBits,
  shapeSize,
} from './fixtures.ts'

// 84 header bytes, then per tensor rank, dims and payloadLength: 6 + 4 * 9 dims + 6 * 4,
// then 4 bytes for each of the 199,210 values.
const MLP_ENCODED_BYTES = 84 + 66 + 4 * MLP_VALUE_COUNT

const CODECS: CodecSpec[] = [
  { name: 'float32' },
  { name: 'float16' },
  { name: 'int8', blockSize: 256 },
  { name: 'int8', blockSize: 7 },
  { name: 'topk', fraction: 0.01 },
  { name: 'topk', fraction: 1 },
]

/** Two tensors: shape [2] with values [1, -2], and a scalar 0.5. */
function smallMessage(): DeltaMessage {
  return {
    version: 1,
    codec: { name: 'float32' },
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
  ...[0x00, 0x00, 0x00, 0x00], // codecParam
  ...new Array(32).fill(0xa1), // specHash
  ...[0x01, 0x02, 0x03, 0x04], // round, big-endian
  ...[0x0a, 0x0b, 0x0c, 0x0d], // sampleCount, big-endian
  ...new Array(32).fill(0xb2), // baseModelHash
  ...[0x00, 0x02], // tensorCount
  0x01, // tensors[0].rank
  ...[0x00, 0x00, 0x00, 0x02], // tensors[0].dims[0]
  ...[0x00, 0x00, 0x00, 0x08], // tensors[0].payloadLength
  ...[0x00, 0x00, 0x80, 0x3f], // 1.0, little-endian
  ...[0x00, 0x00, 0x00, 0xc0], // -2.0, little-endian
  0x00, // tensors[1].rank
  ...[0x00, 0x00, 0x00, 0x04], // tensors[1].payloadLength
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

  it('rejects an invalid codec parameter', () => {
    const cases: CodecSpec[] = [
      { name: 'int8', blockSize: 0 },
      { name: 'int8', blockSize: 65_536 },
      { name: 'topk', fraction: 0 },
      { name: 'topk', fraction: 1.5 },
      { name: 'topk', fraction: 0.1234567891 },
    ]
    for (const codec of cases) {
      const error = encodeError({ ...smallMessage(), codec })
      expect(error.field, JSON.stringify(codec)).toBe('codec')
    }
  })

  it('rejects NaN under int8, naming the value', () => {
    const message = { ...smallMessage(), codec: { name: 'int8', blockSize: 4 } as const }
    message.tensors[1] = { shape: [], values: Float32Array.of(Number.NaN) }
    const error = encodeError(message)

    expect(error.field).toBe('tensors[1].values[0]')
    expect(error.message).toContain('is NaN, but int8 encodes only finite values')
  })

  it('writes codec id and parameter', () => {
    const cases: [CodecSpec, number, number][] = [
      [{ name: 'float32' }, 0, 0],
      [{ name: 'float16' }, 1, 0],
      [{ name: 'int8', blockSize: 256 }, 2, 256],
      [{ name: 'topk', fraction: 0.25 }, 3, 250_000_000],
    ]
    for (const [codec, id, param] of cases) {
      const bytes = encodeDelta({ ...smallMessage(), codec })
      const view = new DataView(bytes.buffer)
      expect(view.getUint8(5), `${codec.name} id`).toBe(id)
      expect(view.getUint32(6), `${codec.name} codecParam`).toBe(param)
    }
  })
})

describe('encodedDeltaSize', () => {
  it('counts header, rank, dims, payloadLength and values', () => {
    expect(encodedDeltaSize([])).toBe(DELTA_HEADER_BYTES)
    expect(encodedDeltaSize([[]])).toBe(DELTA_HEADER_BYTES + 1 + 4 + 4)
    expect(encodedDeltaSize([[2, 3]])).toBe(DELTA_HEADER_BYTES + 1 + 8 + 4 + 24)
    expect(encodedDeltaSize([[0, 7]])).toBe(DELTA_HEADER_BYTES + 1 + 8 + 4)
  })

  it('counts the payload of each codec', () => {
    const record = DELTA_HEADER_BYTES + 1 + 8 + 4
    expect(encodedDeltaSize([[2, 3]], { name: 'float16' })).toBe(record + 12)
    // Two blocks of 4 and 2 values: two float32 scales and six int8 values.
    expect(encodedDeltaSize([[2, 3]], { name: 'int8', blockSize: 4 })).toBe(record + 8 + 6)
    // topk:0.5 keeps ceil(0.5 * 6) = 3 indices and values.
    expect(encodedDeltaSize([[2, 3]], { name: 'topk', fraction: 0.5 })).toBe(record + 24)
    expect(encodedDeltaSize([[0, 3]], { name: 'topk', fraction: 0.5 })).toBe(record)
  })

  it('matches encodeDelta for every codec', () => {
    for (const codec of CODECS) {
      const encoded = encodeDelta(buildMessage(MLP_SHAPES, 3, codec))
      expect(encoded.byteLength, JSON.stringify(codec)).toBe(encodedDeltaSize(MLP_SHAPES, codec))
    }
  })

  it('rejects a payload beyond a u32 payloadLength', () => {
    expect(() => encodedDeltaSize([[2 ** 31, 2]])).toThrow(DeltaEncodeError)
    expect(() => encodedDeltaSize([[2 ** 31, 2]])).toThrow(
      'needs 17179869184 payload bytes with float32, but payloadLength is a u32',
    )
  })

  it('sizes a huge topk tensor', () => {
    // ceil(10^-9 * 2^32) = 5 kept values.
    const size = encodedDeltaSize([[2 ** 31, 2]], { name: 'topk', fraction: 1e-9 })

    expect(size).toBe(DELTA_HEADER_BYTES + 1 + 8 + 4 + 40)
  })

  it('rejects more values than a codec accepts', () => {
    const shapes = [[2 ** 32 - 1, 2 ** 32 - 1]]

    expect(() => encodedDeltaSize(shapes, { name: 'topk', fraction: 1e-9 })).toThrow(
      'a codec accepts at most 2^50 per tensor',
    )
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
      codec: { name: 'float32' },
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
    expect(decoded.codec).toEqual({ name: 'float32' })
    expect(decoded.specHash).toEqual(message.specHash)
    expect(decoded.round).toBe(123_456)
    expect(decoded.sampleCount).toBe(15_000)
    expect(decoded.baseModelHash).toEqual(message.baseModelHash)
    expect(decoded.tensors.length).toBe(6)
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
    const error = decodeError(SMALL_MESSAGE_BYTES.subarray(0, 44))

    expect(error.field).toBe('round')
    expect(error.offset).toBe(42)
    expect(error.message).toBe(
      'invalid delta message: round at byte offset 42 needs 4 bytes, but only 2 remain in the message',
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

  it('codecParam other than 0 for float32', () => {
    const error = decodeError(withByte(SMALL_MESSAGE_BYTES, 9, 5))

    expect(error.field).toBe('codecParam')
    expect(error.offset).toBe(6)
    expect(error.message).toContain('codecParam at byte offset 6 is 5, expected 0 for float32')
  })

  it('codecParam outside the codec range', () => {
    const cases: [number, number, string][] = [
      [2, 0, 'int8 block size'],
      [2, 65_536, 'int8 block size'],
      [3, 0, 'topk fraction'],
      [3, 1_000_000_001, 'topk fraction'],
      [1, 1, 'expected 0 for float16'],
    ]
    for (const [id, param, problem] of cases) {
      const bytes = SMALL_MESSAGE_BYTES.slice()
      bytes[5] = id
      new DataView(bytes.buffer).setUint32(6, param)
      const error = decodeError(bytes)
      expect(error.field, `codec ${id} param ${param}`).toBe('codecParam')
      expect(error.message, `codec ${id} param ${param}`).toContain(problem)
    }
  })

  it('rank 9', () => {
    const error = decodeError(withByte(SMALL_MESSAGE_BYTES, 84, 9))

    expect(error.field).toBe('tensors[0].rank')
    expect(error.message).toContain('tensors[0].rank at byte offset 84 is 9')
  })

  it('dims claiming 2^31 values', () => {
    const bytes = SMALL_MESSAGE_BYTES.slice()
    new DataView(bytes.buffer).setUint32(85, 2 ** 31) // tensors[0].dims[0]
    const error = decodeError(bytes)

    expect(error.field).toBe('tensors[0].dims')
    expect(error.offset).toBe(85)
    expect(error.message).toContain(
      `[2147483648] describe 2147483648 values, but the message may decode to at most ${DEFAULT_MAX_DELTA_VALUES} more values`,
    )
  })

  it('dims whose product exceeds 2^53', () => {
    const bytes = Uint8Array.from([
      ...SMALL_MESSAGE_BYTES.subarray(0, 82),
      ...[0x00, 0x01], // tensorCount
      0x08, // rank
      ...new Array(32).fill(0xff), // eight dims of 2^32 - 1
      ...[0x00, 0x00, 0x00, 0x00], // payloadLength
    ])
    const error = decodeError(bytes)

    expect(error.field).toBe('tensors[0].dims')
  })

  it('a tiny topk payload describing 2^31 values', () => {
    // topk:0.000000001 keeps ceil(2^31 / 10^9) = 3 values, so the payload is only 24 bytes,
    // but decoding it would allocate 8 GiB.
    const codec = { name: 'topk', fraction: 1e-9 } as const
    const message = { ...smallMessage(), codec, tensors: [] }
    const bytes = Uint8Array.from([
      ...encodeDelta(message).subarray(0, 82),
      ...[0x00, 0x01], // tensorCount
      0x01, // rank
      ...[0x80, 0x00, 0x00, 0x00], // dims[0] = 2^31
      ...[0x00, 0x00, 0x00, 0x18], // payloadLength 24
      ...encodeTensor(Float32Array.of(3, 2, 1), { name: 'topk', fraction: 1 }),
    ])
    const error = decodeError(bytes)

    expect(error.field).toBe('tensors[0].dims')
    expect(error.message).toContain('describe 2147483648 values')
  })

  it('more values than maxValueCount, summed over tensors', () => {
    const bytes = encodeDelta(buildMessage(MLP_SHAPES))
    let error: unknown
    try {
      decodeDelta(bytes, { maxValueCount: MLP_VALUE_COUNT - 1 })
    } catch (caught) {
      error = caught
    }

    expect(error).toBeInstanceOf(DeltaDecodeError)
    expect((error as DeltaDecodeError).field).toBe('tensors[5].dims')
    expect(decodeDelta(bytes, { maxValueCount: MLP_VALUE_COUNT }).tensors.length).toBe(6)
  })

  it('an invalid maxValueCount option', () => {
    expect(() => decodeDelta(SMALL_MESSAGE_BYTES, { maxValueCount: -1 })).toThrow(RangeError)
    expect(() => decodeDelta(SMALL_MESSAGE_BYTES, { maxValueCount: 1.5 })).toThrow(
      'Expected maxValueCount to be an integer >= 0, got 1.5',
    )
  })

  it('a payloadLength beyond the message end', () => {
    const bytes = SMALL_MESSAGE_BYTES.slice()
    new DataView(bytes.buffer).setUint32(89, 1000) // tensors[0].payloadLength
    const error = decodeError(bytes)

    expect(error.field).toBe('tensors[0].payloadLength')
    expect(error.offset).toBe(89)
    expect(error.message).toContain('is 1000, but only 17 bytes remain')
  })

  it('a payloadLength that disagrees with the dims', () => {
    const bytes = SMALL_MESSAGE_BYTES.slice()
    new DataView(bytes.buffer).setUint32(85, 3) // tensors[0].dims[0]
    const error = decodeError(bytes)

    expect(error.field).toBe('tensors[0].payloadLength')
    expect(error.offset).toBe(89)
    expect(error.message).toContain('is 8, but float32 needs 12 bytes for 3 values')
  })

  it('a payloadLength that disagrees with the codec', () => {
    // The float32 payload of 2 values is 8 bytes, but float16 needs only 4 for that tensor.
    const error = decodeError(withByte(SMALL_MESSAGE_BYTES, 5, 1))

    expect(error.field).toBe('tensors[0].payloadLength')
    expect(error.message).toContain('is 8, but float16 needs 4 bytes for 2 values')
  })

  it('a value that is not a Uint8Array', () => {
    const error = decodeError([1, 2, 3] as unknown as Uint8Array)

    expect(error.field).toBe('message')
  })
})

describe('delta codecs', () => {
  it('round-trip MLP deltas with each codec', () => {
    for (const codec of CODECS) {
      const label = JSON.stringify(codec)
      const message = buildMessage(MLP_SHAPES, 11, codec)
      const decoded = decodeDelta(atOddOffset(encodeDelta(message)))

      expect(decoded.codec, label).toEqual(codec)
      expect(decoded.round, label).toBe(5)
      expect(decoded.sampleCount, label).toBe(100)
      expect(decoded.tensors.map((tensor) => tensor.shape)).toEqual(MLP_SHAPES)
      message.tensors.forEach((tensor, index) => {
        // The decoded values are exactly what the codec makes of the sent values.
        const expected = decodeTensor(
          encodeTensor(tensor.values, codec),
          tensor.values.length,
          codec,
        )
        const actual = decoded.tensors[index]?.values
        expect(sameBits(actual, expected), `${label} tensors[${index}]`).toBe(true)
      })
    }
  })

  it('keep float16 values within 2^-11', () => {
    const message = buildMessage(MLP_SHAPES, 12, { name: 'float16' })
    const decoded = decodeDelta(encodeDelta(message))
    const sent = message.tensors[0]?.values ?? new Float32Array()
    const received = decoded.tensors[0]?.values ?? new Float32Array()
    let worst = 0
    for (let i = 0; i < sent.length; i++) {
      const value = sent[i] as number
      // Below 2^-14 float16 values are subnormal, so there the relative bound does not apply.
      const error = Math.abs((received[i] as number) - value)
      worst = Math.max(worst, Math.abs(value) >= 2 ** -14 ? error / Math.abs(value) : 0)
    }

    expect(worst).toBeLessThanOrEqual(2 ** -11)
  })

  it('shrinks the MLP delta below 27% with int8', () => {
    const float32Bytes = encodedDeltaSize(MLP_SHAPES)
    const int8Bytes = encodeDelta(
      buildMessage(MLP_SHAPES, 4, { name: 'int8', blockSize: 256 }),
    ).byteLength
    const ratio = int8Bytes / float32Bytes

    expect(ratio, `int8 ${int8Bytes} / float32 ${float32Bytes} bytes, bound 0.27`).toBeLessThan(
      0.27,
    )
  })

  it('report int8 payload errors at their byte offset', () => {
    const codec = { name: 'int8', blockSize: 4 } as const
    const bytes = encodeDelta({ ...smallMessage(), codec })
    // tensors[0] payload starts after rank, one dim and payloadLength: 84 + 1 + 4 + 4.
    new DataView(bytes.buffer).setFloat32(93, Number.NaN, true)
    const error = decodeError(bytes)

    expect(error.field).toBe('tensors[0].payload.scales[0]')
    expect(error.offset).toBe(93)
    expect(error.message).toContain('is NaN, expected a finite float32 >= 0')
  })

  it('report topk indices out of range', () => {
    const codec = { name: 'topk', fraction: 1 } as const
    const bytes = encodeDelta({ ...smallMessage(), codec })
    // tensors[0] keeps both values: indices at 93 and 97, values at 101 and 105.
    new DataView(bytes.buffer).setUint32(97, 2)
    const error = decodeError(bytes)

    expect(error.field).toBe('tensors[0].payload.indices[1]')
    expect(error.offset).toBe(97)
    expect(error.message).toContain('is 2, but the tensor has only 2 values')
  })

  it('reject every truncation of a topk message', () => {
    const bytes = encodeDelta({ ...smallMessage(), codec: { name: 'topk', fraction: 0.5 } })
    for (let length = 0; length < bytes.length; length++) {
      const truncated = bytes.subarray(0, length)
      expect(() => decodeDelta(truncated), `length ${length}`).toThrow(DeltaDecodeError)
    }
  })
})
