import type { Message, PeerId } from '@libp2p/interface'
import { TopicValidatorResult } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import * as tf from '@tensorflow/tfjs'
import { type Mnist, parsePartition, shardIndices, shardSizes } from '../data/index.ts'
import {
  type CodecSpec,
  type DeltaMessage,
  type DeltaVerdict,
  decodeDelta,
  decodePart,
  deltaTopic,
  encodeDelta,
  encodedDeltaSize,
  encodeMembership,
  isMembershipMessage,
  isPartMessage,
  type MembershipMessage,
  type MembershipVerdict,
  PartAssembler,
  PartDecodeError,
  type PartMessage,
  parseCodec,
  splitIntoParts,
  validateDelta,
  validateMembership,
} from '../protocols/index.ts'
import { averageDeltas, subtractWeights } from './aggregate.ts'
import type { BackendName } from './backend.ts'
import { handleDeltaPushes, pushDelta } from './delta-push.ts'
import { StateSyncError } from './errors.ts'
import { createHost, type Host, type HostInit } from './host.ts'
import { log } from './log.ts'
import { MetricsWriter, type RoundMetrics } from './metrics.ts'
import { hashWeights } from './model.ts'
import { RoundCollector } from './round-collector.ts'
import { hashSpec, type SwarmSpec } from './spec.ts'
import { fetchState, handleStateRequests, queryStatus } from './state-sync.ts'
import { Trainer, toExamples } from './trainer.ts'

/** Grants compute turns; the serial launch mode lets one peer of a machine compute at a time. */
export interface TurnGate {
  acquire(kind: 'train' | 'evaluate', round: number): Promise<void>
  release(): void
}

export interface PeerInit {
  spec: SwarmSpec
  /** This peer's shard, 0 to spec.peers - 1. */
  peerIndex: number
  mnist: Mnist
  backend: BackendName
  host?: HostInit
  /** Label recorded in the metrics, such as 'parallel' or 'serial'. @default 'parallel' */
  mode?: string
  /** Peers, this one included, that must be subscribed before a round can close early. @default spec.peers */
  minPeers?: number
  /** @default 20 */
  maxRounds?: number
  /** Stop after the first round whose test accuracy reaches this fraction. @default no target */
  target?: number
  metricsPath?: string
  turnGate?: TurnGate
  onRound?: (metrics: RoundMetrics) => void
  /** Called for each delta message that validation rejected, with the reason. */
  onReject?: (reason: string) => void
  /** Download the current model from the swarm before training, for a peer that starts late. */
  join?: boolean
  /** Called when this peer announces a join, with the first round it takes part in. */
  onJoin?: (firstRound: number) => void
  /** Called after each publication of the local delta, with the number of peers it reached. */
  onPublish?: (round: number, recipients: number) => void
}

export interface PeerResult {
  rounds: number
  finalAccuracy: number
  modelHash: string
  reachedTarget: boolean
}

/** Verdict on a part: accepted parts that do not complete a delta carry no message. */
type PartVerdict =
  | { result: 'accept'; message: DeltaMessage | undefined }
  | { result: 'reject' | 'ignore'; reason: string }

/** Announcements a late peer makes before it gives up joining. */
const CATCH_UP_ATTEMPTS = 3
const STATUS_TIMEOUT_MS = 10_000

function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')
}

/** One swarm member: its shard, model, libp2p host and round loop. */
export class Peer {
  readonly host: Host
  readonly trainer: Trainer
  readonly topic: string
  readonly spec: SwarmSpec
  readonly peerIndex: number
  private readonly init: PeerInit
  private readonly specHash: Uint8Array
  private readonly collector: RoundCollector
  private readonly maxSampleCount: number
  private readonly maxMessageBytes: number
  private readonly codec: CodecSpec
  /** Encoded size of a delta of this spec's model in its codec, the largest a peer accepts. */
  private readonly deltaBytes: number
  private readonly assembler: PartAssembler
  /** Residual of the top-k codec: the values not sent yet, added to the next delta. */
  private residual: Float32Array[] | undefined
  private readonly decoded = new WeakMap<Uint8Array, DeltaMessage | MembershipMessage>()
  private pendingPublication: { round: number; bytes: Uint8Array } | undefined
  /** This peer's join message, pushed to every subscriber that appears until it leaves. */
  private announcedJoin: Uint8Array | undefined
  /** Start weights of the round in progress, served to peers that download the model. */
  private snapshot: { round: number; modelHash: string; weights: Float32Array[] } | undefined
  private bytesSent = 0
  private bytesReceived = 0
  private rejectedMessages = 0

