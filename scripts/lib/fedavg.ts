// The FedAvg experiments: the MNIST settings of McMahan et al., "Communication-Efficient Learning
// of Deep Networks from Decentralized Data" (AISTATS 2017), run by a swarm of 100 peers.
import { join } from 'node:path'
import type { TopLevelSpec } from 'vega-lite'
import { type BackendChoice, selectBackend } from '../../node/backend.ts'
import { runSwarm } from './launcher.ts'
import { renderChart } from './plot.ts'
import { type PeerRound, type RoundPoint, readModeMetrics, roundSeries } from './run-folder.ts'

export interface FedAvgSetting {
  /** Short description of the setting, for the report's title. */
  title: string
  model: 'mlp' | 'cnn'
  partition: string
  /** Clients, one peer each. */
  peers: number
  /** Fraction C of the clients that train in each round. */
  participation: number
  /** Local epochs E. */
  localEpochs: number
  /** Mini-batch size B. */
  batchSize: number
  target: number
  /** Rounds the paper needed to reach the target with this setting. */
  paperRounds: number
  /** Table of the paper that gives that figure. */
  paperSource: string
  /** Learning rates searched when the command line gives none. */
  learningRates: number[]
  /** The paper's CNN runs for hours on 2 CPU cores (an estimate), so it expects a GPU backend. */
  needsGpu: boolean
}

const PAPER = 'McMahan et al. 2017'

export const FEDAVG_SETTINGS = {
  'fedavg-2nn-iid': {
    title: '2NN on IID data',
    model: 'mlp',
    partition: 'iid-per-client:600',
    peers: 100,
    participation: 0.1,
    localEpochs: 1,
    batchSize: 10,
    target: 0.97,
    paperRounds: 87,
    paperSource: `${PAPER}, Table 1 (2NN, IID, B=10, C=0.1)`,
    learningRates: [0.05, 0.1, 0.2],
    needsGpu: false,
  },
  'fedavg-2nn-noniid': {
    title: '2NN on pathological non-IID data',
    model: 'mlp',
    partition: 'shards:200x300',
    peers: 100,
    participation: 0.1,
    localEpochs: 1,
    batchSize: 10,
    target: 0.97,
    paperRounds: 664,
    paperSource: `${PAPER}, Table 1 (2NN, non-IID, B=10, C=0.1)`,
    learningRates: [0.05, 0.1, 0.2],
    needsGpu: false,
  },
  'fedavg-cnn-iid': {
    title: 'CNN on IID data',
    model: 'cnn',
    partition: 'iid-per-client:600',
    peers: 100,
    participation: 0.1,
    localEpochs: 5,
    batchSize: 10,
    target: 0.99,
    paperRounds: 20,
    paperSource: `${PAPER}, Table 2 (CNN, IID, E=5, B=10, C=0.1)`,
    learningRates: [0.05, 0.1, 0.2],
    needsGpu: true,
  },
} as const satisfies Record<string, FedAvgSetting>

export type FedAvgName = keyof typeof FEDAVG_SETTINGS
export const FEDAVG_NAMES = Object.keys(FEDAVG_SETTINGS) as FedAvgName[]

export interface FedAvgOptions {
  name: FedAvgName
  /** Peers: the setting's 100, or fewer for a quick check. */
  peers: number
  /** Maximum rounds of the final run. */
  rounds: number
  /** Rounds of each learning rate's trial run, when more than one rate is given. */
  gridRounds: number
  /** Learning rates to search. @default the setting's grid */
  learningRates?: number[]
  peersPerProcess: number
  seed: number
  /** Experiment folder, with one folder per run under it. */
  out: string
  /** Options passed to every peer after the experiment's own, such as ['--codec', 'int8']. */
  peerArgs: string[]
  progress: boolean
  signal?: AbortSignal
}

/** One learning rate's trial: the lowest accuracy over the peers after each round. */
export interface GridTrial {
  learningRate: number
  /** Rounds to the target within the trial, or null. */
  roundsToTarget: number | null
  finalAccuracy: number
}

export interface FedAvgResult {
  name: FedAvgName
  setting: FedAvgSetting
  /** Reason the experiment did not run, such as a missing GPU backend, or null when it ran. */
  skipped: string | null
  grid: GridTrial[]
  learningRate: number | null
  roundsToTarget: number | null
  timeToTargetSeconds: number | null
  wallSeconds: number | null
  series: FedAvgRound[]
}

