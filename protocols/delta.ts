/**
 * Version-1 delta message: the weight change one peer trained in one round, as published on
 * the delta topic.
 *
 * Layout. Integers are big-endian. Tensor values are encoded by the codec named in the header,
 * whose payload layouts and byte orders codecs.ts documents.
 *
 * | offset | size          | field         | contents                                          |
 * | -----: | :------------ | :------------ | :------------------------------------------------ |
 * |      0 | 4             | magic         | ASCII `DLD1` (0x44 0x4c 0x44 0x31)                |
 * |      4 | 1             | version       | u8, 1                                             |
 * |      5 | 1             | codec         | u8, 0 float32, 1 float16, 2 int8, 3 topk          |
 * |      6 | 4             | codecParam    | u32, int8 block size (1..65535), topk fraction in |
 * |        |               |               | billionths (1..10^9), 0 for float32 and float16   |
 * |     10 | 32            | specHash      | SHA-256 of the swarm spec                         |
 * |     42 | 4             | round         | u32, training round the delta belongs to          |
 * |     46 | 4             | sampleCount   | u32, training samples behind the delta            |
 * |     50 | 32            | baseModelHash | SHA-256 of the model the delta was trained from   |
 * |     82 | 2             | tensorCount   | u16, number of tensor records that follow         |
 * |     84 | per tensor:   |               |                                                   |
 * |        | 1             | rank          | u8, 0..8                                          |
 * |        | 4 * rank      | dims          | u32 each                                          |
 * |        | 4             | payloadLength | u32, payloadSize(prod(dims), codec) bytes         |
 * |        | payloadLength | payload       | prod(dims) values in row-major order, encoded     |
 *
 * A rank-0 tensor is a scalar with one value. The encoded size is
 * 84 + sum over tensors of (1 + 4 * rank + 4 + payloadSize(prod(dims), codec)) bytes, and
 * payloadSize depends only on the value count and the codec, topk included.
 */

import { bytesEqual, toHex } from './bytes.ts'
import {
  type CodecSpec,
  checkCodec,
  codecFromWire,
  codecId,
  codecParam,
  decodeTensor,
  encodeTensor,
  formatCodec,
  MAX_CODEC_VALUE_COUNT,
  payloadSize,
} from './codecs.ts'
import { DELTA_MESSAGE_VERSION } from './constants.ts'
import {
  CodecDecodeError,
  CodecEncodeError,
  CodecSpecError,
  DeltaDecodeError,
  DeltaEncodeError,
} from './errors.ts'

/** One tensor of a delta, with its values in row-major order. */
export interface DeltaTensor {
  shape: number[]
  /** The float32 values before encoding, or the decoded values after decoding. */
  values: Float32Array
}

/** A decoded version-1 delta message. */
export interface DeltaMessage {
  version: 1
  /** Codec that encodes every tensor of the message. */
  codec: CodecSpec
  /** SHA-256 of the swarm spec, 32 bytes. */
  specHash: Uint8Array
  round: number
  /** Number of training samples the delta was computed from. */
  sampleCount: number
  /** SHA-256 of the model the delta was trained from, 32 bytes. */
  baseModelHash: Uint8Array
  tensors: DeltaTensor[]
}

/** Options of decodeDelta. */
export interface DeltaDecodeOptions {
  /**
   * Maximum number of values, summed over all tensors, that a message may decode to. A topk
   * payload of a few bytes can describe a tensor of billions of values, so this bounds the
   * memory a hostile message can make the decoder allocate.
   *
   * @default DEFAULT_MAX_DELTA_VALUES
   */
  maxValueCount?: number
}

/** Byte length of the fixed fields before the first tensor record. */
export const DELTA_HEADER_BYTES = 84
/** Byte length of specHash and baseModelHash. */
export const DELTA_HASH_BYTES = 32
/** Maximum tensor rank the layout allows. */
export const MAX_TENSOR_RANK = 8
/** Maximum number of tensors that the u16 tensorCount field can encode. */
export const MAX_TENSOR_COUNT = 0xffff
/**
 * Default maxValueCount of decodeDelta: 2^26 values, 256 MiB as float32. The 784-200-200-10
 * MLP has 199,210 values.
 *
 * NOTE: a chosen bound with wide headroom, not a measured one. A caller that knows the
 * expected shapes, such as the topic validator, can pass their total instead.
 */
export const DEFAULT_MAX_DELTA_VALUES = 2 ** 26

const MAGIC = Uint8Array.of(0x44, 0x4c, 0x44, 0x31)
const MAX_U32 = 0xffff_ffff
const FLOAT32 = { name: 'float32' } as const satisfies CodecSpec

