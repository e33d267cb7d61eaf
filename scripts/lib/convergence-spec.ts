// Builds the vega-lite spec of the convergence chart: accuracy against time, accuracy against
// rounds and time to target, one color per mode.
import type { TopLevelSpec } from 'vega-lite'
import type { Mode, ModeSummary, RoundPoint, RunSummary } from './run-folder.ts'

/** The rounds and summary of one mode that has metrics. */
export interface ModeResult {
  mode: Mode
  points: RoundPoint[]
  summary: ModeSummary
}

export interface ConvergenceInput {
  /** Name shown in the subtitle, normally the run folder's base name. */
  runName: string
  /** Target test accuracy in (0, 1]. */
  target: number
  results: ModeResult[]
  /** Fields of summary.json used in the title, when the file exists. */
  run?: RunSummary
}

// Fixed colors keep a mode's color the same whichever modes a run contains.
const MODE_COLORS: Record<Mode, string> = {
  parallel: '#1f77b4',
  serial: '#ff7f0e',
  centralised: '#2ca02c',
}

// vega-lite exports only TopLevelSpec from its stable entry point, so the part types are taken
// from it.
type ConcatSpec = Extract<TopLevelSpec, { hconcat: unknown }>
type PanelSpec = ConcatSpec['hconcat'][number]
type LayerMember = Extract<PanelSpec, { layer: unknown }>['layer'][number]
type UnitSpec = Extract<LayerMember, { mark: unknown }>
type Encoding = NonNullable<UnitSpec['encoding']>
type ColorDef = NonNullable<Encoding['color']>
type XDef = NonNullable<Encoding['x']>

// The generic fallback serves SVG viewers on machines without DejaVu fonts.
const FONT = 'DejaVu Sans, sans-serif'
const ACCURACY_FORMAT = '.1~%'
const PANEL_HEIGHT = 360
const LABEL_LINE_HEIGHT = 16
// Points per mode above which the accuracy panels draw smaller points.
const DENSE_POINTS = 40

/**
 * Returns the lower end of the accuracy axis: the minimum of the data and the target, less one
 * point, rounded down to a multiple of 5 %. Starting the axis there instead of at 0 keeps the
 * region near the target readable.
 */
export function accuracyAxisMin(accuracies: number[], target: number): number {
  const lowest = Math.min(target, ...accuracies) - 0.01
  // The epsilon undoes rounding errors such as (0.21 - 0.01) * 20 = 3.9999999999999996.
  return Math.max(0, Math.floor(lowest * 20 + 1e-9) / 20)
}

function formatPercent(accuracy: number): string {
  return `${(accuracy * 100).toFixed(1)}%`
}

function buildTitle(input: ConvergenceInput): { text: string; subtitle: string[] } {
  const run = input.run ?? {}
  const parts: string[] = []
  if (run.peers !== undefined) parts.push(`${run.peers} peers`)
  if (run.model !== undefined) parts.push(`${run.model} model`)
  if (run.partition !== undefined) parts.push(`${run.partition} partition`)
  if (run.backend !== undefined) parts.push(`${run.backend} backend`)
  const seed = run.seed === undefined ? '' : `, seed ${run.seed}`
  return {
    text: parts.length > 0 ? `MNIST convergence: ${parts.join(', ')}` : 'MNIST convergence',
    subtitle: [
      `Run ${input.runName}${seed}. Target test accuracy ${formatPercent(input.target)} (dashed line).`,
      "Each point is a round: the lowest test accuracy over the round's peers, at the latest peer's time.",
    ],
  }
}

function colorEncoding(modes: Mode[]): ColorDef {
  return {
    field: 'mode',
    type: 'nominal',
    title: 'Mode',
    scale: { domain: modes, range: modes.map((mode) => MODE_COLORS[mode]) },
    legend: { orient: 'bottom', direction: 'horizontal' },
  }
}

function targetRule(target: number): UnitSpec {
  // The subtitle names the rule, because a label at any fixed spot in the plot can cover a curve.
  return {
    data: { values: [{ target }] },
    mark: { type: 'rule', strokeDash: [6, 4], color: '#555', strokeWidth: 1.5 },
    encoding: { y: { field: 'target', type: 'quantitative' } },
  }
}

