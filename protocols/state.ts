/**
 * Version-1 state sync frames, exchanged on `/dlearn/state/1.0.0` when a peer that joins late,
 * or falls more than one round behind, downloads the current model from another peer.
 *
 * Every frame is prefixed with its byte length as an unsigned varint, as it-length-prefixed
 * writes it. The requester sends one request frame and closes its side for writing. The
 * responder sends one header frame, then, for a full model request with status 0, chunk frames
 * that carry the weights, and closes the stream.
 *
 * Request frame. Integers are big-endian.
 *
 * | offset | size | field    | contents                               |
 * | -----: | :--- | :------- | :------------------------------------- |
 * |      0 | 4    | magic    | ASCII `DLS1` (0x44 0x4c 0x53 0x31)     |
 * |      4 | 1    | version  | u8, 1                                  |
 * |      5 | 32   | specHash | SHA-256 of the requester's swarm spec  |
 * |     37 | 1    | kind     | u8, 0 = status only, 1 = full model    |
 *
 * The request frame is always 38 bytes long.
 *
 * Header frame, the first frame of the response. Integers are big-endian.
 *
 * | offset | size        | field       | contents                                              |
 * | -----: | :---------- | :---------- | :---------------------------------------------------- |
 * |      0 | 1           | status      | u8, 0 = ok, 1 = wrong spec, 2 = busy or not ready     |
 * |      1 | 4           | round       | u32, round that starts from these weights             |
 * |      5 | 32          | modelHash   | SHA-256 of the weights' float32 bytes in tensor order |
 * |     37 | 2           | tensorCount | u16, number of tensor shapes that follow              |
 * |     39 | per tensor: |             |                                                       |
 * |        | 1           | rank        | u8, 0..8                                              |
 * |        | 4 * rank    | dims        | u32 each                                              |
 * |  n - 4 | 4           | totalBytes  | u32, 4 * the number of values of all tensors          |
 *
 * A header of n bytes has n = 43 + sum over tensors of (1 + 4 * rank). A header with a status
 * other than 0 carries no model: its round, modelHash and shapes have no meaning, and
 * encodeStateHeader callers in this project send zeros and no shapes.
 *
 * Chunk frames follow the header only when the status is 0 and the request asked for the full
 * model. Their payloads, concatenated, are the weights: the float32 values of every tensor in
 * header order, each tensor in row-major order, as little-endian IEEE 754 binary32. Each chunk
 * contains 1 to chunkBytes bytes, and chunk boundaries carry no meaning. The chunks end once
 * totalBytes bytes have been sent.
 */

import { bytesEqual, toHex } from './bytes.ts'
import { StateDecodeError } from './errors.ts'

/** Version of the request frame layout. */
export const STATE_SYNC_VERSION = 1

/** Byte length of every request frame. */
export const STATE_REQUEST_BYTES = 38

/** Payload bytes per chunk frame that a responder sends. @default 256 KiB */
export const DEFAULT_STATE_CHUNK_BYTES = 256 * 1024

/** Largest chunk payload a responder may send. */
export const MAX_STATE_CHUNK_BYTES = 4 * 1024 * 1024

/**
 * Largest frame a requester accepts. It fits the largest chunk, and the largest header
 * (65,535 tensors of rank 8, 2,162,698 bytes).
 */
export const MAX_STATE_FRAME_BYTES = MAX_STATE_CHUNK_BYTES

/** Byte length of specHash and modelHash. */
export const STATE_HASH_BYTES = 32

/** Maximum tensor rank that the header allows. */
export const MAX_STATE_TENSOR_RANK = 8

/** Maximum number of tensors that the u16 tensorCount field can encode. */
export const MAX_STATE_TENSOR_COUNT = 0xffff

/** Scope of a request: the header alone, or the header followed by the weights. */
export type StateRequestKind = 'status' | 'model'

/** A decoded version-1 request frame. */
export interface StateRequest {
  version: 1
  /** SHA-256 of the requester's swarm spec, 32 bytes. */
  specHash: Uint8Array
  kind: StateRequestKind
}

/** Outcome of a request: `wrong-spec` and `busy` responses carry no model. */
export type StateStatus = 'ok' | 'wrong-spec' | 'busy'

