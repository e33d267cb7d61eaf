import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { FedAvgResult } from '../../scripts/lib/fedavg.ts'
import type { ScalingResult } from '../../scripts/lib/scaling.ts'

/** Returns whether @tensorflow/tfjs-node-gpu is installed, so fedavg-cnn-iid would start 100 peers. */
function hasGpuPackage(): boolean {
  try {
    import.meta.resolve('@tensorflow/tfjs-node-gpu')
    return true
  } catch {
    return false
  }
}

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

  it('exits 2 on bad names and options', async () => {
    const unknown = await runExperiment(['fedavg-9nn'])
    expect(unknown.code).toBe(2)
    expect(unknown.output).toMatch(
      /Expected one experiment name, scaling, fedavg-2nn-iid, fedavg-2nn-noniid, fedavg-cnn-iid, got 'fedavg-9nn'/,
    )
    const counts = await runExperiment(['scaling', '--peer-counts', '1,0'])
    expect(counts.code).toBe(2)
    expect(counts.output).toMatch(/--peer-counts.*got '1,0'/)
    const foreign = await runExperiment(['fedavg-2nn-iid', '--peer-counts', '1,2'])
    expect(foreign.code).toBe(2)
    expect(foreign.output).toMatch(/--peer-counts does not apply to fedavg-2nn-iid/)
    const rates = await runExperiment(['fedavg-2nn-iid', '--learning-rates', '0.1,-1'])
    expect(rates.code).toBe(2)
    expect(rates.output).toMatch(/--learning-rates.*got '0.1,-1'/)
    const grid = await runExperiment(['fedavg-2nn-iid', '--grid-rounds', '0'])
    expect(grid.code).toBe(2)
    expect(grid.output).toMatch(/--grid-rounds to be at least 1 .* \(3 rates\), got 0/)
    const fixed = await runExperiment(['fedavg-2nn-iid', '--', '--learning-rate=5'])
    expect(fixed.code).toBe(2)
    expect(fixed.output).toMatch(
      /--learning-rate after -- would change fedavg-2nn-iid's own setting/,
    )
  })
  it('searches rates and reports the best', async () => {
    const out = mkdtempSync(join(tmpdir(), 'dlearn-fedavg-'))
    folders.push(out)
    const { code, output } = await runExperiment([
      'fedavg-2nn-iid',
      '--peers',
      '4',
      '--learning-rates',
      '0.001,0.2',
      '--grid-rounds',
      '1',
      '--rounds',
      '2',
      '--out',
      out,
      '--',
      '--test-samples',
      '500',
      '--no-verify-data',
      '--backend',
      'wasm',
    ])
    expect(code, output).toBe(0)

    const result = JSON.parse(readFileSync(join(out, 'fedavg.json'), 'utf8')) as FedAvgResult
    expect(result.grid.map((trial) => trial.learningRate)).toEqual([0.001, 0.2])
    const [slow, fast] = result.grid as [FedAvgResult['grid'][0], FedAvgResult['grid'][0]]
    // One round of 60 SGD steps at rate 0.001 barely moves the model; at 0.2 it passes 50%.
    expect(fast.finalAccuracy).toBeGreaterThan(0.5)
    expect(slow.finalAccuracy).toBeLessThan(fast.finalAccuracy)
    expect(result.learningRate).toBe(0.2)
    expect(result.series.map((point) => [point.round, point.peers])).toEqual([
      [0, 4],
      [1, 4],
    ])
    expect(result.series[1]?.accuracy).toBeGreaterThan(0.5)

    const report = readFileSync(join(out, 'report.md'), 'utf8')
    expect(report).toMatch(/^\| 0\.001 \| not reached \| \d+\.\d\d% \|$/m)
    expect(report).toMatch(/^\| this swarm, learning rate 0\.2 \| not reached in 2 \| - \|$/m)
    expect(report).toMatch(/^\| paper \| 87 \| - \|$/m)
    expect(report).toMatch(/The best rate, 0\.2, is at an end of the grid/)
    expect(report).toMatch(/NOTE: the paper used 100 clients .* This run used 4 peers and 500 test/)
    expect(report).toMatch(/^\| 1 \| \d+\.\d\d% \| 1 \| 1 \| [\d.]+ \|$/m)
    expect(statSync(join(out, 'accuracy.png')).size).toBeGreaterThan(1000)
  }, 180_000)

  it.skipIf(hasGpuPackage())(
    'reports why the CNN did not run',
    async () => {
      const out = mkdtempSync(join(tmpdir(), 'dlearn-fedavg-cnn-'))
      folders.push(out)
      const { code, output } = await runExperiment(['fedavg-cnn-iid', '--out', out])
      expect(code, output).toBe(1)
      expect(output).toMatch(/fedavg-cnn-iid was not run: Backend 'tensorflow-gpu' could not load/)
      const report = readFileSync(join(out, 'report.md'), 'utf8')
      expect(report).toMatch(/^## Not run$/m)
      expect(report).toMatch(/npm install @tensorflow\/tfjs-node-gpu/)
      expect(report).toMatch(/npm run experiment -- fedavg-cnn-iid -- --backend wasm/)
    },
    60_000,
  )
})