/** One round of the final run: the lowest accuracy, the participants, the models and deadline hits. */
export interface FedAvgRound extends RoundPoint {
  /** Peers that trained and published in the round. */
  participants: number
  /** Distinct model hashes after the round, 1 when every peer has the same model. */
  models: number
  /** Peers whose wait for the round's deltas ended at the deadline. */
  deadlineHits: number
}

/** Adds the participants, models and deadline hits of each round to the accuracy series. */
function describeRounds(rows: PeerRound[]): FedAvgRound[] {
  return roundSeries(rows).map((point) => {
    const lines = rows.filter((row) => row.round === point.round)
    // participated and deadlineHit are metrics fields that PeerRound does not declare.
    const flag = (row: PeerRound, field: 'participated' | 'deadlineHit') =>
      (row as unknown as Record<string, unknown>)[field] === true
    return {
      ...point,
      participants: lines.filter((row) => flag(row, 'participated')).length,
      models: new Set(lines.map((row) => row.modelHash)).size,
      deadlineHits: lines.filter((row) => flag(row, 'deadlineHit')).length,
    }
  })
}

/**
 * Returns the value of the last `--NAME X` or `--NAME=X` in the peer options, or undefined.
 */
export function peerOption(peerArgs: string[], name: string): string | undefined {
  let value: string | undefined
  peerArgs.forEach((argument, i) => {
    if (argument === `--${name}`) value = peerArgs[i + 1]
    else if (argument.startsWith(`--${name}=`)) value = argument.slice(name.length + 3)
  })
  return value
}

/** Peer options that a FedAvg setting fixes, so the experiment rejects them after `--`. */
export const FIXED_PEER_OPTIONS = [
  'model',
  'partition',
  'peers',
  'peer-index',
  'participation',
  'epochs',
  'batch-size',
  'optimizer',
  'learning-rate',
  'rounds',
  'target',
]

/** Returns the peer options that encode a setting, which go before the user's own. */
function settingArgs(setting: FedAvgSetting, learningRate: number): string[] {
  return [
    '--participation',
    String(setting.participation),
    '--epochs',
    String(setting.localEpochs),
    '--batch-size',
    String(setting.batchSize),
    '--optimizer',
    'sgd',
    '--learning-rate',
    String(learningRate),
  ]
}

/** Returns the peer options' backend, or the one the setting needs. */
function requestedBackend(peerArgs: string[], setting: FedAvgSetting): BackendChoice {
  const value = peerOption(peerArgs, 'backend')
  return (value ?? (setting.needsGpu ? 'tensorflow-gpu' : 'auto')) as BackendChoice
}

/** Returns whether trial `a` beats `b`: fewer rounds to target, else a higher final accuracy. */
function better(a: GridTrial, b: GridTrial): boolean {
  if (a.roundsToTarget !== null || b.roundsToTarget !== null) {
    return (a.roundsToTarget ?? Infinity) < (b.roundsToTarget ?? Infinity)
  }
  return a.finalAccuracy > b.finalAccuracy
}

/**
 * Runs one FedAvg setting: a trial of `gridRounds` rounds per learning rate, then a run of up
 * to `rounds` rounds with the rate that reached the target soonest or, when none did, ended
 * most accurate. A setting that needs a GPU and cannot load one is skipped with the reason.
 */
