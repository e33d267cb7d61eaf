/**
 * Two honest peers train while an attacker that never subscribes publishes 10,000 invalid or
 * ignorable messages on their topic. The attacker runs in a worker thread with its own libp2p
 * hosts, so it publishes while the peers train. A turn gate delays each round's training until
 * part of the flood is out, so the flood spans both rounds. The peers must end with the model
 * of a clean run of the same spec, and each validator verdict must be one the generator
 * expected for those bytes.
 */

import { Worker } from 'node:worker_threads'
import type { Message, PeerId, TopicValidatorResult } from '@libp2p/interface'
import * as tf from '@tensorflow/tfjs'
import { describe, expect, it } from 'vitest'
import { loadMnist, parsePartition, shardSizes } from '../../data/index.ts'
import type { RoundMetrics } from '../../node/metrics.ts'
import { Peer, type PeerInit, type PeerResult, type TurnGate } from '../../node/peer.ts'
import { DEFAULT_SPEC, hashSpec, type SwarmSpec, validateSpec } from '../../node/spec.ts'
import {
  type AttackerCommand,
  type AttackerData,
  type AttackerReport,
  type Expectation,
  type FloodPlan,
  fingerprint,
  SHARED_SLOTS,
  type Verdict,
} from './hostile-messages.ts'
import { checkTensorLeaks, connectPeers } from './peers.ts'

const mnist = loadMnist()

/** The swarm under attack. The clean reference run uses the same spec, so it shares the topic. */
const SPEC: SwarmSpec = validateSpec({
  ...DEFAULT_SPEC,
  swarm: 'hostile-flood',
  peers: 2,
  seed: 7,
  trainSamples: 600,
  testSamples: 300,
  // Short, so a stalled round fails the test instead of waiting the default 300 s.
  roundDeadlineSeconds: 20,
})
const MAX_ROUNDS = 2
const GENERATOR_SEED = 20_261_204
const PLAN: FloodPlan = {
  messageCount: 10_000,
  staleFrom: 4000,
  staleEvery: 20,
  honestReplayEvery: 250,
  overMaxMessageCount: 10,
  overFrameLimitCount: 5,
  maxInFlightMessages: 1000,
  maxInFlightKiB: 24 * 1024,
  drainTimeoutMs: 2000,
}
/** Messages published before each round's training may start, so the flood spans both. */
const TRAIN_AFTER = [1500, 6000]

const tensorsBefore = checkTensorLeaks()

async function startPeers(extra: (index: number) => Partial<PeerInit>): Promise<Peer[]> {
  return Promise.all(
    Array.from({ length: SPEC.peers }, (_, peerIndex) =>
      Peer.create({ spec: SPEC, peerIndex, mnist, backend: 'wasm', ...extra(peerIndex) }),
    ),
  )
}

function isDelta(bytes: Uint8Array): boolean {
  return Buffer.from(bytes.subarray(0, 4)).toString('latin1') === 'DLD1'
}

/** Reads the round field of an encoded delta, at byte 42. */
function deltaRound(bytes: Uint8Array): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(42)
}

/**
 * Runs the two-peer swarm without an attacker and returns its results, its round metrics and
 * the deltas each peer received from the other, which the attacker replays later.
 */
async function runClean(): Promise<{
  results: PeerResult[]
  rounds: RoundMetrics[]
  deltas: Array<{ round: number; bytes: Uint8Array }>
}> {
  const rounds: RoundMetrics[] = []
  const deltas: Array<{ round: number; bytes: Uint8Array }> = []
  const peers = await startPeers(() => ({ maxRounds: MAX_ROUNDS, onRound: (m) => rounds.push(m) }))
  try {
    for (const peer of peers) {
      peer.host.services.pubsub.addEventListener('message', (event) => {
        const message = event.detail
        if (message.topic === peer.topic && isDelta(message.data)) {
          deltas.push({ round: deltaRound(message.data), bytes: message.data.slice() })
        }
      })
    }
    await connectPeers(peers)
    await Promise.all(peers.map((peer) => peer.waitForSwarm()))
    const results = await Promise.all(peers.map((peer) => peer.run()))
    return { results, rounds, deltas }
  } finally {
    await Promise.all(peers.map((peer) => peer.stop()))
  }
}

