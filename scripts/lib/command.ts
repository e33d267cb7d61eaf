// The process frame of the commands that start peers (the launcher and the experiments): exit
// codes, signals, and no child left behind.
import { killAllChildren } from './children.ts'
import { PeerProcessError } from './launcher.ts'

/** Exit code of a command line that the command rejects. */
export const EXIT_USAGE = 2

/** An error for a command line that the command rejects. Its message names the value and the fix. */
export class UsageError extends Error {
  static override name = 'UsageError'

  constructor(message: string) {
    super(message)
    this.name = 'UsageError'
  }
}

/**
 * Returns a signal that SIGINT or SIGTERM aborts. Either one also writes "SIGNAL: stopping the
 * `job`" and sets the exit code to 130 or 143.
 */
export function stopOnSignals(job: string): AbortSignal {
  const shutdown = new AbortController()
  const onSignal = (signal: NodeJS.Signals) => {
    process.stderr.write(`${signal}: stopping the ${job}\n`)
    shutdown.abort(new Error(`stopped by ${signal}`))
    process.exitCode = signal === 'SIGINT' ? 130 : 143
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  return shutdown.signal
}

/**
 * Runs `main` on the process's arguments and sets the exit code: its result, 2 for a
 * UsageError or for a peer that rejected its options, 1 for another error.
 */
export function runCommand(main: (argv: string[]) => Promise<number>): void {
  // A crash must not leave peers behind. The kill is synchronous, as 'exit' handlers must be.
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
        // A peer that exits 2 rejected an option passed to it after the second --.
        process.exitCode =
          error instanceof PeerProcessError && error.exitCode === EXIT_USAGE ? EXIT_USAGE : 1
      }
    },
  )
}
