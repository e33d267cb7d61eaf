// Options of `npm run bench:train`: parsing, defaults and help text.
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { BACKEND_NAMES, type BackendName } from '../../node/backend.ts'
import { MODEL_NAMES, type ModelName } from '../../node/spec.ts'

/** Backends tried when --backends is not given. One that cannot load is reported and skipped. */
export const DEFAULT_BACKENDS: BackendName[] = ['tensorflow', 'wasm', 'cpu']
export const DEFAULT_BATCH_SIZES = [10, 32, 128]

export interface TrainBenchOptions {
  /** @default every model */
  models: ModelName[]
  /** @default ['tensorflow', 'wasm', 'cpu'] */
  backends: BackendName[]
  /** @default [10, 32, 128] */
  batchSizes: number[]
  /** Training images per timed epoch, from the start of the set. @default 4096 */
  samples: number
  /** Training images per timed epoch on the pure-JS cpu backend. @default 256 */
  cpuSamples: number
  /** Timed epochs of each loop per combination, alternating, of which the fastest counts. @default 1 */
  repetitions: number
  /** @default 1 */
  seed: number
  /** JSON output path. @default runs/bench-train-<timestamp>.json */
  out: string
}

/** An option value the user must change; the benchmark exits with code 2 on it. */
export class TrainBenchUsageError extends Error {
  static override name = 'TrainBenchUsageError'

  constructor(message: string) {
    super(message)
    this.name = 'TrainBenchUsageError'
  }
}

export const TRAIN_BENCH_HELP = `Usage: npm run bench:train -- [options]

Measures training speed for each model, backend and batch size, in this process. For each
combination it times one epoch of the project's training loop (Trainer.train, Adam with
learning rate 0.001) and one epoch of a tf.layers model.fit on the same images: a bare one,
with tfjs-backend-wasm's stock kernels on wasm, and one with this project's wasm kernels. It
also times the stock tf.matMul (untransposed, the fastest of 5 runs) at the shapes of the
model's layers, where a convolution counts as the matrix product of its im2col form. Prints a
table and writes JSON.

Columns: Trainer/s, bare fit/s and fit/s are training images per second of one epoch, after
an untimed warm-up of up to 16 batches; x bare and x fit are Trainer/s over each. On backends
other than wasm the two fits are one and the same. Training GFLOP/s counts 3 times the forward
pass's matrix and convolution operations per sample (2*M*N*K each; the backward pass is counted
as twice the forward), and share is that rate over the matMul rate.

After the table, each check line says pass or FAIL against a target: Trainer.train at least 2x
a bare model.fit on wasm, mlp at batch 32 at least 50% of the matMul rate, and cnn on wasm at
least 5x its rate on cpu. A FAIL does not change the exit code (0), and a short or busy run
reads low: the recorded figures used --samples 2048 or more with no other job running.

Options:
  --models LIST        comma-separated models (default: ${MODEL_NAMES.join(',')})
  --backends LIST      comma-separated backends among ${BACKEND_NAMES.filter((name) => name !== 'auto').join(', ')}
                       (default: ${DEFAULT_BACKENDS.join(',')}; one that cannot load is skipped)
  --batch-sizes LIST   comma-separated batch sizes (default: ${DEFAULT_BATCH_SIZES.join(',')})
  --samples N          training images per timed epoch, from 1 to 60000 (default: 4096)
  --cpu-samples N      the same on the pure-JS cpu backend, which is slow (default: 256)
  --repetitions N      timed epochs of each loop, alternating; the fastest counts (default: 1)
  --seed N             seed of the weights and shuffles (default: 1)
  --out FILE           JSON output (default: runs/bench-train-<timestamp>.json)
  --help               print this help

On a terminal the benchmark shows its progress on stderr; with CI set it prints only the table.
For a quick run: npm run bench:train -- --models mlp --backends wasm --batch-sizes 32 --samples 1024`