/**
 * The test's side of the attacker worker. It resolves `ready` and `done` from the worker's
 * reports, collects the expected verdicts, and rejects every wait when the worker fails.
 */
class AttackerWorker {
  readonly ready: Promise<string[]>
  readonly done: Promise<Extract<AttackerReport, { type: 'done' }>>
  readonly stopped: Promise<void>
  readonly expectations = new Map<string, Expectation[]>()
  published = 0
  private readonly worker: Worker
  private waiters: Array<{ count: number; resolve: () => void; reject: (e: Error) => void }> = []
  private failure: Error | undefined

  constructor(data: AttackerData) {
    const moduleUrl = new URL('./hostile-messages.ts', import.meta.url).href
    // An eval worker loads the module with Node's own loader, which strips the types.
    this.worker = new Worker(
      `import(${JSON.stringify(moduleUrl)}).then((module) => module.runAttacker())`,
      { eval: true, workerData: data },
    )
    const handlers: Partial<Record<AttackerReport['type'], (report: AttackerReport) => void>> = {}
    const settle = <T>(type: AttackerReport['type'], map: (report: AttackerReport) => T) =>
      new Promise<T>((resolve, reject) => {
        handlers[type] = (report) => resolve(map(report))
        this.worker.once('error', reject)
      })
    this.ready = settle('ready', (report) => (report.type === 'ready' ? report.attackers : []))
    this.done = settle('done', (report) => report as Extract<AttackerReport, { type: 'done' }>)
    this.stopped = settle('stopped', () => undefined)
    // A promise that rejects before the test awaits it must not count as an unhandled rejection.
    for (const promise of [this.ready, this.done, this.stopped]) promise.catch(() => {})
    this.worker.on('message', (report: AttackerReport) => {
      if (report.type === 'progress') this.progress(report.published, report.expectations)
      handlers[report.type]?.(report)
    })
    this.worker.on('error', (error) => this.fail(error))
  }

  command(command: AttackerCommand): void {
    this.worker.postMessage(command)
  }

  /** Resolves once the worker has published `count` messages. */
  reached(count: number): Promise<void> {
    if (this.failure !== undefined) return Promise.reject(this.failure)
    if (this.published >= count) return Promise.resolve()
    return new Promise((resolve, reject) => this.waiters.push({ count, resolve, reject }))
  }

  async terminate(): Promise<void> {
    await this.worker.terminate()
  }

  private progress(published: number, expectations: Expectation[]): void {
    this.published = published
    for (const expectation of expectations) {
      const list = this.expectations.get(expectation.fingerprint) ?? []
      list.push(expectation)
      this.expectations.set(expectation.fingerprint, list)
    }
    this.waiters = this.waiters.filter((waiter) => {
      if (published < waiter.count) return true
      waiter.resolve()
      return false
    })
  }

  private fail(error: Error): void {
    this.failure = error
    for (const waiter of this.waiters) waiter.reject(error)
    this.waiters = []
  }
}

/** Verdicts the honest peers returned for the attacker's messages, by fingerprint. */
interface VerdictLog {
  verdicts: Array<Map<string, Set<Verdict>>>
  counts: Array<Record<Verdict, number>>
}

/**
 * Wraps each honest peer's topic validator to record the verdict it returns for every message
 * the attackers authored, and publishes each peer's progress in the shared slots for the
 * worker's flow control. The peer's own validator still decides, and the wrapper only observes.
 */
