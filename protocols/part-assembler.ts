/**
 * PartAssembler: joins the version-1 part messages that parts.ts describes back into whole
 * delta messages, within limits on buffered bytes, pending messages per sender and time.
 */

import { createHash } from 'node:crypto'
import { peerIdFromString } from '@libp2p/peer-id'
import { bytesEqual, toHex } from './bytes.ts'
import { copyBytes, MAX_U32, type PartMessage } from './parts.ts'

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

/**
 * Completed messages remembered for duplicate detection, at most. A forgotten one only lets a
 * repeated copy through, which the round collector counts as a duplicate.
 */
const MAX_COMPLETED = 65_536

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
    if (this.completed.size > MAX_COMPLETED) {
      const oldest = this.completed.keys().next().value as string
      this.completed.delete(oldest)
    }
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

  /**
   * Both maps hold their entries in the order of their timestamps, so each scan stops at the
   * first entry that has not expired and an add() costs no more than the entries it removes.
   */
  private expire(): void {
    const now = this.now()
    for (const [key, message] of this.pending) {
      if (now - message.firstPartAt <= this.timeoutMs) break
      this.removePending(key, message)
      this.expiredCount++
    }
    for (const [key, message] of this.completed) {
      if (now - message.completedAt <= this.timeoutMs) break
      this.completed.delete(key)
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

function checkOption(value: number, min: number, max: number, name: string): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(
      `Expected \`${name}\` to be an integer from ${min} to ${max}, got ${String(value)}`,
    )
  }
  return value
}
