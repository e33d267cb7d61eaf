/**
 * Version-1 part message: one piece of an encoded delta message. @chainsafe/libp2p-gossipsub
 * 14.1 reads inbound frames with a length limit (`maxInboundDataLength`), and a frame above it
 * ends that peer's inbound stream while the connection stays open, so gossip from the peer
 * stops without an error. A delta larger than the limit therefore travels as several part
 * messages, and PartAssembler joins them again.
 *
 * Layout. Integers are big-endian. `n` is the value of senderLength.
 *
 * | offset | size | field        | contents                                                |
 * | -----: | :--- | :----------- | :------------------------------------------------------ |
 * |      0 | 4    | magic        | ASCII `DLP1` (0x44 0x4c 0x50 0x31)                      |
 * |      4 | 1    | version      | u8, 1                                                   |
 * |      5 | 32   | specHash     | SHA-256 of the swarm spec                               |
 * |     37 | 4    | round        | u32, training round of the delta message                |
 * |     41 | 1    | senderLength | u8, 1 to 64                                             |
 * |     42 | n    | sender       | multihash bytes of the publishing peer's id             |
 * | 42 + n | 32   | digest       | SHA-256 of the whole encoded delta message              |
 * | 74 + n | 4    | totalLength  | u32, byte length of the whole encoded delta message     |
 * | 78 + n | 2    | partIndex    | u16, position of this part, from 0                      |
 * | 80 + n | 2    | partCount    | u16, number of parts of the delta message, at least 1   |
 * | 82 + n | rest | data         | the part's bytes of the delta message, in order         |
 *
 * The header is 82 + n bytes, which is 120 bytes for an Ed25519 peer id (n = 38). Every part
 * except the last carries the same number of data bytes L, and the last carries the rest: 1 to
 * L bytes. A message of one part carries all totalLength bytes, which may be 0.
 */

import { createHash } from 'node:crypto'
import type { PeerId } from '@libp2p/interface'
import { bytesEqual, toHex } from './bytes.ts'
import { DELTA_MESSAGE_VERSION } from './constants.ts'
import { PartDecodeError } from './errors.ts'

/** A decoded version-1 part message. */
export interface PartMessage {
  version: 1
  /** SHA-256 of the swarm spec, 32 bytes. */
  specHash: Uint8Array
  round: number
  /** Multihash bytes of the publishing peer's id (`peerId.toMultihash().bytes`), 1 to 64. */
  sender: Uint8Array
  /** SHA-256 of the whole encoded delta message, 32 bytes. */
  digest: Uint8Array
  /** Byte length of the whole encoded delta message. */
  totalLength: number
  partIndex: number
  partCount: number
  /** This part's bytes of the delta message. */
  data: Uint8Array
}

/** Maximum byte length of the sender field. */
export const MAX_PART_SENDER_BYTES = 64
/** Maximum number of parts that the u16 partCount field can encode. */
export const MAX_PART_COUNT = 0xffff

const MAGIC = Uint8Array.of(0x44, 0x4c, 0x50, 0x31)
const HASH_BYTES = 32
const MAX_U16 = 0xffff
export const MAX_U32 = 0xffff_ffff

// Byte length of the fixed fields, without the sender bytes.
const FIXED_HEADER_BYTES = 82

/** Computes the header length of a part message whose sender field has this many bytes. */
export function partHeaderSize(senderByteLength: number): number {
  return FIXED_HEADER_BYTES + senderByteLength
}

/** True when the bytes start with the part magic, so they should be decoded as a part. */
export function isPartMessage(bytes: Uint8Array): boolean {
  return bytes.byteLength >= MAGIC.length && bytesEqual(bytes.subarray(0, MAGIC.length), MAGIC)
}

/**
 * Encodes a part message into a new buffer. Throws RangeError, naming the field, for a hash
 * that is not 32 bytes, a sender of 0 or more than 64 bytes, or an integer outside its field's
 * range. It does not check that the fields agree with each other (for example that partIndex is
 * below partCount), because PartAssembler rejects such parts on receipt.
 */
