// Reads the per-round metrics that the launcher writes under runs/<timestamp>/<mode>/peer-N.jsonl
// and reduces them to one series per mode.
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

export const MODES = ['parallel', 'serial', 'centralised'] as const
export type Mode = (typeof MODES)[number]

/** One line of a peer's metrics file: the state of one peer after one round. */
export interface PeerRound {
  mode: string
  peerIndex: number
  peerId: string
  /** Round number, counted from 0 (the first trained-and-averaged model). */
  round: number
  /** Seconds since the start of the mode, on a clock shared by all peers of that mode. */
  elapsedSeconds: number
  /** Test accuracy in [0, 1] after the round's averaging. */
  accuracy: number
  loss: number
  modelHash: string
  backend: string
  contributors: number
  trainMs: number
  waitMs: number
  aggregateMs: number
  evaluateMs: number
  bytesSent: number
  bytesReceived: number
  lateMessages: number
  rejectedMessages: number
  /** ISO 8601 wall-clock time at which the line was written. */
  time: string
}

/** Accuracy of the swarm after one round, as seen from its slowest peer. */
export interface RoundPoint {
  round: number
  /** Latest elapsedSeconds over the peers that reported the round. */
  seconds: number
  /** Lowest accuracy over the peers that reported the round. */
  accuracy: number
  /** Number of distinct peers that reported the round. */
  peers: number
}

export interface ModeSummary {
  reachedTarget: boolean
  timeToTargetSeconds: number | null
  /** Rounds trained until the target was reached, so round index + 1. */
  roundsToTarget: number | null
  /** Number of rounds recorded (max round + 1). */
  rounds: number
  /** Lowest accuracy over the peers that reported the last round. */
  finalAccuracy: number
  /** Number of distinct peers that reported any round. */
  peers: number
}

/** A metrics line that was not read, with its 1-based line number. */
export interface SkippedLine {
  file: string
  line: number
  reason: string
}

const PEER_FILE = /^peer-(\d+)\.jsonl$/

// Only the fields that the series and summaries use are checked, so that a launcher that adds or
// drops other fields does not break plotting.
const REQUIRED_NUMBERS = ['peerIndex', 'round', 'elapsedSeconds', 'accuracy'] as const

function warnSkipped(skipped: SkippedLine): void {
  process.stderr.write(`warning: skipped ${skipped.file} line ${skipped.line}: ${skipped.reason}\n`)
}

/** Lists the peer-N.jsonl files of a mode folder in peer order, or [] when the folder is absent. */
export function listPeerFiles(runDir: string, mode: string): string[] {
  const modeDir = join(runDir, mode)
  let names: string[]
  try {
    names = readdirSync(modeDir)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw error
  }
  const indexed: { index: number; name: string }[] = []
  for (const name of names) {
    const match = PEER_FILE.exec(name)
    if (match?.[1] !== undefined) indexed.push({ index: Number(match[1]), name })
  }
  indexed.sort((a, b) => a.index - b.index)
  return indexed.map(({ name }) => join(modeDir, name))
}

function parseLine(text: string): PeerRound | string {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (error) {
    return `invalid JSON (${(error as Error).message})`
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return 'expected a JSON object'
  }
  const record = value as Record<string, unknown>
  for (const field of REQUIRED_NUMBERS) {
    const fieldValue = record[field]
    if (typeof fieldValue !== 'number' || !Number.isFinite(fieldValue)) {
      return `field "${field}" is missing or not a finite number`
    }
  }
  return value as PeerRound
}

/**
 * Parses one peer's metrics file. Blank lines are ignored, and every other line that is not a
 * JSON object with numeric peerIndex, round, elapsedSeconds and accuracy is passed to onSkip.
 */
export function readPeerFile(
  file: string,
  onSkip: (skipped: SkippedLine) => void = warnSkipped,
): PeerRound[] {
  const rows: PeerRound[] = []
  const lines = readFileSync(file, 'utf8').split('\n')
  for (const [index, line] of lines.entries()) {
    if (line.trim() === '') continue
    const parsed = parseLine(line)
    if (typeof parsed === 'string') {
      onSkip({ file, line: index + 1, reason: parsed })
    } else {
      rows.push(parsed)
    }
  }
  return rows
}

