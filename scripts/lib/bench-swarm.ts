// A swarm of Peer objects in this process, connected over real libp2p TCP on 127.0.0.1.
import { setTimeout as sleep } from 'node:timers/promises'
import type { Mnist } from '../../data/index.ts'
import type { BackendName } from '../../node/backend.ts'
import type { RoundMetrics } from '../../node/metrics.ts'
import { Peer } from '../../node/peer.ts'
import type { SwarmSpec } from '../../node/spec.ts'

export interface InProcessSwarmInit {
  /** Swarm spec; spec.peers peers are started. */
  spec: SwarmSpec
  mnist: Mnist
  backend: BackendName
  rounds: number
  /** Called with each round of each peer, as it finishes. */
  onRound?: (metrics: RoundMetrics) => void
  /** Called once every peer is subscribed, just before round 0. */
  beforeRun?: (peers: Peer[]) => void
  /** Called after every peer finished its last round and left, before the peers stop. */
  afterRun?: (peers: Peer[]) => void
  signal?: AbortSignal
}

/** Accuracy of the swarm after one round, over all peers that reported it. */
export interface SwarmRound {
  /** Rounds trained, so round index + 1. */
  rounds: number
  /** Lowest test accuracy over the peers. */
  accuracy: number
  /** Number of different model hashes, 1 when every peer has the same weights. */
  distinctModels: number
  /** Minimum number of deltas that a peer averaged in this round. */
  minContributors: number
  /** Peers whose round closed at the deadline instead of with every subscribed peer's delta. */
  deadlineHits: number
  /** Seconds from the start of round 0 to the last peer's report of this round. */
  seconds: number
}

export interface InProcessSwarmResult {
  /** Weight tensor shapes of the spec's model, in layer order. */
  shapes: number[][]
  metrics: RoundMetrics[]
  rounds: SwarmRound[]
  wallSeconds: number
}

/** Reduces per-peer round metrics to one entry per round, in round order. */
export function summarizeRounds(metrics: RoundMetrics[]): SwarmRound[] {
  const byRound = new Map<number, RoundMetrics[]>()
  for (const row of metrics) {
    const rows = byRound.get(row.round) ?? []
    rows.push(row)
    byRound.set(row.round, rows)
  }
  return [...byRound.entries()]
    .sort(([a], [b]) => a - b)
    .map(([round, rows]) => ({
      rounds: round + 1,
      accuracy: Math.min(...rows.map((row) => row.accuracy)),
      distinctModels: new Set(rows.map((row) => row.modelHash)).size,
      minContributors: Math.min(...rows.map((row) => row.contributors)),
      deadlineHits: rows.filter((row) => row.deadlineHit).length,
      seconds: Math.max(...rows.map((row) => row.elapsedSeconds)),
    }))
}

/**
 * Peers that dial in one window of DIAL_WINDOW_MS. libp2p 2.10 accepts at most 5 inbound
 * connections per remote IP address per second (connectionManager.inboundConnectionThreshold)
 * and rejects the rest, and here every peer dials from 127.0.0.1.
 */
const DIALERS_PER_WINDOW = 4
const DIAL_WINDOW_MS = 1100

/** Connects every peer to the ones before it, so every pair is connected once. */
async function connect(peers: Peer[], signal?: AbortSignal): Promise<void> {
  let windowStart = performance.now()
  for (const [index, peer] of peers.entries()) {
    if (index > 0 && index % DIALERS_PER_WINDOW === 0) {
      const waitMs = DIAL_WINDOW_MS - (performance.now() - windowStart)
      if (waitMs > 0) await sleep(waitMs, undefined, { signal })
      windowStart = performance.now()
    }
    await peer.dial(peers.slice(0, index).flatMap((other) => other.addresses()))
  }
}

/**
 * Starts spec.peers peers, connects each to the ones started before it, waits until all are
 * subscribed, runs `rounds` rounds and stops every peer, whether the run failed or not.
 */
export async function runInProcessSwarm(init: InProcessSwarmInit): Promise<InProcessSwarmResult> {
  const { spec } = init
  const metrics: RoundMetrics[] = []
  const created = await Promise.allSettled(
    Array.from({ length: spec.peers }, (_, peerIndex) =>
      Peer.create({
        spec,
        peerIndex,
        mnist: init.mnist,
        backend: init.backend,
        maxRounds: init.rounds,
        onRound: (row) => {
          metrics.push(row)
          init.onRound?.(row)
        },
      }),
    ),
  )
  const peers = created.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []))
  try {
    const failure = created.find((result) => result.status === 'rejected')
    if (failure !== undefined) throw failure.reason
    await connect(peers, init.signal)
    await Promise.all(peers.map((peer) => peer.waitForSwarm(init.signal)))
    init.beforeRun?.(peers)
    // A peer that fails stops the others, which would otherwise wait a round deadline for it.
    const failed = new AbortController()
    const signal =
      init.signal === undefined ? failed.signal : AbortSignal.any([init.signal, failed.signal])
    const startedAt = Date.now()
    const runs = await Promise.allSettled(
      peers.map((peer) =>
        peer.run(startedAt, signal).catch((error: unknown) => {
          failed.abort(error)
          throw error
        }),
      ),
    )
    const runFailure = runs.find((result) => result.status === 'rejected')
    // The first failure is the cause. The peers it stopped fail with it as their abort reason.
    if (runFailure !== undefined) throw failed.signal.reason ?? runFailure.reason
    const wallSeconds = (Date.now() - startedAt) / 1000
    init.afterRun?.(peers)
    const shapes = peers[0]?.trainer.shapes ?? []
    return { shapes, metrics, rounds: summarizeRounds(metrics), wallSeconds }
  } finally {
    await Promise.allSettled(peers.map((peer) => peer.stop()))
  }
}