/** A response header, without totalBytes, which the encoder computes from the shapes. */
export interface StateHeaderInit {
  status: StateStatus
  /** Round that starts from the weights, a u32. */
  round: number
  /** SHA-256 of the weights' float32 bytes in tensor order, 32 bytes. */
  modelHash: Uint8Array
  shapes: number[][]
}

/** A decoded response header. */
export interface StateHeader extends StateHeaderInit {
  /** Byte length of the weights that the chunk frames carry, 4 * the number of values. */
  totalBytes: number
}

const MAGIC = Uint8Array.of(0x44, 0x4c, 0x53, 0x31)
const MAX_U32 = 0xffff_ffff
export const FLOAT32_BYTES = 4
const HEADER_FIXED_BYTES = 43
const REQUEST_KINDS: readonly StateRequestKind[] = ['status', 'model']
const STATUSES: readonly StateStatus[] = ['ok', 'wrong-spec', 'busy']

// Typed arrays use the host byte order, but the layout fixes float values as little-endian.
export const HOST_IS_LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1

/**
 * Encodes a request frame. Throws RangeError for a specHash that is not 32 bytes or an unknown
 * kind.
 */
export function encodeStateRequest(request: StateRequest): Uint8Array {
  checkHash(request.specHash, 'specHash')
  const kind = REQUEST_KINDS.indexOf(request.kind)
  if (kind < 0) {
    throw new RangeError(
      `request kind ${JSON.stringify(request.kind)} is unknown, expected "status" or "model"`,
    )
  }
  const bytes = new Uint8Array(STATE_REQUEST_BYTES)
  bytes.set(MAGIC, 0)
  bytes[4] = STATE_SYNC_VERSION
  bytes.set(request.specHash, 5)
  bytes[37] = kind
  return bytes
}

/**
 * Decodes a request frame at any byteOffset. Throws StateDecodeError naming the invalid field
 * for a frame that is not 38 bytes or has an unknown magic, version or kind.
 */
export function decodeStateRequest(bytes: Uint8Array): StateRequest {
  if (bytes.byteLength !== STATE_REQUEST_BYTES) {
    throw new StateDecodeError(
      'request',
      'frame',
      0,
      `has ${bytes.byteLength} bytes, expected ${STATE_REQUEST_BYTES}`,
    )
  }
  const magic = bytes.subarray(0, MAGIC.length)
  if (!bytesEqual(magic, MAGIC)) {
    throw new StateDecodeError(
      'request',
      'magic',
      0,
      `is ${toHex(magic, ' ')}, expected 44 4c 53 31 ("DLS1")`,
    )
  }
  const version = bytes[4] as number
  if (version !== STATE_SYNC_VERSION) {
    throw new StateDecodeError(
      'request',
      'version',
      4,
      `is ${version}, but only version ${STATE_SYNC_VERSION} is supported`,
    )
  }
  const kindCode = bytes[37] as number
  const kind = REQUEST_KINDS[kindCode]
  if (kind === undefined) {
    throw new StateDecodeError('request', 'kind', 37, `is ${kindCode}, expected 0 or 1`)
  }
  return { version: 1, specHash: bytes.slice(5, 5 + STATE_HASH_BYTES), kind }
}

/**
 * Computes the byte length of the weights of tensors with these shapes, 4 * the number of
 * values. Throws RangeError for a shape the header cannot carry.
 */
export function stateModelBytes(shapes: number[][]): number {
  let values = 0
  shapes.forEach((shape, index) => {
    values += checkShape(shape, `shapes[${index}]`)
  })
  return values * FLOAT32_BYTES
}

/**
 * Encodes a response header. totalBytes is computed from the shapes. Throws RangeError for a
 * field out of its range, a modelHash that is not 32 bytes, a shape the layout cannot carry,
 * or weights of 4 GiB or more, which totalBytes cannot count.
 */