/**
 * Reads all lines of all peer files of one mode, or returns [] when the mode folder is absent.
 * Lines that cannot be read are passed to onSkip, which by default prints a warning to stderr.
 */
export function readModeMetrics(
  runDir: string,
  mode: string,
  onSkip: (skipped: SkippedLine) => void = warnSkipped,
): PeerRound[] {
  return listPeerFiles(runDir, mode).flatMap((file) => readPeerFile(file, onSkip))
}

/**
 * Reduces the rows of one mode to one point per round, in round order. A round's accuracy is the
 * lowest and its time the latest over the peers that reported it, because the swarm is at an
 * accuracy only once its slowest peer is.
 */
export function roundSeries(rows: PeerRound[]): RoundPoint[] {
  const byRound = new Map<number, { seconds: number; accuracy: number; peers: Set<number> }>()
  for (const row of rows) {
    const point = byRound.get(row.round)
    if (point === undefined) {
      byRound.set(row.round, {
        seconds: row.elapsedSeconds,
        accuracy: row.accuracy,
        peers: new Set([row.peerIndex]),
      })
    } else {
      point.seconds = Math.max(point.seconds, row.elapsedSeconds)
      point.accuracy = Math.min(point.accuracy, row.accuracy)
      point.peers.add(row.peerIndex)
    }
  }
  return [...byRound.entries()]
    .sort(([a], [b]) => a - b)
    .map(([round, point]) => ({
      round,
      seconds: point.seconds,
      accuracy: point.accuracy,
      peers: point.peers.size,
    }))
}

/**
 * Summarises one mode against a target test accuracy. The target counts as reached at the first
 * round whose lowest accuracy is at least the target. Throws a RangeError when rows is empty,
 * because a mode with no rounds has no final accuracy.
 */
export function summarizeMode(rows: PeerRound[], target: number): ModeSummary {
  const series = roundSeries(rows)
  const last = series.at(-1)
  if (last === undefined) {
    throw new RangeError('cannot summarise a mode with no recorded rounds')
  }
  // NOTE: a round counts as soon as the peers that reported it are at the target, so a peer that
  // crashed before that round does not hold the swarm back.
  const reached = series.find((point) => point.accuracy >= target)
  return {
    reachedTarget: reached !== undefined,
    timeToTargetSeconds: reached?.seconds ?? null,
    roundsToTarget: reached === undefined ? null : reached.round + 1,
    rounds: last.round + 1,
    finalAccuracy: last.accuracy,
    peers: new Set(rows.map((row) => row.peerIndex)).size,
  }
}

/** Fields of summary.json that plotting reads. Only target is required, and only when plotting. */
export interface RunSummary {
  target?: number
  peers?: number
  model?: string
  backend?: string
  partition?: string
  seed?: number
}

/** A problem with the run folder that the user can fix, such as a wrong path or a missing file. */
export class RunFolderError extends Error {
  override name = 'RunFolderError'
}

/**
 * Reads the fields of runDir/summary.json that describe the run, or returns undefined when the
 * file does not exist. Fields of the wrong type are left out. Throws RunFolderError when the file
 * is not a JSON object.
 */
export function readRunSummary(runDir: string): RunSummary | undefined {
  const file = join(runDir, 'summary.json')
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (error) {
    throw new RunFolderError(
      `invalid JSON in ${file} (${(error as Error).message}); repair or delete the file`,
    )
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new RunFolderError(`expected a JSON object in ${file}; repair or delete the file`)
  }
  const record = value as Record<string, unknown>
  const summary: RunSummary = {}
  for (const field of ['target', 'peers', 'seed'] as const) {
    const fieldValue = record[field]
    if (typeof fieldValue === 'number' && Number.isFinite(fieldValue)) summary[field] = fieldValue
  }
  for (const field of ['model', 'backend', 'partition'] as const) {
    const fieldValue = record[field]
    if (typeof fieldValue === 'string') summary[field] = fieldValue
  }
  return summary
}