  private constructor(init: PeerInit, host: Host, trainer: Trainer, maxSampleCount: number) {
    this.init = init
    this.spec = init.spec
    this.peerIndex = init.peerIndex
    this.host = host
    this.trainer = trainer
    this.maxSampleCount = maxSampleCount
    this.maxMessageBytes = init.spec.maxMessageBytes
    this.specHash = hashSpec(init.spec)
    this.topic = deltaTopic(init.spec.swarm, toHex(this.specHash))
    this.collector = new RoundCollector(host.peerId.toString())
    this.codec = parseCodec(init.spec.codec)
    this.deltaBytes = encodedDeltaSize(trainer.shapes, this.codec)
    this.assembler = new PartAssembler({
      maxMessageBytes: this.deltaBytes,
      // Room for every peer's delta of the current and the next round.
      maxBufferedBytes: this.deltaBytes * 2 * Math.max(2, init.spec.peers),
      timeoutMs: init.spec.roundDeadlineSeconds * 1000,
    })
  }

  /** Computes this peer's shard, builds its model and starts its libp2p host. */
  static async create(init: PeerInit): Promise<Peer> {
    const { spec, mnist } = init
    const partition = parsePartition(spec.partition)
    const trainLabels = mnist.train.labels.subarray(0, spec.trainSamples)
    const shardOptions = { seed: spec.seed, peers: spec.peers, index: init.peerIndex }
    const rows = shardIndices(trainLabels, partition, shardOptions)
    const shard = toExamples(mnist.train.images, mnist.train.labels, rows)
    const test = toExamples(
      mnist.test.images.subarray(0, spec.testSamples * 784),
      mnist.test.labels.subarray(0, spec.testSamples),
    )
    const maxSampleCount = Math.max(...shardSizes(trainLabels, partition, shardOptions))
    const trainer = new Trainer(spec, shard, test, init.peerIndex)
    const host = await createHost({ ...init.host, maxMessageBytes: spec.maxMessageBytes })
    const peer = new Peer(init, host, trainer, maxSampleCount)
    await peer.attach()
    return peer
  }

  get peerId(): PeerId {
    return this.host.peerId
  }

  addresses(): string[] {
    return this.host.getMultiaddrs().map((address) => address.toString())
  }

  async dial(addresses: string[]): Promise<void> {
    await Promise.all(addresses.map((address) => this.host.dial(multiaddr(address))))
  }

  subscribers(): string[] {
    return this.host.services.pubsub.getSubscribers(this.topic).map((id) => id.toString())
  }

  /** Resolves once `minPeers - 1` other peers are subscribed to the topic. */
  async waitForSwarm(signal?: AbortSignal): Promise<void> {
    const needed = (this.init.minPeers ?? this.spec.peers) - 1
    const pubsub = this.host.services.pubsub
    while (this.subscribers().length < needed) {
      signal?.throwIfAborted()
      await new Promise<void>((resolve) => {
        const onChange = () => {
          pubsub.removeEventListener('subscription-change', onChange)
          signal?.removeEventListener('abort', onChange)
          resolve()
        }
        pubsub.addEventListener('subscription-change', onChange)
        signal?.addEventListener('abort', onChange)
      })
    }
  }