const OPTION_NAMES = [
  'models',
  'backends',
  'batch-sizes',
  'samples',
  'cpu-samples',
  'repetitions',
  'seed',
  'out',
] as const

type OptionName = (typeof OPTION_NAMES)[number]

function integerText(name: OptionName, text: string, min: number, max: number): number {
  const value = /^\d+$/.test(text) ? Number(text) : Number.NaN
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new TrainBenchUsageError(
      `Expected --${name} to be an integer from ${min} to ${max}, got '${text}'`,
    )
  }
  return value
}

/** Splits a comma-separated option and rejects an empty or repeated item. */
function listOption(name: OptionName, text: string): string[] {
  const items = text.split(',').map((item) => item.trim())
  if (items.some((item) => item === '')) {
    throw new TrainBenchUsageError(
      `Expected --${name} to be a comma-separated list with no empty item, got '${text}'`,
    )
  }
  if (new Set(items).size !== items.length) {
    throw new TrainBenchUsageError(`Expected --${name} to name each item once, got '${text}'`)
  }
  return items
}

function namesOption<Name extends string>(
  name: OptionName,
  text: string,
  accepted: readonly Name[],
): Name[] {
  const items = listOption(name, text)
  for (const item of items) {
    if (!(accepted as readonly string[]).includes(item)) {
      throw new TrainBenchUsageError(
        `Expected --${name} to list items among ${accepted.join(', ')}, got '${item}'`,
      )
    }
  }
  return items as Name[]
}

/** Returns the default JSON path for a run that starts at `now`. */
export function defaultTrainOutPath(now: Date = new Date()): string {
  return join('runs', `bench-train-${now.toISOString().replace(/[:.]/g, '-')}.json`)
}

/**
 * Parses the benchmark's arguments. Returns undefined for --help, and throws
 * TrainBenchUsageError naming the option, the value and the accepted form for anything else.
 */
export function parseTrainBenchOptions(argv: string[]): TrainBenchOptions | undefined {
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
    throw new TrainBenchUsageError(
      `${(error as Error).message}. Accepted options: ${OPTION_NAMES.map((name) => `--${name}`).join(', ')}, --help`,
    )
  }
  if (parsed.values.help === true) return undefined
  const values = parsed.values as Partial<Record<OptionName, string>>
  if (values.out === '') {
    throw new TrainBenchUsageError("Expected --out to be a file path, got ''")
  }
  const backendNames = BACKEND_NAMES.filter((name): name is BackendName => name !== 'auto')
  const batchSizes =
    values['batch-sizes'] === undefined
      ? DEFAULT_BATCH_SIZES
      : listOption('batch-sizes', values['batch-sizes']).map((item) =>
          integerText('batch-sizes', item, 1, 60_000),
        )
  const backends = namesOption(
    'backends',
    values.backends ?? DEFAULT_BACKENDS.join(','),
    backendNames,
  )
  const samples = integerText('samples', values.samples ?? '4096', 1, 60_000)
  const cpuSamples = integerText('cpu-samples', values['cpu-samples'] ?? '256', 1, 60_000)
  const largestBatch = Math.max(...batchSizes)
  const tooFew: [OptionName, number][] = [['samples', samples]]
  if (backends.includes('cpu')) tooFew.push(['cpu-samples', cpuSamples])
  for (const [name, value] of tooFew) {
    if (value < largestBatch) {
      throw new TrainBenchUsageError(
        `Expected --${name} to be at least the largest batch size, ${largestBatch}, got ${value}: an epoch shorter than one batch times no whole step`,
      )
    }
  }
  return {
    models: namesOption('models', values.models ?? MODEL_NAMES.join(','), MODEL_NAMES),
    backends,
    batchSizes,
    samples,
    cpuSamples,
    repetitions: integerText('repetitions', values.repetitions ?? '1', 1, 100),
    seed: integerText('seed', values.seed ?? '1', 0, 2 ** 32 - 1),
    out: values.out ?? defaultTrainOutPath(),
  }
}
