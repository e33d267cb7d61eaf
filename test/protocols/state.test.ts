import { describe, expect, it } from 'vitest'
import { StateDecodeError } from '../../protocols/errors.ts'
import {
  DEFAULT_STATE_CHUNK_BYTES,
  decodeStateHeader,
  decodeStateRequest,
  encodeStateChunks,
  encodeStateHeader,
  encodeStateRequest,
  MAX_STATE_CHUNK_BYTES,
  STATE_REQUEST_BYTES,
  type StateHeaderInit,
  stateModelBytes,
} from '../../protocols/state.ts'
import { StateChunkAssembler } from '../../protocols/state-chunks.ts'
import {
  bitsOf,
  createRandom,
  filledHash,
  MLP_SHAPES,
  randomBitValues,
  sameBits,
  shapeSize,
} from './fixtures.ts'

const REQUEST_BYTES = Uint8Array.from([
  ...[0x44, 0x4c, 0x53, 0x31], // magic "DLS1"
  0x01, // version
  ...new Array(32).fill(0xa1), // specHash
  0x01, // kind: full model
])

/** Shapes [2, 3] and [] (a scalar): 7 values, 28 weight bytes. */
const SMALL_HEADER: StateHeaderInit = {
  status: 'ok',
  round: 0x01020304,
  modelHash: filledHash(0xb2),
  shapes: [[2, 3], []],
}

const SMALL_HEADER_BYTES = Uint8Array.from([
  0x00, // status ok
  ...[0x01, 0x02, 0x03, 0x04], // round, big-endian
  ...new Array(32).fill(0xb2), // modelHash
  ...[0x00, 0x02], // tensorCount
  0x02, // shapes[0].rank
  ...[0x00, 0x00, 0x00, 0x02], // shapes[0].dims[0]
  ...[0x00, 0x00, 0x00, 0x03], // shapes[0].dims[1]
  0x00, // shapes[1].rank
  ...[0x00, 0x00, 0x00, 0x1c], // totalBytes 28
])

/** Copies `bytes` to offset `offset` of a larger buffer and returns the view there. */
function atOffset(bytes: Uint8Array, offset: number): Uint8Array {
  const shifted = new Uint8Array(bytes.byteLength + offset + 5)
  shifted.set(bytes, offset)
  return shifted.subarray(offset, offset + bytes.byteLength)
}

/** Runs `decode` and returns the StateDecodeError it throws. */
function decodeError(decode: () => unknown): StateDecodeError {
  try {
    decode()
  } catch (error) {
    if (error instanceof StateDecodeError) return error
    throw new Error(`expected a StateDecodeError, got ${String(error)}`)
  }
  throw new Error('expected the decoder to throw, but it returned')
}

describe('state request frame', () => {
  it('encodes the documented layout', () => {
    const bytes = encodeStateRequest({ version: 1, specHash: filledHash(0xa1), kind: 'model' })
    expect(bytes).toEqual(REQUEST_BYTES)
    expect(bytes.byteLength).toBe(STATE_REQUEST_BYTES)
  })

  it('round-trips at odd byte offsets', () => {
    for (const kind of ['status', 'model'] as const) {
      const bytes = encodeStateRequest({ version: 1, specHash: filledHash(0x5a), kind })
      for (const offset of [1, 3, 7]) {
        const decoded = decodeStateRequest(atOffset(bytes, offset))
        expect(decoded.kind).toBe(kind)
        expect(decoded.version).toBe(1)
        expect(decoded.specHash).toEqual(filledHash(0x5a))
      }
    }
  })

  it('rejects truncated and padded frames', () => {
    for (const length of [0, 4, 37]) {
      const error = decodeError(() => decodeStateRequest(REQUEST_BYTES.subarray(0, length)))
      expect(error.name).toBe('StateDecodeError')
      expect(error.frame).toBe('request')
      expect(error.field).toBe('frame')
    }
    const padded = new Uint8Array(39)
    padded.set(REQUEST_BYTES)
    expect(decodeError(() => decodeStateRequest(padded)).message).toMatch(/has 39 bytes/)
  })

  it('names an invalid magic, version or kind', () => {
    const cases: Array<[number, number, string]> = [
      [2, 0x44, 'magic'],
      [4, 2, 'version'],
      [37, 2, 'kind'],
    ]
    for (const [offset, value, field] of cases) {
      const bytes = REQUEST_BYTES.slice()
      bytes[offset] = value
      const error = decodeError(() => decodeStateRequest(atOffset(bytes, 1)))
      expect(error.field).toBe(field)
      expect(error.offset).toBe(field === 'magic' ? 0 : offset)
    }
  })

  it('rejects a hash of the wrong length when encoding', () => {
    expect(() =>
      encodeStateRequest({ version: 1, specHash: new Uint8Array(31), kind: 'status' }),
    ).toThrow(/specHash has 31 bytes/)
  })
})

