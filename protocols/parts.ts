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
import { peerIdFromString } from '@libp2p/peer-id'
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
const MAX_U32 = 0xffff_ffff

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

/** Limits of a PartAssembler. */
export interface PartAssemblerInit {
  /** Maximum totalLength of a message. A part that claims more is invalid. */
  maxMessageBytes: number
  /**
   * Maximum sum of totalLength over incomplete messages. It must be at least maxMessageBytes.
   * When the first part of a new message would exceed it, the oldest incomplete messages are
   * dropped until the new one fits.
   */
  maxBufferedBytes: number
  /** Milliseconds after its first part at which an incomplete message is dropped. */
  timeoutMs: number
  /**
   * Maximum incomplete messages per sender. When the first part of one more arrives, the
   * sender's oldest incomplete message is dropped.
   *
   * @default 2, a sender's current round and the next one
   */
  maxPendingPerSender?: number
  /**
   * Clock in milliseconds, used for timeoutMs.
   *
   * @default Date.now
   */
  now?: () => number
}

/** The outcome of PartAssembler.add. */
export type PartResult =
  | { status: 'partial' }
  | { status: 'complete'; message: Uint8Array }
  | { status: 'duplicate' }
  | { status: 'invalid'; reason: string }

/** Default of PartAssemblerInit.maxPendingPerSender. */
export const DEFAULT_MAX_PENDING_PER_SENDER = 2

interface PendingMessage {
  from: string
  round: number
  specHash: Uint8Array
  digest: Uint8Array
  totalLength: number
  partCount: number
  /** Data bytes of every part but the last, once a part has fixed it. */
  partDataBytes: number | undefined
  /** Data of the parts received so far, by partIndex, each copied out of its part once. */
  parts: Map<number, Uint8Array>
  firstPartAt: number
}

interface CompletedMessage {
  round: number
  completedAt: number
}

/**
 * Collects the parts of delta messages from several senders and returns each whole message
 * once all its parts are in and its SHA-256 digest matches. Incomplete messages are keyed by
 * (sender, round, digest), so two peers that publish byte-identical deltas in one round are
 * two messages.
 *
 * Each received part is copied once, out of the gossipsub buffer, and the parts are joined
 * only when the last one arrives. The sum of totalLength over incomplete messages stays within
 * maxBufferedBytes, and a part of a message completed less than timeoutMs ago, and not yet
 * pruned, is reported as a duplicate instead of starting a new message.
 */
export class PartAssembler {
  private readonly maxMessageBytes: number
  private readonly maxBufferedBytes: number
  private readonly timeoutMs: number
  private readonly maxPendingPerSender: number
  private readonly now: () => number

  // Map iteration follows insertion order, so the first entry is the oldest message.
  private readonly pending = new Map<string, PendingMessage>()
  private readonly pendingPerSender = new Map<string, number>()
  private readonly completed = new Map<string, CompletedMessage>()
  private buffered = 0

  private droppedCount = 0
  private expiredCount = 0
  private invalidCount = 0
  private duplicateCount = 0

  constructor(init: PartAssemblerInit) {
    this.maxMessageBytes = checkOption(init.maxMessageBytes, 1, MAX_U32, 'maxMessageBytes')
    this.maxBufferedBytes = checkOption(
      init.maxBufferedBytes,
      this.maxMessageBytes,
      Number.MAX_SAFE_INTEGER,
      'maxBufferedBytes',
    )
    if (!Number.isFinite(init.timeoutMs) || init.timeoutMs <= 0) {
      throw new RangeError(
        `Expected \`timeoutMs\` to be a finite number > 0, got ${String(init.timeoutMs)}`,
      )
    }
    this.timeoutMs = init.timeoutMs
    this.maxPendingPerSender = checkOption(
      init.maxPendingPerSender ?? DEFAULT_MAX_PENDING_PER_SENDER,
      1,
      Number.MAX_SAFE_INTEGER,
      'maxPendingPerSender',
    )
    this.now = init.now ?? Date.now
  }

  /** Incomplete messages dropped to stay within maxBufferedBytes or maxPendingPerSender. */
  get dropped(): number {
    return this.droppedCount
  }

  /** Incomplete messages dropped because timeoutMs passed after their first part. */
  get expired(): number {
    return this.expiredCount
  }

  /** Parts for which add returned `invalid`. */
  get invalid(): number {
    return this.invalidCount
  }

  /** Parts for which add returned `duplicate`. */
  get duplicates(): number {
    return this.duplicateCount
  }

  /** Number of incomplete messages held. */
  get pendingCount(): number {
    return this.pending.size
  }

  /** Sum of totalLength over the incomplete messages held. */
  get bufferedBytes(): number {
    return this.buffered
  }

