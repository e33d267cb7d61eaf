// Options of `npm run bench:wire`: parsing, defaults and help text.
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { BACKEND_NAMES, type BackendChoice } from '../../node/backend.ts'
import { CodecSpecError, formatCodec, parseCodec } from '../../protocols/index.ts'

/** Codecs compared when --codecs is not given. float32 is the baseline of every ratio. */
export const DEFAULT_CODECS = ['float32', 'float16', 'int8:256', 'topk:0.1']

/** Test accuracy the swarms aim for when --target is not given. */
export const DEFAULT_TARGET = 0.97
/** Extra rounds that top-k gets over --rounds when --topk-rounds is not given. */
export const DEFAULT_TOPK_EXTRA_ROUNDS = 3

export interface BenchOptions {
  /** Codecs in canonical form (formatCodec), float32 first. */
  codecs: string[]
  /** Peers of each accuracy swarm. @default 4 */
  peers: number
  /** Rounds of each accuracy swarm, top-k excepted. @default 3 */
  rounds: number
  /** Rounds of a top-k swarm. @default rounds + 3 */
  topkRounds: number
  /** Test accuracy whose first round is reported. @default 0.97 */
  target: number
  /** Training images of the accuracy swarms, from the start of the set. @default 60000 */
  trainSamples: number
  /** Test images evaluated after each round. @default 10000 */
  testSamples: number
  /** Timed encode and decode calls per codec, whose median is reported. @default 9 */
  repetitions: number
  /** Peers of the gossip amplification swarm. @default 8 */
  gossipPeers: number
  /** Rounds of the gossip amplification swarm. @default 2 */
  gossipRounds: number
  /** Training images of the gossip amplification swarm. @default 4000 */
  gossipTrainSamples: number
  /** @default 1 */
  seed: number
  /** @default 'auto' */
  backend: BackendChoice
  /** JSON output path. @default runs/bench-wire-<timestamp>.json */
  out: string
}

/** An option value the user must change; the benchmark exits with code 2 on it. */
export class BenchUsageError extends Error {
  static override name = 'BenchUsageError'

  constructor(message: string) {
    super(message)
    this.name = 'BenchUsageError'
  }
}

export const BENCH_HELP = `Usage: npm run bench:wire -- [options]

Measures the delta codecs on the 784-200-200-10 MLP and gossipsub's byte amplification, all
in this process over real libp2p connections on 127.0.0.1. Prints a table of ratios against
float32 and writes the measurements as JSON.

Per codec: encoded bytes of one trained delta, encode and decode throughput (MB/s of float32
input, median of --repetitions calls), and the test accuracy of a swarm of --peers peers after
each round. Then a swarm of --gossip-peers peers runs --gossip-rounds rounds in float32, and
each peer's received bytes are divided by the delta bytes it needed.

Options:
  --codecs LIST               comma-separated codecs, float32 first
                              (default: ${DEFAULT_CODECS.join(',')})
  --peers N                   peers of each accuracy swarm (default: 4)
  --rounds N                  rounds of each accuracy swarm (default: 3)
  --topk-rounds N             rounds of a topk swarm (default: --rounds + ${DEFAULT_TOPK_EXTRA_ROUNDS})
  --target FRACTION           test accuracy whose first round is reported (default: ${DEFAULT_TARGET})
  --train-samples N           training images, from 1 to 60000 (default: 60000)
  --test-samples N            test images, from 1 to 10000 (default: 10000)
  --repetitions N             timed encode and decode calls per codec (default: 9)
  --gossip-peers N            peers of the amplification swarm (default: 8)
  --gossip-rounds N           rounds of the amplification swarm (default: 2)
  --gossip-train-samples N    training images of the amplification swarm (default: 4000)
  --seed N                    seed of weights, shards and shuffles (default: 1)
  --backend NAME              ${BACKEND_NAMES.join(', ')} (default: auto)
  --out FILE                  JSON output (default: runs/bench-wire-<timestamp>.json)
  --help                      print this help

On a terminal the benchmark shows its progress on stderr; with CI set it prints only the table.
For a quick run: npm run bench:wire -- --train-samples 6000 --test-samples 2000`

