// The memory benchmark's swarm: rounds of in-process peers, with a memory sample per round.
import * as tf from '@tensorflow/tfjs'
import type { Mnist } from '../../data/index.ts'
import type { BackendName } from '../../node/backend.ts'
import type { RoundMetrics } from '../../node/metrics.ts'
import { DEFAULT_SPEC, type SwarmSpec, validateSpec } from '../../node/spec.ts'
import type { MemoryBenchOptions } from './bench-memory-options.ts'
import { runInProcessSwarm, type SwarmRound } from './bench-swarm.ts'

/** Memory of this process after a round that every peer has finished. */
export interface MemorySample {
  /** Rounds that every peer has finished. Round 0 is the sample taken before the first round. */
  round: number
  /** Seconds from the start of the first round to the last peer's report of this round. */
  seconds: number
  /** tf.memory().numTensors: live tensors of all peers. */
  numTensors: number
  /** tf.memory().numBytes: bytes of those tensors. */
  tensorBytes: number
  /** process.memoryUsage() fields, in bytes. */
  rss: number
  heapUsed: number
  heapTotal: number
  external: number
  arrayBuffers: number
}

export interface MemorySwarmInit
  extends Pick<MemoryBenchOptions, 'peers' | 'rounds' | 'trainSamples' | 'testSamples' | 'seed'> {
  mnist: Mnist
  backend: BackendName
  /**
   * Runs before each sample, such as the global.gc of `node --expose-gc`, so that heapUsed
   * counts live objects only. @default none
   */
  collectGarbage?: () => void
  onSample?: (sample: MemorySample) => void
  /** Called with each round of each peer, as it finishes. */
  onRound?: (metrics: RoundMetrics) => void
  signal?: AbortSignal
}

export interface MemorySwarmResult {
  /** Weight tensor shapes of the model, in layer order. */
  shapes: number[][]
  /**
   * One sample before the first round, then one per round in round order. A round that some
   * peer skipped, because it downloaded a newer model, has no sample.
   */
  samples: MemorySample[]
  /** The swarm's figures per round: accuracy, contributors, deadline hits. */
  rounds: SwarmRound[]
  wallSeconds: number
}

/** Returns the spec of the memory benchmark's swarm: the default spec on a small data slice. */
export function memorySpec(
  init: Pick<MemoryBenchOptions, 'peers' | 'trainSamples' | 'testSamples' | 'seed'>,
): SwarmSpec {
  return validateSpec({
    ...DEFAULT_SPEC,
    swarm: 'bench-memory',
    model: 'mlp',
    seed: init.seed,
    peers: init.peers,
    trainSamples: init.trainSamples,
    testSamples: init.testSamples,
  })
}

/** Collects garbage when asked to, then reads the tensor count and the process memory. */
export function takeMemorySample(
  round: number,
  seconds: number,
  collectGarbage?: () => void,
): MemorySample {
  collectGarbage?.()
  const tensors = tf.memory()
  const usage = process.memoryUsage()
  return {
    round,
    seconds,
    numTensors: tensors.numTensors,
    tensorBytes: tensors.numBytes,
    rss: usage.rss,
    heapUsed: usage.heapUsed,
    heapTotal: usage.heapTotal,
    external: usage.external,
    arrayBuffers: usage.arrayBuffers,
  }
}

/**
 * Runs the swarm and samples memory before the first round and after each round, as soon as
 * the last peer reports it. The sample is taken inside that peer's synchronous round
 * callback, while every other peer waits at an await. Training awaits only between
 * mini-batches, after the batch's tf.tidy has ended and its loss is disposed, and evaluation
 * does not await at all. So no temporary tensor is alive at that moment, and numTensors
 * counts the peers' weights and optimiser state only.
 */
export async function runMemorySwarm(init: MemorySwarmInit): Promise<MemorySwarmResult> {
  const spec = memorySpec(init)
  const samples: MemorySample[] = []
  const reported = new Map<number, number>()
  const record = (sample: MemorySample) => {
    samples.push(sample)
    init.onSample?.(sample)
  }
  const result = await runInProcessSwarm({
    spec,
    mnist: init.mnist,
    backend: init.backend,
    rounds: init.rounds,
    signal: init.signal,
    beforeRun: () => record(takeMemorySample(0, 0, init.collectGarbage)),
    onRound: (metrics) => {
      init.onRound?.(metrics)
      const count = (reported.get(metrics.round) ?? 0) + 1
      if (count < spec.peers) {
        reported.set(metrics.round, count)
        return
      }
      reported.delete(metrics.round)
      record(takeMemorySample(metrics.round + 1, metrics.elapsedSeconds, init.collectGarbage))
    },
  })
  return {
    shapes: result.shapes,
    samples,
    rounds: result.rounds,
    wallSeconds: result.wallSeconds,
  }
}
