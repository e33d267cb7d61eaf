import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { ScalingResult } from '../../scripts/lib/scaling.ts'

const EXPERIMENT = resolve(import.meta.dirname, '../../scripts/experiment.ts')
const folders: string[] = []

afterEach(() => {
  for (const folder of folders.splice(0)) rmSync(folder, { recursive: true, force: true })
})

async function runExperiment(args: string[]): Promise<{ code: number; output: string }> {
  const child = spawn(process.execPath, [EXPERIMENT, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, CI: 'true' },
  })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => {
    output += chunk.toString()
  })
  child.stderr.on('data', (chunk: Buffer) => {
    output += chunk.toString()
  })
  const [code] = await once(child, 'exit')
  return { code: code as number, output }
}

describe('npm run experiment', () => {
  it('tabulates and plots scaling for 1 and 2 peers', async () => {
    const out = mkdtempSync(join(tmpdir(), 'dlearn-scaling-'))
    folders.push(out)
    const { code, output } = await runExperiment([
      'scaling',
      '--peer-counts',
      '1,2',
      '--target',
      '0.85',
      '--out',
      out,
      '--',
      '--train-samples',
      '3000',
      '--test-samples',
      '500',
      '--no-verify-data',
      '--backend',
      'wasm',
    ])
    expect(code, output).toBe(0)

    const result = JSON.parse(readFileSync(join(out, 'scaling.json'), 'utf8')) as ScalingResult
    expect(result.rows.map((row) => [row.peers, row.mode])).toEqual([
      [1, 'parallel'],
      [1, 'serial'],
      [2, 'parallel'],
      [2, 'serial'],
    ])
    for (const row of result.rows) {
      expect(row.timeToTargetSeconds, `${row.peers} ${row.mode}`).toBeGreaterThan(0)
      expect(row.finalAccuracy).toBeGreaterThanOrEqual(0.85)
    }

    const report = readFileSync(join(out, 'report.md'), 'utf8')
    expect(report).toMatch(/^\| 1 \| [\d.]+ s \| [\d.]+ s \| [\d.]+x \| \d+ \|$/m)
    expect(report).toMatch(/^\| 2 \| [\d.]+ s \| [\d.]+ s \| [\d.]+x \| \d+ \|$/m)
    expect(statSync(join(out, 'scaling.png')).size).toBeGreaterThan(1000)
    expect(statSync(join(out, 'peers-2', 'summary.json')).size).toBeGreaterThan(0)
  }, 120_000)

  it('exits 2 naming a bad experiment or peer count', async () => {
    const unknown = await runExperiment(['fedavg-2nn-iid'])
    expect(unknown.code).toBe(2)
    expect(unknown.output).toMatch(/Expected one experiment name, scaling, got 'fedavg-2nn-iid'/)
    const counts = await runExperiment(['scaling', '--peer-counts', '1,0'])
    expect(counts.code).toBe(2)
    expect(counts.output).toMatch(/--peer-counts.*got '1,0'/)
  })
})
