import { closeSync, fstatSync, mkdirSync, openSync, readSync, writeSync } from 'node:fs'
import { dirname } from 'node:path'

/** One line of a peer's metrics file: one round of one peer. */
export interface RoundMetrics {
  time: string
  elapsedSeconds: number
  peerId: string
  peerIndex: number
  mode: string
  round: number
  /** False in a round the spec's participation left this peer out of: it trained nothing. */
  participated: boolean
  backend: string
  trainMs: number
  turnWaitMs: number
  waitMs: number
  aggregateMs: number
  evaluateMs: number
  /** Mean training loss of the last local epoch; 0 in a round this peer did not train. */
  trainLoss: number
  accuracy: number
  loss: number
  contributors: number
  deadlineHit: boolean
  /** Milliseconds the round would have waited at most for missing deltas. */
  deadlineMs: number
  modelHash: string
  bytesSent: number
  bytesReceived: number
  lateMessages: number
  rejectedMessages: number
  duplicateMessages: number
}

/**
 * Appends one JSON line per round. Each line goes out in a single write(2) on a file opened
 * with O_APPEND, so a crash leaves whole lines only; readers still skip a line that does not
 * parse.
 */
export class MetricsWriter {
  private fd: number | undefined

  constructor(path: string) {
    mkdirSync(dirname(path), { recursive: true })
    // A restarted peer appends to the lines of its earlier run; the file is never truncated.
    this.fd = openSync(path, 'a+')
    // A line cut short, for example by a full disk, gets its newline here, so the next line
    // does not run into it and stays parseable.
    const { size } = fstatSync(this.fd)
    const last = Buffer.alloc(1)
    if (size > 0 && readSync(this.fd, last, 0, 1, size - 1) === 1 && last[0] !== 0x0a) {
      writeSync(this.fd, '\n')
    }
  }

  append(metrics: RoundMetrics): void {
    if (this.fd === undefined) throw new Error('MetricsWriter is closed')
    writeSync(this.fd, `${JSON.stringify(metrics)}\n`)
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd)
    this.fd = undefined
  }
}
