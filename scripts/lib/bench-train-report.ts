// The training benchmark's JSON record, its checks against the stated targets, and its table.
import type { BackendName } from '../../node/backend.ts'
import type { ModelName } from '../../node/spec.ts'
import type { TrainBenchOptions } from './bench-train-options.ts'

/**
 * Minimum speedup of Trainer.train over a bare model.fit on wasm, the backend peers use without
 * tfjs-node, in every combination where the stock wasm kernels can train the model.
 */
export const MIN_SPEEDUP_OVER_FIT = 2
/** Minimum share of the bare tf.matMul rate that mlp reaches at batch size 32. */
export const MIN_MLP_MATMUL_SHARE = 0.5
/** Minimum ratio of cnn's samples per second on wasm to those on the pure-JS cpu backend. */
export const MIN_CNN_WASM_OVER_CPU = 5

/** A timed epoch: training images per second and the mean loss of the epoch. */
export interface EpochTiming {
  samplesPerSecond: number
  loss: number
}

/** All measurements of one model on one backend at one batch size. */
export interface TrainCell {
  model: ModelName
  backend: BackendName
  batchSize: number
  /** Training images per timed epoch. */
  samples: number
  trainer: EpochTiming
  /** model.fit with this project's kernels registered. */
  fit: EpochTiming
  /** trainer.samplesPerSecond / fit.samplesPerSecond. */
  speedupOverFit: number
  /**
   * A bare model.fit: with tfjs-backend-wasm's stock kernels on wasm, the same as `fit`
   * elsewhere. null where the stock kernels cannot train the model (a CNN on wasm).
   */
  stockFit: EpochTiming | null
  /** trainer.samplesPerSecond / stockFit.samplesPerSecond, or null without stockFit. */
  speedupOverStockFit: number | null
  /** Matrix and convolution operations of one forward pass, per image, in millions. */
  forwardMflopsPerSample: number
  /** 3 x forward operations x trainer.samplesPerSecond, in GFLOP/s. */
  trainGflops: number
  /** Bare tf.matMul rate at the forward pass's shapes on this backend, in GFLOP/s. */
  matMulGflops: number
  /** trainGflops / matMulGflops. */
  matMulShare: number
  /** tf.memory().numTensors after the cell minus before it; 0 when nothing leaked. */
  leakedTensors: number
}

export interface BackendStatus {
  name: BackendName
  loaded: boolean
  /** Reason the backend could not load. */
  reason?: string
}

/** A measured figure against its stated limit. */
export interface Check {
  name: string
  expected: string
  measured: string
  /** null when the run did not measure what the limit is stated for. */
  passed: boolean | null
}

export interface TrainBenchReport {
  createdAt: string
  nodeVersion: string
  settings: Omit<TrainBenchOptions, 'out'>
  backends: BackendStatus[]
  cells: TrainCell[]
  checks: Check[]
}

function percent(fraction: number): string {
  return `${(fraction * 100).toFixed(1)}%`
}

function times(ratio: number): string {
  return `${ratio.toFixed(2)}x`
}

function describeCell(cell: TrainCell): string {
  return `${cell.model} on ${cell.backend} at batch ${cell.batchSize}`
}

