import type { RoundMetrics } from '../../node/metrics.ts'

/**
 * Shows the swarm's progress. On a terminal it redraws one line per peer (round, accuracy);
 * otherwise, and whenever CI is set, it prints one line per round once every peer reported it.
 */
export class Progress {
  private readonly mode: string
  private readonly peers: number
  private readonly interactive: boolean
  private readonly write: (text: string) => void
  private readonly latest = new Map<number, RoundMetrics>()
  private readonly reported = new Map<number, RoundMetrics[]>()
  private drawnLines = 0

  constructor(
    mode: string,
    peers: number,
    options: { interactive?: boolean; write?: (text: string) => void } = {},
  ) {
    this.mode = mode
    this.peers = peers
    this.interactive =
      options.interactive ?? (process.stdout.isTTY === true && process.env.CI === undefined)
    this.write = options.write ?? ((text) => process.stdout.write(text))
  }

  update(metrics: RoundMetrics): void {
    this.latest.set(metrics.peerIndex, metrics)
    if (this.interactive) {
      this.redraw()
      return
    }
    const round = this.reported.get(metrics.round) ?? []
    round.push(metrics)
    this.reported.set(metrics.round, round)
    if (round.length === this.peers) {
      const accuracy = Math.min(...round.map((m) => m.accuracy))
      const seconds = Math.max(...round.map((m) => m.elapsedSeconds))
      const hashes = new Set(round.map((m) => m.modelHash)).size
      this.write(
        `${this.mode} round ${metrics.round}: lowest accuracy ${(accuracy * 100).toFixed(2)}% at ${seconds.toFixed(1)} s, ${hashes} distinct model${hashes === 1 ? '' : 's'}\n`,
      )
      this.reported.delete(metrics.round)
    }
  }

  private redraw(): void {
    const lines: string[] = []
    for (let index = 0; index < this.peers; index++) {
      const metrics = this.latest.get(index)
      const state =
        metrics === undefined
          ? 'starting'
          : `round ${metrics.round}  accuracy ${(metrics.accuracy * 100).toFixed(2)}%  ${metrics.elapsedSeconds.toFixed(1)} s`
      lines.push(`${this.mode} peer ${index}: ${state}`)
    }
    const up = this.drawnLines > 0 ? `\x1b[${this.drawnLines}F` : ''
    this.write(`${up}${lines.map((line) => `\x1b[2K${line}`).join('\n')}\n`)
    this.drawnLines = lines.length
  }
}