export async function runFedAvg(
  options: FedAvgOptions,
  onRun?: (label: string) => void,
): Promise<FedAvgResult> {
  const setting: FedAvgSetting = FEDAVG_SETTINGS[options.name]
  const result: FedAvgResult = {
    name: options.name,
    setting,
    skipped: null,
    grid: [],
    learningRate: null,
    roundsToTarget: null,
    timeToTargetSeconds: null,
    wallSeconds: null,
    series: [],
  }
  const backend = requestedBackend(options.peerArgs, setting)
  if (setting.needsGpu && backend === 'tensorflow-gpu') {
    try {
      await selectBackend('tensorflow-gpu')
    } catch (error) {
      result.skipped = (error as Error).message
      return result
    }
  }

  const run = (learningRate: number, rounds: number, folder: string) =>
    runSwarm({
      peers: options.peers,
      modes: ['parallel'],
      centralised: false,
      rounds,
      target: setting.target,
      partition: setting.partition,
      model: setting.model,
      seed: options.seed,
      out: join(options.out, folder),
      peerArgs: [...settingArgs(setting, learningRate), ...options.peerArgs],
      peersPerProcess: options.peersPerProcess,
      progress: options.progress,
      signal: options.signal,
    })

  const rates = options.learningRates ?? setting.learningRates
  let best: GridTrial | undefined
  if (rates.length > 1) {
    for (const learningRate of rates) {
      onRun?.(`learning rate ${learningRate}, ${options.gridRounds} rounds`)
      const summary = await run(learningRate, options.gridRounds, `grid-lr-${learningRate}`)
      const trial: GridTrial = {
        learningRate,
        roundsToTarget: summary.parallel?.roundsToTarget ?? null,
        finalAccuracy: summary.parallel?.finalAccuracy ?? 0,
      }
      result.grid.push(trial)
      if (best === undefined || better(trial, best)) best = trial
    }
  }
  const learningRate = best?.learningRate ?? (rates[0] as number)
  result.learningRate = learningRate
  onRun?.(`learning rate ${learningRate}, up to ${options.rounds} rounds`)
  const summary = await run(learningRate, options.rounds, 'final')
  result.roundsToTarget = summary.parallel?.roundsToTarget ?? null
  result.timeToTargetSeconds = summary.parallel?.timeToTargetSeconds ?? null
  result.wallSeconds = summary.parallel?.wallSeconds ?? null
  result.series = describeRounds(readModeMetrics(join(options.out, 'final'), 'parallel'))
  return result
}

/** Plots the final run's accuracy per round, with the target and the paper's round count. */
export function renderFedAvg(result: FedAvgResult, folder: string) {
  const { setting } = result
  const lowest = Math.min(...result.series.map((point) => point.accuracy), setting.target)
  const spec: TopLevelSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: `${result.name}: test accuracy per round`,
    width: 560,
    height: 320,
    layer: [
      {
        data: { values: result.series },
        mark: { type: 'line', point: result.series.length <= 40 },
        encoding: {
          x: { field: 'round', type: 'quantitative', title: 'round (from 0)' },
          y: {
            field: 'accuracy',
            type: 'quantitative',
            title: 'lowest test accuracy over the peers',
            scale: { domain: [Math.floor(lowest * 20) / 20, 1] },
          },
        },
      },
      {
        data: { values: [{ accuracy: setting.target }] },
        mark: { type: 'rule', strokeDash: [4, 4], color: 'gray' },
        encoding: { y: { field: 'accuracy', type: 'quantitative' } },
      },
      {
        data: {
          values: [{ accuracy: setting.target, label: `target ${percent(setting.target)}` }],
        },
        mark: { type: 'text', align: 'left', dx: 4, dy: -6, color: 'gray' },
        encoding: {
          x: { value: 0 },
          y: { field: 'accuracy', type: 'quantitative' },
          text: { field: 'label' },
        },
      },
      {
        data: {
          values: [
            { round: setting.paperRounds - 1, label: `paper: ${setting.paperRounds} rounds` },
          ],
        },
        mark: { type: 'rule', color: '#d62728' },
        encoding: { x: { field: 'round', type: 'quantitative' } },
      },
      {
        data: {
          values: [
            { round: setting.paperRounds - 1, label: `paper: ${setting.paperRounds} rounds` },
          ],
        },
        mark: { type: 'text', align: 'right', dx: -4, color: '#d62728' },
        encoding: {
          x: { field: 'round', type: 'quantitative' },
          y: { value: 312 },
          text: { field: 'label' },
        },
      },
    ],
  }
  return renderChart(spec, folder, 'accuracy')
}

function percent(value: number): string {
  return `${(value * 100).toFixed(2)}%`
}