export function encodeStateHeader(header: StateHeaderInit): Uint8Array {
  const status = STATUSES.indexOf(header.status)
  if (status < 0) {
    throw new RangeError(
      `status ${JSON.stringify(header.status)} is unknown, expected "ok", "wrong-spec" or "busy"`,
    )
  }
  checkUint32(header.round, 'round')
  checkHash(header.modelHash, 'modelHash')
  if (header.shapes.length > MAX_STATE_TENSOR_COUNT) {
    throw new RangeError(
      `shapes has ${header.shapes.length} entries, but tensorCount is a u16 and allows at most ${MAX_STATE_TENSOR_COUNT}`,
    )
  }
  const totalBytes = stateModelBytes(header.shapes)
  if (totalBytes > MAX_U32) {
    throw new RangeError(
      `the weights have ${totalBytes} bytes, but totalBytes is a u32 and allows at most ${MAX_U32}`,
    )
  }

  let size = HEADER_FIXED_BYTES
  for (const shape of header.shapes) size += 1 + 4 * shape.length
  const bytes = new Uint8Array(size)
  const view = new DataView(bytes.buffer)
  view.setUint8(0, status)
  view.setUint32(1, header.round)
  bytes.set(header.modelHash, 5)
  view.setUint16(37, header.shapes.length)
  let offset = 39
  for (const shape of header.shapes) {
    view.setUint8(offset, shape.length)
    offset += 1
    for (const dim of shape) {
      view.setUint32(offset, dim)
      offset += 4
    }
  }
  view.setUint32(offset, totalBytes)
  return bytes
}

/**
 * Decodes a response header at any byteOffset. Throws StateDecodeError naming the invalid field
 * when the frame ends early or has trailing bytes, or carries an unknown status, a rank above
 * 8, or a totalBytes that differs from 4 * the number of values of the shapes.
 */
export function decodeStateHeader(bytes: Uint8Array): StateHeader {
  const reader = new FrameReader(bytes)
  const status = STATUSES[reader.readUint8('status')]
  if (status === undefined) {
    throw new StateDecodeError('header', 'status', 0, `is ${bytes[0]}, expected 0, 1 or 2`)
  }
  const round = reader.readUint32('round')
  const modelHash = reader.copyBytes(STATE_HASH_BYTES, 'modelHash')
  const tensorCount = reader.readUint16('tensorCount')

  const shapes: number[][] = []
  let values = 0
  for (let index = 0; index < tensorCount; index++) {
    const rankOffset = reader.offset
    const rank = reader.readUint8(`shapes[${index}].rank`)
    if (rank > MAX_STATE_TENSOR_RANK) {
      throw new StateDecodeError(
        'header',
        `shapes[${index}].rank`,
        rankOffset,
        `is ${rank}, but the maximum rank is ${MAX_STATE_TENSOR_RANK}`,
      )
    }
    const shape: number[] = []
    for (let axis = 0; axis < rank; axis++) {
      shape.push(reader.readUint32(`shapes[${index}].dims[${axis}]`))
    }
    shapes.push(shape)
    // The sum can lose precision above 2^53, but then it exceeds any u32 totalBytes anyway.
    values += product(shape)
  }

  const totalBytesOffset = reader.offset
  const totalBytes = reader.readUint32('totalBytes')
  if (totalBytes !== values * FLOAT32_BYTES) {
    throw new StateDecodeError(
      'header',
      'totalBytes',
      totalBytesOffset,
      `is ${totalBytes}, but the ${tensorCount} shapes describe ${values} float32 values (${values * FLOAT32_BYTES} bytes)`,
    )
  }

  if (reader.remaining() > 0) {
    throw new StateDecodeError(
      'header',
      'trailing data',
      reader.offset,
      `has ${reader.remaining()} unexpected bytes after totalBytes`,
    )
  }
  return { status, round, modelHash, shapes, totalBytes }
}

/**
 * Splits the weights into chunk payloads of at most `chunkBytes` bytes each, in tensor order,
 * as little-endian float32. On a little-endian host the chunks are views of the weights, so
 * the weights must not change until the chunks are sent. Throws RangeError for a chunkBytes
 * that is not an integer from 1 to MAX_STATE_CHUNK_BYTES.
 */
export function encodeStateChunks(
  weights: Float32Array[],
  chunkBytes: number = DEFAULT_STATE_CHUNK_BYTES,
): Generator<Uint8Array, void, undefined> {
  checkChunkBytes(chunkBytes)
  return generateChunks(weights, chunkBytes)
}

