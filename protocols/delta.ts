/**
 * Version-1 delta message: the weight change one peer trained in one round, as published on
 * the delta topic.
 *
 * Layout. Integers are big-endian, float values are little-endian IEEE 754 binary32.
 *
 * | offset | size         | field         | contents                                          |
 * | -----: | :----------- | :------------ | :------------------------------------------------ |
 * |      0 | 4            | magic         | ASCII `DLD1` (0x44 0x4c 0x44 0x31)                |
 * |      4 | 1            | version       | u8, 1                                             |
 * |      5 | 1            | codec         | u8, 0 = float32 (the only codec so far)           |
 * |      6 | 32           | specHash      | SHA-256 of the swarm spec                         |
 * |     38 | 4            | round         | u32, training round the delta belongs to          |
 * |     42 | 4            | sampleCount   | u32, training samples behind the delta            |
 * |     46 | 32           | baseModelHash | SHA-256 of the model the delta was trained from   |
 * |     78 | 2            | tensorCount   | u16, number of tensor records that follow         |
 * |     80 | per tensor:  |               |                                                   |
 * |        | 1            | rank          | u8, 0..8                                          |
 * |        | 4 * rank     | dims          | u32 each                                          |
 * |        | 4 * prod     | values        | prod(dims) float32 values in row-major order      |
 *
 * A rank-0 tensor is a scalar with one value. The encoded size is
 * 80 + sum over tensors of (1 + 4 * rank + 4 * prod(dims)) bytes.
 */

import { bytesEqual, toHex } from './bytes.ts'
import { DELTA_MESSAGE_VERSION } from './constants.ts'
import { DeltaDecodeError, DeltaEncodeError } from './errors.ts'

/** One tensor of a delta, with its values in row-major order. */
export interface DeltaTensor {
  shape: number[]
  values: Float32Array
}

/** A decoded version-1 delta message. */
export interface DeltaMessage {
  version: 1
  codec: 'float32'
  /** SHA-256 of the swarm spec, 32 bytes. */
  specHash: Uint8Array
  round: number
  /** Number of training samples the delta was computed from. */
  sampleCount: number
  /** SHA-256 of the model the delta was trained from, 32 bytes. */
  baseModelHash: Uint8Array
  tensors: DeltaTensor[]
}

/** Byte length of the fixed fields before the first tensor record. */
export const DELTA_HEADER_BYTES = 80
/** Byte length of specHash and baseModelHash. */
export const DELTA_HASH_BYTES = 32
/** Maximum tensor rank the layout allows. */
export const MAX_TENSOR_RANK = 8
/** Maximum number of tensors that the u16 tensorCount field can encode. */
export const MAX_TENSOR_COUNT = 0xffff

const MAGIC = Uint8Array.of(0x44, 0x4c, 0x44, 0x31)
const CODEC_FLOAT32 = 0
const MAX_U32 = 0xffff_ffff
const FLOAT32_BYTES = 4

// Typed arrays use the host byte order, but the layout fixes float values as little-endian.
const HOST_IS_LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1

/**
 * Computes the encoded byte length of a delta message whose tensors have these shapes.
 * Throws DeltaEncodeError for a shape the layout cannot carry.
 */
export function encodedDeltaSize(shapes: number[][]): number {
  if (shapes.length > MAX_TENSOR_COUNT) {
    throw new DeltaEncodeError(
      'tensors',
      `has ${shapes.length} entries, but tensorCount is a u16 and allows at most ${MAX_TENSOR_COUNT}`,
    )
  }
  let size = DELTA_HEADER_BYTES
  shapes.forEach((shape, index) => {
    const valueCount = checkShape(shape, `tensors[${index}].shape`)
    size += tensorRecordSize(shape.length, valueCount)
  })
  return size
}

/**
 * Encodes a delta message into one buffer of exactly encodedDeltaSize bytes.
 * Throws DeltaEncodeError, naming the field, for a hash that is not 32 bytes, an integer
 * outside its field's range, a shape the layout cannot carry, or values whose length is not
 * the product of the shape.
 */
