import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { describe, expect, it } from 'vitest'
import { runSwarm } from '../../scripts/lib/launcher.ts'
import { readModeMetrics } from '../../scripts/lib/run-folder.ts'

const LAUNCHER = resolve(import.meta.dirname, '../../scripts/spawn-local-swarm.ts')
const SMALL = ['--train-samples', '2000', '--test-samples', '500']

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    expect((error as NodeJS.ErrnoException).code).toBe('ESRCH')
    return false
  }
}

function childPids(parent: number): number[] {
  const text = readFileSync(`/proc/${parent}/task/${parent}/children`, 'utf8')
  return text.trim() === '' ? [] : text.trim().split(/\s+/).map(Number)
}

describe('spawn-local-swarm', () => {
  it('holds identical models in serial and parallel mode', async () => {
    const out = mkdtempSync(join(tmpdir(), 'dlearn-modes-'))
    const summary = await runSwarm({
      peers: 3,
      modes: ['parallel', 'serial'],
      centralised: false,
      rounds: 2,
      target: 0.999,
      partition: 'iid',
      model: 'mlp',
      seed: 7,
      out,
      peerArgs: SMALL,
      progress: false,
    })
    const hashes = (mode: string) =>
      readModeMetrics(out, mode)
        .map((row) => `${row.peerIndex}:${row.round}:${row.contributors}:${row.modelHash}`)
        .sort()
    const parallel = hashes('parallel')
    expect(parallel).toHaveLength(6)
    expect(hashes('serial')).toEqual(parallel)
    // Every round of every peer saw all three deltas.
    expect(parallel.every((line) => line.split(':')[2] === '3')).toBe(true)
    expect(summary.parallel?.rounds).toBe(2)
    expect(summary.serial?.rounds).toBe(2)
  })

  it('starts a late peer that joins with the swarm model', async () => {
    const out = mkdtempSync(join(tmpdir(), 'dlearn-late-'))
    await runSwarm({
      peers: 2,
      modes: ['parallel'],
      centralised: false,
      // Enough rounds that the late process is up before the first two finish.
      rounds: 25,
      target: 0.999,
      partition: 'iid',
      model: 'mlp',
      seed: 3,
      out,
      joinLate: 2,
      peerArgs: SMALL,
      progress: false,
    })
    const rows = readModeMetrics(out, 'parallel')
    const late = rows.filter((row) => row.peerIndex === 2)
    expect(late.length).toBeGreaterThan(0)
    const firstRound = Math.min(...late.map((row) => row.round))
    expect(firstRound).toBeGreaterThanOrEqual(2)
    for (const row of late) {
      const others = rows.filter((other) => other.round === row.round && other.peerIndex !== 2)
      expect(others.map((other) => other.modelHash)).toEqual([row.modelHash, row.modelHash])
      expect(row.contributors).toBe(3)
    }
    expect(Math.max(...late.map((row) => row.round))).toBe(24)
  })

  it('leaves no peer behind when the launcher throws', async () => {
    const out = mkdtempSync(join(tmpdir(), 'dlearn-throw-'))
    let pids: number[] = []
    const run = runSwarm({
      peers: 3,
      modes: ['parallel'],
      centralised: false,
      rounds: 50,
      target: 0.999,
      partition: 'iid',
      model: 'mlp',
      seed: 1,
      out,
      peerArgs: SMALL,
      progress: false,
      onEvent: (event) => {
        if (event.type !== 'peers-started') return
        pids = event.pids
        for (const pid of pids) expect(isAlive(pid)).toBe(true)
        throw new Error('launcher failure injected by the test')
      },
    })
    await expect(run).rejects.toThrow('launcher failure injected by the test')
    expect(pids).toHaveLength(3)
    for (const pid of pids) expect(isAlive(pid)).toBe(false)
  })

  it('leaves no peer behind on SIGTERM', async () => {
    const out = mkdtempSync(join(tmpdir(), 'dlearn-sigterm-'))
    const launcher = spawn(
      process.execPath,
      [
        LAUNCHER,
        '--peers',
        '2',
        '--rounds',
        '50',
        '--target',
        '0.999',
        '--out',
        out,
        '--',
        ...SMALL,
      ],
      { env: { ...process.env, CI: 'true' }, stdio: ['ignore', 'pipe', 'pipe'] },
    )
    let output = ''
    const firstRound = new Promise<void>((resolveRound) => {
      launcher.stdout.on('data', (chunk: Buffer) => {
        output += chunk.toString()
        if (output.includes('parallel round 0')) resolveRound()
      })
    })
    await firstRound
    const pids = childPids(launcher.pid as number)
    expect(pids).toHaveLength(2)
    launcher.kill('SIGTERM')
    const [code] = await once(launcher, 'exit')
    expect(code).toBe(143)
    for (const pid of pids) expect(isAlive(pid)).toBe(false)
  })

  it('rejects a bad option with exit code 2', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--peers', 'zero'], /--peers.*integer/],
      [['--mode', 'fast'], /--mode.*parallel, serial or both/],
      [['--partition', 'dirichlet:-1'], /dirichlet:-1/],
      [['--target', '97'], /--target.*fraction/],
      [['--colour'], /colour/],
      [['--peers', '1e9'], /--peers.*from 1 to 256/],
      [['--rounds', '3', '--join-late', '3'], /--join-late.*from 1 to 2/],
      [
        ['--peers', '1', '--out', mkdtempSync(join(tmpdir(), 'dlearn-bogus-')), '--', '--bogus'],
        /Unknown option '--bogus'/,
      ],
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
  })
})