export function encodePart(part: PartMessage): Uint8Array {
  checkHash(part.specHash, 'specHash')
  checkHash(part.digest, 'digest')
  checkSender(part.sender)
  checkInteger(part.round, MAX_U32, 'round')
  checkInteger(part.totalLength, MAX_U32, 'totalLength')
  checkInteger(part.partIndex, MAX_U16, 'partIndex')
  checkInteger(part.partCount, MAX_U16, 'partCount')

  const n = part.sender.byteLength
  const headerBytes = partHeaderSize(n)
  const out = new Uint8Array(headerBytes + part.data.byteLength)
  const view = new DataView(out.buffer)
  out.set(MAGIC, 0)
  view.setUint8(4, DELTA_MESSAGE_VERSION)
  out.set(part.specHash, 5)
  view.setUint32(37, part.round)
  view.setUint8(41, n)
  out.set(part.sender, 42)
  out.set(part.digest, 42 + n)
  view.setUint32(74 + n, part.totalLength)
  view.setUint16(78 + n, part.partIndex)
  view.setUint16(80 + n, part.partCount)
  out.set(part.data, headerBytes)
  return out
}

/**
 * Decodes a version-1 part message. The input may be any Uint8Array view, including a Node
 * Buffer at an unaligned byteOffset, and is never modified. specHash, sender and digest are
 * copies, but `data` is a view into the input, so the input must stay unchanged while `data`
 * is in use.
 *
 * Throws PartDecodeError, naming the field and its byte offset, when the bytes end inside the
 * header or carry an unknown magic or version, or a senderLength of 0 or above 64. Whether the
 * counts and lengths agree with each other is checked by PartAssembler.add.
 */
export function decodePart(bytes: Uint8Array): PartMessage {
  if (!(bytes instanceof Uint8Array)) {
    throw new PartDecodeError('message', 0, 'is not a Uint8Array')
  }
  requireBytes(bytes, 0, MAGIC.length, 'magic')
  if (!isPartMessage(bytes)) {
    throw new PartDecodeError(
      'magic',
      0,
      `is ${toHex(bytes.subarray(0, 4), ' ')}, expected 44 4c 50 31 ("DLP1")`,
    )
  }

  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  requireBytes(bytes, 4, 1, 'version')
  const version = view.getUint8(4)
  if (version !== DELTA_MESSAGE_VERSION) {
    throw new PartDecodeError(
      'version',
      4,
      `is ${version}, but only version ${DELTA_MESSAGE_VERSION} is supported`,
    )
  }

  requireBytes(bytes, 5, HASH_BYTES, 'specHash')
  requireBytes(bytes, 37, 4, 'round')
  requireBytes(bytes, 41, 1, 'senderLength')
  const n = view.getUint8(41)
  if (n === 0 || n > MAX_PART_SENDER_BYTES) {
    throw new PartDecodeError(
      'senderLength',
      41,
      `is ${n}, expected 1 to ${MAX_PART_SENDER_BYTES} bytes of peer id multihash`,
    )
  }
  requireBytes(bytes, 42, n, 'sender')
  requireBytes(bytes, 42 + n, HASH_BYTES, 'digest')
  requireBytes(bytes, 74 + n, 4, 'totalLength')
  requireBytes(bytes, 78 + n, 2, 'partIndex')
  requireBytes(bytes, 80 + n, 2, 'partCount')

  return {
    version: 1,
    specHash: copyBytes(bytes.subarray(5, 5 + HASH_BYTES)),
    round: view.getUint32(37),
    sender: copyBytes(bytes.subarray(42, 42 + n)),
    digest: copyBytes(bytes.subarray(42 + n, 42 + n + HASH_BYTES)),
    totalLength: view.getUint32(74 + n),
    partIndex: view.getUint16(78 + n),
    partCount: view.getUint16(80 + n),
    data: bytes.subarray(partHeaderSize(n)),
  }
}

