// npm run experiment -- NAME: named experiments that write a run folder with report.md.
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { MODEL_NAMES } from '../node/spec.ts'
import { runCommand, stopOnSignals, UsageError } from './lib/command.ts'
import {
  FEDAVG_NAMES,
  FEDAVG_SETTINGS,
  type FedAvgName,
  type FedAvgOptions,
  FIXED_PEER_OPTIONS,
  formatFedAvgReport,
  peerOption,
  renderFedAvg,
  runFedAvg,
} from './lib/fedavg.ts'
import { renderConvergence } from './lib/plot.ts'
import { formatScalingReport, renderScaling, runScaling } from './lib/scaling.ts'
import { writeFileAtomic } from './lib/write-atomic.ts'

const EXPERIMENTS = ['scaling', ...FEDAVG_NAMES] as const

const HELP = `Usage: npm run experiment -- NAME [options] [-- peer options]

Experiments:
  scaling             the launcher's main job with 1, 2, 4 and 8 peers, each in parallel and
                      in serial mode; report.md tabulates the time to target and scaling.png
                      plots it against the peer count
  fedavg-2nn-iid      McMahan et al. 2017: 100 peers with 600 random images each, C=0.1, E=1,
                      B=10, the 2NN (mlp), 97% target; the paper took 87 rounds
  fedavg-2nn-noniid   the same on label-sorted shards (shards:200x300, two per peer); the
                      paper took 664 rounds
  fedavg-cnn-iid      the paper's CNN (cnn) with E=5, 99% target; the paper took 20 rounds.
                      It runs only where the tensorflow-gpu backend loads, unless the peer
                      options name another --backend

A fedavg experiment first runs each learning rate of a grid for --grid-rounds rounds, then the
rate that reached the target soonest (or ended most accurate) for up to --rounds rounds. It
writes report.md with the curve beside the paper's figure, accuracy.png and fedavg.json.

Options:
  --rounds N             maximum rounds per run (default: 20 for scaling, 3x the paper's
                         rounds for fedavg, at most 2000)
  --seed N               seed of weights, shards and shuffles (default: 1)
  --out DIR              experiment folder (default: runs/NAME-<timestamp>)
  --help                 print this help

Options of scaling:
  --peer-counts LIST     comma-separated peer counts (default: 1,2,4,8)
  --target FRACTION      test accuracy at which a run stops (default: 0.97)
  --model NAME           ${MODEL_NAMES.join(', ')} (default: mlp)

Options of the fedavg experiments:
  --learning-rates LIST  comma-separated rates to search (default: 0.05,0.1,0.2)
  --grid-rounds N        rounds of each trial of the search (default: 10); a single
                         learning rate skips the search
  --peers N              peers (default: 100, as the paper's clients)
  --peers-per-process K  peers that one process hosts (default: 25, or --peers if fewer)

Options after -- go to every peer, for example:
  npm run experiment -- scaling --peer-counts 1,2 -- --train-samples 6000 --test-samples 2000
  npm run experiment -- fedavg-2nn-iid -- --codec int8`

interface CommonOptions {
  rounds: number | undefined
  seed: number
  out: string
  peerArgs: string[]
}

type ExperimentOptions =
  | ({ name: 'scaling' } & CommonOptions & {
        peerCounts: number[]
        target: number
        model: string
      })
  | ({ name: FedAvgName } & CommonOptions & {
        learningRates: number[] | undefined
        gridRounds: number
        peers: number | undefined
        peersPerProcess: number | undefined
      })

/** Peers per process of a fedavg experiment: 100 peers in 4 processes, about 1.2 GB each. */
const DEFAULT_PEERS_PER_PROCESS = 25
const SCALING_ONLY = ['peer-counts', 'target', 'model'] as const
const FEDAVG_ONLY = ['learning-rates', 'grid-rounds', 'peers', 'peers-per-process'] as const

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

function rateList(text: string): number[] {
  const values = text.split(',').map((part) => Number(part.trim()))
  if (values.some((value) => !(value > 0 && value <= 10))) {
    throw new UsageError(
      `Expected --learning-rates to be comma-separated numbers in (0, 10], such as 0.05,0.1,0.2, got '${text}'`,
    )
  }
  return values
}