export function encodeDelta(message: DeltaMessage): Uint8Array {
  checkMessage(message)
  const out = new Uint8Array(encodedDeltaSize(message.tensors.map((tensor) => tensor.shape)))
  const view = new DataView(out.buffer)

  out.set(MAGIC, 0)
  view.setUint8(4, DELTA_MESSAGE_VERSION)
  view.setUint8(5, CODEC_FLOAT32)
  out.set(message.specHash, 6)
  view.setUint32(38, message.round)
  view.setUint32(42, message.sampleCount)
  out.set(message.baseModelHash, 46)
  view.setUint16(78, message.tensors.length)

  let offset = DELTA_HEADER_BYTES
  for (const { shape, values } of message.tensors) {
    view.setUint8(offset, shape.length)
    offset += 1
    for (const dim of shape) {
      view.setUint32(offset, dim)
      offset += 4
    }
    const valueBytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength)
    out.set(valueBytes, offset)
    if (!HOST_IS_LITTLE_ENDIAN) {
      swapFloat32ByteOrder(out.subarray(offset, offset + values.byteLength))
    }
    offset += values.byteLength
  }
  return out
}

/**
 * Decodes a version-1 delta message. The input may be any Uint8Array view, including a Node
 * Buffer at an unaligned byteOffset, and is never modified. The result shares no memory with
 * it.
 *
 * Throws DeltaDecodeError, naming the field and its byte offset, when the bytes end early,
 * have trailing bytes, or carry an unknown magic, version or codec, a rank above 8, or dims
 * that describe more values than the remaining bytes hold. Every length is checked before it
 * is read or allocated, so a hostile dims field cannot make the value arrays larger than the
 * input.
 */
export function decodeDelta(bytes: Uint8Array): DeltaMessage {
  if (!(bytes instanceof Uint8Array)) {
    throw new DeltaDecodeError('message', 0, 'is not a Uint8Array')
  }
  const reader = new ByteReader(bytes)

  const magicOffset = reader.offset
  const magic = reader.copyBytes(MAGIC.length, 'magic')
  if (!bytesEqual(magic, MAGIC)) {
    throw new DeltaDecodeError(
      'magic',
      magicOffset,
      `is ${toHex(magic, ' ')}, expected 44 4c 44 31 ("DLD1")`,
    )
  }

  const versionOffset = reader.offset
  const version = reader.readUint8('version')
  if (version !== DELTA_MESSAGE_VERSION) {
    throw new DeltaDecodeError(
      'version',
      versionOffset,
      `is ${version}, but only version ${DELTA_MESSAGE_VERSION} is supported`,
    )
  }

  const codecOffset = reader.offset
  const codec = reader.readUint8('codec')
  if (codec !== CODEC_FLOAT32) {
    throw new DeltaDecodeError(
      'codec',
      codecOffset,
      `is ${codec}, but only codec ${CODEC_FLOAT32} (float32) is supported`,
    )
  }

  const specHash = reader.copyBytes(DELTA_HASH_BYTES, 'specHash')
  const round = reader.readUint32('round')
  const sampleCount = reader.readUint32('sampleCount')
  const baseModelHash = reader.copyBytes(DELTA_HASH_BYTES, 'baseModelHash')
  const tensorCount = reader.readUint16('tensorCount')

  const tensors: DeltaTensor[] = []
  for (let index = 0; index < tensorCount; index++) {
    tensors.push(readTensor(reader, `tensors[${index}]`))
  }

  const trailing = reader.remaining()
  if (trailing > 0) {
    throw new DeltaDecodeError(
      'trailing data',
      reader.offset,
      `has ${trailing} unexpected ${trailing === 1 ? 'byte' : 'bytes'} after the last of ` +
        `${tensorCount} tensors`,
    )
  }

  return {
    version: DELTA_MESSAGE_VERSION,
    codec: 'float32',
    specHash,
    round,
    sampleCount,
    baseModelHash,
    tensors,
  }
}

function readTensor(reader: ByteReader, field: string): DeltaTensor {
  const rankOffset = reader.offset
  const rank = reader.readUint8(`${field}.rank`)
  if (rank > MAX_TENSOR_RANK) {
    throw new DeltaDecodeError(
      `${field}.rank`,
      rankOffset,
      `is ${rank}, but the maximum rank is ${MAX_TENSOR_RANK}`,
    )
  }

  const dimsOffset = reader.offset
  const shape: number[] = []
  for (let axis = 0; axis < rank; axis++) {
    shape.push(reader.readUint32(`${field}.dims[${axis}]`))
  }

  // The product of up to 8 u32 values stays below 2^256, so it is a finite double. It can be
  // inexact above 2^53, but any count that large exceeds the remaining bytes and is rejected.
  const valueCount = product(shape)
  const byteLength = valueCount * FLOAT32_BYTES
  if (byteLength > reader.remaining()) {
    throw new DeltaDecodeError(
      `${field}.dims`,
      dimsOffset,
      `[${shape.join(', ')}] describe ${valueCount} float32 values (${byteLength} bytes), ` +
        `but only ${reader.remaining()} bytes remain in the message`,
    )
  }

  // Copying gives the Float32Array its own buffer at offset 0, which it needs because the
  // values may start at an unaligned offset in the input.
  const valueBytes = reader.copyBytes(byteLength, `${field}.values`)
  if (!HOST_IS_LITTLE_ENDIAN) {
    swapFloat32ByteOrder(valueBytes)
  }
  return { shape, values: new Float32Array(valueBytes.buffer, 0, valueCount) }
}