function* generateChunks(
  weights: Float32Array[],
  chunkBytes: number,
): Generator<Uint8Array, void, undefined> {
  for (const values of weights) {
    const view = new Uint8Array(values.buffer, values.byteOffset, values.byteLength)
    // The swap works on whole tensors because a chunk may end inside a float value.
    const bytes = HOST_IS_LITTLE_ENDIAN ? view : swapFloat32ByteOrder(view.slice())
    for (let start = 0; start < bytes.byteLength; start += chunkBytes) {
      yield bytes.subarray(start, Math.min(start + chunkBytes, bytes.byteLength))
    }
  }
}

/** Sequential reader of a header frame that checks every length before reading. */
class FrameReader {
  private readonly bytes: Uint8Array
  private readonly view: DataView
  offset = 0

  constructor(bytes: Uint8Array) {
    this.bytes = bytes
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  }

  remaining(): number {
    return this.bytes.byteLength - this.offset
  }

  readUint8(field: string): number {
    this.require(1, field)
    const value = this.view.getUint8(this.offset)
    this.offset += 1
    return value
  }

  readUint16(field: string): number {
    this.require(2, field)
    const value = this.view.getUint16(this.offset)
    this.offset += 2
    return value
  }

  readUint32(field: string): number {
    this.require(4, field)
    const value = this.view.getUint32(this.offset)
    this.offset += 4
    return value
  }

  copyBytes(length: number, field: string): Uint8Array {
    this.require(length, field)
    const copy = this.bytes.slice(this.offset, this.offset + length)
    this.offset += length
    return copy
  }

  private require(length: number, field: string): void {
    if (length > this.remaining()) {
      throw new StateDecodeError(
        'header',
        field,
        this.offset,
        `needs ${length} bytes, but only ${this.remaining()} remain in the frame`,
      )
    }
  }
}

function checkChunkBytes(chunkBytes: number): void {
  if (!Number.isInteger(chunkBytes) || chunkBytes < 1 || chunkBytes > MAX_STATE_CHUNK_BYTES) {
    throw new RangeError(
      `Expected \`chunkBytes\` to be an integer from 1 to ${MAX_STATE_CHUNK_BYTES}, got ${chunkBytes}`,
    )
  }
}

/** Validates a shape against the header layout and returns its number of values. */
function checkShape(shape: number[], field: string): number {
  if (!Array.isArray(shape)) {
    throw new RangeError(`${field} is not an array`)
  }
  if (shape.length > MAX_STATE_TENSOR_RANK) {
    throw new RangeError(
      `${field} has rank ${shape.length}, but the maximum rank is ${MAX_STATE_TENSOR_RANK}`,
    )
  }
  shape.forEach((dim, axis) => {
    checkUint32(dim, `${field}[${axis}]`)
  })
  return product(shape)
}

function checkUint32(value: number, field: string): void {
  if (!Number.isInteger(value) || value < 0 || value > MAX_U32) {
    throw new RangeError(`${field} is ${value}, expected an integer from 0 to ${MAX_U32}`)
  }
}

function checkHash(hash: Uint8Array, field: string): void {
  if (!(hash instanceof Uint8Array) || hash.byteLength !== STATE_HASH_BYTES) {
    throw new RangeError(
      `${field} has ${hash?.byteLength} bytes, expected a ${STATE_HASH_BYTES}-byte SHA-256 digest`,
    )
  }
}

export function product(shape: number[]): number {
  let result = 1
  for (const dim of shape) result *= dim
  return result
}

/** Reverses each 4-byte group in place, converting float32 values between byte orders. */
export function swapFloat32ByteOrder(bytes: Uint8Array): Uint8Array {
  for (let i = 0; i + 3 < bytes.length; i += 4) {
    const b0 = bytes[i] as number
    const b1 = bytes[i + 1] as number
    bytes[i] = bytes[i + 3] as number
    bytes[i + 1] = bytes[i + 2] as number
    bytes[i + 2] = b1
    bytes[i + 3] = b0
  }
  return bytes
}
