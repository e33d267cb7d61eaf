// Progress of the wire benchmark on stderr.

export type ProgressStyle = 'redraw' | 'lines' | 'silent'

/**
 * Returns how progress is shown: one redrawn status line on a terminal, one line per step when
 * stderr is not a terminal, and nothing when CI is set (to anything but '', 'false' or '0').
 */
export function progressStyle(
  env: NodeJS.ProcessEnv = process.env,
  isTerminal = process.stderr.isTTY === true,
): ProgressStyle {
  const ci = env.CI
  if (ci !== undefined && ci !== '' && ci !== 'false' && ci !== '0') return 'silent'
  return isTerminal ? 'redraw' : 'lines'
}

/** Shows one status line at a time. `done` clears a redrawn line so the table starts clean. */
export class BenchProgress {
  private readonly style: ProgressStyle
  private readonly write: (text: string) => void
  private drawn = false

  constructor(
    style: ProgressStyle,
    write: (text: string) => void = (t) => process.stderr.write(t),
  ) {
    this.style = style
    this.write = write
  }

  show(status: string): void {
    if (this.style === 'silent') return
    if (this.style === 'lines') {
      this.write(`${status}\n`)
      return
    }
    this.write(`\r\x1b[2K${status}`)
    this.drawn = true
  }

  done(): void {
    if (this.drawn) this.write('\r\x1b[2K')
    this.drawn = false
  }
}