describe('state header frame', () => {
  it('encodes the documented layout', () => {
    expect(encodeStateHeader(SMALL_HEADER)).toEqual(SMALL_HEADER_BYTES)
  })

  it('round-trips at odd byte offsets', () => {
    const header = { ...SMALL_HEADER, shapes: MLP_SHAPES }
    const bytes = encodeStateHeader(header)
    for (const offset of [1, 3, 5]) {
      const decoded = decodeStateHeader(atOffset(bytes, offset))
      expect(decoded.status).toBe('ok')
      expect(decoded.round).toBe(0x01020304)
      expect(decoded.modelHash).toEqual(filledHash(0xb2))
      expect(decoded.shapes).toEqual(MLP_SHAPES)
      expect(decoded.totalBytes).toBe(
        4 * MLP_SHAPES.reduce((sum, shape) => sum + shapeSize(shape), 0),
      )
    }
  })

  it('carries the rejection statuses', () => {
    for (const status of ['wrong-spec', 'busy'] as const) {
      const bytes = encodeStateHeader({ status, round: 0, modelHash: filledHash(0), shapes: [] })
      expect(bytes.byteLength).toBe(43)
      expect(decodeStateHeader(atOffset(bytes, 3)).status).toBe(status)
    }
  })

  it('rejects every truncation', () => {
    for (let length = 0; length < SMALL_HEADER_BYTES.byteLength; length++) {
      const error = decodeError(() =>
        decodeStateHeader(atOffset(SMALL_HEADER_BYTES.subarray(0, length), 1)),
      )
      expect(error.frame).toBe('header')
      expect(error.message).toMatch(/needs \d+ bytes, but only \d+ remain/)
    }
  })

  it('rejects trailing bytes', () => {
    const padded = new Uint8Array(SMALL_HEADER_BYTES.byteLength + 1)
    padded.set(SMALL_HEADER_BYTES)
    const error = decodeError(() => decodeStateHeader(padded))
    expect(error.field).toBe('trailing data')
    expect(error.offset).toBe(SMALL_HEADER_BYTES.byteLength)
  })

  it('rejects an unknown status', () => {
    const bytes = SMALL_HEADER_BYTES.slice()
    bytes[0] = 3
    const error = decodeError(() => decodeStateHeader(bytes))
    expect(error.field).toBe('status')
    expect(error.message).toMatch(/status at byte offset 0 is 3/)
  })

  it('rejects a rank above 8', () => {
    const bytes = SMALL_HEADER_BYTES.slice()
    bytes[39] = 9
    const error = decodeError(() => decodeStateHeader(bytes))
    expect(error.field).toBe('shapes[0].rank')
    expect(error.offset).toBe(39)
  })

  it('rejects a totalBytes that disagrees with the shapes', () => {
    const bytes = SMALL_HEADER_BYTES.slice()
    bytes[bytes.length - 1] = 0x20
    const error = decodeError(() => decodeStateHeader(bytes))
    expect(error.field).toBe('totalBytes')
    expect(error.offset).toBe(49)
    expect(error.message).toMatch(/is 32, but the 2 shapes describe 7 float32 values/)
  })

  it('rejects a round and shapes out of range when encoding', () => {
    expect(() => encodeStateHeader({ ...SMALL_HEADER, round: 2 ** 32 })).toThrow(RangeError)
    expect(() => encodeStateHeader({ ...SMALL_HEADER, round: -1 })).toThrow(/round is -1/)
    expect(() =>
      encodeStateHeader({ ...SMALL_HEADER, shapes: [[1, 2, 3, 4, 5, 6, 7, 8, 9]] }),
    ).toThrow(/rank 9/)
    expect(() => encodeStateHeader({ ...SMALL_HEADER, shapes: [[2 ** 16, 2 ** 14]] })).toThrow(
      /totalBytes is a u32/,
    )
  })
})

