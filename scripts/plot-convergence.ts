// Command line entry point: npm run plot -- RUN_DIR writes RUN_DIR/convergence.svg and .png.
import { parseArgs } from 'node:util'
import { renderConvergence } from './lib/plot.ts'
import { RunFolderError } from './lib/run-folder.ts'

/** Exit code for invalid arguments or an unusable run folder. */
export const EXIT_USAGE = 2

export const USAGE = `Usage: npm run plot -- RUN_DIR [--target ACCURACY]
       node scripts/plot-convergence.ts RUN_DIR [--target ACCURACY]

Writes RUN_DIR/convergence.svg and RUN_DIR/convergence.png from the peer-N.jsonl metrics under
RUN_DIR/parallel, RUN_DIR/serial and RUN_DIR/centralised. Modes without a folder are left out.

Arguments:
  RUN_DIR              run folder written by the launcher, e.g. runs/2026-12-04T10-00-00

Options:
  --target ACCURACY    target test accuracy as a fraction in (0, 1], e.g. 0.97;
                       overrides the target in RUN_DIR/summary.json
  -h, --help           print this help and exit
`

function fail(message: string): number {
  process.stderr.write(`error: ${message}\nRun with --help for usage.\n`)
  return EXIT_USAGE
}

/** Runs the command with the given arguments (without node and the script) and returns its exit code. */
export async function main(args: string[]): Promise<number> {
  let parsed: ReturnType<typeof parseOptions>
  try {
    parsed = parseOptions(args)
  } catch (error) {
    // parseArgs throws a TypeError with a code such as ERR_PARSE_ARGS_UNKNOWN_OPTION.
    if ((error as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS_')) {
      return fail((error as Error).message)
    }
    throw error
  }
  if (parsed.values.help) {
    process.stdout.write(USAGE)
    return 0
  }

  const [runDir, ...extra] = parsed.positionals
  if (runDir === undefined) {
    return fail('missing RUN_DIR; pass a run folder such as runs/<timestamp>')
  }
  if (extra.length > 0) {
    return fail(
      `expected one RUN_DIR, got ${parsed.positionals.length}: ${parsed.positionals.join(' ')}`,
    )
  }

  let target: number | undefined
  if (parsed.values.target !== undefined) {
    target = Number(parsed.values.target)
    if (parsed.values.target.trim() === '' || !(target > 0 && target <= 1)) {
      return fail(
        `invalid --target ${JSON.stringify(parsed.values.target)}; pass a fraction in (0, 1], e.g. 0.97`,
      )
    }
  }

  try {
    const { svgPath, pngPath } = await renderConvergence(
      runDir,
      target === undefined ? {} : { target },
    )
    process.stdout.write(`${svgPath}\n${pngPath}\n`)
    return 0
  } catch (error) {
    if (error instanceof RunFolderError) return fail(error.message)
    throw error
  }
}

function parseOptions(args: string[]) {
  return parseArgs({
    args,
    options: {
      target: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
    strict: true,
  })
}

if (import.meta.main) {
  process.exitCode = await main(process.argv.slice(2))
}