function recordVerdicts(
  peers: Peer[],
  attackers: Set<string>,
  shared: Int32Array,
  log: VerdictLog,
): void {
  for (const [index, peer] of peers.entries()) {
    const validators = peer.host.services.pubsub.topicValidators
    const validate = validators.get(peer.topic)
    if (validate === undefined) throw new Error(`peer ${index} has no topic validator`)
    const verdicts = log.verdicts[index] as Map<string, Set<Verdict>>
    const counts = log.counts[index] as Record<Verdict, number>
    let bytes = 0
    const record = (message: Message, verdict: TopicValidatorResult) => {
      if (message.type !== 'signed' || !attackers.has(message.from.toString())) return
      const key = fingerprint(message.data)
      const seen = verdicts.get(key) ?? new Set()
      seen.add(verdict as Verdict)
      verdicts.set(key, seen)
      counts[verdict as Verdict]++
      bytes += message.data.byteLength
      Atomics.add(shared, SHARED_SLOTS.validated + index, 1)
      Atomics.store(shared, SHARED_SLOTS.validatedKiB + index, Math.floor(bytes / 1024))
    }
    validators.set(peer.topic, (from: PeerId, message: Message) => {
      const verdict = validate(from, message)
      if (verdict instanceof Promise) {
        return verdict.then((result) => {
          record(message, result)
          return result
        })
      }
      record(message, verdict)
      return verdict
    })
  }
}

/** Lists verdicts that no expectation of the same bytes allows, at most 20. */
function findMismatches(log: VerdictLog, expectations: Map<string, Expectation[]>): string[] {
  const mismatches: string[] = []
  for (const [index, verdicts] of log.verdicts.entries()) {
    for (const [key, seen] of verdicts) {
      const expected = expectations.get(key)
      if (expected === undefined) {
        mismatches.push(`peer ${index}: verdicts ${[...seen]} for a message never published`)
        continue
      }
      const allowed = new Set(expected.flatMap((e) => e.verdicts))
      for (const verdict of seen) {
        if (allowed.has(verdict)) continue
        const first = expected[0] as Expectation
        mismatches.push(
          `peer ${index}: ${verdict} for ${first.kind}, message ${first.index} of seed ` +
            `${GENERATOR_SEED}, expected ${[...allowed].join(' or ')}`,
        )
      }
    }
  }
  return mismatches.slice(0, 20)
}