function accuracyPanel(
  input: ConvergenceInput,
  modes: Mode[],
  axisMin: number,
  x: { field: string; title: string; width: number; integer?: boolean },
  title: string,
): PanelSpec {
  const values = input.results.flatMap(({ mode, points }) =>
    points.map((point) => ({ mode, ...point, roundsTrained: point.round + 1 })),
  )
  // Smaller points keep long runs readable, where the points would merge into a thick line.
  const longestSeries = Math.max(...input.results.map(({ points }) => points.length))
  const pointSize = longestSeries > DENSE_POINTS ? 12 : 40
  return {
    title,
    width: x.width,
    height: PANEL_HEIGHT,
    layer: [
      {
        data: { values },
        mark: { type: 'line', point: { size: pointSize }, strokeWidth: 2 },
        encoding: {
          x: {
            field: x.field,
            type: 'quantitative',
            title: x.title,
            // Both axes start at 0, so a mode's first point shows how long its first round took.
            scale: { zero: true },
            ...(x.integer === true ? { axis: { tickMinStep: 1, format: 'd' } } : {}),
          },
          y: {
            field: 'accuracy',
            type: 'quantitative',
            title: 'Test accuracy (lowest over peers)',
            scale: { domain: [axisMin, 1], nice: false, zero: false },
            axis: { format: ACCURACY_FORMAT },
          },
          color: colorEncoding(modes),
        },
      },
      targetRule(input.target),
    ],
  }
}

function timeToTargetPanel(input: ConvergenceInput, modes: Mode[]): PanelSpec {
  const reachedSeconds = input.results.flatMap(({ summary }) =>
    summary.timeToTargetSeconds === null ? [] : [summary.timeToTargetSeconds],
  )
  const latestSeconds = Math.max(...input.results.map(({ points }) => points.at(-1)?.seconds ?? 0))
  // Room above the tallest bar for its label. With no bar the axis spans the longest mode.
  const axisMax = reachedSeconds.length > 0 ? Math.max(...reachedSeconds) * 1.25 : latestSeconds
  const values = input.results.map(({ mode, summary }) => {
    const reached = summary.timeToTargetSeconds !== null && summary.roundsToTarget !== null
    return {
      mode,
      reached,
      seconds: summary.timeToTargetSeconds,
      labelSeconds: summary.timeToTargetSeconds ?? 0,
      // An array is drawn as one line per element.
      label: reached
        ? [`${summary.timeToTargetSeconds?.toFixed(1)} s`, `${summary.roundsToTarget} rounds`]
        : ['not reached', `final ${formatPercent(summary.finalAccuracy)}`],
    }
  })
  const x: XDef = {
    field: 'mode',
    type: 'nominal',
    title: 'Mode',
    sort: modes,
    axis: { labelAngle: 0 },
  }
  return {
    title: `C. Time to ${formatPercent(input.target)} test accuracy`,
    width: 300,
    height: PANEL_HEIGHT,
    data: { values },
    layer: [
      {
        transform: [{ filter: 'datum.reached' }],
        mark: { type: 'bar', width: { band: 0.6 } },
        encoding: {
          x,
          y: {
            field: 'seconds',
            type: 'quantitative',
            title: 'Wall-clock seconds to target',
            scale: { domain: [0, axisMax > 0 ? axisMax : 1], nice: false },
          },
          color: colorEncoding(modes),
        },
      },
      {
        // Vega puts the first line of a multi-line text at y and the next ones below it, so dy
        // lifts the second line clear of the bar top and the axis.
        mark: {
          type: 'text',
          baseline: 'bottom',
          dy: -(LABEL_LINE_HEIGHT + 4),
          fontSize: 13,
          lineHeight: LABEL_LINE_HEIGHT,
        },
        encoding: {
          x,
          y: { field: 'labelSeconds', type: 'quantitative' },
          text: { field: 'label' },
          color: {
            condition: { test: 'datum.reached', value: '#222' },
            value: '#b00020',
          },
        },
      },
    ],
  }
}

/** Builds the three-panel convergence chart for the modes in input.results. */
export function buildConvergenceSpec(input: ConvergenceInput): TopLevelSpec {
  const modes = input.results.map(({ mode }) => mode)
  const accuracies = input.results.flatMap(({ points }) => points.map((point) => point.accuracy))
  const axisMin = accuracyAxisMin(accuracies, input.target)
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { ...buildTitle(input), anchor: 'start', fontSize: 20, subtitleFontSize: 14 },
    padding: 16,
    hconcat: [
      accuracyPanel(
        input,
        modes,
        axisMin,
        { field: 'seconds', title: 'Wall-clock seconds since the mode started', width: 500 },
        'A. Test accuracy over time',
      ),
      accuracyPanel(
        input,
        modes,
        axisMin,
        { field: 'roundsTrained', title: 'Rounds trained', width: 420, integer: true },
        'B. Test accuracy over rounds',
      ),
      timeToTargetPanel(input, modes),
    ],
    spacing: 40,
    config: {
      font: FONT,
      background: 'white',
      title: { fontSize: 16 },
      axis: { titleFontSize: 14, labelFontSize: 12, titleFontWeight: 'normal' },
      legend: { titleFontSize: 14, labelFontSize: 13, symbolSize: 120 },
    },
  }
}
