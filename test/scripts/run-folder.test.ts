import { appendFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import {
  listPeerFiles,
  MODES,
  type PeerRound,
  RunFolderError,
  readModeMetrics,
  readRunSummary,
  roundSeries,
  type SkippedLine,
  summarizeMode,
} from '../../scripts/lib/run-folder.ts'

function peerRound(
  peerIndex: number,
  round: number,
  elapsedSeconds: number,
  accuracy: number,
): PeerRound {
  return {
    mode: 'parallel',
    peerIndex,
    peerId: `12D3KooWPeer${peerIndex}`,
    round,
    elapsedSeconds,
    accuracy,
    loss: 1 - accuracy,
    modelHash: `hash-${round}`,
    backend: 'wasm',
    contributors: 2,
    trainMs: 1000,
    waitMs: 10,
    aggregateMs: 1,
    evaluateMs: 100,
    bytesSent: 1000,
    bytesReceived: 1000,
    lateMessages: 0,
    rejectedMessages: 0,
    time: '2026-12-04T10:00:00.000Z',
  }
}

// Round 2 checks the minimum: peer 0 is at 0.97 but peer 1 is at 0.965, so the swarm reaches 0.97 only
// in round 3, at peer 1's time of 8.1 s.
const PEER_0 = [
  peerRound(0, 0, 2, 0.9),
  peerRound(0, 1, 4, 0.95),
  peerRound(0, 2, 6, 0.97),
  peerRound(0, 3, 8, 0.98),
]
const PEER_1 = [
  peerRound(1, 0, 2.5, 0.91),
  peerRound(1, 1, 3.9, 0.96),
  peerRound(1, 2, 6.4, 0.965),
  peerRound(1, 3, 8.1, 0.975),
]

function writePeerFile(runDir: string, mode: string, peerIndex: number, rows: PeerRound[]) {
  mkdirSync(join(runDir, mode), { recursive: true })
  const text = rows.map((row) => `${JSON.stringify(row)}\n`).join('')
  writeFileSync(join(runDir, mode, `peer-${peerIndex}.jsonl`), text)
  return join(runDir, mode, `peer-${peerIndex}.jsonl`)
}

let runDir: string

beforeEach(() => {
  runDir = mkdtempSync(join(tmpdir(), 'dlearn-run-folder-'))
})

afterEach(() => {
  rmSync(runDir, { recursive: true, force: true })
  vi.restoreAllMocks()
})

describe('MODES', () => {
  it('lists the three launcher modes', () => {
    expect(MODES).toEqual(['parallel', 'serial', 'centralised'])
  })
})

describe('readModeMetrics', () => {
  it('reads every line of every peer', () => {
    writePeerFile(runDir, 'parallel', 0, PEER_0)
    writePeerFile(runDir, 'parallel', 1, PEER_1)

    const rows = readModeMetrics(runDir, 'parallel')

    expect(rows).toEqual([...PEER_0, ...PEER_1])
  })

  it('returns an empty array for an absent mode', () => {
    writePeerFile(runDir, 'parallel', 0, PEER_0)

    expect(readModeMetrics(runDir, 'serial')).toEqual([])
  })

  it('skips and reports a half-written last line', () => {
    const file = writePeerFile(runDir, 'parallel', 0, PEER_0)
    appendFileSync(file, '{"mode":"parallel","peerIndex":0,"rou')
    const skipped: SkippedLine[] = []

    const rows = readModeMetrics(runDir, 'parallel', (line) => skipped.push(line))

    expect(rows).toEqual(PEER_0)
    expect(skipped).toHaveLength(1)
    expect(skipped[0]?.file).toBe(file)
    expect(skipped[0]?.line).toBe(5)
    expect(skipped[0]?.reason).toMatch(/invalid JSON/)
  })

  it('warns on stderr by default', () => {
    const file = writePeerFile(runDir, 'parallel', 0, PEER_0)
    appendFileSync(file, '{"mode":')
    const write = vi.spyOn(process.stderr, 'write').mockImplementation(() => true)

    const rows = readModeMetrics(runDir, 'parallel')

    expect(rows).toHaveLength(4)
    expect(write).toHaveBeenCalledTimes(1)
    const message = String(write.mock.calls[0]?.[0])
    expect(message).toContain(file)
    expect(message).toContain('line 5')
  })

  it('skips objects without numeric fields', () => {
    const file = writePeerFile(runDir, 'parallel', 0, PEER_0.slice(0, 1))
    appendFileSync(file, '{"peerIndex":0,"round":1,"elapsedSeconds":4}\n')
    appendFileSync(file, '{"peerIndex":0,"round":"2","elapsedSeconds":6,"accuracy":0.9}\n')
    appendFileSync(file, '[1, 2]\n')
    const skipped: SkippedLine[] = []

    const rows = readModeMetrics(runDir, 'parallel', (line) => skipped.push(line))

    expect(rows).toEqual(PEER_0.slice(0, 1))
    expect(skipped.map(({ line }) => line)).toEqual([2, 3, 4])
    expect(skipped[0]?.reason).toContain('"accuracy"')
    expect(skipped[1]?.reason).toContain('"round"')
    expect(skipped[2]?.reason).toContain('JSON object')
  })

  it('ignores blank lines', () => {
    const file = writePeerFile(runDir, 'parallel', 0, PEER_0.slice(0, 2))
    appendFileSync(file, '\n  \n')
    const skipped: SkippedLine[] = []

    const rows = readModeMetrics(runDir, 'parallel', (line) => skipped.push(line))

    expect(rows).toHaveLength(2)
    expect(skipped).toEqual([])
  })
})

describe('listPeerFiles', () => {
  it('sorts peers by number and ignores other files', () => {
    for (const index of [10, 2, 0]) writePeerFile(runDir, 'serial', index, PEER_0)
    writeFileSync(join(runDir, 'serial', 'peer-x.jsonl'), '')
    writeFileSync(join(runDir, 'serial', 'notes.txt'), '')

    const files = listPeerFiles(runDir, 'serial')

    expect(files).toEqual([0, 2, 10].map((index) => join(runDir, 'serial', `peer-${index}.jsonl`)))
  })
})

describe('roundSeries', () => {
  it('takes min accuracy and max seconds', () => {
    const series = roundSeries([...PEER_0, ...PEER_1])

    expect(series).toEqual([
      { round: 0, seconds: 2.5, accuracy: 0.9, peers: 2 },
      { round: 1, seconds: 4, accuracy: 0.95, peers: 2 },
      { round: 2, seconds: 6.4, accuracy: 0.965, peers: 2 },
      { round: 3, seconds: 8.1, accuracy: 0.975, peers: 2 },
    ])
  })

  it('orders rounds whatever the input order', () => {
    const series = roundSeries([...PEER_1].reverse())

    expect(series.map(({ round }) => round)).toEqual([0, 1, 2, 3])
  })

  it('counts only the peers that reported a round', () => {
    const series = roundSeries([...PEER_0, ...PEER_1.slice(0, 3)])

    expect(series.at(-1)).toEqual({ round: 3, seconds: 8, accuracy: 0.98, peers: 1 })
  })

  it('counts a repeated peer once', () => {
    const series = roundSeries([peerRound(0, 0, 1, 0.9), peerRound(0, 0, 2, 0.8)])

    expect(series).toEqual([{ round: 0, seconds: 2, accuracy: 0.8, peers: 1 }])
  })

  it('returns no points for no rows', () => {
    expect(roundSeries([])).toEqual([])
  })
})

describe('summarizeMode', () => {
  const rows = [...PEER_0, ...PEER_1]

  it('finds the first round at the target', () => {
    expect(summarizeMode(rows, 0.97)).toEqual({
      reachedTarget: true,
      timeToTargetSeconds: 8.1,
      roundsToTarget: 4,
      rounds: 4,
      finalAccuracy: 0.975,
      peers: 2,
    })
  })

  it('counts accuracy equal to the target', () => {
    const summary = summarizeMode(rows, 0.95)

    expect(summary.timeToTargetSeconds).toBe(4)
    expect(summary.roundsToTarget).toBe(2)
  })

  it('gives null when the target is not reached', () => {
    expect(summarizeMode(rows, 0.99)).toEqual({
      reachedTarget: false,
      timeToTargetSeconds: null,
      roundsToTarget: null,
      rounds: 4,
      finalAccuracy: 0.975,
      peers: 2,
    })
  })

  it('counts rounds from the max round', () => {
    const summary = summarizeMode([peerRound(0, 5, 10, 0.5)], 0.97)

    expect(summary.rounds).toBe(6)
    expect(summary.peers).toBe(1)
  })

  it('rejects empty rows', () => {
    expect(() => summarizeMode([], 0.97)).toThrow(RangeError)
  })
})

describe('readRunSummary', () => {
  it('returns undefined when summary.json is absent', () => {
    expect(readRunSummary(runDir)).toBeUndefined()
  })

  it('keeps only fields of the expected type', () => {
    const summary = {
      target: 0.97,
      peers: '4',
      model: 'mlp',
      backend: 'wasm',
      partition: 7,
      seed: 1,
      speedup: 1.8,
    }
    writeFileSync(join(runDir, 'summary.json'), JSON.stringify(summary))

    expect(readRunSummary(runDir)).toEqual({ target: 0.97, model: 'mlp', backend: 'wasm', seed: 1 })
  })

  it('rejects invalid JSON', () => {
    writeFileSync(join(runDir, 'summary.json'), '{"target": 0.9')

    expect(() => readRunSummary(runDir)).toThrow(RunFolderError)
    expect(() => readRunSummary(runDir)).toThrow(/summary\.json/)
  })

  it('rejects a JSON array', () => {
    writeFileSync(join(runDir, 'summary.json'), '[0.97]')

    expect(() => readRunSummary(runDir)).toThrow(RunFolderError)
  })
})
