// Options of `npm run bench:memory`: parsing, defaults and help text.
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { BACKEND_NAMES, type BackendChoice } from '../../node/backend.ts'
import { BenchUsageError } from './bench-options.ts'

/** Largest growth of resident memory from --baseline-round to the last round, as a fraction. */
export const MAX_RSS_GROWTH = 0.1

export interface MemoryBenchOptions {
  /** Peers of the swarm, all in this process. @default 4 */
  peers: number
  /** Rounds the swarm runs. @default 200 */
  rounds: number
  /** Round whose rss and heapUsed are the reference for the growth figures. @default min(20, rounds) */
  baselineRound: number
  /** Training images, counted from the start of the set and split into one shard per peer. @default 1200 */
  trainSamples: number
  /** Test images each peer evaluates after every round. @default 500 */
  testSamples: number
  /** @default 1 */
  seed: number
  /** @default 'auto' */
  backend: BackendChoice
  /** JSON output path. @default runs/bench-memory-<timestamp>.json */
  out: string
}

export const MEMORY_BENCH_HELP = `Usage: npm run bench:memory -- [options]

Runs a swarm of --peers peers in this process, connected over real libp2p TCP on 127.0.0.1,
for --rounds rounds of the 784-200-200-10 MLP on a small slice of MNIST. After every round that
all peers have finished, it runs a full garbage collection (when node runs with --expose-gc,
as the npm script does) and samples tf.memory().numTensors and process.memoryUsage().

Prints numTensors, rss and heapUsed at round 1, --baseline-round and the last round, the
growth from --baseline-round to the last round, and the seconds per round, and writes every
sample as JSON. Exits with code 1 when numTensors changes after round 1 or when rss grows by
${MAX_RSS_GROWTH * 100}% or more from --baseline-round to the last round.

Options:
  --peers N            peers of the swarm (default: 4)
  --rounds N           rounds to run, from 1 to 100000 (default: 200)
  --baseline-round N   reference round of the growth figures, from 1 to --rounds
                       (default: 20, or --rounds when that is smaller)
  --train-samples N    training images, at least --peers (default: 1200)
  --test-samples N     test images, from 1 to 10000 (default: 500)
  --seed N             seed of weights, shards and shuffles (default: 1)
  --backend NAME       ${BACKEND_NAMES.join(', ')} (default: auto)
  --out FILE           JSON output (default: runs/bench-memory-<timestamp>.json)
  --help               print this help

On a terminal the benchmark shows its progress on stderr; with CI set it prints only the table.
For a quick run: npm run bench:memory -- --rounds 25 --baseline-round 5`

const OPTION_NAMES = [
  'peers',
  'rounds',
  'baseline-round',
  'train-samples',
  'test-samples',
  'seed',
  'backend',
  'out',
] as const

type OptionName = (typeof OPTION_NAMES)[number]

function integerOption(
  values: Partial<Record<OptionName, string>>,
  name: OptionName,
  fallback: number,
  min: number,
  max: number,
): number {
  const text = values[name]
  if (text === undefined) return fallback
  const value = /^\d+$/.test(text) ? Number(text) : Number.NaN
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new BenchUsageError(
      `Expected --${name} to be an integer from ${min} to ${max}, got '${text}'`,
    )
  }
  return value
}

/** Returns the default JSON path for a run that starts at `now`. */
export function defaultMemoryOutPath(now: Date = new Date()): string {
  return join('runs', `bench-memory-${now.toISOString().replace(/[:.]/g, '-')}.json`)
}

/**
 * Parses the memory benchmark's arguments. Returns undefined for --help, and throws
 * BenchUsageError naming the option, the value and the accepted form for anything else it
 * cannot use.
 */
export function parseMemoryBenchOptions(argv: string[]): MemoryBenchOptions | undefined {
  let parsed: ReturnType<typeof parseArgs>
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        ...Object.fromEntries(OPTION_NAMES.map((name) => [name, { type: 'string' as const }])),
        help: { type: 'boolean', short: 'h' },
      },
    })
  } catch (error) {
    throw new BenchUsageError(
      `${(error as Error).message}. Accepted options: ${OPTION_NAMES.map((name) => `--${name}`).join(', ')}, --help`,
    )
  }
  if (parsed.values.help === true) return undefined
  const values = parsed.values as Partial<Record<OptionName, string>>

  const backend = values.backend ?? 'auto'
  if (!(BACKEND_NAMES as readonly string[]).includes(backend)) {
    throw new BenchUsageError(
      `Expected --backend to be one of ${BACKEND_NAMES.join(', ')}, got '${backend}'`,
    )
  }
  if (values.out === '') {
    throw new BenchUsageError("Expected --out to be a file path, got ''")
  }

  const rounds = integerOption(values, 'rounds', 200, 1, 100_000)
  const options: MemoryBenchOptions = {
    peers: integerOption(values, 'peers', 4, 1, 64),
    rounds,
    baselineRound: integerOption(values, 'baseline-round', Math.min(20, rounds), 1, 100_000),
    trainSamples: integerOption(values, 'train-samples', 1200, 1, 60_000),
    testSamples: integerOption(values, 'test-samples', 500, 1, 10_000),
    seed: integerOption(values, 'seed', 1, 0, 2 ** 32 - 1),
    backend: backend as BackendChoice,
    out: values.out ?? defaultMemoryOutPath(),
  }
  if (options.baselineRound > options.rounds) {
    throw new BenchUsageError(
      `Expected --baseline-round to be at most --rounds (${options.rounds}), got '${options.baselineRound}'`,
    )
  }
  if (options.trainSamples < options.peers) {
    throw new BenchUsageError(
      `Expected --train-samples (${options.trainSamples}) to be at least --peers (${options.peers}), so no shard is empty`,
    )
  }
  return options
}