  /**
   * Adds one decoded part. `from` is the publisher's peer id string that gossipsub
   * authenticated (`message.from.toString()` of a signed message), and it must name the same
   * peer as the part's sender field. Throws when `from` is not a peer id string.
   *
   * Returns `invalid`, with a reason naming the field and its values, when:
   * - the sender differs from `from`,
   * - partCount is 0, or partIndex is not below partCount,
   * - totalLength exceeds maxMessageBytes,
   * - specHash, partCount or totalLength differ from earlier parts of the same message,
   * - the data length does not fit totalLength,
   * - or the joined bytes do not match the digest.
   *
   * An invalid part is not stored, and the earlier parts of its message are kept. A digest
   * mismatch is the exception, because it drops the whole message.
   */
  add(part: PartMessage, from: string): PartResult {
    this.expire()

    const problem = this.findHeaderProblem(part, from)
    if (problem !== undefined) {
      return this.rejectPart(problem)
    }

    const key = `${from}/${part.round}/${toHex(part.digest)}`
    if (this.completed.has(key)) {
      return this.countDuplicate()
    }

    const pending = this.pending.get(key)
    if (pending !== undefined) {
      const mismatch = findMismatch(pending, part)
      if (mismatch !== undefined) {
        return this.rejectPart(mismatch)
      }
    }

    const length = checkDataLength(part, pending?.partDataBytes)
    if (typeof length === 'string') {
      return this.rejectPart(length)
    }

    if (pending?.parts.has(part.partIndex)) {
      return this.countDuplicate()
    }

    if (part.partCount === 1) {
      return this.finish(key, part.round, part.digest, [part.data])
    }

    const message = pending ?? this.startMessage(key, part, from)
    message.partDataBytes = length.partDataBytes
    message.parts.set(part.partIndex, copyBytes(part.data))
    if (message.parts.size < message.partCount) {
      return { status: 'partial' }
    }

    this.removePending(key, message)
    const ordered: Uint8Array[] = []
    for (let index = 0; index < message.partCount; index++) {
      ordered.push(message.parts.get(index) as Uint8Array)
    }
    return this.finish(key, message.round, message.digest, ordered)
  }

  /**
   * Drops the incomplete messages of rounds before `round`, and removes the record of completed
   * messages of those rounds. Returns how many incomplete messages were dropped.
   */
  prune(round: number): number {
    let dropped = 0
    for (const [key, message] of this.pending) {
      if (message.round < round) {
        this.removePending(key, message)
        dropped++
      }
    }
    for (const [key, message] of this.completed) {
      if (message.round < round) {
        this.completed.delete(key)
      }
    }
    return dropped
  }

  private findHeaderProblem(part: PartMessage, from: string): string | undefined {
    const expectedSender = peerIdFromString(from).toMultihash().bytes
    if (!bytesEqual(part.sender, expectedSender)) {
      return (
        `sender ${toHex(part.sender)} differs from the gossipsub sender ${from} ` +
        `(multihash ${toHex(expectedSender)})`
      )
    }
    if (part.partCount === 0) {
      return 'partCount is 0, expected at least 1'
    }
    if (part.partIndex >= part.partCount) {
      return `partIndex ${part.partIndex} is out of range for partCount ${part.partCount}`
    }
    if (part.totalLength > this.maxMessageBytes) {
      return `totalLength ${part.totalLength} exceeds maxMessageBytes ${this.maxMessageBytes}`
    }
    return undefined
  }

  private startMessage(key: string, part: PartMessage, from: string): PendingMessage {
    // Makes room before storing anything, so the new message is never the one dropped.
    // Each loop ends when nothing is left to drop, because dropOldest then returns false.
    while ((this.pendingPerSender.get(from) ?? 0) >= this.maxPendingPerSender) {
      if (!this.dropOldest((message) => message.from === from)) {
        break
      }
    }
    while (this.buffered + part.totalLength > this.maxBufferedBytes) {
      if (!this.dropOldest(() => true)) {
        break
      }
    }

    const message: PendingMessage = {
      from,
      round: part.round,
      specHash: part.specHash,
      digest: part.digest,
      totalLength: part.totalLength,
      partCount: part.partCount,
      partDataBytes: undefined,
      parts: new Map(),
      firstPartAt: this.now(),
    }
    this.pending.set(key, message)
    this.pendingPerSender.set(from, (this.pendingPerSender.get(from) ?? 0) + 1)
    this.buffered += part.totalLength
    return message
  }

  /** Drops the oldest incomplete message that matches. Returns false when none matches. */
  private dropOldest(matches: (message: PendingMessage) => boolean): boolean {
    for (const [key, message] of this.pending) {
      if (matches(message)) {
        this.removePending(key, message)
        this.droppedCount++
        return true
      }
    }
    return false
  }

  private removePending(key: string, message: PendingMessage): void {
    this.pending.delete(key)
    this.buffered -= message.totalLength
    const count = (this.pendingPerSender.get(message.from) ?? 1) - 1
    if (count === 0) {
      this.pendingPerSender.delete(message.from)
    } else {
      this.pendingPerSender.set(message.from, count)
    }
  }