/** Input of splitIntoParts: one encoded delta message and the part header fields. */
export interface SplitInit {
  /** SHA-256 of the swarm spec, 32 bytes. */
  specHash: Uint8Array
  round: number
  /** The local peer, which publishes the parts. */
  sender: PeerId
  /** The whole encoded delta message. */
  message: Uint8Array
  /** Maximum byte length of one encoded part, header included. */
  maxPartBytes: number
}

/**
 * Splits an encoded delta message into encoded part messages, each at most maxPartBytes long
 * including its header, in partIndex order. Every part but the last carries
 * maxPartBytes - header bytes of data. An empty message gives one part with no data.
 *
 * Throws RangeError when maxPartBytes is not an integer or leaves no room for data after the
 * header, when the message needs more than 65535 parts, or when a field is out of range.
 */
export function splitIntoParts(init: SplitInit): Uint8Array[] {
  const sender = init.sender.toMultihash().bytes
  checkSender(sender)
  const headerBytes = partHeaderSize(sender.byteLength)
  if (!Number.isInteger(init.maxPartBytes) || init.maxPartBytes <= headerBytes) {
    throw new RangeError(
      `Expected \`maxPartBytes\` to be an integer of at least ${headerBytes + 1}, got ` +
        `${String(init.maxPartBytes)}: the part header for this sender alone is ` +
        `${headerBytes} bytes`,
    )
  }
  const totalLength = init.message.byteLength
  if (totalLength > MAX_U32) {
    throw new RangeError(
      `message has ${totalLength} bytes, but totalLength is a u32 and allows at most ${MAX_U32}`,
    )
  }

  const partDataBytes = init.maxPartBytes - headerBytes
  const partCount = Math.max(1, Math.ceil(totalLength / partDataBytes))
  if (partCount > MAX_PART_COUNT) {
    throw new RangeError(
      `message of ${totalLength} bytes needs ${partCount} parts of ${partDataBytes} data bytes, ` +
        `but partCount is a u16 and allows at most ${MAX_PART_COUNT}: raise maxPartBytes ` +
        `above ${init.maxPartBytes}`,
    )
  }

  const digest = createHash('sha256').update(init.message).digest()
  const parts: Uint8Array[] = []
  for (let partIndex = 0; partIndex < partCount; partIndex++) {
    const start = partIndex * partDataBytes
    parts.push(
      encodePart({
        version: 1,
        specHash: init.specHash,
        round: init.round,
        sender,
        digest,
        totalLength,
        partIndex,
        partCount,
        data: init.message.subarray(start, start + partDataBytes),
      }),
    )
  }
  return parts
}

/**
 * Copies a view into a Uint8Array of its own. Buffer.prototype.slice returns a view that shares
 * memory in Node, so `slice` would not copy when the input is a Buffer.
 */
export function copyBytes(view: Uint8Array): Uint8Array {
  return new Uint8Array(view)
}

function requireBytes(bytes: Uint8Array, offset: number, length: number, field: string): void {
  const remaining = bytes.byteLength - offset
  if (length > remaining) {
    throw new PartDecodeError(
      field,
      offset,
      `needs ${length} bytes, but only ${Math.max(remaining, 0)} remain in the message`,
    )
  }
}

function checkHash(hash: Uint8Array, field: string): void {
  if (!(hash instanceof Uint8Array) || hash.byteLength !== HASH_BYTES) {
    throw new RangeError(`${field} is not a ${HASH_BYTES}-byte SHA-256 digest`)
  }
}

function checkSender(sender: Uint8Array): void {
  if (sender.byteLength === 0 || sender.byteLength > MAX_PART_SENDER_BYTES) {
    throw new RangeError(
      `sender has ${sender.byteLength} bytes, expected a peer id multihash of 1 to ` +
        `${MAX_PART_SENDER_BYTES} bytes`,
    )
  }
}

function checkInteger(value: number, max: number, field: string): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(`${field} is ${String(value)}, expected an integer from 0 to ${max}`)
  }
}
