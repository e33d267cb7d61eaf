// The scaling experiment: time to target against peer count, in parallel and serial mode.
import { join } from 'node:path'
import type { TopLevelSpec } from 'vega-lite'
import { type LaunchMode, runSwarm, type SwarmSummary } from './launcher.ts'
import { renderChart } from './plot.ts'

export const SCALING_MODES: LaunchMode[] = ['parallel', 'serial']

export interface ScalingOptions {
  /** Peer counts to run, in order. */
  peerCounts: number[]
  rounds: number
  target: number
  model: string
  seed: number
  /** Experiment folder; run N goes to peers-N under it. */
  out: string
  /** Options passed to every peer. */
  peerArgs: string[]
  progress: boolean
  signal?: AbortSignal
}

/** One peer count's result: time to target and rounds in each mode. */
export interface ScalingRow {
  peers: number
  mode: LaunchMode
  timeToTargetSeconds: number | null
  roundsToTarget: number | null
  finalAccuracy: number
}

export interface ScalingResult {
  rows: ScalingRow[]
  /** Serial time divided by parallel time, per peer count; null unless both reached the target. */
  speedups: { peers: number; speedup: number | null }[]
}

/** Runs the launcher's main job once per peer count, both modes, no centralised run. */
export async function runScaling(
  options: ScalingOptions,
  onRun?: (peers: number) => void,
): Promise<ScalingResult> {
  const rows: ScalingRow[] = []
  const speedups: ScalingResult['speedups'] = []
  for (const peers of options.peerCounts) {
    onRun?.(peers)
    const summary: SwarmSummary = await runSwarm({
      peers,
      modes: SCALING_MODES,
      centralised: false,
      rounds: options.rounds,
      target: options.target,
      partition: 'iid',
      model: options.model,
      seed: options.seed,
      out: join(options.out, `peers-${peers}`),
      peerArgs: options.peerArgs,
      progress: options.progress,
      signal: options.signal,
    })
    for (const mode of SCALING_MODES) {
      const result = summary[mode]
      rows.push({
        peers,
        mode,
        timeToTargetSeconds: result?.timeToTargetSeconds ?? null,
        roundsToTarget: result?.roundsToTarget ?? null,
        finalAccuracy: result?.finalAccuracy ?? 0,
      })
    }
    speedups.push({ peers, speedup: summary.speedup })
  }
  return { rows, speedups }
}

/** Renders time to target against peer count, one line per mode, as SVG and PNG. */
export async function renderScaling(
  result: ScalingResult,
  target: number,
  folder: string,
): Promise<{ svgPath: string; pngPath: string }> {
  const spec: TopLevelSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: `Time to ${(target * 100).toFixed(1)}% test accuracy`,
    width: 480,
    height: 300,
    data: { values: result.rows.filter((row) => row.timeToTargetSeconds !== null) },
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'peers', type: 'quantitative', title: 'peers', axis: { tickMinStep: 1 } },
      y: { field: 'timeToTargetSeconds', type: 'quantitative', title: 'seconds to target' },
      color: { field: 'mode', type: 'nominal', title: 'mode' },
    },
  }
  return renderChart(spec, folder, 'scaling')
}

function seconds(value: number | null): string {
  return value === null ? 'not reached' : `${value.toFixed(1)} s`
}

/** Formats the experiment's report.md: settings, the table and the plot. */
export function formatScalingReport(
  result: ScalingResult,
  options: Omit<ScalingOptions, 'signal' | 'progress'>,
): string {
  const lines = [
    '# Scaling: time to target against peer count',
    '',
    `Model ${options.model}, IID shards, seed ${options.seed}, target ${(options.target * 100).toFixed(1)}%,`,
    `at most ${options.rounds} rounds, peer options \`${options.peerArgs.join(' ') || '(none)'}\`.`,
    'Each peer count runs the launcher in parallel mode, then in serial mode (one peer computes',
    'at a time), on this machine.',
    '',
    '| peers | parallel | serial | speedup | rounds (parallel) |',
    '| ----: | -------: | -----: | ------: | ----------------: |',
  ]
  for (const { peers, speedup } of result.speedups) {
    const parallel = result.rows.find((row) => row.peers === peers && row.mode === 'parallel')
    const serial = result.rows.find((row) => row.peers === peers && row.mode === 'serial')
    lines.push(
      `| ${peers} | ${seconds(parallel?.timeToTargetSeconds ?? null)} | ${seconds(serial?.timeToTargetSeconds ?? null)} | ${speedup === null ? '-' : `${speedup.toFixed(2)}x`} | ${parallel?.roundsToTarget ?? '-'} |`,
    )
  }
  lines.push('', '![time to target against peer count](scaling.png)', '')
  return lines.join('\n')
}
