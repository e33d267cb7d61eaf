/**
 * Hostile gossip messages for the delta topic, and the attacker that publishes them from a
 * worker thread.
 *
 * HostileMessages is a seeded generator of random bytes, broken or mutated delta messages,
 * broken part messages and broken join or leave messages. Every message is invalid or
 * ignorable by construction. The exceptions are incomplete parts, which a peer buffers until
 * they expire, and replays of an honest peer's delta under the attacker's id, which a peer
 * stores but never averages because the attacker is not a member. Each message carries the
 * verdicts that gossipsub's topic validator may give it. A set of several verdicts means the
 * verdict depends on timing, for example on whether a replayed delta's round has closed.
 *
 * runAttacker is the entry point of the worker thread. It runs its own libp2p hosts and event
 * loop, so the flood goes on while the attacked peers train on the main thread.
 */

import { createHash } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { parentPort, workerData } from 'node:worker_threads'
import type { PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { Random } from '../../data/index.ts'
import { createHost, type Host } from '../../node/host.ts'
import {
  type CodecSpec,
  DELTA_HEADER_BYTES,
  type DeltaMessage,
  encodeDelta,
  encodePart,
  splitIntoParts,
} from '../../protocols/index.ts'

export type Verdict = 'accept' | 'reject' | 'ignore'

export interface HostileMessage {
  kind: string
  bytes: Uint8Array
  /** Verdicts the topic validator may return for these bytes. */
  expected: readonly Verdict[]
}

export interface HostileContext {
  /** SHA-256 of the swarm spec of the attacked peers. */
  specHash: Uint8Array
  /** Weight shapes of the attacked peers' model, in layer order. */
  shapes: number[][]
  /** Largest sampleCount the attacked peers accept, the size of their largest shard. */
  maxSampleCount: number
  /** The peer that publishes the messages, so gossipsub's authenticated author. */
  attacker: PeerId
  /** Other peers, whose ids serve as forged part senders. */
  others: PeerId[]
  /** The swarm spec's maxMessageBytes. */
  maxMessageBytes: number
  /**
   * A round that no attacked peer closes while the messages arrive, so no message is ignored
   * as stale when the test expects it to be rejected.
   */
  openRound: number
}

const REJECT: readonly Verdict[] = ['reject']
const IGNORE: readonly Verdict[] = ['ignore']
const ACCEPT: readonly Verdict[] = ['accept']
const REJECT_OR_IGNORE: readonly Verdict[] = ['reject', 'ignore']
const ACCEPT_OR_REJECT: readonly Verdict[] = ['accept', 'reject']
const ACCEPT_OR_IGNORE: readonly Verdict[] = ['accept', 'ignore']

const MAGICS = {
  delta: Uint8Array.of(0x44, 0x4c, 0x44, 0x31),
  part: Uint8Array.of(0x44, 0x4c, 0x50, 0x31),
  join: Uint8Array.of(0x44, 0x4c, 0x4a, 0x31),
  leave: Uint8Array.of(0x44, 0x4c, 0x4c, 0x31),
}
const MEMBERSHIP_BYTES = 41
const HASH_BYTES = 32
/** Offsets of the delta header fields, from the layout in protocols/delta.ts. */
const DELTA_FIELD = {
  version: 4,
  codec: 5,
  codecParam: 6,
  specHash: 10,
  round: 42,
  sampleCount: 46,
  baseModelHash: 50,
  tensorCount: 82,
}
/** Float32 bit patterns of quiet, signalling and negative NaN and of ±Infinity. */
const NON_FINITE_BITS = [0x7fc00000, 0x7f800001, 0xffffffff, 0x7f800000, 0xff800000]
const OTHER_CODECS: CodecSpec[] = [
  { name: 'float16' },
  { name: 'int8', blockSize: 256 },
  { name: 'topk', fraction: 0.01 },
]

/** Byte offsets of one tensor record in an encoded float32 delta. */
interface TensorLayout {
  rank: number
  rankOffset: number
  dimsOffset: number
  payloadLengthOffset: number
  payloadOffset: number
  valueCount: number
}

type MessageFactory = () => HostileMessage | HostileMessage[]

/**
 * Seeded generator of hostile messages. The same context and seed give the same sequence of
 * messages, so a failure reproduces. `mixed()` draws from every kind by weight, and the other
 * public methods create the kinds that fit only one phase of a run.
 */
export class HostileMessages {
  private readonly context: HostileContext
  private readonly random: Random
  /** Float32 delta of the attacked model with small values, never published unmodified. */
  private readonly template: Uint8Array
  private readonly layout: TensorLayout[]
  private readonly otherCodecDeltas: Uint8Array[]
  private readonly attackerSender: Uint8Array
  private readonly otherSenders: Uint8Array[]
  private readonly weightedFactories: Array<[number, MessageFactory]>
  private readonly totalWeight: number
  /** Messages already created, for republishing the same bytes. */
  private readonly replayPool: HostileMessage[] = []
  /** Messages of several parts whose remaining parts `mixed()` returns next. */
  private readonly queued: HostileMessage[] = []
  /**
   * Digests of the messages that parts carry whole. The assembler reports a second message with
   * the same digest as a duplicate, which it ignores, so every such message is made unique.
   */
  private readonly usedDigests = new Set<string>()

  constructor(context: HostileContext, seed: number) {
    this.context = context
    this.random = new Random(seed)
    this.attackerSender = context.attacker.toMultihash().bytes
    this.otherSenders = context.others.map((peerId) => peerId.toMultihash().bytes)
    const values = context.shapes.map((shape) => {
      const tensor = new Float32Array(count(shape))
      for (let i = 0; i < tensor.length; i++) tensor[i] = (this.random.nextFloat() - 0.5) * 1e-3
      return tensor
    })
    const message = (codec: CodecSpec): DeltaMessage => ({
      version: 1,
      codec,
      specHash: context.specHash,
      round: context.openRound,
      sampleCount: 1,
      baseModelHash: new Uint8Array(HASH_BYTES),
      tensors: context.shapes.map((shape, i) => ({ shape, values: values[i] as Float32Array })),
    })
    this.template = encodeDelta(message({ name: 'float32' }))
    this.otherCodecDeltas = OTHER_CODECS.map((codec) => encodeDelta(message(codec)))
    this.layout = tensorLayout(context.shapes)
    this.weightedFactories = [
      [200, () => this.randomBytes()],
      [80, () => this.magicJunk()],
      [100, () => this.truncatedDelta()],
      [10, () => this.mutatedHeader()],
      [30, () => this.otherCodec()],
      [50, () => this.wrongShapes()],
      [5, () => this.nonFinite()],
      [20, () => this.otherSpec()],
      [40, () => this.partIndexOutOfRange()],
      [40, () => this.partLengthLie()],
      [40, () => this.partForeignSender()],
      [40, () => this.partDigestMismatch()],
      [40, () => this.partBadContent()],
      [30, () => this.partIncomplete()],
      [20, () => this.partsDigestMismatch()],
      [20, () => this.partsBadContent()],
      [1, () => this.partsNonFinite()],
      [20, () => this.partOtherSpec()],
      [50, () => this.membershipJunk()],
      [50, () => this.replay()],
    ]
    this.totalWeight = this.weightedFactories.reduce((sum, [weight]) => sum + weight, 0)
  }

  /** Byte length of a valid float32 delta of the attacked model. */
  get deltaBytes(): number {
    return this.template.byteLength
  }

  /**
   * Returns the next message of a kind drawn by weight. The parts of a message of several parts
   * come out one after another, so no other part message separates them.
   */
  mixed(): HostileMessage {
    const queued = this.queued.shift()
    if (queued !== undefined) return this.remember(queued)
    let draw = this.random.nextInt(this.totalWeight)
    for (const [weight, create] of this.weightedFactories) {
      draw -= weight
      if (draw >= 0) continue
      const created = create()
      if (!Array.isArray(created)) return this.remember(created)
      const [first, ...rest] = created as [HostileMessage, ...HostileMessage[]]
      this.queued.push(...rest)
      return this.remember(first)
    }
    throw new Error('unreachable: the draw is below the total weight')
  }

  /**
   * Returns a delta or part for `round`, which the attacked peers have closed, so they ignore
   * it as stale. Stale deltas are otherwise valid, and most use small wrong shapes because the
   * round check runs before the shape check.
   */
  stale(round: number): HostileMessage {
    const choice = this.random.nextInt(10)
    if (choice === 0) {
      const bytes = this.freshTemplate()
      writeUint32(bytes, DELTA_FIELD.round, round)
      return this.remember({ kind: 'stale-delta', bytes, expected: IGNORE })
    }
    if (choice < 5) {
      const bytes = this.tinyDelta({ round })
      return this.remember({ kind: 'stale-delta', bytes, expected: IGNORE })
    }
    const bytes = this.part({ round, partIndex: 9, partCount: 3 })
    return this.remember({ kind: 'stale-part', bytes, expected: IGNORE })
  }

  /**
   * Returns the bytes of a peer's own delta for republishing under the attacker's id, whole or
   * as a single part. A peer accepts it (a round not closed yet) or ignores it (a closed round),
   * and must never average it, because the attacker is not a member.
   */
  honestReplay(delta: Uint8Array, round: number): HostileMessage {
    if (this.random.nextInt(4) > 0) {
      return { kind: 'honest-replay', bytes: delta, expected: ACCEPT_OR_IGNORE }
    }
    const [bytes] = splitIntoParts({
      specHash: this.context.specHash,
      round,
      sender: this.context.attacker,
      message: delta,
      maxPartBytes: this.context.maxMessageBytes,
    })
    return { kind: 'honest-replay-part', bytes: bytes as Uint8Array, expected: ACCEPT_OR_IGNORE }
  }

  /**
   * Returns a delta padded with trailing bytes to just above maxMessageBytes. It still fits
   * gossipsub's inbound frame limit, which leaves room for the RPC envelope, so it reaches the
   * validator.
   */
  overMaxMessage(): HostileMessage {
    const length = this.context.maxMessageBytes + 1 + this.random.nextInt(1024)
    const bytes = new Uint8Array(length)
    bytes.set(this.freshTemplate())
    return this.remember({ kind: 'over-max-message', bytes, expected: REJECT })
  }

  /**
   * Returns a message of twice maxMessageBytes, above gossipsub's inbound frame limit, so the
   * receiver ends the sender's inbound stream without validating it.
   */
  overFrameLimit(): HostileMessage {
    const bytes = this.randomFill(new Uint8Array(2 * this.context.maxMessageBytes))
    bytes.set(MAGICS.delta)
    return { kind: 'over-frame-limit', bytes, expected: REJECT }
  }

  private remember(message: HostileMessage): HostileMessage {
    // Keeps small messages and an occasional large one, so replays stay cheap.
    if (message.bytes.byteLength < 4096 || this.random.nextInt(20) === 0) {
      if (this.replayPool.length < 500) this.replayPool.push(message)
      else this.replayPool[this.random.nextInt(this.replayPool.length)] = message
    }
    return message
  }

  private randomBytes(): HostileMessage {
    const length = this.random.nextInt(2) === 0 ? this.random.nextInt(96) : this.logLength(65536)
    const bytes = this.randomFill(new Uint8Array(length))
    // Bytes that start with a known magic belong to the junk kinds below.
    if (length >= 4 && Object.values(MAGICS).some((magic) => startsWith(bytes, magic))) {
      bytes[0] = 0
    }
    return { kind: 'random-bytes', bytes, expected: REJECT }
  }

  /**
   * Returns a known magic followed by random bytes. A random spec hash never matches the
   * attacked spec, so such bytes are either rejected as malformed or ignored as another
   * swarm's message, whichever check comes first.
   */
  private magicJunk(): HostileMessage {
    const magics = Object.values(MAGICS)
    const magic = magics[this.random.nextInt(magics.length)] as Uint8Array
    const length =
      magic === MAGICS.join || magic === MAGICS.leave
        ? MEMBERSHIP_BYTES - 2 + this.random.nextInt(5)
        : 4 + this.logLength(4096)
    const bytes = this.randomFill(new Uint8Array(length))
    bytes.set(magic)
    // Version 1 half of the time, so decoding gets past the version byte.
    if (this.random.nextInt(2) === 0 && length > 4) bytes[4] = 1
    const specOffset = magic === MAGICS.delta ? DELTA_FIELD.specHash : 5
    if (startsWith(bytes.subarray(specOffset), this.context.specHash))
      flipBits(bytes, specOffset, 1)
    return { kind: 'magic-junk', bytes, expected: REJECT_OR_IGNORE }
  }

  private truncatedDelta(): HostileMessage {
    // Most cuts fall in the header and first tensor record, and a few anywhere in the payload.
    const length =
      this.random.nextInt(30) > 0
        ? this.random.nextInt(DELTA_HEADER_BYTES + 64)
        : this.random.nextInt(this.template.byteLength)
    return {
      kind: 'truncated-delta',
      bytes: this.freshTemplate().slice(0, length),
      expected: REJECT,
    }
  }

  /** Returns a valid float32 delta with exactly one header or tensor-record field made invalid. */
  private mutatedHeader(): HostileMessage {
    const bytes = this.freshTemplate()
    const tensor = this.layout[this.random.nextInt(this.layout.length)] as TensorLayout
    const choice = this.random.nextInt(11)
    let kind: string
    switch (choice) {
      case 0:
        kind = 'bad-magic'
        // Another known magic would make the bytes a part or a join, not a broken delta.
        while (Object.values(MAGICS).some((magic) => startsWith(bytes, magic))) {
          flipBits(bytes, this.random.nextInt(4), 1 + this.random.nextInt(255))
        }
        break
      case 1:
        kind = 'bad-version'
        bytes[DELTA_FIELD.version] = this.differentByte(1)
        break
      case 2:
        kind = 'unknown-codec'
        bytes[DELTA_FIELD.codec] = 4 + this.random.nextInt(252)
        break
      case 3:
        kind = 'bad-codec-param'
        writeUint32(bytes, DELTA_FIELD.codecParam, 1 + this.random.nextInt(0xffff_fffe))
        break
      case 4: {
        kind = 'tensor-count-off-by-one'
        const tensorCount = this.context.shapes.length
        const off = this.random.nextInt(2) === 0 ? tensorCount - 1 : tensorCount + 1
        new DataView(bytes.buffer).setUint16(DELTA_FIELD.tensorCount, off)
        break
      }
      case 5: {
        kind = 'dims-changed'
        if (tensor.rank === 0) {
          kind = 'rank-changed'
          bytes[tensor.rankOffset] = 1
          break
        }
        const offset = tensor.dimsOffset + 4 * this.random.nextInt(tensor.rank)
        const dim = readUint32(bytes, offset)
        writeUint32(bytes, offset, this.differentUint32(dim))
        break
      }
      case 6: {
        kind = 'payload-length-lie'
        const length = readUint32(bytes, tensor.payloadLengthOffset)
        writeUint32(bytes, tensor.payloadLengthOffset, this.differentUint32(length))
        break
      }
      case 7:
        kind = 'rank-too-high'
        bytes[tensor.rankOffset] = 9 + this.random.nextInt(247)
        break
      case 8:
        kind = 'sample-count-zero'
        writeUint32(bytes, DELTA_FIELD.sampleCount, 0)
        break
      case 9: {
        kind = 'sample-count-over'
        const over = this.context.maxSampleCount + 1
        const sampleCount =
          this.random.nextInt(2) === 0 ? over : over + this.random.nextInt(0xffff_ffff - over)
        writeUint32(bytes, DELTA_FIELD.sampleCount, sampleCount)
        break
      }
      default: {
        kind = 'trailing-bytes'
        const padded = new Uint8Array(bytes.byteLength + 1 + this.random.nextInt(16))
        padded.set(bytes)
        return { kind, bytes: padded, expected: REJECT }
      }
    }
    return { kind, bytes, expected: REJECT }
  }

  /** Returns a well-formed delta in a codec other than the spec's float32. */
  private otherCodec(): HostileMessage {
    // Most draws take topk, whose messages are small, because float16 and int8 are large.
    const index = this.random.nextInt(20) === 0 ? this.random.nextInt(2) : 2
    const bytes = (this.otherCodecDeltas[index] as Uint8Array).slice()
    this.refreshHeader(bytes)
    return { kind: 'other-codec', bytes, expected: REJECT }
  }

  private wrongShapes(): HostileMessage {
    if (this.random.nextInt(20) > 0) {
      return { kind: 'wrong-shapes', bytes: this.tinyDelta({}), expected: REJECT }
    }
    const shapes = this.context.shapes.map((shape) => [...shape])
    const choice = this.random.nextInt(4)
    if (choice === 0) {
      // Transposes the first matrix: the same value count in another shape.
      const first = shapes[0] as number[]
      shapes[0] = [...first].reverse()
    } else if (choice === 1) {
      shapes[0] = [count(shapes[0] as number[])]
    } else if (choice === 2) {
      shapes.pop()
    } else {
      shapes.push([1])
    }
    return { kind: 'wrong-shapes', bytes: this.zeroDelta(shapes), expected: REJECT }
  }

  private nonFinite(): HostileMessage {
    const bytes = this.freshTemplate()
    const view = new DataView(bytes.buffer)
    const values = 1 + (this.random.nextInt(4) === 0 ? this.random.nextInt(100) : 0)
    for (let i = 0; i < values; i++) {
      const tensor = this.layout[this.random.nextInt(this.layout.length)] as TensorLayout
      const offset = tensor.payloadOffset + 4 * this.random.nextInt(tensor.valueCount)
      const bits = NON_FINITE_BITS[this.random.nextInt(NON_FINITE_BITS.length)] as number
      // Float32 payloads are little-endian.
      view.setUint32(offset, bits, true)
    }
    return { kind: 'non-finite', bytes, expected: REJECT }
  }

  /** Returns a well-formed delta of another swarm spec, which a peer ignores without penalty. */
  private otherSpec(): HostileMessage {
    const specHash = this.otherSpecHash()
    const bytes = this.random.nextInt(20) === 0 ? this.freshTemplate() : this.tinyDelta({})
    bytes.set(specHash, DELTA_FIELD.specHash)
    return { kind: 'other-spec', bytes, expected: IGNORE }
  }

  private partIndexOutOfRange(): HostileMessage {
    if (this.random.nextInt(5) === 0) {
      const bytes = this.part({ partIndex: 0, partCount: 0 })
      return { kind: 'part-count-zero', bytes, expected: REJECT }
    }
    const partCount = 1 + this.random.nextInt(8)
    const partIndex =
      this.random.nextInt(4) === 0 ? 0xffff : partCount + this.random.nextInt(0x10000 - partCount)
    return {
      kind: 'part-index-out-of-range',
      bytes: this.part({ partIndex, partCount }),
      expected: REJECT,
    }
  }

  /** Returns a part whose totalLength disagrees with its data or exceeds the largest delta. */
  private partLengthLie(): HostileMessage {
    const data = this.randomFill(new Uint8Array(1 + this.random.nextInt(512)))
    const choice = this.random.nextInt(3)
    let totalLength: number
    let partCount = 1
    if (choice === 0) {
      totalLength = this.deltaBytes + 1 + this.random.nextInt(0xffff_ffff - this.deltaBytes)
      partCount = 1 + this.random.nextInt(16)
    } else if (choice === 1) {
      // A single part must carry totalLength bytes.
      totalLength = this.differentUint32(data.byteLength) % (this.deltaBytes + 1)
      if (totalLength === data.byteLength) totalLength = data.byteLength + 1
    } else {
      // A first part of several, after which the last part would carry 0 or too many bytes.
      partCount = 2 + this.random.nextInt(6)
      totalLength =
        this.random.nextInt(2) === 0
          ? (partCount - 1) * data.byteLength
          : partCount * data.byteLength + 1 + this.random.nextInt(1000)
    }
    const bytes = this.part({ partIndex: 0, partCount, totalLength, data })
    return { kind: 'part-length-lie', bytes, expected: REJECT }
  }

  private partForeignSender(): HostileMessage {
    let sender: Uint8Array
    if (this.random.nextInt(2) === 0 && this.otherSenders.length > 0) {
      sender = this.otherSenders[this.random.nextInt(this.otherSenders.length)] as Uint8Array
    } else {
      sender = this.randomFill(new Uint8Array(1 + this.random.nextInt(64)))
      if (sameBytes(sender, this.attackerSender)) flipBits(sender, 0, 1)
    }
    const data = this.randomFill(new Uint8Array(this.random.nextInt(256)))
    const bytes = this.part({ sender, data, totalLength: data.byteLength, partCount: 1 })
    return { kind: 'part-foreign-sender', bytes, expected: REJECT }
  }

  /** Returns a single part whose digest does not match its data. */
  private partDigestMismatch(): HostileMessage {
    const data = this.randomFill(new Uint8Array(this.random.nextInt(1024)))
    const digest = sha256(data)
    flipBits(digest, this.random.nextInt(HASH_BYTES), 1 + this.random.nextInt(255))
    const bytes = this.part({ data, digest, totalLength: data.byteLength, partCount: 1 })
    return { kind: 'part-digest-mismatch', bytes, expected: REJECT }
  }

  /** Returns a single, well-formed part that carries an invalid delta message. */
  private partBadContent(): HostileMessage {
    const data = this.uniqueInvalidDeltaContent(0)
    const bytes = this.part({ data, digest: sha256(data), totalLength: data.byteLength })
    return { kind: 'part-bad-content', bytes, expected: REJECT }
  }

  /** Returns some but never all parts of a message, which the assembler buffers until expiry. */
  private partIncomplete(): HostileMessage[] {
    const partCount = 2 + this.random.nextInt(5)
    const partBytes = 1 + this.random.nextInt(512)
    const totalLength = (partCount - 1) * partBytes + 1 + this.random.nextInt(partBytes)
    const digest = this.randomFill(new Uint8Array(HASH_BYTES))
    const indices = Array.from({ length: partCount }, (_, i) => i)
    // Drops one index so the message never completes.
    indices.splice(this.random.nextInt(partCount), 1)
    return indices.map((partIndex) => {
      const length =
        partIndex === partCount - 1 ? totalLength - (partCount - 1) * partBytes : partBytes
      const data = this.randomFill(new Uint8Array(length))
      const bytes = this.part({ partIndex, partCount, totalLength, digest, data })
      return { kind: 'part-incomplete', bytes, expected: ACCEPT }
    })
  }

  /** Returns every part of a message whose digest does not match the joined data. */
  private partsDigestMismatch(): HostileMessage[] {
    const message = this.randomFill(new Uint8Array(2 + this.random.nextInt(2048)))
    const digest = sha256(message)
    flipBits(digest, 0, 0xff)
    return this.split(message, 'parts-digest-mismatch', digest)
  }

  /** Returns every part of a well-formed split of an invalid delta message. */
  private partsBadContent(): HostileMessage[] {
    return this.split(this.uniqueInvalidDeltaContent(2), 'parts-bad-content')
  }

  /** Returns the two parts of a full-size delta that contains a NaN or infinite value. */
  private partsNonFinite(): HostileMessage[] {
    const message = this.nonFinite().bytes
    const parts = splitIntoParts({
      specHash: this.context.specHash,
      round: this.context.openRound,
      sender: this.context.attacker,
      message,
      maxPartBytes: Math.ceil(message.byteLength / 2) + 256,
    })
    return parts.map((bytes) => ({ kind: 'parts-non-finite', bytes, expected: ACCEPT_OR_REJECT }))
  }

  private partOtherSpec(): HostileMessage {
    const bytes = this.part({ specHash: this.otherSpecHash(), partIndex: 5, partCount: 1 })
    return { kind: 'part-other-spec', bytes, expected: IGNORE }
  }

  /** Returns a join or leave message with a wrong length, a wrong version or another spec. */
  private membershipJunk(): HostileMessage {
    const magic = this.random.nextInt(2) === 0 ? MAGICS.join : MAGICS.leave
    const choice = this.random.nextInt(3)
    const length =
      choice === 0
        ? this.random.nextInt(2) === 0
          ? 4 + this.random.nextInt(MEMBERSHIP_BYTES - 4)
          : MEMBERSHIP_BYTES + 1 + this.random.nextInt(64)
        : MEMBERSHIP_BYTES
    const bytes = this.randomFill(new Uint8Array(length))
    bytes.set(magic)
    if (length > 4) bytes[4] = choice === 1 ? this.differentByte(1) : 1
    const specHash = choice === 2 ? this.otherSpecHash() : this.context.specHash
    if (length > 5) bytes.set(specHash.subarray(0, Math.min(HASH_BYTES, length - 5)), 5)
    const kind = ['membership-bad-length', 'membership-bad-version', 'membership-other-spec'][
      choice
    ] as string
    return { kind, bytes, expected: choice === 2 ? IGNORE : REJECT }
  }

  /**
   * Returns an earlier message again. gossipsub gives it a new sequence number, so it reaches
   * the validator a second time. A part that completed or was buffered is a duplicate now.
   */
  private replay(): HostileMessage {
    const earlier = this.replayPool[this.random.nextInt(this.replayPool.length)]
    if (earlier === undefined) return this.randomBytes()
    const isPart = startsWith(earlier.bytes, MAGICS.part) && !earlier.expected.includes('ignore')
    const expected = isPart ? [...earlier.expected, 'ignore' as const] : earlier.expected
    const kind = earlier.kind.startsWith('replay:') ? earlier.kind : `replay:${earlier.kind}`
    return { kind, bytes: earlier.bytes, expected }
  }

  /** Returns a small message that a peer must reject as a delta: junk, truncated or misshapen. */
  private invalidDeltaContent(): Uint8Array {
    switch (this.random.nextInt(4)) {
      case 0:
        return this.randomBytes().bytes
      case 1:
        return this.freshTemplate().slice(0, this.random.nextInt(DELTA_HEADER_BYTES + 64))
      case 2:
        return this.tinyDelta({})
      default:
        // A part nested in a part, or a join message, is no delta either.
        return this.random.nextInt(2) === 0
          ? this.part({ partIndex: 0, partCount: 1 })
          : withMagic(this.tinyDelta({}), MAGICS.join)
    }
  }

  /** Returns invalidDeltaContent of at least `minLength` bytes that no earlier part carried. */
  private uniqueInvalidDeltaContent(minLength: number): Uint8Array {
    for (;;) {
      const content = this.invalidDeltaContent()
      const digest = Buffer.from(sha256(content)).toString('hex')
      if (content.byteLength < minLength || this.usedDigests.has(digest)) continue
      this.usedDigests.add(digest)
      return content
    }
  }

  /**
   * Splits a message of at least 2 bytes into 2 to 4 well-formed parts. Their digest field is
   * `digest` when given, else the message's SHA-256.
   */
  private split(message: Uint8Array, kind: string, digest?: Uint8Array): HostileMessage[] {
    const partCount = Math.min(message.byteLength, 2 + this.random.nextInt(3))
    const partBytes = Math.ceil(message.byteLength / partCount)
    const realCount = Math.ceil(message.byteLength / partBytes)
    const messageDigest = digest ?? sha256(message)
    return Array.from({ length: realCount }, (_, partIndex) => ({
      kind,
      bytes: this.part({
        partIndex,
        partCount: realCount,
        totalLength: message.byteLength,
        digest: messageDigest,
        data: message.subarray(partIndex * partBytes, (partIndex + 1) * partBytes),
      }),
      expected: ACCEPT_OR_REJECT,
    }))
  }

  /** Encodes an attacker part for the open round, with `overrides` replacing its fields. */
  private part(overrides: {
    specHash?: Uint8Array
    round?: number
    sender?: Uint8Array
    digest?: Uint8Array
    totalLength?: number
    partIndex?: number
    partCount?: number
    data?: Uint8Array
  }): Uint8Array {
    const data = overrides.data ?? this.randomFill(new Uint8Array(this.random.nextInt(128)))
    return encodePart({
      version: 1,
      specHash: overrides.specHash ?? this.context.specHash,
      round: overrides.round ?? this.context.openRound,
      sender: overrides.sender ?? this.attackerSender,
      digest: overrides.digest ?? this.randomFill(new Uint8Array(HASH_BYTES)),
      totalLength: overrides.totalLength ?? data.byteLength,
      partIndex: overrides.partIndex ?? 0,
      partCount: overrides.partCount ?? 1,
      data,
    })
  }

  /** Returns a copy of the template with a new baseModelHash and a valid sampleCount. */
  private freshTemplate(): Uint8Array {
    const bytes = this.template.slice()
    this.refreshHeader(bytes)
    return bytes
  }

  private refreshHeader(bytes: Uint8Array): void {
    writeUint32(
      bytes,
      DELTA_FIELD.sampleCount,
      1 + this.random.nextInt(this.context.maxSampleCount),
    )
    bytes.set(this.randomFill(new Uint8Array(HASH_BYTES)), DELTA_FIELD.baseModelHash)
  }

  /**
   * Encodes a float32 delta of 0 to 7 tensors of at most 16 values, so its shapes never match
   * the attacked model, whose smallest tensor has 10 values and whose first has 156,800.
   */
  private tinyDelta(fields: { round?: number }): Uint8Array {
    const tensorCount = this.random.nextInt(8)
    const shapes = Array.from({ length: tensorCount }, () => {
      const rank = this.random.nextInt(3)
      return Array.from({ length: rank }, () => 1 + this.random.nextInt(4))
    })
    return encodeDelta({
      version: 1,
      codec: { name: 'float32' },
      specHash: this.context.specHash,
      round: fields.round ?? this.context.openRound,
      sampleCount: 1 + this.random.nextInt(this.context.maxSampleCount),
      baseModelHash: this.randomFill(new Uint8Array(HASH_BYTES)),
      tensors: shapes.map((shape) => ({ shape, values: new Float32Array(count(shape)) })),
    })
  }

  private zeroDelta(shapes: number[][]): Uint8Array {
    return encodeDelta({
      version: 1,
      codec: { name: 'float32' },
      specHash: this.context.specHash,
      round: this.context.openRound,
      sampleCount: 1 + this.random.nextInt(this.context.maxSampleCount),
      baseModelHash: this.randomFill(new Uint8Array(HASH_BYTES)),
      tensors: shapes.map((shape) => ({ shape, values: new Float32Array(count(shape)) })),
    })
  }

  private otherSpecHash(): Uint8Array {
    const hash = this.context.specHash.slice()
    flipBits(hash, this.random.nextInt(HASH_BYTES), 1 + this.random.nextInt(255))
    return hash
  }

  /** Returns a length from 1 to `max`, spread evenly over its powers of two. */
  private logLength(max: number): number {
    const bits = Math.log2(max)
    return Math.min(max, Math.max(1, Math.floor(2 ** (this.random.nextFloat() * bits))))
  }

  private randomFill(bytes: Uint8Array): Uint8Array {
    for (let i = 0; i < bytes.length; i += 4) {
      const word = this.random.nextUint32()
      for (let j = 0; j < 4 && i + j < bytes.length; j++) bytes[i + j] = (word >>> (8 * j)) & 0xff
    }
    return bytes
  }

  private differentByte(value: number): number {
    return (value + 1 + this.random.nextInt(255)) & 0xff
  }

  private differentUint32(value: number): number {
    return (value + 1 + this.random.nextInt(0xffff_ffff)) % 0x1_0000_0000
  }
}

function tensorLayout(shapes: number[][]): TensorLayout[] {
  let offset = DELTA_HEADER_BYTES
  return shapes.map((shape) => {
    const rankOffset = offset
    const dimsOffset = rankOffset + 1
    const payloadLengthOffset = dimsOffset + 4 * shape.length
    const payloadOffset = payloadLengthOffset + 4
    const valueCount = count(shape)
    offset = payloadOffset + 4 * valueCount
    return {
      rank: shape.length,
      rankOffset,
      dimsOffset,
      payloadLengthOffset,
      payloadOffset,
      valueCount,
    }
  })
}

function count(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1)
}