/**
 * Computes the encoded byte length of a delta message whose tensors have these shapes and are
 * encoded with `codec` (float32 when omitted). Throws DeltaEncodeError for a shape or codec
 * the layout cannot carry.
 */
export function encodedDeltaSize(shapes: number[][], codec: CodecSpec = FLOAT32): number {
  checkMessageCodec(codec)
  if (shapes.length > MAX_TENSOR_COUNT) {
    throw new DeltaEncodeError(
      'tensors',
      `has ${shapes.length} entries, but tensorCount is a u16 and allows at most ${MAX_TENSOR_COUNT}`,
    )
  }
  let size = DELTA_HEADER_BYTES
  shapes.forEach((shape, index) => {
    const field = `tensors[${index}].shape`
    const valueCount = checkShape(shape, field)
    size += 1 + 4 * shape.length + 4 + checkedPayloadSize(valueCount, codec, field)
  })
  return size
}

/**
 * Encodes a delta message into one buffer of exactly encodedDeltaSize bytes, encoding each
 * tensor's float32 values with message.codec.
 *
 * Throws DeltaEncodeError, naming the field, for any of:
 * - an invalid codec, a hash that is not 32 bytes, or an integer outside its field's range
 * - a shape the layout cannot carry, or values whose length is not the product of the shape
 * - a value the codec cannot encode: NaN or ±Infinity for int8, NaN for topk.
 */
export function encodeDelta(message: DeltaMessage): Uint8Array {
  checkMessage(message)
  const { codec } = message
  const out = new Uint8Array(
    encodedDeltaSize(
      message.tensors.map((tensor) => tensor.shape),
      codec,
    ),
  )
  const view = new DataView(out.buffer)

  out.set(MAGIC, 0)
  view.setUint8(4, DELTA_MESSAGE_VERSION)
  view.setUint8(5, codecId(codec))
  view.setUint32(6, codecParam(codec))
  out.set(message.specHash, 10)
  view.setUint32(42, message.round)
  view.setUint32(46, message.sampleCount)
  out.set(message.baseModelHash, 50)
  view.setUint16(82, message.tensors.length)

  let offset = DELTA_HEADER_BYTES
  message.tensors.forEach(({ shape, values }, index) => {
    view.setUint8(offset, shape.length)
    offset += 1
    for (const dim of shape) {
      view.setUint32(offset, dim)
      offset += 4
    }
    const payload = encodeTensorField(values, codec, `tensors[${index}]`)
    view.setUint32(offset, payload.byteLength)
    offset += 4
    out.set(payload, offset)
    offset += payload.byteLength
  })
  return out
}

/**
 * Decodes a version-1 delta message and the values of its tensors. The input may be any
 * Uint8Array view, including a Node Buffer at an unaligned byteOffset, and is never modified.
 * The result shares no memory with it.
 *
 * Throws DeltaDecodeError, naming the field and its byte offset, when:
 * - the bytes end early or have trailing bytes
 * - the magic, version or codec is unknown, or the codec does not allow the codecParam
 * - a rank is above 8, or the dims describe more than maxValueCount values in all
 * - a payloadLength differs from the codec's payload size for the dims
 * - the codec rejects a payload, e.g. for a NaN int8 scale or a topk index out of range.
 *
 * Every length is checked before it is read or allocated.
 */
