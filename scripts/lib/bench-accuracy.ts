// Test accuracy per round of one in-process swarm per codec.
import type { Mnist } from '../../data/index.ts'
import type { BackendName } from '../../node/backend.ts'
import type { RoundMetrics } from '../../node/metrics.ts'
import { DEFAULT_SPEC, type SwarmSpec, validateSpec } from '../../node/spec.ts'
import { runInProcessSwarm, type SwarmRound } from './bench-swarm.ts'

export interface AccuracyBenchInit {
  codecs: string[]
  peers: number
  rounds: number
  /** Rounds of a topk swarm, so error feedback has time to reach the target. */
  topkRounds: number
  trainSamples: number
  testSamples: number
  seed: number
  mnist: Mnist
  backend: BackendName
  onRound?: (codec: string, metrics: RoundMetrics) => void
  signal?: AbortSignal
}

export interface CodecAccuracy {
  codec: string
  /** One entry per round trained, in order. */
  rounds: SwarmRound[]
  wallSeconds: number
}

/** Returns the spec of a codec's accuracy swarm. Only the codec and the swarm name differ. */
export function accuracySpec(
  init: Pick<AccuracyBenchInit, 'peers' | 'trainSamples' | 'testSamples' | 'seed'>,
  codec: string,
): SwarmSpec {
  return validateSpec({
    ...DEFAULT_SPEC,
    swarm: `bench-${codec.replace(/[^A-Za-z0-9._-]/g, '-')}`,
    seed: init.seed,
    peers: init.peers,
    trainSamples: init.trainSamples,
    testSamples: init.testSamples,
    codec,
  })
}

/** Returns the first round count whose accuracy reaches `target`, or null when none does. */
export function roundsToTarget(rounds: SwarmRound[], target: number): number | null {
  return rounds.find((round) => round.accuracy >= target)?.rounds ?? null
}

/** Returns the accuracy after `count` rounds, or null when the swarm trained fewer. */
export function accuracyAfter(rounds: SwarmRound[], count: number): number | null {
  return rounds.find((round) => round.rounds === count)?.accuracy ?? null
}

/** Runs one swarm per codec, one after another, and returns each one's accuracy per round. */
export async function runAccuracySwarms(init: AccuracyBenchInit): Promise<CodecAccuracy[]> {
  const results: CodecAccuracy[] = []
  for (const codec of init.codecs) {
    const result = await runInProcessSwarm({
      spec: accuracySpec(init, codec),
      mnist: init.mnist,
      backend: init.backend,
      rounds: codec.startsWith('topk:') ? init.topkRounds : init.rounds,
      onRound: (metrics) => init.onRound?.(codec, metrics),
      signal: init.signal,
    })
    results.push({ codec, rounds: result.rounds, wallSeconds: result.wallSeconds })
  }
  return results
}
