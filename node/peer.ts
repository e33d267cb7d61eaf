import type { Message, PeerId } from '@libp2p/interface'
import { TopicValidatorResult } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import * as tf from '@tensorflow/tfjs'
import { type Mnist, parsePartition, shardIndices, shardSizes } from '../data/index.ts'
import {
  deltaTopic,
  encodedDeltaSize,
  encodeMembership,
  isPartMessage,
  parseCodec,
  splitIntoParts,
} from '../protocols/index.ts'
import {
  type AggregationRule,
  aggregateDeltas,
  parseAggregation,
  subtractWeights,
} from './aggregate.ts'
import type { BackendName } from './backend.ts'
import type { ModelState } from './checkpoint.ts'
import { AdaptiveDeadline } from './deadline.ts'
import { DeltaEncoder } from './delta-encoder.ts'
import { handleDeltaPushes, pushDelta } from './delta-push.ts'
import { StateSyncError } from './errors.ts'
import { createHost, describeDialFailure, type Host, type HostInit } from './host.ts'
import { Inbox } from './inbox.ts'
import { log } from './log.ts'
import { MetricsWriter, type RoundMetrics } from './metrics.ts'
import { hashWeights } from './model.ts'
import { participants } from './participation.ts'
import { exchangePeers, handlePeerExchange } from './peer-exchange.ts'
import { redialLostPeers } from './redial.ts'
import { RoundCollector, voteOnBase } from './round-collector.ts'
import { hashSpec, type SwarmSpec } from './spec.ts'
import { fetchState, handleStateRequests, queryStatus } from './state-sync.ts'
import { SharedTestSet } from './test-set.ts'
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
  /**
   * Test images and results shared with the other peers of this process.
   * @default a test set of this peer's own
   */
  testSet?: SharedTestSet
  backend: BackendName
  /** libp2p settings: addresses, discovery, identity and the swarm key of a private swarm. */
  host?: HostInit
  /** Label recorded in the metrics, such as 'parallel' or 'serial'. @default 'parallel' */
  mode?: string
  /** Peers, this one included, that must be subscribed before a round can close early. @default spec.peers */
  minPeers?: number
  /** @default DEFAULT_MAX_ROUNDS (20) */
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
  /**
   * Model of the checkpoint of a restarted peer. The peer starts from it, then rejoins like a
   * late peer and downloads the swarm's model. It trains from the checkpoint round only when no
   * peer responds to a status request, as after the whole swarm restarted.
   */
  resume?: ModelState
  /**
   * Called with the model of the round the peer starts next: once before the first round, then
   * after each round, before that round's metrics line. The round loop waits for it.
   */
  onCheckpoint?: (state: ModelState) => Promise<void>
  /** Called when this peer announces a join, with the first round it takes part in. */
  onJoin?: (firstRound: number) => void
  /** Called after each publication of the local delta, with the number of peers it reached. */
  onPublish?: (round: number, recipients: number) => void
  /**
   * Changes the local delta in place before it is encoded and published, for tests and
   * benchmarks that simulate a hostile peer. The peer aggregates the changed delta too.
   */
  tamperDelta?: (delta: Float32Array[]) => void
}

export interface PeerResult {
  rounds: number
  finalAccuracy: number
  modelHash: string
  reachedTarget: boolean
}

/** Rounds a peer runs when PeerInit.maxRounds is not given. */
const DEFAULT_MAX_ROUNDS = 20
/** Announcements a late peer makes before it gives up joining. */
const CATCH_UP_ATTEMPTS = 3
const STATUS_TIMEOUT_MS = 10_000
/**
 * Listed peers dialled per peer exchange: all the others, for a peer that bootstraps from one
 * member of a swarm of up to 10 peers, and few enough that 100 peers do not head for all 4,950
 * connections.
 */
const EXCHANGE_DIALS = 8
/**
 * Connections above which a peer stops asking new subscribers for their peer lists: gossipsub's
 * largest mesh (Dhi). Without a bound, each dial of an exchange brought a new subscriber and
 * another exchange, until all 100 peers of a launch were connected to each other. Each publication
 * then went to all 99 (gossipsub publishes to every connected subscriber). On two cores, rounds of
 * about 10 int8 deltas took 35 to 70 s before the bound and 24 to 44 s after it.
 */
