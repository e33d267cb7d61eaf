// npm run bench:memory: tensor count and process memory over many rounds of a small swarm.
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { loadMnist } from '../data/index.ts'
import { selectBackend } from '../node/backend.ts'
import { setQuiet } from '../node/log.ts'
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
import { BenchUsageError } from './lib/bench-options.ts'
import { BenchProgress, progressStyle } from './lib/bench-progress.ts'
import { writeFileAtomic } from './lib/write-atomic.ts'

const EXIT_CHECK_FAILED = 1
const EXIT_USAGE = 2
const MIB = 1024 * 1024

/** Errors caused by an option value, a missing package or missing data: exit code 2. */
const USAGE_ERRORS = new Set([
  BenchUsageError.name,
  'UsageError',
  'BackendUnavailableError',
  'MnistNotFoundError',
  'MnistDigestError',
])

function describeSample(sample: MemorySample, rounds: number): string {
  return (
    `round ${sample.round} of ${rounds}: numTensors ${sample.numTensors}, ` +
    `rss ${(sample.rss / MIB).toFixed(1)} MiB, heapUsed ${(sample.heapUsed / MIB).toFixed(1)} MiB`
  )
}

async function main(argv: string[]): Promise<number> {
  const options = parseMemoryBenchOptions(argv)
  if (options === undefined) {
    process.stdout.write(`${MEMORY_BENCH_HELP}\n`)
    return 0
  }
  // Peers would log each round at info level, but the benchmark reports progress itself.
  setQuiet(true)
  const progress = new BenchProgress(progressStyle())
  const shutdown = new AbortController()
  const onSignal = (signal: NodeJS.Signals) => {
    process.stderr.write(`${signal}: stopping the benchmark\n`)
    shutdown.abort(new Error(`stopped by ${signal}`))
    process.exitCode = signal === 'SIGINT' ? 130 : 143
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)

  try {
    return await measure(options, progress, shutdown.signal)
  } finally {
    progress.done()
  }
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

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode ??= code
  },
  (error: unknown) => {
    if (error instanceof Error && USAGE_ERRORS.has(error.name)) {
      process.stderr.write(`${error.message}\n`)
      process.exitCode = EXIT_USAGE
      return
    }
    // After SIGINT or SIGTERM the exit code is set and the abort error needs no stack.
    if (process.exitCode !== undefined) return
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : error}\n`)
    process.exitCode = 1
  },
)