function readUint32(bytes: Uint8Array, offset: number): number {
  return new DataView(bytes.buffer, bytes.byteOffset).getUint32(offset)
}

function writeUint32(bytes: Uint8Array, offset: number, value: number): void {
  new DataView(bytes.buffer, bytes.byteOffset).setUint32(offset, value)
}

function startsWith(bytes: Uint8Array, prefix: Uint8Array): boolean {
  return (
    bytes.byteLength >= prefix.byteLength && sameBytes(bytes.subarray(0, prefix.length), prefix)
  )
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b)
}

/** XORs one byte with a non-zero `mask`, so the byte always changes. */
function flipBits(bytes: Uint8Array, index: number, mask: number): void {
  bytes[index] = (bytes[index] as number) ^ mask
}

function withMagic(bytes: Uint8Array, magic: Uint8Array): Uint8Array {
  bytes.set(magic)
  return bytes
}

function sha256(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(bytes).digest())
}

/** Schedule of one flood, with message positions counted from 0. */
export interface FloodPlan {
  messageCount: number
  /** From this message on, the flood first waits until the peers closed round 0. */
  staleFrom: number
  /** After staleFrom, every this many messages one is a delta or part of round 0. */
  staleEvery: number
  /** Every this many messages, one replays an honest delta under the attacker's id. */
  honestReplayEvery: number
  /** Messages just above maxMessageBytes, published before the oversized frames. */
  overMaxMessageCount: number
  /** Frames above the inbound limit, the last messages, published by a second host. */
  overFrameLimitCount: number
  /** Unvalidated messages per attacked peer above which the flood waits. */
  maxInFlightMessages: number
  maxInFlightKiB: number
  /** Maximum wait for validation progress before the flood publishes anyway. */
  drainTimeoutMs: number
}

