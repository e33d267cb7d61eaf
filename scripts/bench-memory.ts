// npm run bench:memory: tensor count and process memory over many rounds of a small swarm.
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { loadMnist } from '../data/index.ts'
import { selectBackend } from '../node/backend.ts'
import { runBenchmark } from './lib/bench-main.ts'
import {
  MEMORY_BENCH_HELP,
  type MemoryBenchOptions,
  parseMemoryBenchOptions,
} from './lib/bench-memory-options.ts'
import {
  evaluateMemoryChecks,
  failedCheckMessages,
  formatMemoryReport,
  type MemoryBenchReport,
  summarizeSamples,
  summarizeSwarm,
} from './lib/bench-memory-report.ts'
import { type MemorySample, runMemorySwarm } from './lib/bench-memory-swarm.ts'
import type { BenchProgress } from './lib/bench-progress.ts'
import { writeFileAtomic } from './lib/write-atomic.ts'

const EXIT_CHECK_FAILED = 1
const MIB = 1024 * 1024

function describeSample(sample: MemorySample, rounds: number): string {
  return (
    `round ${sample.round} of ${rounds}: numTensors ${sample.numTensors}, ` +
    `rss ${(sample.rss / MIB).toFixed(1)} MiB, heapUsed ${(sample.heapUsed / MIB).toFixed(1)} MiB`
  )
}

async function measure(
  options: MemoryBenchOptions,
  progress: BenchProgress,
  signal: AbortSignal,
): Promise<number> {
  progress.show('loading MNIST')
  const mnist = loadMnist()
  const backend = await selectBackend(options.backend)
  const createdAt = new Date().toISOString()
  const collectGarbage = globalThis.gc

  progress.show(`starting ${options.peers} peers`)
  const result = await runMemorySwarm({
    ...options,
    mnist,
    backend,
    collectGarbage,
    signal,
    onSample: (sample) => progress.show(describeSample(sample, options.rounds)),
  })
  progress.done()

  const figures = summarizeSamples(result.samples, options)
  const { out, ...settings } = options
  const report: MemoryBenchReport = {
    createdAt,
    nodeVersion: process.version,
    backend,
    garbageCollected: collectGarbage !== undefined,
    settings,
    model: {
      name: 'mlp',
      shapes: result.shapes,
      values: result.shapes.reduce(
        (sum, shape) => sum + shape.reduce((product, size) => product * size, 1),
        0,
      ),
    },
    swarm: summarizeSwarm(result.rounds),
    figures,
    checks: evaluateMemoryChecks(result.samples, figures),
    samples: result.samples,
  }
  mkdirSync(dirname(out), { recursive: true })
  writeFileAtomic(out, `${JSON.stringify(report, null, 2)}\n`)
  process.stdout.write(formatMemoryReport(report, out))

  const failures = failedCheckMessages(report.checks)
  for (const message of failures) process.stderr.write(`${message}\n`)
  return failures.length === 0 ? 0 : EXIT_CHECK_FAILED
}

runBenchmark(
  { parse: parseMemoryBenchOptions, help: MEMORY_BENCH_HELP, measure: measure },
  process.argv.slice(2),
)
