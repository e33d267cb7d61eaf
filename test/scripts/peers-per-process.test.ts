import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import {
  FULL_MESH_PEERS,
  launchDials,
  PeerProcessError,
  runSwarm,
} from '../../scripts/lib/launcher.ts'
import { readModeMetrics } from '../../scripts/lib/run-folder.ts'

const LAUNCHER = resolve(import.meta.dirname, '../../scripts/spawn-local-swarm.ts')
/** Tiny shards and the wasm backend, so that 12 peers in 3 processes fit on 2 cores. */
const TINY = [
  '--train-samples',
  '320',
  '--test-samples',
  '100',
  '--no-verify-data',
  '--backend',
  'wasm',
]

const folders: string[] = []

/** Makes a run folder that afterEach removes. */
function makeFolder(prefix: string): string {
  const folder = mkdtempSync(join(tmpdir(), prefix))
  folders.push(folder)
  return folder
}

afterEach(() => {
  for (const folder of folders.splice(0)) rmSync(folder, { recursive: true, force: true })
})

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    expect((error as NodeJS.ErrnoException).code).toBe('ESRCH')
    return false
  }
}

describe('peers per process', () => {
  // Two modes of 12 peers: about 75 s on 2 idle cores, over 120 s when the cores are shared.
  it('runs 12 peers in 3 processes in both modes', { timeout: 300_000 }, async () => {
    const out = makeFolder('dlearn-hosted-')
    const pids = new Map<string, number[]>()
    // The adaptive round deadline can fall to its 10 s floor, which a delta passes when other
    // programs load the cores, and a round then closes with 11 of 12 deltas.
    const peerArgs = [...TINY, '--deadline-floor', '120']
    const summary = await runSwarm({
      peers: 12,
      peersPerProcess: 4,
      modes: ['parallel', 'serial'],
      centralised: false,
      rounds: 2,
      target: 0.999,
      partition: 'iid',
      model: 'mlp',
      seed: 4,
      out,
      peerArgs,
      progress: false,
      onEvent: (event) => {
        if (event.type === 'peers-started') pids.set(event.mode, event.pids)
      },
    })
    expect(summary.peersPerProcess).toBe(4)

    const hashesByMode = new Map<string, string[]>()
    for (const mode of ['parallel', 'serial']) {
      const modePids = pids.get(mode) ?? []
      expect(modePids, `${mode} pids`).toHaveLength(12)
      expect(new Set(modePids).size, `${mode} processes`).toBe(3)
      expect(modePids).not.toContain(process.pid)
      // Peers 0-3 share the first process, 4-7 the second and 8-11 the third.
      for (const [index, pid] of modePids.entries()) {
        const firstOfProcess = index - (index % 4)
        expect(pid, `${mode} peer ${index} process`).toBe(modePids[firstOfProcess])
      }
      for (const pid of modePids) expect(isAlive(pid), `${mode} process ${pid}`).toBe(false)

      for (let index = 0; index < 12; index++) {
        const file = join(out, mode, `peer-${index}.jsonl`)
        expect(existsSync(file), file).toBe(true)
      }
      const rows = readModeMetrics(out, mode)
      const hashes: string[] = []
      for (const round of [0, 1]) {
        const roundRows = rows.filter((row) => row.round === round)
        expect(roundRows, `${mode} round ${round} rows`).toHaveLength(12)
        for (const row of roundRows) {
          expect(row.contributors, `${mode} round ${round} peer ${row.peerIndex}`).toBe(12)
        }
        const distinct = new Set(roundRows.map((row) => row.modelHash))
        expect(distinct.size, `${mode} round ${round} model hashes`).toBe(1)
        hashes.push(...distinct)
      }
      hashesByMode.set(mode, hashes)
    }
    expect(hashesByMode.get('serial')).toEqual(hashesByMode.get('parallel'))
    expect(summary.parallel?.rounds).toBe(2)
    expect(summary.serial?.rounds).toBe(2)
  })

  it('dials a sparse graph above the full-mesh size', () => {
    expect(launchDials(3, FULL_MESH_PEERS)).toEqual([0, 1, 2])
    expect(launchDials(0, 100)).toEqual([])
    expect(launchDials(1, 100)).toEqual([0])
    expect(launchDials(99, 100)).toEqual([98, 97, 95, 91, 83, 67, 35])
    // Every peer dials the one before it, so the launch graph is connected.
    for (let index = 1; index < 100; index++) {
      expect(launchDials(index, 100), `peer ${index}`).toContain(index - 1)
    }
    let total = 0
    for (let index = 0; index < 100; index++) total += launchDials(index, 100).length
    expect(total).toBeLessThan(700)
  })

  it('names the hosted peer that failed', async () => {
    const out = makeFolder('dlearn-hosted-failure-')
    // Peer 0 saves the final model into parallel/model; a file there makes it fail at start.
    mkdirSync(join(out, 'parallel'))
    writeFileSync(join(out, 'parallel', 'model'), 'not a folder\n')
    const run = runSwarm({
      peers: 4,
      peersPerProcess: 2,
      modes: ['parallel'],
      centralised: false,
      rounds: 1,
      target: 0.999,
      partition: 'iid',
      model: 'mlp',
      seed: 1,
      out,
      peerArgs: TINY,
      progress: false,
    })
    const error = await run.then(
      () => undefined,
      (reason: unknown) => reason,
    )
    expect(error).toBeInstanceOf(PeerProcessError)
    expect((error as PeerProcessError).peerIndex).toBe(0)
    expect((error as PeerProcessError).message).toMatch(
      /^parallel peer 0 \(process of peers 0-1, log .*peers-0-1\.log\) failed: Invalid --save-model/,
    )
  })

  it('rejects a bad --peers-per-process with exit code 2', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--peers', '4', '--peers-per-process', '5'], /from 1 to 4 \(the --peers value\), got '5'/],
      [['--peers', '4', '--peers-per-process', '0'], /--peers-per-process.*got '0'/],
      [['--peers-per-process', 'two'], /got 'two'\. Pass at most the peer count/],
    ]
    for (const [args, message] of cases) {
      const child = spawn(process.execPath, [LAUNCHER, ...args], {
        stdio: ['ignore', 'pipe', 'pipe'],
      })
      let stderr = ''
      child.stderr.on('data', (chunk: Buffer) => {
        stderr += chunk.toString()
      })
      const [code] = await once(child, 'exit')
      expect(code, args.join(' ')).toBe(2)
      expect(stderr, args.join(' ')).toMatch(message)
    }
    const library = runSwarm({
      peers: 3,
      peersPerProcess: 4,
      modes: ['parallel'],
      rounds: 1,
      target: 0.9,
      partition: 'iid',
      model: 'mlp',
      seed: 1,
      out: makeFolder('dlearn-hosted-bad-'),
      progress: false,
    })
    await expect(library).rejects.toThrow(
      'Expected peersPerProcess to be an integer from 1 to 3 (the peer count), got 4',
    )
  })
})