/** Input of the attacker worker, passed as its workerData. */
export interface AttackerData {
  topic: string
  /** Attacked peers, each with a multiaddr that ends in its peer id. */
  peers: Array<{ id: string; address: string }>
  specHash: Uint8Array
  shapes: number[][]
  maxSampleCount: number
  maxMessageBytes: number
  openRound: number
  seed: number
  /** Deltas of the attacked peers from a clean run of the same spec, for replaying. */
  honestDeltas: Array<{ round: number; bytes: Uint8Array }>
  plan: FloodPlan
  /** Int32 slots shared with the test, named by SHARED_SLOTS. */
  shared: SharedArrayBuffer
}

/**
 * Int32 slots of AttackerData.shared, read and written with Atomics, with room for 8 attacked
 * peers. The test writes how far each attacked peer got in validating the attacker's messages,
 * and the worker reads them for flow control.
 */
export const SHARED_SLOTS = {
  /** 1 once every attacked peer closed round 0, written by the test. */
  roundZeroClosed: 0,
  /** Slot validated + i counts the messages that attacked peer i validated. */
  validated: 1,
  /** Slot validatedKiB + i counts the KiB that attacked peer i validated, rounded down. */
  validatedKiB: 9,
  count: 17,
}

/** Expected verdicts of one published message, by SHA-1 fingerprint of its bytes. */
export interface Expectation {
  fingerprint: string
  kind: string
  verdicts: readonly Verdict[]
  /** Position of the message in the flood, to find it again from the seed. */
  index: number
}