/** Formats report.md: the setting, the learning-rate search, the result beside the paper's. */
export function formatFedAvgReport(result: FedAvgResult, options: FedAvgOptions): string {
  const { setting } = result
  const testImages = Number(peerOption(options.peerArgs, 'test-samples') ?? 10_000)
  const expected = Math.max(1, options.peers * setting.participation)
  const lines = [
    `# ${result.name}: ${setting.title}`,
    '',
    `Compares with ${setting.paperSource}: ${setting.paperRounds} rounds to ${percent(setting.target)} test accuracy.`,
    '',
    `Setting: ${options.peers} peers, partition \`${setting.partition}\`, model ${setting.model},`,
    `C=${setting.participation}, E=${setting.localEpochs}, B=${setting.batchSize}, plain SGD, seed ${options.seed},`,
    `${options.peersPerProcess} peers per process, extra peer options \`${options.peerArgs.join(' ') || '(none)'}\`.`,
    `Every peer evaluates on the first ${testImages} test images, and a round's accuracy is the`,
    'lowest over the peers. A peer takes part in a round when its draw from (seed, round, shard) is',
    `below C, so the number of participants varies around ${expected} (at least 1), where the paper`,
    'took exactly C times its 100 clients.',
    '',
  ]

  if (options.peers !== setting.peers || testImages < 10_000) {
    lines.push(
      `NOTE: the paper used ${setting.peers} clients and all 10,000 test images. This run used ${options.peers} peers and ${testImages} test images, so its rounds are not comparable with the paper's.`,
      '',
    )
  }

  if (result.skipped !== null) {
    lines.push('## Not run', '', result.skipped, '')
    if (setting.needsGpu) {
      lines.push(
        'To run it on another backend anyway, name one after `--`, such as',
        `\`npm run experiment -- ${result.name} -- --backend wasm\`. On 2 CPU cores that would take hours (an estimate).`,
        '',
      )
    }
    return lines.join('\n')
  }

  if (result.grid.length > 0) {
    const rounds = `${options.gridRounds} round${options.gridRounds === 1 ? '' : 's'}`
    lines.push(
      `## Learning-rate search (${rounds} each)`,
      '',
      '| learning rate | rounds to target | accuracy after the last round |',
      '| ------------: | ---------------: | ----------------------------: |',
    )
    for (const trial of result.grid) {
      lines.push(
        `| ${trial.learningRate} | ${trial.roundsToTarget ?? 'not reached'} | ${percent(trial.finalAccuracy)} |`,
      )
    }
    const rates = result.grid.map((trial) => trial.learningRate)
    if (
      result.grid.length > 1 &&
      (result.learningRate === Math.max(...rates) || result.learningRate === Math.min(...rates))
    ) {
      lines.push(
        '',
        `The best rate, ${result.learningRate}, is at an end of the grid, so a wider grid may find a faster one.`,
      )
    }
    lines.push('')
  } else {
    lines.push(`One learning rate, ${result.learningRate}, was given, so no search ran.`, '')
  }

  const reached = result.roundsToTarget
  const participants = result.series.map((point) => point.participants)
  const mean =
    participants.reduce((sum, count) => sum + count, 0) / Math.max(1, participants.length)
  const split = result.series.filter((point) => point.models > 1).length
  const late = result.series.filter((point) => point.deadlineHits > 0).length
  lines.push(
    '## Result',
    '',
    '| | rounds to target | time to target |',
    '| - | ---------------: | -------------: |',
    `| this swarm, learning rate ${result.learningRate} | ${reached ?? `not reached in ${result.series.length}`} | ${result.timeToTargetSeconds === null ? '-' : `${result.timeToTargetSeconds.toFixed(0)} s`} |`,
    `| paper | ${setting.paperRounds} | - |`,
    '',
    `Participants per round: ${Math.min(...participants)} to ${Math.max(...participants)}, ${mean.toFixed(1)} on average.`,
    `Rounds after which the peers held more than one model: ${split}. Rounds in which a peer waited until the deadline: ${late}.`,
    `The final run took ${result.wallSeconds === null ? '-' : `${result.wallSeconds.toFixed(0)} s`} in all.`,
    '',
    '![accuracy per round](accuracy.png)',
    '',
    '| round | lowest accuracy | participants | models | seconds |',
    '| ----: | --------------: | -----------: | -----: | ------: |',
  )
  for (const point of result.series) {
    lines.push(
      `| ${point.round} | ${percent(point.accuracy)} | ${point.participants} | ${point.models} | ${point.seconds.toFixed(1)} |`,
    )
  }
  lines.push('')
  return lines.join('\n')
}