const OPTION_NAMES = [
  'codecs',
  'peers',
  'rounds',
  'topk-rounds',
  'target',
  'train-samples',
  'test-samples',
  'repetitions',
  'gossip-peers',
  'gossip-rounds',
  'gossip-train-samples',
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

function parseCodecList(text: string): string[] {
  const codecs: string[] = []
  for (const item of text.split(',')) {
    try {
      codecs.push(formatCodec(parseCodec(item.trim())))
    } catch (error) {
      if (!(error instanceof CodecSpecError)) throw error
      throw new BenchUsageError(
        `Expected --codecs to be a comma-separated list of float32, float16, int8[:BLOCK] or topk:FRACTION, got '${item}' in '${text}'`,
      )
    }
  }
  if (codecs[0] !== 'float32') {
    throw new BenchUsageError(
      `Expected --codecs to start with float32, the baseline of every ratio, got '${text}'`,
    )
  }
  if (new Set(codecs).size !== codecs.length) {
    throw new BenchUsageError(`Expected --codecs to name each codec once, got '${text}'`)
  }
  return codecs
}

/** Returns the default JSON path for a run that starts at `now`. */
export function defaultOutPath(now: Date = new Date()): string {
  return join('runs', `bench-wire-${now.toISOString().replace(/[:.]/g, '-')}.json`)
}

/**
 * Parses the benchmark's arguments. Returns undefined for --help, and throws BenchUsageError
 * naming the option, the value and the accepted form for anything else it cannot use.
 */
export function parseBenchOptions(argv: string[]): BenchOptions | undefined {
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

  const targetText = values.target ?? String(DEFAULT_TARGET)
  const target = Number(targetText)
  if (targetText.trim() === '' || !Number.isFinite(target) || target <= 0 || target > 1) {
    throw new BenchUsageError(
      `Expected --target to be a fraction in (0, 1], such as 0.97, got '${targetText}'`,
    )
  }
  const backend = values.backend ?? 'auto'
  if (!(BACKEND_NAMES as readonly string[]).includes(backend)) {
    throw new BenchUsageError(
      `Expected --backend to be one of ${BACKEND_NAMES.join(', ')}, got '${backend}'`,
    )
  }
  if (values.out === '') {
    throw new BenchUsageError("Expected --out to be a file path, got ''")
  }

  const rounds = integerOption(values, 'rounds', 3, 1, 1000)
  const options: BenchOptions = {
    codecs: parseCodecList(values.codecs ?? DEFAULT_CODECS.join(',')),
    peers: integerOption(values, 'peers', 4, 1, 64),
    rounds,
    topkRounds: integerOption(values, 'topk-rounds', rounds + DEFAULT_TOPK_EXTRA_ROUNDS, 1, 1000),
    target,
    trainSamples: integerOption(values, 'train-samples', 60_000, 1, 60_000),
    testSamples: integerOption(values, 'test-samples', 10_000, 1, 10_000),
    repetitions: integerOption(values, 'repetitions', 9, 1, 1000),
    gossipPeers: integerOption(values, 'gossip-peers', 8, 2, 64),
    gossipRounds: integerOption(values, 'gossip-rounds', 2, 1, 1000),
    gossipTrainSamples: integerOption(values, 'gossip-train-samples', 4000, 1, 60_000),
    seed: integerOption(values, 'seed', 1, 0, 2 ** 32 - 1),
    backend: backend as BackendChoice,
    out: values.out ?? defaultOutPath(),
  }
  if (options.trainSamples < options.peers) {
    throw new BenchUsageError(
      `Expected --train-samples (${options.trainSamples}) to be at least --peers (${options.peers}), so no shard is empty`,
    )
  }
  if (options.gossipTrainSamples < options.gossipPeers) {
    throw new BenchUsageError(
      `Expected --gossip-train-samples (${options.gossipTrainSamples}) to be at least --gossip-peers (${options.gossipPeers}), so no shard is empty`,
    )
  }
  if (options.topkRounds < options.rounds) {
    throw new BenchUsageError(
      `Expected --topk-rounds to be at least --rounds (${options.rounds}), so every codec has an accuracy after ${options.rounds} rounds, got '${options.topkRounds}'`,
    )
  }
  return options
}