  /**
   * Validates a delta, part, join or leave message from `from`, its author, and counts it;
   * returns the verdict. The part that completes a delta carries the whole delta's verdict.
   */
  private check(bytes: Uint8Array, from: PeerId): 'accept' | 'reject' | 'ignore' {
    this.bytesReceived += bytes.byteLength
    let verdict: DeltaVerdict | MembershipVerdict | PartVerdict
    if (isMembershipMessage(bytes)) {
      verdict = validateMembership(bytes, this.specHash)
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

  private checkDelta(bytes: Uint8Array): DeltaVerdict {
    return validateDelta(bytes, {
      specHash: this.specHash,
      shapes: this.trainer.shapes,
      maxSampleCount: this.maxSampleCount,
      currentRound: () => this.collector.round,
      codec: this.codec,
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
    if (!Buffer.from(part.specHash).equals(this.specHash)) {
      return { result: 'ignore', reason: 'part for another swarm spec' }
    }
    if (part.round < this.collector.round) {
      return { result: 'ignore', reason: `part of round ${part.round}, before the current round` }
    }
    this.assembler.prune(this.collector.round)
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

  /** Stores an accepted delta in the round collector, or records an accepted join or leave. */
  private store(bytes: Uint8Array, from: PeerId): void {
    const message = this.decoded.get(bytes)
    if (message === undefined) return
    if ('kind' in message) {
      if (message.kind === 'join') this.collector.join(from.toString(), message.round)
      else this.collector.leave(from.toString(), message.round)
      return
    }
    this.collector.add({
      peerId: from.toString(),
      round: message.round,
      sampleCount: message.sampleCount,
      baseModelHash: toHex(message.baseModelHash),
      delta: message.tensors.map((t) => t.values),
    })
  }

  private async attach(): Promise<void> {
    await handleStateRequests(this.host, {
      specHash: this.specHash,
      snapshot: () =>
        this.snapshot === undefined ? undefined : { ...this.snapshot, shapes: this.trainer.shapes },
    })
    const pubsub = this.host.services.pubsub
    const verdicts = {
      accept: TopicValidatorResult.Accept,
      reject: TopicValidatorResult.Reject,
      ignore: TopicValidatorResult.Ignore,
    }
    // Messages are signed, so `message.from` is the author; the validator's first argument is
    // only the neighbour that forwarded it.
    pubsub.topicValidators.set(this.topic, (_from: PeerId, message: Message) =>
      message.type === 'signed'
        ? verdicts[this.check(message.data, message.from)]
        : verdicts.reject,
    )
    pubsub.addEventListener('message', (event) => {
      const message = event.detail
      if (message.topic !== this.topic || message.type !== 'signed') return
      this.store(message.data, message.from)
    })
    // A pushed delta travels whole on its own stream, so its limit is the delta size, not the
    // gossip message limit.
    await handleDeltaPushes(this.host, this.deltaBytes, (bytes, from) => {
      if (!isPartMessage(bytes) && this.check(bytes, from) === 'accept') this.store(bytes, from)
    })
    pubsub.addEventListener('subscription-change', (event) => {
      const joined = event.detail.subscriptions.some((s) => s.topic === this.topic && s.subscribe)
      const pending = this.pendingPublication
      if (joined && this.announcedJoin !== undefined) {
        void this.push(event.detail.peerId, this.announcedJoin)
      }
      if (joined && pending !== undefined) void this.push(event.detail.peerId, pending.bytes)
      this.collector.notify()
    })
    this.host.addEventListener('peer:disconnect', () => this.collector.notify())
    pubsub.subscribe(this.topic)
  }

  /**
   * Sends the pending delta straight to a peer that subscribed after it was published, because
   * gossipsub only forwards a message to the subscribers it knew at publication time.
   */
  private async push(to: PeerId, bytes: Uint8Array): Promise<void> {
    try {
      await pushDelta(this.host, to, bytes)
      this.bytesSent += bytes.byteLength
    } catch (error) {
      log.error(
        'push of the pending delta to %s failed: %s',
        to.toString(),
        (error as Error).message,
      )
    }
  }

  /**
   * Publishes a message on the topic and returns the number of peers gossipsub sent it to, or
   * undefined when the publish failed.
   */
  private async publish(bytes: Uint8Array, pushSkipped = true): Promise<number | undefined> {
    try {
      const { recipients } = await this.host.services.pubsub.publish(this.topic, bytes)
      this.bytesSent += bytes.byteLength * recipients.length
      // Gossipsub skips a subscriber whose outbound stream is still opening, which happens
      // right after a connection forms, so the message goes to such a subscriber directly.
      if (!pushSkipped) return recipients.length
      const reached = new Set(recipients.map((peerId) => peerId.toString()))
      const pubsub = this.host.services.pubsub
      for (const subscriber of pubsub.getSubscribers(this.topic)) {
        if (reached.has(subscriber.toString())) continue
        log.trace('gossipsub skipped %s, pushing the message directly', subscriber.toString())
        void this.push(subscriber, bytes)
      }
      return recipients.length
    } catch (error) {
      log.error('publish on %s failed: %s', this.topic, (error as Error).message)
      return undefined
    }
  }

  /**
   * Encodes the local delta in the spec's codec and returns the message and the values it
   * carries as receivers decode them. With top-k, what was not sent is kept and added to the
   * next round's delta, so no part of the update is lost over rounds.
   */
  private encodeLocalDelta(
    delta: Float32Array[],
    round: number,
    baseHash: string,
  ): { bytes: Uint8Array; sent: Float32Array[] } {
    const feedback = this.codec.name === 'topk'
    if (feedback && this.residual !== undefined) {
      for (const [i, values] of delta.entries()) {
        const carried = this.residual[i] as Float32Array
        for (let j = 0; j < values.length; j++)
          values[j] = (values[j] as number) + (carried[j] as number)
      }
    }
    const bytes = encodeDelta({
      version: 1,
      codec: this.codec,
      specHash: this.specHash,
      round,
      sampleCount: this.trainer.sampleCount,
      baseModelHash: Buffer.from(baseHash, 'hex'),
      tensors: delta.map((values, i) => ({ shape: this.trainer.shapes[i] as number[], values })),
    })
    if (this.codec.name === 'float32') return { bytes, sent: delta }
    const sent = decodeDelta(bytes).tensors.map((tensor) => tensor.values)
    if (feedback) {
      this.residual = delta.map((values, i) => {
        const carried = new Float32Array(values.length)
        const decoded = sent[i] as Float32Array
        for (let j = 0; j < values.length; j++)
          carried[j] = (values[j] as number) - (decoded[j] as number)
        return carried
      })
    }
    return { bytes, sent }
  }

  /**
   * Publishes a delta, split into parts when it exceeds the gossip message limit, and returns
   * the number of peers the first message reached.
   */
  private async publishDelta(bytes: Uint8Array, round: number): Promise<number | undefined> {
    if (bytes.byteLength <= this.maxMessageBytes) return this.publish(bytes)
    const parts = splitIntoParts({
      specHash: this.specHash,
      round,
      sender: this.peerId,
      message: bytes,
      maxPartBytes: this.maxMessageBytes,
    })
    let recipients: number | undefined
    for (const part of parts) {
      const reached = await this.publish(part, false)
      recipients ??= reached
    }
    return recipients
  }

  /**
   * Runs rounds until maxRounds or the target accuracy. `startedAt` (epoch milliseconds) is the
   * shared clock origin of the metrics' elapsedSeconds.
   */
  async run(startedAt: number = Date.now(), signal?: AbortSignal): Promise<PeerResult> {
    const maxRounds = this.init.maxRounds ?? 20
    const gate = this.init.turnGate
    const metricsFile =
      this.init.metricsPath === undefined ? undefined : new MetricsWriter(this.init.metricsPath)
    const localId = this.peerId.toString()
    let result: PeerResult = { rounds: 0, finalAccuracy: 0, modelHash: '', reachedTarget: false }
    try {
      let round = 0
      if (this.init.join === true) {
        round = await this.catchUp(signal)
      } else {
        // The peers subscribed now are the swarm of round 0; a later one takes part once it
        // announces a join.
        this.collector.admit(this.subscribers(), 0)
        await this.publishMembership('join', 0)
      }
      for (; round < maxRounds; round++) {
        if (this.collector.latestRound > round + 1) {
          log.info('peer %s is behind at round %d, downloading the model', this.peerIndex, round)
          round = await this.catchUp(signal)
          if (round >= maxRounds) break
        }
        const base = this.trainer.getWeights()
        const baseHash = await hashWeights(base)
        this.snapshot = { round, modelHash: baseHash, weights: base }

        const turnStart = performance.now()
        await gate?.acquire('train', round)
        const trainStart = performance.now()
        let trainLoss: number
        try {
          trainLoss = await this.trainer.train(round, signal)
        } finally {
          gate?.release()
        }
        const trainMs = performance.now() - trainStart
        let turnWaitMs = trainStart - turnStart

        const trained = this.trainer.getWeights()
        const { bytes, sent } = this.encodeLocalDelta(
          subtractWeights(trained, base),
          round,
          baseHash,
        )
        // The local delta is averaged as the others decode it, so every peer sums the same bits.
        this.collector.add({
          peerId: localId,
          round,
          sampleCount: this.trainer.sampleCount,
          baseModelHash: baseHash,
          delta: sent,
        })
        this.pendingPublication = { round, bytes }
        const recipients = await this.publishDelta(bytes, round)
        if (recipients !== undefined) this.init.onPublish?.(round, recipients)

        const waitStart = performance.now()
        const collected = await this.collector.collect(round, {
          subscribers: () => this.subscribers(),
          minPeers: this.init.minPeers ?? this.spec.peers,
          deadlineMs: this.spec.roundDeadlineSeconds * 1000,
          signal,
        })
        this.pendingPublication = undefined
        const waitMs = performance.now() - waitStart
        if (collected.deadlineHit) {
          log.info(
            'peer %s round %d: deadline passed with %d of %d deltas',
            this.peerIndex,
            round,
            collected.contributions.length,
            this.subscribers().length + 1,
          )
        }

        const aggregateStart = performance.now()
        const next = averageDeltas(base, collected.contributions, {
          peerId: localId,
          weights: trained,
        })
        this.trainer.setWeights(next)
        const modelHash = await hashWeights(next)
        const aggregateMs = performance.now() - aggregateStart

        const evaluateTurn = performance.now()
        await gate?.acquire('evaluate', round)
        const evaluateStart = performance.now()
        turnWaitMs += evaluateStart - evaluateTurn
        let evaluation: { accuracy: number; loss: number }
        try {
          evaluation = this.trainer.evaluate()
        } finally {
          gate?.release()
        }
        const evaluateMs = performance.now() - evaluateStart

        const metrics: RoundMetrics = {
          time: new Date().toISOString(),
          elapsedSeconds: (Date.now() - startedAt) / 1000,
          peerId: localId,
          peerIndex: this.peerIndex,
          mode: this.init.mode ?? 'parallel',
          round,
          backend: this.init.backend,
          trainMs: Math.round(trainMs),
          turnWaitMs: Math.round(turnWaitMs),
          waitMs: Math.round(waitMs),
          aggregateMs: Math.round(aggregateMs),
          evaluateMs: Math.round(evaluateMs),
          trainLoss,
          accuracy: evaluation.accuracy,
          loss: evaluation.loss,
          contributors: collected.contributions.length,
          deadlineHit: collected.deadlineHit,
          modelHash,
          bytesSent: this.bytesSent,
          bytesReceived: this.bytesReceived,
          lateMessages: this.collector.lateMessages,
          rejectedMessages: this.rejectedMessages,
          duplicateMessages: this.collector.duplicateMessages,
        }
        metricsFile?.append(metrics)
        this.init.onRound?.(metrics)
        const reachedTarget =
          this.init.target !== undefined && evaluation.accuracy >= this.init.target
        result = { rounds: round + 1, finalAccuracy: evaluation.accuracy, modelHash, reachedTarget }
        if (reachedTarget) break
      }
      if (result.rounds > 0) await this.leave(result.rounds - 1, signal)
    } finally {
      metricsFile?.close()
    }
    return result
  }

  /**
   * Downloads the swarm's model and returns the round this peer takes part from. It announces a
   * join for the round after the newest one any peer reports, waits until a peer has started
   * that round, and downloads that round's start weights. When the swarm moved on meanwhile it
   * announces again.
   */
  private async catchUp(signal?: AbortSignal): Promise<number> {
    const deadlineMs = this.spec.roundDeadlineSeconds * 1000
    for (let attempt = 1; attempt <= CATCH_UP_ATTEMPTS; attempt++) {
      const donors = this.host.services.pubsub.getSubscribers(this.topic)
      const statuses = await Promise.allSettled(
        donors.map((donor) =>
          queryStatus(this.host, donor, this.specHash, { signal, timeoutMs: STATUS_TIMEOUT_MS }),
        ),
      )
      let newest = -1
      for (const status of statuses) {
        if (status.status === 'fulfilled') newest = Math.max(newest, status.value.round)
      }
      if (newest < 0)
        throw new StateSyncError('no peer answered a status request, so this peer cannot join', [])
      const firstRound = newest + 1
      this.collector.skipTo(firstRound)
      this.collector.admit(
        donors.map((donor) => donor.toString()),
        firstRound,
      )
      await this.publishMembership('join', firstRound)
      log.info('peer %s joins at round %d', this.peerIndex, firstRound)
      this.init.onJoin?.(firstRound)
      const started = await this.collector.waitUntil(
        () => this.collector.latestRound >= firstRound,
        deadlineMs,
        signal,
      )
      if (!started) continue
      const state = await fetchState(this.host, donors, this.specHash, {
        expectedShapes: this.trainer.shapes,
        signal,
      })
      if (state.round !== firstRound) {
        log.info(
          'peer %s: the swarm moved on to round %d, joining again',
          this.peerIndex,
          state.round,
        )
        continue
      }
      this.trainer.setWeights(state.weights)
      this.residual = undefined
      // Peers whose subscription arrived after the status requests are members of the swarm
      // this peer joins, too.
      this.collector.admit(this.subscribers(), firstRound)
      log.info(
        'peer %s downloaded the model of round %d from %s, hash %s',
        this.peerIndex,
        state.round,
        state.donor.toString(),
        state.modelHash,
      )
      return firstRound
    }
    throw new StateSyncError(`could not join the swarm after ${CATCH_UP_ATTEMPTS} attempts`, [])
  }

  private async publishMembership(kind: 'join' | 'leave', round: number): Promise<void> {
    const bytes = encodeMembership({ kind, version: 1, specHash: this.specHash, round })
    // A subscriber that appears later gets the join directly, like the pending delta.
    this.announcedJoin = kind === 'join' ? bytes : undefined
    await this.publish(bytes)
  }

  /**
   * Announces that this peer publishes no delta after `lastRound`, then stays online until every
   * subscribed peer has closed that round, at most one round deadline. Stopping at once could
   * drop the last delta while it still sits in a send buffer.
   */
  private async leave(lastRound: number, signal?: AbortSignal): Promise<void> {
    await this.publishMembership('leave', lastRound)
    const everyonePassed = () =>
      this.subscribers().every(
        (peerId) =>
          !this.collector.isExpected(peerId, lastRound) ||
          this.collector.hasPassed(peerId, lastRound),
      )
    const deadlineMs = this.spec.roundDeadlineSeconds * 1000
    if (!(await this.collector.waitUntil(everyonePassed, deadlineMs, signal))) {
      log.info(
        'peer %s: stopped waiting after %d s for peers to close round %d',
        this.peerIndex,
        this.spec.roundDeadlineSeconds,
        lastRound,
      )
    }
  }

  async stop(): Promise<void> {
    this.host.services.pubsub.unsubscribe(this.topic)
    await this.host.stop()
    this.trainer.dispose()
  }

  /** Number of live tensors, for leak checks. */
  static liveTensors(): number {
    return tf.memory().numTensors
  }
}