describe('state chunk frames', () => {
  it('split the weights in tensor order', () => {
    const weights = [Float32Array.of(1, 2, 3), Float32Array.of(4)]
    const chunks = [...encodeStateChunks(weights, 8)]
    expect(chunks.map((chunk) => chunk.byteLength)).toEqual([8, 4, 4])
    // 1.0 and 2.0 as little-endian float32.
    expect([...(chunks[0] as Uint8Array)]).toEqual([0, 0, 0x80, 0x3f, 0, 0, 0, 0x40])
  })

  it('round-trip bit patterns through odd chunk sizes', () => {
    const random = createRandom(7)
    const cases: Array<[number[][], number]> = [
      [[[3, 5], [], [7]], 1],
      [[[3, 5], [], [7]], 7],
      [MLP_SHAPES, 4093],
      [MLP_SHAPES, DEFAULT_STATE_CHUNK_BYTES],
    ]
    for (const [shapes, chunkBytes] of cases) {
      const weights = shapes.map((shape) => randomBitValues(shapeSize(shape), random))
      const assembler = new StateChunkAssembler(shapes)
      let largestChunk = 0
      for (const chunk of encodeStateChunks(weights, chunkBytes)) {
        largestChunk = Math.max(largestChunk, chunk.byteLength)
        assembler.add(atOffset(chunk, 3))
      }
      expect(largestChunk).toBeLessThanOrEqual(chunkBytes)
      expect(assembler.complete).toBe(true)
      const received = assembler.weights()
      expect(received.map((values) => values.length)).toEqual(shapes.map(shapeSize))
      for (const [index, values] of weights.entries()) {
        expect(sameBits(received[index], values)).toBe(true)
      }
    }
  })

  it('reject a chunk past totalBytes', () => {
    const assembler = new StateChunkAssembler([[2]])
    assembler.add(new Uint8Array(5))
    const error = decodeError(() => assembler.add(new Uint8Array(4)))
    expect(error.frame).toBe('chunk')
    expect(error.offset).toBe(5)
    expect(error.message).toMatch(/has 4 bytes, but only 3 of the 8 weight bytes remain/)
  })

  it('reject an empty chunk', () => {
    const assembler = new StateChunkAssembler([[2]])
    expect(decodeError(() => assembler.add(new Uint8Array(0))).message).toMatch(/is empty/)
  })

  it('report truncated weights', () => {
    const assembler = new StateChunkAssembler([[2], [3]])
    assembler.add(new Uint8Array(19))
    expect(assembler.complete).toBe(false)
    expect(assembler.receivedBytes).toBe(19)
    const error = decodeError(() => assembler.weights())
    expect(error.message).toMatch(/ends after 19 of 20 weight bytes/)
  })

  it('return aligned views for a scalar', () => {
    const assembler = new StateChunkAssembler([[], [3]])
    const source = [Float32Array.of(-0), Float32Array.of(1, Number.NaN, -3)]
    for (const chunk of encodeStateChunks(source, 5)) assembler.add(chunk)
    const [scalar, vector] = assembler.weights()
    expect(bitsOf(scalar as Float32Array)).toEqual(bitsOf(source[0] as Float32Array))
    expect(sameBits(vector, source[1])).toBe(true)
    expect(stateModelBytes([[], [3]])).toBe(16)
  })

  it('reject a chunk size out of range', () => {
    expect(() => encodeStateChunks([], 0)).toThrow(/`chunkBytes` to be an integer from 1/)
    expect(() => encodeStateChunks([], MAX_STATE_CHUNK_BYTES + 1)).toThrow(RangeError)
    expect(() => encodeStateChunks([], 1.5)).toThrow(/got 1.5/)
  })
})
