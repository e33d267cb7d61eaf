// npm run experiment -- NAME: named experiments that write a run folder with report.md.
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { MODEL_NAMES } from '../node/spec.ts'
import { killAllChildren } from './lib/children.ts'
import { PeerProcessError } from './lib/launcher.ts'
import { renderConvergence } from './lib/plot.ts'
import { formatScalingReport, renderScaling, runScaling } from './lib/scaling.ts'
import { writeFileAtomic } from './lib/write-atomic.ts'

const EXIT_USAGE = 2
const EXPERIMENTS = ['scaling'] as const

const HELP = `Usage: npm run experiment -- NAME [options] [-- peer options]

Experiments:
  scaling   the launcher's main job with 1, 2, 4 and 8 peers, each in parallel and in serial
            mode; report.md tabulates the time to target and scaling.png plots it against
            the peer count

Options:
  --peer-counts LIST   comma-separated peer counts (default: 1,2,4,8)
  --rounds N           maximum rounds per run (default: 20)
  --target FRACTION    test accuracy at which a run stops (default: 0.97)
  --model NAME         ${MODEL_NAMES.join(', ')} (default: mlp)
  --seed N             seed of weights, shards and shuffles (default: 1)
  --out DIR            experiment folder (default: runs/NAME-<timestamp>)
  --help               print this help

Options after -- go to every peer, for example:
  npm run experiment -- scaling --peer-counts 1,2 -- --train-samples 6000 --test-samples 2000`

class UsageError extends Error {
  static override name = 'UsageError'
}

interface ExperimentOptions {
  name: (typeof EXPERIMENTS)[number]
  peerCounts: number[]
  rounds: number
  target: number
  model: string
  seed: number
  out: string
  peerArgs: string[]
}

function integerList(text: string): number[] {
  const values = text.split(',').map((part) => Number(part.trim()))
  if (
    values.length === 0 ||
    values.some((value) => !Number.isInteger(value) || value < 1 || value > 64)
  ) {
    throw new UsageError(
      `Expected --peer-counts to be comma-separated integers from 1 to 64, such as 1,2,4,8, got '${text}'`,
    )
  }
  return values
}

function parseOptions(argv: string[]): ExperimentOptions | undefined {
  const split = argv.indexOf('--')
  const own = split === -1 ? argv : argv.slice(0, split)
  const peerArgs = split === -1 ? [] : argv.slice(split + 1)
  let parsed: ReturnType<typeof parseArgs>
  try {
    parsed = parseArgs({
      args: own,
      allowPositionals: true,
      options: {
        'peer-counts': { type: 'string', default: '1,2,4,8' },
        rounds: { type: 'string', default: '20' },
        target: { type: 'string', default: '0.97' },
        model: { type: 'string', default: 'mlp' },
        seed: { type: 'string', default: '1' },
        out: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    })
  } catch (error) {
    throw new UsageError(`${(error as Error).message}. Run with --help for the accepted options`)
  }
  const values = parsed.values as Record<string, string | boolean | undefined>
  if (values.help === true) return undefined

  const [name, ...extra] = parsed.positionals
  if (
    name === undefined ||
    extra.length > 0 ||
    !(EXPERIMENTS as readonly string[]).includes(name)
  ) {
    throw new UsageError(
      `Expected one experiment name, ${EXPERIMENTS.join(' or ')}, got '${parsed.positionals.join(' ')}'. Run with --help for the list`,
    )
  }

  const rounds = Number(values.rounds)
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 1000) {
    throw new UsageError(
      `Expected --rounds to be an integer from 1 to 1000, got '${values.rounds}'`,
    )
  }
  const target = Number(values.target)
  if (!(target > 0 && target <= 1)) {
    throw new UsageError(
      `Expected --target to be a fraction in (0, 1], such as 0.97, got '${values.target}'`,
    )
  }
  const model = String(values.model)
  if (!(MODEL_NAMES as readonly string[]).includes(model)) {
    throw new UsageError(`Expected --model to be one of ${MODEL_NAMES.join(', ')}, got '${model}'`)
  }
  const seed = Number(values.seed)
  if (!Number.isInteger(seed) || seed < 0) {
    throw new UsageError(`Expected --seed to be an integer >= 0, got '${values.seed}'`)
  }

  const stamp = new Date().toISOString().replace(/[:.]/g, '-')
  return {
    name: name as ExperimentOptions['name'],
    peerCounts: integerList(String(values['peer-counts'])),
    rounds,
    target,
    model,
    seed,
    out: typeof values.out === 'string' ? values.out : join('runs', `${name}-${stamp}`),
    peerArgs,
  }
}

async function main(argv: string[]): Promise<number> {
  const options = parseOptions(argv)
  if (options === undefined) {
    process.stdout.write(`${HELP}\n`)
    return 0
  }
  const shutdown = new AbortController()
  const onSignal = (signal: NodeJS.Signals) => {
    process.stderr.write(`${signal}: stopping the experiment\n`)
    shutdown.abort(new Error(`stopped by ${signal}`))
    process.exitCode = signal === 'SIGINT' ? 130 : 143
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  process.stdout.write(`experiment folder: ${options.out}\n`)
  const { name: _name, ...settings } = options
  const result = await runScaling(
    { ...settings, progress: true, signal: shutdown.signal },
    (peers) => process.stdout.write(`${peers} peer(s):\n`),
  )
  for (const peers of options.peerCounts)
    await renderConvergence(join(options.out, `peers-${peers}`))
  const plots = await renderScaling(result, options.target, options.out)
  writeFileAtomic(
    join(options.out, 'scaling.json'),
    `${JSON.stringify({ settings, ...result }, null, 2)}\n`,
  )
  const reportPath = join(options.out, 'report.md')
  writeFileAtomic(reportPath, formatScalingReport(result, settings))
  process.stdout.write(
    `report: ${reportPath}\nplots:  ${plots.pngPath}\n        ${plots.svgPath}\n`,
  )
  return 0
}

// A crash must not leave peers behind; 'exit' handlers run synchronously.
process.on('exit', killAllChildren)

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode ??= code
  },
  (error: unknown) => {
    if (error instanceof UsageError) {
      process.stderr.write(`${error.message}\n`)
      process.exitCode = EXIT_USAGE
      return
    }
    if (process.exitCode === undefined) {
      process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`)
      process.exitCode =
        error instanceof PeerProcessError && error.exitCode === EXIT_USAGE ? EXIT_USAGE : 1
    }
  },
)