export function decodeDelta(bytes: Uint8Array, options: DeltaDecodeOptions = {}): DeltaMessage {
  if (!(bytes instanceof Uint8Array)) {
    throw new DeltaDecodeError('message', 0, 'is not a Uint8Array')
  }
  const maxValueCount = options.maxValueCount ?? DEFAULT_MAX_DELTA_VALUES
  if (!Number.isInteger(maxValueCount) || maxValueCount < 0) {
    throw new RangeError(
      `Expected maxValueCount to be an integer >= 0, got ${String(maxValueCount)}`,
    )
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

  const codec = readCodec(reader)
  const specHash = reader.copyBytes(DELTA_HASH_BYTES, 'specHash')
  const round = reader.readUint32('round')
  const sampleCount = reader.readUint32('sampleCount')
  const baseModelHash = reader.copyBytes(DELTA_HASH_BYTES, 'baseModelHash')
  const tensorCount = reader.readUint16('tensorCount')

  const tensors: DeltaTensor[] = []
  let valueBudget = Math.min(maxValueCount, MAX_CODEC_VALUE_COUNT)
  for (let index = 0; index < tensorCount; index++) {
    const tensor = readTensor(reader, codec, valueBudget, `tensors[${index}]`)
    valueBudget -= tensor.values.length
    tensors.push(tensor)
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
    codec,
    specHash,
    round,
    sampleCount,
    baseModelHash,
    tensors,
  }
}

function readCodec(reader: ByteReader): CodecSpec {
  const codecOffset = reader.offset
  const id = reader.readUint8('codec')
  const paramOffset = reader.offset
  const param = reader.readUint32('codecParam')
  try {
    return codecFromWire(id, param)
  } catch (error) {
    if (error instanceof CodecDecodeError) {
      const offset = error.field === 'codec' ? codecOffset : paramOffset
      throw new DeltaDecodeError(error.field, offset, error.problem)
    }
    throw error
  }
}

function readTensor(
  reader: ByteReader,
  codec: CodecSpec,
  valueBudget: number,
  field: string,
): DeltaTensor {
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

  const lengthOffset = reader.offset
  const payloadLength = reader.readUint32(`${field}.payloadLength`)
  if (payloadLength > reader.remaining()) {
    throw new DeltaDecodeError(
      `${field}.payloadLength`,
      lengthOffset,
      `is ${payloadLength}, but only ${reader.remaining()} bytes remain in the message`,
    )
  }

  // The product of up to 8 u32 values stays below 2^256, so it is a finite double. It can be
  // inexact above 2^53, but the budget, at most 2^50, rejects any count that large.
  const valueCount = product(shape)
  if (valueCount > valueBudget) {
    throw new DeltaDecodeError(
      `${field}.dims`,
      dimsOffset,
      `[${shape.join(', ')}] describe ${valueCount} values, but the message may decode to ` +
        `at most ${valueBudget} more values (decodeDelta option maxValueCount)`,
    )
  }

  const expectedLength = payloadSize(valueCount, codec)
  if (payloadLength !== expectedLength) {
    throw new DeltaDecodeError(
      `${field}.payloadLength`,
      lengthOffset,
      `is ${payloadLength}, but ${formatCodec(codec)} needs ${expectedLength} bytes for ` +
        `${valueCount} values`,
    )
  }

  const payloadOffset = reader.offset
  const payload = reader.view(payloadLength)
  try {
    return { shape, values: decodeTensor(payload, valueCount, codec, `${field}.payload`) }
  } catch (error) {
    if (error instanceof CodecDecodeError) {
      throw new DeltaDecodeError(error.field, payloadOffset + error.offset, error.problem)
    }
    throw error
  }
}

/** Sequential reader that checks every length against the end of the input before reading. */
class ByteReader {
  readonly bytes: Uint8Array
  readonly dataView: DataView
  offset = 0

  constructor(bytes: Uint8Array) {
    this.bytes = bytes
    this.dataView = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  }

  remaining(): number {
    return this.bytes.byteLength - this.offset
  }

  readUint8(field: string): number {
    this.require(1, field)
    const value = this.dataView.getUint8(this.offset)
    this.offset += 1
    return value
  }

  readUint16(field: string): number {
    this.require(2, field)
    const value = this.dataView.getUint16(this.offset)
    this.offset += 2
    return value
  }

  readUint32(field: string): number {
    this.require(4, field)
    const value = this.dataView.getUint32(this.offset)
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

  /** Returns a view of the next `length` bytes without copying; the caller checked the length. */
  view(length: number): Uint8Array {
    const view = this.bytes.subarray(this.offset, this.offset + length)
    this.offset += length
    return view
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
  checkMessageCodec(message.codec)
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

function checkMessageCodec(codec: CodecSpec): void {
  try {
    checkCodec(codec)
  } catch (error) {
    if (error instanceof CodecSpecError) {
      throw new DeltaEncodeError('codec', `is invalid: ${error.message}`)
    }
    throw error
  }
}

function encodeTensorField(values: Float32Array, codec: CodecSpec, field: string): Uint8Array {
  try {
    return encodeTensor(values, codec)
  } catch (error) {
    if (error instanceof CodecEncodeError) {
      throw new DeltaEncodeError(`${field}.${error.field}`, error.problem)
    }
    throw error
  }
}

/** Returns the payload size of a tensor, checking that payloadLength, a u32, can hold it. */
function checkedPayloadSize(valueCount: number, codec: CodecSpec, field: string): number {
  if (valueCount > MAX_CODEC_VALUE_COUNT) {
    throw new DeltaEncodeError(
      field,
      `describes ${valueCount} values, but a codec accepts at most 2^50 per tensor`,
    )
  }
  const size = payloadSize(valueCount, codec)
  if (size > MAX_U32) {
    throw new DeltaEncodeError(
      field,
      `needs ${size} payload bytes with ${formatCodec(codec)}, but payloadLength is a u32 ` +
        `and allows at most ${MAX_U32}`,
    )
  }
  return size
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

function product(shape: number[]): number {
  let result = 1
  for (const dim of shape) {
    result *= dim
  }
  return result
}
