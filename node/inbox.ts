import type { PeerId } from '@libp2p/interface'
import {
  type CodecSpec,
  type DeltaMessage,
  type DeltaVerdict,
  decodePart,
  isMembershipMessage,
  isPartMessage,
  type MembershipMessage,
  type MembershipVerdict,
  PartAssembler,
  PartDecodeError,
  type PartMessage,
  validateDelta,
  validateMembership,
} from '../protocols/index.ts'
import { log } from './log.ts'

/** Verdict on a part: accepted parts that do not complete a delta carry no message. */
type PartVerdict =
  | { result: 'accept'; message: DeltaMessage | undefined }
  | { result: 'reject' | 'ignore'; reason: string }

export interface InboxInit {
  /** SHA-256 of the local swarm spec. */
  specHash: Uint8Array
  /** Expected tensor shapes, in the order the model lists its weights. */
  shapes: number[][]
  /** Largest sampleCount a peer may claim: the size of the largest shard. */
  maxSampleCount: number
  codec: CodecSpec
  /** Encoded size of a whole delta in the spec's codec, the largest one the inbox assembles. */
  deltaBytes: number
  /** Peers of the swarm spec; the part buffer has room for a delta of each for two rounds. */
  peers: number
  /** Milliseconds after which an incomplete delta in parts is dropped. */
  partTimeoutMs: number
  /** Current round of the local round loop. */
  currentRound: () => number
  onReject?: (reason: string) => void
}

/**
 * Judges every message that reaches the delta topic or the push protocol: deltas, their parts,
 * joins and leaves. It keeps the decoded form of each accepted message until the round loop
 * takes it, and counts bytes received and rejected messages.
 */
export class Inbox {
  bytesReceived = 0
  rejectedMessages = 0
  private readonly init: InboxInit
  private readonly assembler: PartAssembler
  private readonly decoded = new WeakMap<Uint8Array, DeltaMessage | MembershipMessage>()

  constructor(init: InboxInit) {
    this.init = init
    this.assembler = new PartAssembler({
      maxMessageBytes: init.deltaBytes,
      // Room for every peer's delta of the current and the next round.
      maxBufferedBytes: init.deltaBytes * 2 * Math.max(2, init.peers),
      timeoutMs: init.partTimeoutMs,
    })
  }

  /**
   * Validates a delta, part, join or leave message from `from`, its author, and counts it;
   * returns the verdict. The part that completes a delta carries the whole delta's verdict.
   */
  check(bytes: Uint8Array, from: PeerId): 'accept' | 'reject' | 'ignore' {
    this.bytesReceived += bytes.byteLength
    let verdict: DeltaVerdict | MembershipVerdict | PartVerdict
    if (isMembershipMessage(bytes)) {
      verdict = validateMembership(bytes, this.init.specHash)
    } else if (isPartMessage(bytes)) {
      verdict = this.checkPart(bytes, from)
    } else {
      verdict = this.checkDelta(bytes)
    }
    if (verdict.result === 'accept') {
      if (verdict.message !== undefined) this.decoded.set(bytes, verdict.message)
    } else if (verdict.result === 'reject') {
      this.rejectedMessages++
      log.trace('rejected message: %s', verdict.reason)
      this.init.onReject?.(verdict.reason)
    } else {
      log.trace('ignored message: %s', verdict.reason)
    }
    return verdict.result
  }

  /** Returns the decoded message of bytes that check() accepted, if it carried a whole one. */
  take(bytes: Uint8Array): DeltaMessage | MembershipMessage | undefined {
    return this.decoded.get(bytes)
  }

  private checkDelta(bytes: Uint8Array): DeltaVerdict {
    return validateDelta(bytes, {
      specHash: this.init.specHash,
      shapes: this.init.shapes,
      maxSampleCount: this.init.maxSampleCount,
      currentRound: this.init.currentRound,
      codec: this.init.codec,
    })
  }

  /**
   * Decodes a part and adds it to the assembler. A part that is not the last is accepted, so
   * gossipsub forwards it; the last one is judged by the whole delta it completes.
   */
  private checkPart(bytes: Uint8Array, from: PeerId): PartVerdict {
    let part: PartMessage
    try {
      part = decodePart(bytes)
    } catch (error) {
      if (error instanceof PartDecodeError) return { result: 'reject', reason: error.message }
      throw error
    }
    if (!Buffer.from(part.specHash).equals(this.init.specHash)) {
      return { result: 'ignore', reason: 'part for another swarm spec' }
    }
    const currentRound = this.init.currentRound()
    if (part.round < currentRound) {
      return { result: 'ignore', reason: `part of round ${part.round}, before the current round` }
    }
    this.assembler.prune(currentRound)
    const added = this.assembler.add(part, from.toString())
    switch (added.status) {
      case 'invalid':
        return { result: 'reject', reason: added.reason }
      case 'duplicate':
        return { result: 'ignore', reason: `part ${part.partIndex} arrived twice` }
      case 'partial':
        return { result: 'accept', message: undefined }
      case 'complete':
        return this.checkDelta(added.message)
    }
  }
}