/** Sequential reader that checks every length against the end of the input before reading. */
class ByteReader {
  readonly bytes: Uint8Array
  readonly view: DataView
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

  /** Copies the next `length` bytes into a new buffer of their own. */
  copyBytes(length: number, field: string): Uint8Array<ArrayBuffer> {
    this.require(length, field)
    const copy = new Uint8Array(length)
    copy.set(this.bytes.subarray(this.offset, this.offset + length))
    this.offset += length
    return copy
  }

  private require(length: number, field: string): void {
    if (length > this.remaining()) {
      throw new DeltaDecodeError(
        field,
        this.offset,
        `needs ${length} bytes, but only ${this.remaining()} remain in the message`,
      )
    }
  }
}

function checkMessage(message: DeltaMessage): void {
  if (message.version !== DELTA_MESSAGE_VERSION) {
    throw new DeltaEncodeError(
      'version',
      `is ${String(message.version)}, but only version ${DELTA_MESSAGE_VERSION} is supported`,
    )
  }
  if (message.codec !== 'float32') {
    throw new DeltaEncodeError(
      'codec',
      `is ${JSON.stringify(message.codec)}, but only "float32" is supported`,
    )
  }
  checkHash(message.specHash, 'specHash')
  checkUint32(message.round, 'round')
  checkUint32(message.sampleCount, 'sampleCount')
  checkHash(message.baseModelHash, 'baseModelHash')
  if (!Array.isArray(message.tensors)) {
    throw new DeltaEncodeError('tensors', 'is not an array')
  }
  message.tensors.forEach((tensor, index) => {
    const field = `tensors[${index}]`
    const valueCount = checkShape(tensor.shape, `${field}.shape`)
    if (!(tensor.values instanceof Float32Array)) {
      throw new DeltaEncodeError(`${field}.values`, 'is not a Float32Array')
    }
    if (tensor.values.length !== valueCount) {
      throw new DeltaEncodeError(
        `${field}.values`,
        `has ${tensor.values.length} values, but shape [${tensor.shape.join(', ')}] needs ${valueCount}`,
      )
    }
  })
}

/** Validates a shape against the layout and returns its number of values. */
function checkShape(shape: number[], field: string): number {
  if (!Array.isArray(shape)) {
    throw new DeltaEncodeError(field, 'is not an array')
  }
  if (shape.length > MAX_TENSOR_RANK) {
    throw new DeltaEncodeError(
      field,
      `has rank ${shape.length}, but the maximum rank is ${MAX_TENSOR_RANK}`,
    )
  }
  shape.forEach((dim, axis) => {
    checkUint32(dim, `${field}[${axis}]`)
  })
  return product(shape)
}

function checkUint32(value: number, field: string): void {
  if (!Number.isInteger(value) || value < 0 || value > MAX_U32) {
    throw new DeltaEncodeError(
      field,
      `is ${String(value)}, expected an integer from 0 to ${MAX_U32}`,
    )
  }
}

function checkHash(hash: Uint8Array, field: string): void {
  if (!(hash instanceof Uint8Array)) {
    throw new DeltaEncodeError(field, 'is not a Uint8Array')
  }
  if (hash.length !== DELTA_HASH_BYTES) {
    throw new DeltaEncodeError(
      field,
      `has ${hash.length} bytes, expected a ${DELTA_HASH_BYTES}-byte SHA-256 digest`,
    )
  }
}

function tensorRecordSize(rank: number, valueCount: number): number {
  return 1 + 4 * rank + FLOAT32_BYTES * valueCount
}

function product(shape: number[]): number {
  let result = 1
  for (const dim of shape) {
    result *= dim
  }
  return result
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
