// The command-line frame that every benchmark shares: help, progress, signals and exit codes.
import { setQuiet } from '../../node/log.ts'
import { BenchProgress, progressStyle } from './bench-progress.ts'

const EXIT_USAGE = 2

/** Errors caused by an option value, a missing package or missing data: exit code 2. */
const USAGE_ERRORS = new Set([
  'BenchUsageError',
  'TrainBenchUsageError',
  'UsageError',
  'BackendUnavailableError',
  'MnistNotFoundError',
  'MnistDigestError',
])

export interface Benchmark<Options> {
  /** Parses the arguments; returns undefined for --help and throws a usage error otherwise. */
  parse(argv: string[]): Options | undefined
  help: string
  /** Runs the benchmark and returns the exit code: 0, or 1 when one of its checks failed. */
  measure(options: Options, progress: BenchProgress, signal: AbortSignal): Promise<number>
}

/**
 * Runs a benchmark as the process's main function. Peers stay quiet because the benchmark
 * reports progress itself. SIGINT and SIGTERM abort the signal and exit 130 or 143, usage errors
 * exit 2 with their message, and any other error exits 1 with its stack.
 */
export function runBenchmark<Options>(benchmark: Benchmark<Options>, argv: string[]): void {
  const main = async (): Promise<number> => {
    const options = benchmark.parse(argv)
    if (options === undefined) {
      process.stdout.write(`${benchmark.help}\n`)
      return 0
    }
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
      return await benchmark.measure(options, progress, shutdown.signal)
    } finally {
      progress.done()
    }
  }
  main().then(
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
}