/** Compares the speedups, mlp's share of the matMul rate and cnn's wasm gain with limits. */
export function evaluateTrainChecks(cells: TrainCell[]): Check[] {
  const checks: Check[] = []
  const speedup = (cell: TrainCell) => cell.speedupOverStockFit ?? Number.POSITIVE_INFINITY
  const slowest = cells
    .filter((cell) => cell.backend === 'wasm' && cell.speedupOverStockFit !== null)
    .reduce<TrainCell | undefined>(
      (worst, cell) => (worst === undefined || speedup(cell) < speedup(worst) ? cell : worst),
      undefined,
    )
  checks.push({
    name: 'Trainer.train against a bare model.fit',
    expected: `>= ${times(MIN_SPEEDUP_OVER_FIT)} on wasm wherever a bare model.fit can train`,
    measured:
      slowest === undefined
        ? 'not measured'
        : `${times(speedup(slowest))} at the lowest (${describeCell(slowest)})`,
    passed: slowest === undefined ? null : speedup(slowest) >= MIN_SPEEDUP_OVER_FIT,
  })
  for (const cell of cells) {
    if (cell.model !== 'mlp' || cell.batchSize !== 32) continue
    checks.push({
      name: `mlp at batch 32 on ${cell.backend}: share of the bare matMul rate`,
      expected: `>= ${percent(MIN_MLP_MATMUL_SHARE)}`,
      measured: `${percent(cell.matMulShare)} (${cell.trainGflops.toFixed(2)} of ${cell.matMulGflops.toFixed(2)} GFLOP/s)`,
      passed: cell.matMulShare >= MIN_MLP_MATMUL_SHARE,
    })
  }
  const cnn = (backend: BackendName) =>
    cells.filter((cell) => cell.model === 'cnn' && cell.backend === backend)
  const cpuCells = cnn('cpu')
  for (const wasm of cnn('wasm')) {
    const cpu = cpuCells.find((cell) => cell.batchSize === wasm.batchSize)
    if (cpu === undefined) continue
    const ratio = wasm.trainer.samplesPerSecond / cpu.trainer.samplesPerSecond
    checks.push({
      name: `cnn at batch ${wasm.batchSize}: wasm against cpu`,
      expected: `>= ${times(MIN_CNN_WASM_OVER_CPU)} the samples per second`,
      measured: `${times(ratio)} (${wasm.trainer.samplesPerSecond.toFixed(1)} against ${cpu.trainer.samplesPerSecond.toFixed(1)})`,
      passed: ratio >= MIN_CNN_WASM_OVER_CPU,
    })
  }
  return checks
}

function formatRate(value: number): string {
  return value >= 100 ? value.toFixed(0) : value.toFixed(1)
}

function formatRow(cells: string[], widths: number[]): string {
  return cells
    .map((cell, i) => (i < 3 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0)))
    .join('  ')
}

/** Formats the measurements as a table, then the checks, then the JSON path. */
export function formatTrainReport(report: TrainBenchReport, out: string): string {
  const header = [
    'model',
    'backend',
    'batch',
    'Trainer/s',
    'bare fit/s',
    'x bare',
    'fit/s',
    'x fit',
    'train GFLOP/s',
    'matMul GFLOP/s',
    'share',
  ]
  const rows = report.cells.map((cell) => [
    cell.model,
    cell.backend,
    String(cell.batchSize),
    formatRate(cell.trainer.samplesPerSecond),
    cell.stockFit === null ? 'cannot' : formatRate(cell.stockFit.samplesPerSecond),
    cell.speedupOverStockFit === null ? '-' : times(cell.speedupOverStockFit),
    formatRate(cell.fit.samplesPerSecond),
    times(cell.speedupOverFit),
    cell.trainGflops.toFixed(2),
    cell.matMulGflops.toFixed(2),
    percent(cell.matMulShare),
  ])
  const widths = header.map((title, i) =>
    Math.max(title.length, ...rows.map((row) => (row[i] ?? '').length)),
  )
  const lines = [formatRow(header, widths), ...rows.map((row) => formatRow(row, widths))]
  lines.push(
    '',
    'Samples per second of one epoch. bare fit: model.fit with the stock kernels (on wasm,',
    "without this project's; 'cannot' where they lack a gradient). fit: model.fit with this",
    "project's kernels on wasm, the same fit elsewhere. x bare, x fit: Trainer/s over each.",
    'share = train GFLOP/s / matMul GFLOP/s, matMul with the stock kernel.',
  )
  for (const backend of report.backends) {
    if (!backend.loaded) lines.push(`Skipped backend ${backend.name}: ${backend.reason}`)
  }
  lines.push('')
  for (const check of report.checks) {
    let verdict = 'n/a '
    if (check.passed === true) verdict = 'pass'
    if (check.passed === false) verdict = 'FAIL'
    lines.push(`${verdict}  ${check.name}: ${check.measured} (expected ${check.expected})`)
  }
  lines.push('', `JSON: ${out}`, '')
  return lines.join('\n')
}