function integer(name: string, text: string, min: number, max: number): number {
  const value = Number(text)
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new UsageError(`Expected --${name} to be an integer from ${min} to ${max}, got '${text}'`)
  }
  return value
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
        'peer-counts': { type: 'string' },
        rounds: { type: 'string' },
        target: { type: 'string' },
        model: { type: 'string' },
        'learning-rates': { type: 'string' },
        'grid-rounds': { type: 'string' },
        peers: { type: 'string' },
        'peers-per-process': { type: 'string' },
        seed: { type: 'string', default: '1' },
        out: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    })
  } catch (error) {
    const message = (error as Error).message.replace(/\.$/, '')
    throw new UsageError(`${message}. Run with --help for the accepted options`)
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
      `Expected one experiment name, ${EXPERIMENTS.join(', ')}, got '${parsed.positionals.join(' ')}'. Run with --help for the list`,
    )
  }
  const foreign = name === 'scaling' ? FEDAVG_ONLY : SCALING_ONLY
  for (const option of foreign) {
    if (values[option] !== undefined) {
      throw new UsageError(
        `--${option} does not apply to ${name}. Run with --help for the options of each experiment`,
      )
    }
  }
  const seed = Number(values.seed)
  if (!Number.isInteger(seed) || seed < 0) {
    throw new UsageError(`Expected --seed to be an integer >= 0, got '${values.seed}'`)
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, '-')
  const common: CommonOptions = {
    rounds:
      values.rounds === undefined ? undefined : integer('rounds', String(values.rounds), 1, 2000),
    seed,
    out: typeof values.out === 'string' ? values.out : join('runs', `${name}-${stamp}`),
    peerArgs,
  }

  if (name === 'scaling') {
    const target = Number(values.target ?? '0.97')
    if (!(target > 0 && target <= 1)) {
      throw new UsageError(
        `Expected --target to be a fraction in (0, 1], such as 0.97, got '${values.target}'`,
      )
    }
    const model = String(values.model ?? 'mlp')
    if (!(MODEL_NAMES as readonly string[]).includes(model)) {
      throw new UsageError(
        `Expected --model to be one of ${MODEL_NAMES.join(', ')}, got '${model}'`,
      )
    }
    return {
      name,
      ...common,
      peerCounts: integerList(String(values['peer-counts'] ?? '1,2,4,8')),
      target,
      model,
    }
  }
  const peers =
    values.peers === undefined ? undefined : integer('peers', String(values.peers), 1, 200)
  const learningRates =
    values['learning-rates'] === undefined ? undefined : rateList(String(values['learning-rates']))
  const gridRounds = integer('grid-rounds', String(values['grid-rounds'] ?? '10'), 0, 2000)
  const fixed = FIXED_PEER_OPTIONS.find((option) => peerOption(peerArgs, option) !== undefined)
  if (fixed !== undefined) {
    throw new UsageError(
      `--${fixed} after -- would change ${name}'s own setting, so the report would describe another run. Remove it, or use npm start for other settings`,
    )
  }
  const rateCount = (learningRates ?? FEDAVG_SETTINGS[name as FedAvgName].learningRates).length
  if (gridRounds === 0 && rateCount > 1) {
    throw new UsageError(
      `Expected --grid-rounds to be at least 1 when more than one learning rate is searched (${rateCount} rates), got 0. Pass one --learning-rates value to skip the search`,
    )
  }
  return {
    name: name as FedAvgName,
    ...common,
    learningRates,
    gridRounds,
    peers,
    peersPerProcess:
      values['peers-per-process'] === undefined
        ? undefined
        : integer('peers-per-process', String(values['peers-per-process']), 1, 200),
  }
}

async function runScalingExperiment(
  options: Extract<ExperimentOptions, { name: 'scaling' }>,
  signal: AbortSignal,
): Promise<number> {
  const { name: _name, ...rest } = options
  const settings = { ...rest, rounds: options.rounds ?? 20 }
  const result = await runScaling({ ...settings, progress: true, signal }, (peers) =>
    process.stdout.write(`${peers} peer(s):\n`),
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

async function runFedAvgExperiment(
  options: Extract<ExperimentOptions, { name: FedAvgName }>,
  signal: AbortSignal,
): Promise<number> {
  const setting = FEDAVG_SETTINGS[options.name]
  const peers = options.peers ?? setting.peers
  const rates = options.learningRates ?? setting.learningRates
  const fedavg: FedAvgOptions = {
    name: options.name,
    rounds: options.rounds ?? Math.min(2000, 3 * setting.paperRounds),
    gridRounds: rates.length > 1 ? options.gridRounds : 0,
    learningRates: options.learningRates,
    peers,
    peersPerProcess: options.peersPerProcess ?? Math.min(DEFAULT_PEERS_PER_PROCESS, peers),
    seed: options.seed,
    out: options.out,
    peerArgs: options.peerArgs,
    progress: true,
    signal,
  }

  mkdirSync(options.out, { recursive: true })
  const result = await runFedAvg(fedavg, (label) => process.stdout.write(`${label}:\n`))

  const { signal: _signal, progress: _progress, ...settings } = fedavg
  writeFileAtomic(
    join(options.out, 'fedavg.json'),
    `${JSON.stringify({ settings, ...result }, null, 2)}\n`,
  )
  const reportPath = join(options.out, 'report.md')
  writeFileAtomic(reportPath, formatFedAvgReport(result, fedavg))
  if (result.skipped !== null) {
    process.stderr.write(`${options.name} was not run: ${result.skipped}\nreport: ${reportPath}\n`)
    return 1
  }
  const plots = await renderFedAvg(result, options.out)
  process.stdout.write(
    `report: ${reportPath}\nplots:  ${plots.pngPath}\n        ${plots.svgPath}\n`,
  )
  return 0
}

async function main(argv: string[]): Promise<number> {
  const options = parseOptions(argv)
  if (options === undefined) {
    process.stdout.write(`${HELP}\n`)
    return 0
  }
  const signal = stopOnSignals('experiment')
  process.stdout.write(`experiment folder: ${options.out}\n`)
  return options.name === 'scaling'
    ? runScalingExperiment(options, signal)
    : runFedAvgExperiment(options, signal)
}

runCommand(main)
