// The memory benchmark's figures, its checks against the stated limits, and its table.
import { MAX_RSS_GROWTH, type MemoryBenchOptions } from './bench-memory-options.ts'
import type { MemorySample } from './bench-memory-swarm.ts'
import type { Check } from './bench-report.ts'
import type { SwarmRound } from './bench-swarm.ts'

const MIB = 1024 * 1024

/** One sampled quantity at the rounds the table shows, and its range from the baseline on. */
export interface SeriesFigures {
  /** Value after round 1, or null when that round has no sample. */
  first: number | null
  /** Value after the baseline round, or null when that round has no sample. */
  baseline: number | null
  /** Value after the last round, or null when that round has no sample. */
  last: number | null
  /** Smallest and largest value from the baseline round to the last round. */
  min: number | null
  max: number | null
  /** last / baseline, or null when either is missing. */
  ratio: number | null
}

export interface MemoryFigures {
  baselineRound: number
  lastRound: number
  numTensors: SeriesFigures
  rss: SeriesFigures
  heapUsed: SeriesFigures
  /** Seconds from the start of round 1 to the end of the last round, divided by the rounds. */
  secondsPerRound: number | null
}

/** Figures of the swarm's rounds, which show whether some rounds closed at the deadline. */
export interface MemorySwarmFigures {
  /** Lowest test accuracy over the peers after the last round. */
  finalAccuracy: number | null
  /** Rounds in which some peer closed the round at the deadline. */
  roundsAtDeadline: number
  /** Minimum number of deltas that a peer averaged in a round. */
  minContributors: number | null
  /** Rounds after which the peers held more than one model. */
  roundsWithDistinctModels: number
}

export interface MemoryBenchReport {
  createdAt: string
  nodeVersion: string
  backend: string
  /** Whether global.gc ran before every sample, which needs `node --expose-gc`. */
  garbageCollected: boolean
  settings: Omit<MemoryBenchOptions, 'out'>
  model: { name: string; shapes: number[][]; values: number }
  swarm: MemorySwarmFigures
  figures: MemoryFigures
  checks: Check[]
  samples: MemorySample[]
}

type SampledQuantity = 'numTensors' | 'rss' | 'heapUsed'

function valueAt(samples: MemorySample[], round: number, quantity: SampledQuantity): number | null {
  return samples.find((sample) => sample.round === round)?.[quantity] ?? null
}

function seriesFigures(
  samples: MemorySample[],
  quantity: SampledQuantity,
  baselineRound: number,
  lastRound: number,
): SeriesFigures {
  const baseline = valueAt(samples, baselineRound, quantity)
  const last = valueAt(samples, lastRound, quantity)
  const range = samples
    .filter((sample) => sample.round >= baselineRound && sample.round <= lastRound)
    .map((sample) => sample[quantity])
  return {
    first: valueAt(samples, 1, quantity),
    baseline,
    last,
    min: range.length === 0 ? null : Math.min(...range),
    max: range.length === 0 ? null : Math.max(...range),
    ratio: baseline === null || last === null || baseline === 0 ? null : last / baseline,
  }
}

/** Reduces the samples to the figures of the table: round 1, the baseline and the last round. */
export function summarizeSamples(
  samples: MemorySample[],
  options: Pick<MemoryBenchOptions, 'rounds' | 'baselineRound'>,
): MemoryFigures {
  const { baselineRound, rounds } = options
  const last = samples.find((sample) => sample.round === rounds)
  return {
    baselineRound,
    lastRound: rounds,
    numTensors: seriesFigures(samples, 'numTensors', baselineRound, rounds),
    rss: seriesFigures(samples, 'rss', baselineRound, rounds),
    heapUsed: seriesFigures(samples, 'heapUsed', baselineRound, rounds),
    secondsPerRound: last === undefined ? null : last.seconds / rounds,
  }
}

/** Reduces the per-round swarm figures to what tells whether the rounds ran normally. */
export function summarizeSwarm(rounds: SwarmRound[]): MemorySwarmFigures {
  return {
    finalAccuracy: rounds.at(-1)?.accuracy ?? null,
    roundsAtDeadline: rounds.filter((round) => round.deadlineHits > 0).length,
    minContributors:
      rounds.length === 0 ? null : Math.min(...rounds.map((round) => round.minContributors)),
    roundsWithDistinctModels: rounds.filter((round) => round.distinctModels > 1).length,
  }
}

function mebibytes(bytes: number): string {
  return (bytes / MIB).toFixed(1)
}

function signedPercent(fraction: number): string {
  return `${fraction >= 0 ? '+' : ''}${(fraction * 100).toFixed(1)}%`
}

/**
 * Checks that numTensors takes one value from round 1 to the last round, and that rss grows by
 * less than MAX_RSS_GROWTH from the baseline round to the last round. A check whose rounds
 * have no sample gets passed: null.
 */