/** Messages from the attacker worker to the test. */
export type AttackerReport =
  | { type: 'ready'; attackers: string[] }
  | { type: 'progress'; published: number; expectations: Expectation[] }
  | {
      type: 'done'
      published: number
      kinds: Record<string, number>
      sent: Record<string, number>
      drainTimeouts: number
    }
  | { type: 'stopped' }

/** Messages from the test to the attacker worker. */
export type AttackerCommand = { type: 'start' } | { type: 'stop' }

export function fingerprint(bytes: Uint8Array): string {
  return createHash('sha1').update(bytes).digest('hex')
}

/**
 * Entry point of the attacker worker. Starts two hosts that never subscribe to the topic,
 * connects them to the attacked peers, reports ready, floods on 'start' and stops its hosts on
 * 'stop'. The host `attacker` publishes every message that fits gossipsub's frame limit, and
 * `flooder` publishes the oversized frames, after which the peers stop reading its stream.
 */
export async function runAttacker(): Promise<void> {
  const port = parentPort
  if (port === null) throw new Error('runAttacker must run in a worker thread')
  const data = workerData as AttackerData
  let started!: () => void
  const startReceived = new Promise<void>((resolve) => {
    started = resolve
  })
  let stopped!: () => void
  const stopReceived = new Promise<void>((resolve) => {
    stopped = resolve
  })
  let stopping = false
  port.on('message', (command: AttackerCommand) => {
    if (command.type === 'start') started()
    if (command.type === 'stop') {
      stopping = true
      started()
      stopped()
    }
  })

  const attacker = await createHost()
  const flooder = await createHost()
  try {
    for (const host of [attacker, flooder]) {
      for (const peer of data.peers) await host.dial(multiaddr(peer.address))
      await waitForSubscribers(host, data.topic, data.peers.length)
    }
    const report = (message: AttackerReport) => port.postMessage(message)
    report({ type: 'ready', attackers: [attacker.peerId.toString(), flooder.peerId.toString()] })
    await startReceived
    const outcome = await flood(data, attacker, flooder, report, () => stopping)
    report({ type: 'done', ...outcome })
    await stopReceived
  } finally {
    await attacker.stop()
    await flooder.stop()
  }
  port.postMessage({ type: 'stopped' } satisfies AttackerReport)
}

