// npm run bench:wire: delta codec sizes, speeds and accuracy, and gossip amplification.
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { loadMnist } from '../data/index.ts'
import { selectBackend } from '../node/backend.ts'
import type { RoundMetrics } from '../node/metrics.ts'
import { accuracySpec, runAccuracySwarms } from './lib/bench-accuracy.ts'
import { measureCodecs, trainOneDelta } from './lib/bench-codecs.ts'
import { runGossipBenchmark } from './lib/bench-gossip.ts'
import { runBenchmark } from './lib/bench-main.ts'
import { BENCH_HELP, type BenchOptions, parseBenchOptions } from './lib/bench-options.ts'
import type { BenchProgress } from './lib/bench-progress.ts'
import {
  type BenchReport,
  combineCodecResults,
  evaluateChecks,
  formatReport,
} from './lib/bench-report.ts'
import { writeFileAtomic } from './lib/write-atomic.ts'

/** Reports a round once every peer of the swarm has finished it. */
function roundReporter(
  label: string,
  peers: number,
  rounds: number,
  progress: BenchProgress,
): (metrics: RoundMetrics) => void {
  const reported = new Map<number, number[]>()
  return (metrics) => {
    const accuracies = reported.get(metrics.round) ?? []
    accuracies.push(metrics.accuracy)
    reported.set(metrics.round, accuracies)
    const status = `${label}: round ${metrics.round + 1} of ${rounds}`
    if (accuracies.length < peers) {
      progress.show(`${status}, ${accuracies.length} of ${peers} peers done`)
      return
    }
    progress.show(`${status}, accuracy ${(Math.min(...accuracies) * 100).toFixed(2)}%`)
  }
}

/** Reports the rounds of the accuracy swarms, one reporter per codec. */
function codecRoundReporter(
  options: BenchOptions,
  progress: BenchProgress,
): (codec: string, metrics: RoundMetrics) => void {
  const reporters = new Map<string, (metrics: RoundMetrics) => void>()
  return (codec, metrics) => {
    let report = reporters.get(codec)
    if (report === undefined) {
      const rounds = codec.startsWith('topk:') ? options.topkRounds : options.rounds
      report = roundReporter(codec, options.peers, rounds, progress)
      reporters.set(codec, report)
    }
    report(metrics)
  }
}

async function measure(
  options: BenchOptions,
  progress: BenchProgress,
  signal: AbortSignal,
): Promise<number> {
  progress.show('loading MNIST')
  const mnist = loadMnist()
  const backend = await selectBackend(options.backend)
  const createdAt = new Date().toISOString()

  progress.show('training one delta for the codec measurements')
  const delta = await trainOneDelta(accuracySpec(options, 'float32'), mnist)
  progress.show('timing encode and decode')
  const measurements = measureCodecs(delta, options.codecs, options.repetitions)

  const accuracies = await runAccuracySwarms({
    ...options,
    mnist,
    backend,
    signal,
    onRound: codecRoundReporter(options, progress),
  })

  const gossip = await runGossipBenchmark({
    peers: options.gossipPeers,
    rounds: options.gossipRounds,
    trainSamples: options.gossipTrainSamples,
    seed: options.seed,
    mnist,
    backend,
    signal,
    onRound: roundReporter(
      `gossip (${options.gossipPeers} peers)`,
      options.gossipPeers,
      options.gossipRounds,
      progress,
    ),
  })
  progress.done()

  const codecs = combineCodecResults(measurements, accuracies, options)
  const { out, ...settings } = options
  const report: BenchReport = {
    createdAt,
    nodeVersion: process.version,
    backend,
    settings,
    model: {
      name: 'mlp',
      shapes: delta.map((tensor) => tensor.shape),
      values: delta.reduce((sum, tensor) => sum + tensor.values.length, 0),
    },
    codecs,
    checks: evaluateChecks(codecs, options),
    gossip,
  }
  mkdirSync(dirname(out), { recursive: true })
  writeFileAtomic(out, `${JSON.stringify(report, null, 2)}\n`)
  process.stdout.write(formatReport(report, out))
  return 0
}

runBenchmark(
  { parse: parseBenchOptions, help: BENCH_HELP, measure: measure },
  process.argv.slice(2),
)