export function evaluateMemoryChecks(samples: MemorySample[], figures: MemoryFigures): Check[] {
  const { baselineRound, lastRound } = figures
  const trained = samples.filter((sample) => sample.round >= 1)
  const counts = trained.map((sample) => sample.numTensors)
  const minCount = Math.min(...counts)
  const maxCount = Math.max(...counts)
  const roundOf = (count: number) => trained.find((sample) => sample.numTensors === count)?.round
  const tensors: Check = {
    name: `numTensors from round 1 to round ${lastRound}`,
    expected: 'one value',
    measured:
      trained.length === 0
        ? 'not measured'
        : minCount === maxCount
          ? `${minCount} in all ${trained.length} samples`
          : `${minCount} (round ${roundOf(minCount)}) to ${maxCount} (round ${roundOf(maxCount)})`,
    passed: trained.length === 0 ? null : minCount === maxCount,
  }

  const { ratio, baseline, last } = figures.rss
  const rss: Check = {
    name: `rss growth from round ${baselineRound} to round ${lastRound}`,
    expected: `< ${signedPercent(MAX_RSS_GROWTH)}`,
    measured:
      ratio === null || baseline === null || last === null
        ? 'not measured'
        : `${signedPercent(ratio - 1)} (${mebibytes(baseline)} to ${mebibytes(last)} MiB)`,
    passed: ratio === null ? null : ratio - 1 < MAX_RSS_GROWTH,
  }
  return [tensors, rss]
}

/** Returns one sentence per failed check, for stderr and the exit code. */
export function failedCheckMessages(checks: Check[]): string[] {
  return checks
    .filter((check) => check.passed === false)
    .map(
      (check) =>
        `memory check failed: ${check.name} was ${check.measured}, expected ${check.expected}`,
    )
}

function row(cells: string[], widths: number[]): string {
  return cells
    .map((cell, i) =>
      i === 0 ? cell.padEnd(widths[i] as number) : cell.padStart(widths[i] as number),
    )
    .join('  ')
    .trimEnd()
}

function seriesRow(label: string, series: SeriesFigures, format: (value: number) => string) {
  const cell = (value: number | null) => (value === null ? '-' : format(value))
  return [
    label,
    cell(series.first),
    cell(series.baseline),
    cell(series.last),
    cell(series.min),
    cell(series.max),
    series.ratio === null ? '-' : `${series.ratio.toFixed(3)} (${signedPercent(series.ratio - 1)})`,
  ]
}

function figureTable(figures: MemoryFigures): string[] {
  const { baselineRound, lastRound } = figures
  const span = `${baselineRound}..${lastRound}`
  const header = [
    'figure',
    'round 1',
    `round ${baselineRound}`,
    `round ${lastRound}`,
    `min ${span}`,
    `max ${span}`,
    `round ${lastRound} / ${baselineRound}`,
  ]
  const rows = [
    seriesRow('numTensors', figures.numTensors, (value) => value.toLocaleString('en-US')),
    seriesRow('rss (MiB)', figures.rss, mebibytes),
    seriesRow('heapUsed (MiB)', figures.heapUsed, mebibytes),
  ]
  const widths = header.map((cell, i) =>
    Math.max(cell.length, ...rows.map((r) => (r[i] as string).length)),
  )
  return [row(header, widths), ...rows.map((cells) => row(cells, widths))]
}

function verdictLabel(check: Check): string {
  if (check.passed === null) return 'n/a '
  return check.passed ? 'pass' : 'FAIL'
}

/** Warnings about runs whose figures do not describe normal rounds. */
function runWarnings(report: MemoryBenchReport): string[] {
  const warnings: string[] = []
  if (!report.garbageCollected) {
    warnings.push(
      'warning: global.gc is not available (run node with --expose-gc, as `npm run bench:memory` does), so heapUsed and rss include garbage',
    )
  }
  const sampledRounds = report.samples.filter((sample) => sample.round >= 1).length
  if (sampledRounds < report.settings.rounds) {
    warnings.push(
      `warning: only ${sampledRounds} of ${report.settings.rounds} rounds were finished by every peer and sampled`,
    )
  }
  if (report.swarm.roundsAtDeadline > 0) {
    warnings.push(
      `warning: ${report.swarm.roundsAtDeadline} rounds closed at the round deadline, with as few as ${report.swarm.minContributors} deltas`,
    )
  }
  return warnings
}

/** Formats the report as the short text table the benchmark prints. */
export function formatMemoryReport(report: MemoryBenchReport, jsonPath: string): string {
  const { settings, figures } = report
  const values = report.model.values.toLocaleString('en-US')
  const perRound = figures.secondsPerRound
  const lines = [
    `memory benchmark: ${report.model.name} (${values} values), backend ${report.backend}, ` +
      `${settings.peers} peers, ${settings.trainSamples.toLocaleString('en-US')} train / ` +
      `${settings.testSamples.toLocaleString('en-US')} test images, ${settings.rounds} rounds, seed ${settings.seed}`,
    ...figureTable(figures),
    perRound === null
      ? 'seconds per round: not measured'
      : `seconds per round: ${perRound.toFixed(2)} (${settings.rounds} rounds in ${(perRound * settings.rounds).toFixed(1)} s)`,
    `samples: after the round's last peer reported it${report.garbageCollected ? ', after a full garbage collection' : ''}`,
    '',
    'checks:',
    ...report.checks.map(
      (check) =>
        `  ${verdictLabel(check)}  ${check.name}: ${check.measured} (expected ${check.expected})`,
    ),
    ...runWarnings(report),
    `json: ${jsonPath}`,
  ]
  return `${lines.join('\n')}\n`
}