describe('a live peer under attack', () => {
  it('survives 10,000 bad messages', async () => {
    const clean = await runClean()
    expect(clean.results.map((result) => result.rounds)).toEqual([MAX_ROUNDS, MAX_ROUNDS])
    const cleanHash = clean.results[0]?.modelHash
    expect(clean.results[1]?.modelHash).toBe(cleanHash)
    expect(clean.rounds.map((m) => m.contributors)).toEqual([2, 2, 2, 2])
    // Gossip normally carries all four deltas. One that went by a direct push instead is
    // missing here, and the attacker replays the others.
    expect(clean.deltas.length).toBeGreaterThan(0)

    const shared = new Int32Array(new SharedArrayBuffer(4 * SHARED_SLOTS.count))
    let attackerWorker: AttackerWorker | undefined
    const gate: TurnGate = {
      async acquire(kind, round) {
        if (kind === 'train') await attackerWorker?.reached(TRAIN_AFTER[round] ?? 0)
      },
      release() {},
    }
    const rounds: RoundMetrics[] = []
    /** Messages published when each entry of `rounds` was recorded. */
    const publishedAtRound: number[] = []
    const rejected = [0, 0]
    const peers = await startPeers((index) => ({
      maxRounds: MAX_ROUNDS,
      turnGate: gate,
      onRound: (m) => {
        rounds.push(m)
        publishedAtRound.push(attackerWorker?.published ?? 0)
        if (rounds.filter((r) => r.round === 0).length === SPEC.peers) {
          Atomics.store(shared, SHARED_SLOTS.roundZeroClosed, 1)
        }
      },
      onReject: () => {
        rejected[index] = (rejected[index] ?? 0) + 1
      },
    }))
    const log: VerdictLog = {
      verdicts: peers.map(() => new Map()),
      counts: peers.map(() => ({ accept: 0, reject: 0, ignore: 0 })),
    }
    let results: PeerResult[] = []
    let done: Extract<AttackerReport, { type: 'done' }> | undefined
    const started = performance.now()
    try {
      await connectPeers(peers)
      await Promise.all(peers.map((peer) => peer.waitForSwarm()))
      const partition = parsePartition(SPEC.partition)
      const trainLabels = mnist.train.labels.subarray(0, SPEC.trainSamples)
      const shardOptions = { seed: SPEC.seed, peers: SPEC.peers }
      attackerWorker = new AttackerWorker({
        topic: (peers[0] as Peer).topic,
        peers: peers.map((peer) => ({
          id: peer.peerId.toString(),
          address: peer.addresses()[0] as string,
        })),
        specHash: hashSpec(SPEC),
        shapes: (peers[0] as Peer).trainer.shapes,
        maxSampleCount: Math.max(...shardSizes(trainLabels, partition, shardOptions)),
        maxMessageBytes: SPEC.maxMessageBytes,
        openRound: MAX_ROUNDS,
        seed: GENERATOR_SEED,
        honestDeltas: clean.deltas,
        plan: PLAN,
        shared: shared.buffer as SharedArrayBuffer,
      })
      const attackers = await attackerWorker.ready
      recordVerdicts(peers, new Set(attackers), shared, log)
      attackerWorker.command({ type: 'start' })
      const runs = Promise.all(peers.map((peer) => peer.run()))
      // A failed run stops the flood, which would otherwise wait for round 0 to close.
      runs.catch(() => attackerWorker?.command({ type: 'stop' }))
      const [floodOutcome, runOutcome] = await Promise.allSettled([attackerWorker.done, runs])
      if (floodOutcome.status === 'rejected') throw floodOutcome.reason
      if (runOutcome.status === 'rejected') throw runOutcome.reason
      done = floodOutcome.value
      results = runOutcome.value
    } finally {
      if (attackerWorker !== undefined) {
        attackerWorker.command({ type: 'stop' })
        await attackerWorker.stopped.catch(() => {})
        await attackerWorker.terminate()
      }
      await Promise.all(peers.map((peer) => peer.stop()))
    }
    const seconds = (performance.now() - started) / 1000
    const mismatches = findMismatches(log, attackerWorker.expectations)

    const summary = [
      `attacked run: ${seconds.toFixed(1)} s, ${done.published} messages published, ` +
        `${done.drainTimeouts} drain timeouts`,
      ...peers.map(
        (peer, index) =>
          `peer ${index}: received ${done?.sent[peer.peerId.toString()] ?? 0} from the attacker, ` +
          `verdicts ${JSON.stringify(log.counts[index])}, ${rejected[index]} onReject calls`,
      ),
      ...rounds.map(
        (m, i) =>
          `peer ${m.peerIndex} round ${m.round}, closed after about ` +
          `${publishedAtRound[i]} messages: ` +
          `contributors ${m.contributors}, deadlineHit ${m.deadlineHit}, ` +
          `rejected ${m.rejectedMessages}, late ${m.lateMessages}, ` +
          `duplicates ${m.duplicateMessages}, turn wait ${m.turnWaitMs} ms, ` +
          `train ${m.trainMs} ms, wait ${m.waitMs} ms`,
      ),
      `kinds: ${JSON.stringify(done.kinds)}`,
    ].join('\n')

    expect(done.published, summary).toBe(PLAN.messageCount)
    expect(
      results.map((result) => result.rounds),
      summary,
    ).toEqual([MAX_ROUNDS, MAX_ROUNDS])
    expect(results[0]?.modelHash, summary).toBe(cleanHash)
    expect(results[1]?.modelHash, summary).toBe(cleanHash)
    expect(
      rounds.map((m) => m.contributors),
      summary,
    ).toEqual([2, 2, 2, 2])
    expect(
      rounds.filter((m) => m.deadlineHit),
      summary,
    ).toEqual([])
    for (const peerIndex of [0, 1]) {
      const last = rounds.filter((m) => m.peerIndex === peerIndex).at(-1)
      expect(last?.rejectedMessages, summary).toBeGreaterThan(0)
    }
    expect(mismatches, summary).toEqual([])
    expect(tf.memory().numTensors).toBe(tensorsBefore())
  })
})
