// Renders runs/<timestamp>/convergence.svg and convergence.png from the run's metrics.
import { statSync } from 'node:fs'
import { basename, join, resolve } from 'node:path'
import { Resvg } from '@resvg/resvg-js'
import * as vega from 'vega'
import { compile, type TopLevelSpec } from 'vega-lite'
import { buildConvergenceSpec, type ModeResult } from './convergence-spec.ts'
import {
  MODES,
  type Mode,
  type PeerRound,
  RunFolderError,
  type RunSummary,
  readModeMetrics,
  readRunSummary,
  roundSeries,
  type SkippedLine,
  summarizeMode,
} from './run-folder.ts'
import { writeFileAtomic } from './write-atomic.ts'

/** Width of convergence.png in pixels. The SVG is scaled to it, so text scales with it. */
export const PNG_WIDTH = 1600

export interface RenderOptions {
  /** Target test accuracy in (0, 1]. Overrides the target in summary.json. */
  target?: number
  /** Receives each metrics line that was skipped. Defaults to a warning on stderr. */
  onSkip?: (skipped: SkippedLine) => void
}

function checkRunDir(runDir: string): void {
  let isDirectory: boolean
  try {
    isDirectory = statSync(runDir).isDirectory()
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new RunFolderError(
        `run folder ${runDir} not found; pass a folder under runs/ written by the launcher`,
      )
    }
    throw error
  }
  if (!isDirectory) {
    throw new RunFolderError(
      `${runDir} is not a folder; pass a run folder such as runs/<timestamp>, not a file in it`,
    )
  }
}

function resolveTarget(runDir: string, fromOptions: number | undefined, run?: RunSummary) {
  const target = fromOptions ?? run?.target
  if (target === undefined) {
    const file = join(runDir, 'summary.json')
    const problem = run === undefined ? `${file} not found` : `no numeric "target" in ${file}`
    throw new RunFolderError(
      `${problem}; pass the target accuracy with --target, e.g. --target 0.97`,
    )
  }
  if (!(target > 0 && target <= 1)) {
    throw new RunFolderError(
      `invalid target accuracy ${target}; expected a fraction in (0, 1], e.g. 0.97`,
    )
  }
  return target
}

function readAllModes(runDir: string, onSkip: RenderOptions['onSkip']) {
  const modes: { mode: Mode; rows: PeerRound[] }[] = []
  for (const mode of MODES) {
    const rows = readModeMetrics(runDir, mode, onSkip)
    if (rows.length > 0) modes.push({ mode, rows })
  }
  if (modes.length === 0) {
    throw new RunFolderError(
      `no metrics found in ${runDir}; expected peer-N.jsonl files under ${MODES.join('/, ')}/. ` +
        'Pass the folder of a run that recorded at least one round.',
    )
  }
  return modes
}

/**
 * Reads the metrics of every mode in runDir and writes convergence.svg and convergence.png there,
 * each through a temporary file that is renamed into place. Throws RunFolderError when the folder
 * is missing, contains no metrics, or gives no valid target accuracy.
 */
export async function renderConvergence(
  runDir: string,
  options: RenderOptions = {},
): Promise<{ svgPath: string; pngPath: string }> {
  checkRunDir(runDir)
  const modes = readAllModes(runDir, options.onSkip)
  const run = readRunSummary(runDir)
  const target = resolveTarget(runDir, options.target, run)
  const results: ModeResult[] = modes.map(({ mode, rows }) => ({
    mode,
    points: roundSeries(rows),
    summary: summarizeMode(rows, target),
  }))
  const spec = buildConvergenceSpec({
    runName: basename(resolve(runDir)),
    target,
    results,
    ...(run === undefined ? {} : { run }),
  })

  return renderChart(spec, runDir, 'convergence')
}

/**
 * Renders a Vega-Lite chart to FOLDER/NAME.svg and to FOLDER/NAME.png, PNG_WIDTH pixels wide,
 * and returns both paths.
 */
export async function renderChart(
  spec: TopLevelSpec,
  folder: string,
  name: string,
): Promise<{ svgPath: string; pngPath: string }> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' })
  let svg: string
  try {
    svg = await view.toSVG()
  } finally {
    view.finalize()
  }
  const svgPath = join(folder, `${name}.svg`)
  writeFileAtomic(svgPath, svg)

  // NOTE: resvg 2.6 draws text only in fonts it has loaded. Without DejaVu Sans it substitutes
  // another loaded font, which can be a serif one, and on a machine with no fonts at all the PNG
  // has no text, although the SVG still contains it.
  const png = new Resvg(svg, {
    fitTo: { mode: 'width', value: PNG_WIDTH },
    background: 'white',
    font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' },
  })
    .render()
    .asPng()
  const pngPath = join(folder, `${name}.png`)
  writeFileAtomic(pngPath, png)
  return { svgPath, pngPath }
}