async function waitForSubscribers(host: Host, topic: string, count: number): Promise<void> {
  const pubsub = host.services.pubsub
  while (pubsub.getSubscribers(topic).length < count) {
    await new Promise<void>((resolve) => {
      pubsub.addEventListener('subscription-change', () => resolve(), { once: true })
    })
  }
}

/** Publishes the planned messages, waiting whenever an attacked peer falls behind. */
async function flood(
  data: AttackerData,
  attacker: Host,
  flooder: Host,
  report: (message: AttackerReport) => void,
  stopping: () => boolean,
): Promise<{
  published: number
  kinds: Record<string, number>
  sent: Record<string, number>
  drainTimeouts: number
}> {
  const { plan } = data
  const shared = new Int32Array(data.shared)
  const generator = new HostileMessages(
    {
      specHash: data.specHash,
      shapes: data.shapes,
      maxSampleCount: data.maxSampleCount,
      attacker: attacker.peerId,
      others: data.peers.map((peer) => peerIdFromString(peer.id)),
      maxMessageBytes: data.maxMessageBytes,
      openRound: data.openRound,
    },
    data.seed,
  )
  const peerIds = data.peers.map((peer) => peer.id)
  const sentMessages = new Map<string, number>()
  const sentBytes = new Map<string, number>()
  const kinds: Record<string, number> = {}
  let expectations: Expectation[] = []
  let drainTimeouts = 0

  const validatedTotal = () =>
    peerIds.reduce((sum, _, i) => sum + Atomics.load(shared, SHARED_SLOTS.validated + i), 0)
  const backlogged = (maxMessages: number, maxKiB: number) =>
    peerIds.some((id, i) => {
      const messages =
        (sentMessages.get(id) ?? 0) - Atomics.load(shared, SHARED_SLOTS.validated + i)
      const kib =
        (sentBytes.get(id) ?? 0) / 1024 - Atomics.load(shared, SHARED_SLOTS.validatedKiB + i)
      return messages > maxMessages || kib > maxKiB
    })
  /** Waits until every peer's backlog is within the limits, or validation stops progressing. */
  const drain = async (maxMessages: number, maxKiB: number) => {
    let progressAt = Date.now()
    let validated = validatedTotal()
    while (backlogged(maxMessages, maxKiB) && !stopping()) {
      await sleep(5)
      const now = validatedTotal()
      if (now > validated) {
        validated = now
        progressAt = Date.now()
      } else if (Date.now() - progressAt > plan.drainTimeoutMs) {
        drainTimeouts++
        return
      }
    }
  }

  const overMaxFrom = plan.messageCount - plan.overFrameLimitCount - plan.overMaxMessageCount
  const overFrameFrom = plan.messageCount - plan.overFrameLimitCount
  let published = 0
  for (let index = 0; index < plan.messageCount && !stopping(); index++) {
    if (index === plan.staleFrom) {
      while (Atomics.load(shared, SHARED_SLOTS.roundZeroClosed) === 0 && !stopping()) {
        await sleep(5)
      }
    }
    let message: HostileMessage
    let host = attacker
    if (index >= overFrameFrom) {
      message = generator.overFrameLimit()
      host = flooder
    } else if (index >= overMaxFrom) {
      message = generator.overMaxMessage()
    } else if (index % plan.honestReplayEvery === 0 && data.honestDeltas.length > 0) {
      const delta = data.honestDeltas[
        (index / plan.honestReplayEvery) % data.honestDeltas.length
      ] as { round: number; bytes: Uint8Array }
      message = generator.honestReplay(delta.bytes, delta.round)
    } else if (index >= plan.staleFrom && index % plan.staleEvery === 0) {
      message = generator.stale(0)
    } else {
      message = generator.mixed()
    }
    kinds[message.kind] = (kinds[message.kind] ?? 0) + 1
    expectations.push({
      fingerprint: fingerprint(message.bytes),
      kind: message.kind,
      verdicts: message.expected,
      index,
    })
    const { recipients } = await host.services.pubsub.publish(data.topic, message.bytes)
    published++
    // The oversized frames are never validated, so they do not count towards the backlog.
    if (host === attacker) {
      for (const recipient of recipients) {
        const id = recipient.toString()
        sentMessages.set(id, (sentMessages.get(id) ?? 0) + 1)
        sentBytes.set(id, (sentBytes.get(id) ?? 0) + message.bytes.byteLength)
      }
    }
    if (index % 25 === 24 || message.bytes.byteLength > 65536) {
      report({ type: 'progress', published, expectations })
      expectations = []
      await drain(plan.maxInFlightMessages, plan.maxInFlightKiB)
    }
  }
  report({ type: 'progress', published, expectations })
  // Lets the peers validate everything before the test reads the verdicts. The test reports
  // validated bytes rounded down to whole KiB, so 1 KiB is the least backlog it can show.
  await drain(0, 1)
  const sent = Object.fromEntries(sentMessages)
  return { published, kinds, sent, drainTimeouts }
}