  /** Verifies the digest over the parts in order, then joins them into one message. */
  private finish(key: string, round: number, digest: Uint8Array, parts: Uint8Array[]): PartResult {
    const hash = createHash('sha256')
    let totalLength = 0
    for (const data of parts) {
      hash.update(data)
      totalLength += data.byteLength
    }
    const actual = hash.digest()
    if (!bytesEqual(actual, digest)) {
      return this.rejectPart(
        `digest ${toHex(digest)} does not match the SHA-256 ${toHex(actual)} of the joined parts`,
      )
    }

    this.completed.set(key, { round, completedAt: this.now() })
    if (parts.length === 1) {
      return { status: 'complete', message: copyBytes(parts[0] as Uint8Array) }
    }
    const message = new Uint8Array(totalLength)
    let offset = 0
    for (const data of parts) {
      message.set(data, offset)
      offset += data.byteLength
    }
    return { status: 'complete', message }
  }

  private expire(): void {
    const now = this.now()
    for (const [key, message] of this.pending) {
      if (now - message.firstPartAt > this.timeoutMs) {
        this.removePending(key, message)
        this.expiredCount++
      }
    }
    for (const [key, message] of this.completed) {
      if (now - message.completedAt > this.timeoutMs) {
        this.completed.delete(key)
      }
    }
  }

  private rejectPart(reason: string): PartResult {
    this.invalidCount++
    return { status: 'invalid', reason }
  }

  private countDuplicate(): PartResult {
    this.duplicateCount++
    return { status: 'duplicate' }
  }
}

/** Compares a part with the earlier parts of its message. Returns the problem, if any. */
function findMismatch(message: PendingMessage, part: PartMessage): string | undefined {
  if (part.partCount !== message.partCount) {
    return `partCount ${part.partCount} differs from ${message.partCount} in earlier parts`
  }
  if (part.totalLength !== message.totalLength) {
    return `totalLength ${part.totalLength} differs from ${message.totalLength} in earlier parts`
  }
  if (!bytesEqual(part.specHash, message.specHash)) {
    return (
      `specHash ${toHex(part.specHash)} differs from ${toHex(message.specHash)} in earlier ` +
      'parts'
    )
  }
  return undefined
}

/**
 * Checks the part's data length against totalLength and against the data length L of the
 * other parts, when an earlier part fixed it. Returns the problem, or the L this part fixes.
 */
function checkDataLength(
  part: PartMessage,
  knownPartDataBytes: number | undefined,
): string | { partDataBytes: number | undefined } {
  const { partIndex, partCount, totalLength } = part
  const length = part.data.byteLength
  const where = `data length ${length} of part ${partIndex} of ${partCount}`

  if (partCount === 1) {
    if (length !== totalLength) {
      return `${where} differs from totalLength ${totalLength}`
    }
    return { partDataBytes: undefined }
  }

  if (partIndex < partCount - 1) {
    if (knownPartDataBytes !== undefined && length !== knownPartDataBytes) {
      return `${where} differs from ${knownPartDataBytes} in earlier parts`
    }
    // The last part carries the rest, which must be 1 to L bytes.
    const lastLength = totalLength - (partCount - 1) * length
    if (lastLength < 1 || lastLength > length) {
      return (
        `${where} does not fit totalLength ${totalLength}: the last part would carry ` +
        `${lastLength} bytes, expected 1 to ${length}`
      )
    }
    return { partDataBytes: length }
  }

  if (knownPartDataBytes !== undefined) {
    const expected = totalLength - (partCount - 1) * knownPartDataBytes
    if (length !== expected) {
      return `${where} does not fit totalLength ${totalLength}: expected ${expected} bytes`
    }
    return { partDataBytes: knownPartDataBytes }
  }

  // The last part arrived first, so it fixes L. The other parts share totalLength - length.
  const rest = totalLength - length
  const partDataBytes = rest / (partCount - 1)
  if (length < 1 || !Number.isInteger(partDataBytes) || partDataBytes < length) {
    return (
      `${where} does not fit totalLength ${totalLength}: the other ${partCount - 1} parts ` +
      `would carry ${rest} bytes, which must split evenly into parts of at least ${length} ` +
      'bytes'
    )
  }
  return { partDataBytes }
}

/**
 * Copies a view into a Uint8Array of its own. Buffer.prototype.slice returns a view that shares
 * memory in Node, so `slice` would not copy when the input is a Buffer.
 */
function copyBytes(view: Uint8Array): Uint8Array {
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

function checkOption(value: number, min: number, max: number, name: string): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(
      `Expected \`${name}\` to be an integer from ${min} to ${max}, got ${String(value)}`,
    )
  }
  return value
}