const EXCHANGE_BELOW_CONNECTIONS = 12
/** Milliseconds a peer keeps dialling the address of a member it lost, as after a crash or a cut link. */
const REDIAL_GIVE_UP_MS = 10 * 60_000

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
  private readonly aggregation: AggregationRule
  private readonly collector: RoundCollector
  private readonly maxMessageBytes: number
  private readonly maxRounds: number
  /** Encoded size of a delta of this spec's model in its codec, the largest a peer accepts. */
  private readonly deltaBytes: number
  private readonly inbox: Inbox
  private readonly encoder: DeltaEncoder
  private readonly testSet: SharedTestSet
  private pendingPublication: { round: number; bytes: Uint8Array } | undefined
  /** This peer's join message, pushed to every subscriber that appears until it leaves. */
  private announcedJoin: Uint8Array | undefined
  /** Start weights of the round in progress, served to peers that download the model. */
  private snapshot: { round: number; modelHash: string; weights: Float32Array[] } | undefined
  private bytesSent = 0
  /** Aborted when the peer stops, ending its redials. */
  private readonly stopping = new AbortController()

  private constructor(
    init: PeerInit,
    host: Host,
    trainer: Trainer,
    testSet: SharedTestSet,
    maxSampleCount: number,
  ) {
    this.init = init
    this.spec = init.spec
    this.peerIndex = init.peerIndex
    this.host = host
    this.trainer = trainer
    this.maxMessageBytes = init.spec.maxMessageBytes
    this.maxRounds = init.maxRounds ?? DEFAULT_MAX_ROUNDS
    this.specHash = hashSpec(init.spec)
    this.aggregation = parseAggregation(init.spec.aggregation)
    this.topic = deltaTopic(init.spec.swarm, toHex(this.specHash))
    this.collector = new RoundCollector(host.peerId.toString())
    this.testSet = testSet
    const codec = parseCodec(init.spec.codec)
    this.deltaBytes = encodedDeltaSize(trainer.shapes, codec)
    this.encoder = new DeltaEncoder(codec, this.specHash, trainer.shapes)
    this.inbox = new Inbox({
      specHash: this.specHash,
      shapes: trainer.shapes,
      maxSampleCount,
      codec,
      deltaBytes: this.deltaBytes,
      peers: init.spec.peers,
      partTimeoutMs: init.spec.roundDeadlineSeconds * 1000,
      currentRound: () => this.collector.round,
      onReject: init.onReject,
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
    const testSet = init.testSet ?? new SharedTestSet(mnist)
    const test = testSet.examples(spec.testSamples)
    const maxSampleCount = Math.max(...shardSizes(trainLabels, partition, shardOptions))
    const trainer = new Trainer(spec, shard, test, init.peerIndex)
    if (init.resume !== undefined) trainer.setWeights(init.resume.weights)
    const host = await createHost({ ...init.host, maxMessageBytes: spec.maxMessageBytes })
    const peer = new Peer(init, host, trainer, testSet, maxSampleCount)
    await peer.attach()
    return peer
  }

  get peerId(): PeerId {
    return this.host.peerId
  }

  addresses(): string[] {
    return this.host.getMultiaddrs().map((address) => address.toString())
  }

  /** Dials every address; a failure is logged with its likely cause, then rethrown. */
  async dial(addresses: string[]): Promise<void> {
    const hasSwarmKey = this.init.host?.swarmKey !== undefined
    await Promise.all(
      addresses.map(async (address) => {
        try {
          await this.host.dial(multiaddr(address))
        } catch (error) {
          log.error('%s', describeDialFailure(address, error, hasSwarmKey))
          throw error
        }
      }),
    )
  }

  subscribers(): string[] {
    return this.host.services.pubsub.getSubscribers(this.topic).map((id) => id.toString())
  }

  /**
   * Resolves once `minPeers - 1` other peers are subscribed to the topic. Only directly
   * connected peers count; the peer exchange connects the peers that bootstrap from one member.
   */
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

  /** Stores an accepted delta in the round collector, or records an accepted join or leave. */
  private store(bytes: Uint8Array, from: PeerId): void {
    const message = this.inbox.take(bytes)
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
        ? verdicts[this.inbox.check(message.data, message.from)]
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
      if (!isPartMessage(bytes) && this.inbox.check(bytes, from) === 'accept')
        this.store(bytes, from)
    })
    await handlePeerExchange(this.host, this.topic)
    pubsub.addEventListener('subscription-change', (event) => {
      const joined = event.detail.subscriptions.some((s) => s.topic === this.topic && s.subscribe)
      // Gossip reaches the peers this one is not connected to, so a few more neighbours do.
      const connections = this.host.getConnections().length
      if (joined && connections < EXCHANGE_BELOW_CONNECTIONS) {
        const dials = Math.min(EXCHANGE_DIALS, EXCHANGE_BELOW_CONNECTIONS - connections)
        void exchangePeers(this.host, event.detail.peerId, dials)
      }
      const pending = this.pendingPublication
      if (joined && this.announcedJoin !== undefined) {
        void this.push(event.detail.peerId, this.announcedJoin)
      }
      if (joined && pending !== undefined) void this.push(event.detail.peerId, pending.bytes)
      if (joined && this.snapshot !== undefined) void this.checkRound(event.detail.peerId)
      this.collector.notify()
    })
    // A crashed member is awaited until one deadline passes; after that no round waits for it.
    this.host.addEventListener('peer:disconnect', () => this.collector.notify())
    redialLostPeers(this.host, {
      giveUpMs: REDIAL_GIVE_UP_MS,
      hasLeft: (peerId) => this.collector.hasLeft(peerId),
      signal: this.stopping.signal,
    })
    pubsub.subscribe(this.topic)
  }

  /**
   * Asks a peer that (re)subscribed which round it is in. A member two rounds ahead, as after a
   * partition healed, ends this peer's round wait at once, so it downloads the model without
   * waiting for that member's next delta.
   */
  private async checkRound(peerId: PeerId): Promise<void> {
    try {
      const status = await queryStatus(this.host, peerId, this.specHash, {
        timeoutMs: STATUS_TIMEOUT_MS,
      })
      this.collector.reportRound(peerId.toString(), status.round)
    } catch (error) {
      log.trace('status of %s failed: %s', peerId.toString(), (error as Error).message)
    }
  }

  /**
   * Aborts the connections to a peer opened before `since` (epoch milliseconds); the redial
   * loop connects to its address again.
   */
  private dropConnections(peerId: string, since: number): void {
    for (const connection of this.host.getConnections()) {
      if (connection.remotePeer.toString() !== peerId || connection.timeline.open > since) continue
      log.info('peer %s: dropping the silent connection to %s', this.peerIndex, peerId)
      connection.abort(new Error('no message for a whole round deadline'))
    }
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
   * Publishes a message on the topic and returns the ids of the peers gossipsub sent it to,
   * or undefined when the publish failed.
   */
  private async publish(bytes: Uint8Array): Promise<Set<string> | undefined> {
    try {
      const { recipients } = await this.host.services.pubsub.publish(this.topic, bytes)
      this.bytesSent += bytes.byteLength * recipients.length
      return new Set(recipients.map((peerId) => peerId.toString()))
    } catch (error) {
      log.error('publish on %s failed: %s', this.topic, (error as Error).message)
      return undefined
    }
  }

  /**
   * Publishes a delta or membership message, the delta split into parts when it exceeds the
   * gossip message limit, and returns the number of peers that got every part by gossip.
   * Gossipsub skips a subscriber whose outbound stream is still opening, which happens right
   * after a connection forms, or whose send buffer is full. Such a subscriber gets the whole
   * message over a direct stream instead.
   */
  private async publishWhole(bytes: Uint8Array, round: number): Promise<number> {
    const messages =
      bytes.byteLength <= this.maxMessageBytes
        ? [bytes]
        : splitIntoParts({
            specHash: this.specHash,
            round,
            sender: this.peerId,
            message: bytes,
            maxPartBytes: this.maxMessageBytes,
          })
    let reachedByAll: Set<string> | undefined
    for (const message of messages) {
      const reached = (await this.publish(message)) ?? new Set<string>()
      reachedByAll =
        reachedByAll === undefined
          ? reached
          : new Set([...reachedByAll].filter((peerId) => reached.has(peerId)))
    }
    const reached = reachedByAll ?? new Set<string>()
    for (const subscriber of this.host.services.pubsub.getSubscribers(this.topic)) {
      if (reached.has(subscriber.toString())) continue
      log.trace('gossipsub skipped %s, pushing the message directly', subscriber.toString())
      void this.push(subscriber, bytes)
    }
    return reached.size
  }

  /**
   * Runs rounds until maxRounds or the target accuracy. `startedAt` (epoch milliseconds) is the
   * shared clock origin of the metrics' elapsedSeconds.
   */
  async run(startedAt: number = Date.now(), signal?: AbortSignal): Promise<PeerResult> {
    const maxRounds = this.maxRounds
    const gate = this.init.turnGate
    const metricsFile =
      this.init.metricsPath === undefined ? undefined : new MetricsWriter(this.init.metricsPath)
    const localId = this.peerId.toString()
    let result: PeerResult = { rounds: 0, finalAccuracy: 0, modelHash: '', reachedTarget: false }
    try {
      const deadline = new AdaptiveDeadline(
        this.spec.deadlineFloorSeconds * 1000,
        this.spec.roundDeadlineSeconds * 1000,
      )
      let round = 0
      if (this.init.join === true || this.init.resume !== undefined) {
        round = await this.catchUp(signal, this.init.resume)
      } else {
        // The peers subscribed now are the swarm of round 0; a later one takes part once it
        // announces a join.
        this.collector.admit(this.subscribers(), 0)
        await this.publishMembership('join', 0)
      }
      if (this.init.onCheckpoint !== undefined) {
        const weights = this.trainer.getWeights()
        await this.init.onCheckpoint({ round, modelHash: await hashWeights(weights), weights })
      }
      /** Peers holding the model that most of the last round's deltas were trained from. */
      let divergedFrom: string[] | undefined
      for (; round < maxRounds; round++) {
        if (divergedFrom !== undefined) {
          round = await this.catchUp(signal, undefined, divergedFrom)
          divergedFrom = undefined
          if (round >= maxRounds) break
        } else if (this.collector.latestRound > round + 1) {
          log.info('peer %s is behind at round %d, downloading the model', this.peerIndex, round)
          round = await this.catchUp(signal)
          if (round >= maxRounds) break
        }
        const base = this.trainer.getWeights()
        const baseHash = await hashWeights(base)
        this.snapshot = { round, modelHash: baseHash, weights: base }
        // A peer counts only members' deltas, and in a swarm where not every pair is connected
        // a join published before the topic's mesh formed can miss some peers. Announcing it
        // again each round lets them count this peer's deltas; a member ignores a repeat.
        if (round > 0 && this.announcedJoin !== undefined) {
          await this.publishWhole(this.announcedJoin, round)
        }

        const chosen = participants(this.spec.seed, round, this.spec.peers, this.spec.participation)
        const takesPart = chosen.has(this.peerIndex)
        const turnStart = performance.now()
        let trainMs = 0
        let turnWaitMs = 0
        let trainLoss = 0
        let trained: Float32Array[] | undefined
        if (takesPart) {
          await gate?.acquire('train', round)
          const trainStart = performance.now()
          try {
            trainLoss = await this.trainer.train(round, signal)
          } finally {
            gate?.release()
          }
          trainMs = performance.now() - trainStart
          turnWaitMs = trainStart - turnStart

          trained = this.trainer.getWeights()
          const delta = subtractWeights(trained, base)
          this.init.tamperDelta?.(delta)
          const { bytes, sent } = this.encoder.encode(
            delta,
            round,
            this.trainer.sampleCount,
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
          const recipients = await this.publishWhole(bytes, round)
          this.init.onPublish?.(round, recipients)
        }

        const waitStart = performance.now()
        const waitStartedAt = Date.now()
        const deadlineMs = deadline.currentMs
        const collected = await this.collector.collect(round, {
          minPeers: this.init.minPeers ?? this.spec.peers,
          deadlineMs,
          signal,
          participants:
            this.spec.participation < 1 ? { count: chosen.size, local: takesPart } : undefined,
        })
        this.pendingPublication = undefined
        const waitMs = performance.now() - waitStart
        deadline.record(performance.now() - turnStart, collected.deadlineHit)
        // A connection that carried nothing for a whole deadline may be stuck behind a cut link.
        // TCP then backs off for many seconds after the link returns, while a fresh dial (see
        // redial.ts) gets through at once.
        for (const peerId of collected.silent) this.dropConnections(peerId, waitStartedAt)
        if (collected.deadlineHit) {
          log.info(
            'peer %s round %d: deadline passed with %d of %d deltas',
            this.peerIndex,
            round,
            collected.contributions.length,
            this.subscribers().length + 1,
          )
        }

        // NOTE: in a swarm of two, a lying member wins every tie by claiming a low base hash.
        const vote = voteOnBase(collected.contributions)
        if (vote !== undefined && vote.baseModelHash !== baseHash) {
          log.info(
            "peer %s round %d: %d of %d deltas were trained from model %s, not from this peer's %s; downloading that model",
            this.peerIndex,
            round,
            vote.peerIds.length,
            collected.contributions.length,
            vote.baseModelHash.slice(0, 12),
            baseHash.slice(0, 12),
          )
          divergedFrom = vote.peerIds
        }

        const aggregateStart = performance.now()
        const next = aggregateDeltas(base, collected.contributions, {
          rule: this.aggregation,
          clipNorm: this.spec.clipNorm,
          // A lone peer keeps its trained weights, unless a tampered delta no longer matches them
          // or other peers, which did not train this round, apply its delta to the base.
          local:
            this.init.tamperDelta === undefined &&
            trained !== undefined &&
            this.spec.participation >= 1
              ? { peerId: localId, weights: trained }
              : undefined,
        })
        this.trainer.setWeights(next)
        const modelHash = await hashWeights(next)
        const aggregateMs = performance.now() - aggregateStart

        const evaluateTurn = performance.now()
        let evaluation = this.testSet.lookup(modelHash, this.spec.testSamples)
        let evaluateStart = evaluateTurn
        if (evaluation === undefined) {
          await gate?.acquire('evaluate', round)
          evaluateStart = performance.now()
          turnWaitMs += evaluateStart - evaluateTurn
          try {
            // Another peer of this process may have evaluated the model during the wait.
            evaluation = this.testSet.lookup(modelHash, this.spec.testSamples)
            if (evaluation === undefined) {
              evaluation = this.trainer.evaluate()
              this.testSet.remember(modelHash, this.spec.testSamples, evaluation)
            }
          } finally {
            gate?.release()
          }
        }
        const evaluateMs = performance.now() - evaluateStart

        const metrics: RoundMetrics = {
          participated: takesPart,
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
          deadlineMs: Math.round(deadlineMs),
          modelHash,
          bytesSent: this.bytesSent,
          bytesReceived: this.inbox.bytesReceived,
          lateMessages: this.collector.lateMessages,
          rejectedMessages: this.inbox.rejectedMessages,
          duplicateMessages: this.collector.duplicateMessages,
        }
        await this.init.onCheckpoint?.({ round: round + 1, modelHash, weights: next })
        metricsFile?.append(metrics)
        this.init.onRound?.(metrics)
        const reachedTarget =
          this.init.target !== undefined && evaluation.accuracy >= this.init.target
        result = { rounds: round + 1, finalAccuracy: evaluation.accuracy, modelHash, reachedTarget }
        if (reachedTarget) break
      }
      if (result.rounds > 0) await this.leave(result.rounds - 1, deadline.currentMs, signal)
    } finally {
      metricsFile?.close()
    }
    return result
  }

  /**
   * Downloads the swarm's model and returns the round this peer takes part from, from the
   * `preferred` peers when any of them is subscribed. It announces a
   * join for the round after the newest one any peer reports, waits until a peer has started
   * that round, and downloads that round's start weights. When the swarm moved on meanwhile it
   * announces again. When no peer responds and a checkpoint is given, it resumes from that.
   */
  private async catchUp(
    signal?: AbortSignal,
    checkpoint?: ModelState,
    preferred?: string[],
  ): Promise<number> {
    const deadlineMs = this.spec.roundDeadlineSeconds * 1000
    // A member that falls behind or diverged has a model of its own to go on with.
    const isMember = this.init.join !== true && checkpoint === undefined
    let reason = 'no peer responded to a status request'
    for (let attempt = 1; attempt <= CATCH_UP_ATTEMPTS; attempt++) {
      const subscribed = this.host.services.pubsub.getSubscribers(this.topic)
      const chosen = subscribed.filter((peerId) => preferred?.includes(peerId.toString()))
      // The preferred donors' deltas may have come through a neighbour; then any subscriber serves.
      const donors = chosen.length > 0 ? chosen : subscribed
      const statuses = await Promise.allSettled(
        donors.map((donor) =>
          queryStatus(this.host, donor, this.specHash, { signal, timeoutMs: STATUS_TIMEOUT_MS }),
        ),
      )
      let newest = -1
      for (const status of statuses) {
        if (status.status === 'fulfilled') newest = Math.max(newest, status.value.round)
      }
      if (newest < 0 && checkpoint !== undefined) return this.resumeAlone(checkpoint)
      if (newest < 0) continue
      const firstRound = newest + 1
      if (firstRound >= this.maxRounds) {
        log.info(
          'peer %s: the swarm is in its last round %d, nothing left to join',
          this.peerIndex,
          newest,
        )
        return this.maxRounds
      }
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
      if (!started) {
        reason = `no peer started round ${firstRound} within ${deadlineMs} ms`
        continue
      }
      let state: Awaited<ReturnType<typeof fetchState>>
      try {
        state = await fetchState(this.host, donors, this.specHash, {
          expectedShapes: this.trainer.shapes,
          signal,
        })
      } catch (error) {
        if (!(error instanceof StateSyncError)) throw error
        reason = error.message
        continue
      }
      if (state.round < firstRound) {
        reason = `the donor was still in round ${state.round}`
        continue
      }
      if (state.round > firstRound) {
        // The swarm moved on while the join travelled; its newer model serves as well.
        this.collector.skipTo(state.round)
        await this.publishMembership('join', state.round)
      }
      this.trainer.setWeights(state.weights)
      this.encoder.reset()
      // Peers whose subscription arrived after the status requests are members of the swarm
      // this peer joins, too.
      this.collector.admit(this.subscribers(), state.round)
      log.info(
        'peer %s downloaded the model of round %d from %s, hash %s',
        this.peerIndex,
        state.round,
        state.donor.toString(),
        state.modelHash,
      )
      return state.round
    }
    if (isMember) {
      log.info(
        'peer %s: could not download the model after %d attempts (%s); going on with its own from round %d',
        this.peerIndex,
        CATCH_UP_ATTEMPTS,
        reason,
        this.collector.round,
      )
      return this.collector.round
    }
    throw new StateSyncError(
      `could not join the swarm after ${CATCH_UP_ATTEMPTS} attempts: ${reason}`,
      [],
    )
  }

  /**
   * Starts from the checkpoint when no peer has a model to serve, as after the whole swarm
   * restarted. Like at round 0, the peers subscribed now are the members of that round.
   */
  private async resumeAlone(checkpoint: ModelState): Promise<number> {
    log.info(
      'peer %s: no peer responded to a status request, resuming from the checkpoint of round %d',
      this.peerIndex,
      checkpoint.round,
    )
    this.trainer.setWeights(checkpoint.weights)
    this.encoder.reset()
    this.collector.skipTo(checkpoint.round)
    this.collector.admit(this.subscribers(), checkpoint.round)
    await this.publishMembership('join', checkpoint.round)
    this.init.onJoin?.(checkpoint.round)
    return checkpoint.round
  }

  private async publishMembership(kind: 'join' | 'leave', round: number): Promise<void> {
    const bytes = encodeMembership({ kind, version: 1, specHash: this.specHash, round })
    // A subscriber that appears later gets the join directly, like the pending delta.
    this.announcedJoin = kind === 'join' ? bytes : undefined
    await this.publishWhole(bytes, round)
  }

  /**
   * Announces that this peer publishes no delta after `lastRound`, then stays online until every
   * subscribed peer has closed that round, at most `deadlineMs`. Stopping at once could
   * drop the last delta while it still sits in a send buffer.
   */
  private async leave(lastRound: number, deadlineMs: number, signal?: AbortSignal): Promise<void> {
    await this.publishMembership('leave', lastRound)
    const everyonePassed = () =>
      this.subscribers().every(
        (peerId) =>
          !this.collector.isExpected(peerId, lastRound) ||
          this.collector.hasPassed(peerId, lastRound),
      )
    if (!(await this.collector.waitUntil(everyonePassed, deadlineMs, signal))) {
      log.info(
        'peer %s: stopped waiting after %d ms for peers to close round %d',
        this.peerIndex,
        Math.round(deadlineMs),
        lastRound,
      )
    }
  }

  async stop(): Promise<void> {
    this.stopping.abort()
    this.host.services.pubsub.unsubscribe(this.topic)
    await this.host.stop()
    this.trainer.dispose()
  }

  /** Number of live tensors, for leak checks. */
  static liveTensors(): number {
    return tf.memory().numTensors
  }
}
