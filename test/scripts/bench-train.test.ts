import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import * as tf from '@tensorflow/tfjs'
import { describe, expect, it } from 'vitest'
import { buildModel } from '../../node/model.ts'
import { MODEL_NAMES } from '../../node/spec.ts'
import { forwardFlopsPerSample, layerProducts } from '../../scripts/lib/bench-train-measure.ts'
import {
  DEFAULT_BACKENDS,
  DEFAULT_BATCH_SIZES,
  parseTrainBenchOptions,
  TrainBenchUsageError,
} from '../../scripts/lib/bench-train-options.ts'
import {
  evaluateTrainChecks,
  type TrainBenchReport,
  type TrainCell,
} from '../../scripts/lib/bench-train-report.ts'

const BENCH = resolve(import.meta.dirname, '../../scripts/bench-train.ts')

function runBench(
  args: string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BENCH, ...args], {
    env: { ...process.env, CI: 'true' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString()
  })
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString()
  })
  return once(child, 'exit').then(([code]) => ({ code: code as number | null, stdout, stderr }))
}

function cell(fields: Partial<TrainCell>): TrainCell {
  return {
    model: 'mlp',
    backend: 'wasm',
    batchSize: 32,
    samples: 100,
    trainer: { samplesPerSecond: 100, loss: 1 },
    fit: { samplesPerSecond: 40, loss: 1 },
    speedupOverFit: 2.5,
    stockFit: { samplesPerSecond: 40, loss: 1 },
    speedupOverStockFit: 2.5,
    forwardMflopsPerSample: 0.4,
    trainGflops: 6,
    matMulGflops: 10,
    matMulShare: 0.6,
    leakedTensors: 0,
    ...fields,
  }
}

describe('bench:train options', () => {
  it('uses documented defaults', () => {
    const options = parseTrainBenchOptions([])
    expect(options?.models).toEqual([...MODEL_NAMES])
    expect(options?.backends).toEqual(DEFAULT_BACKENDS)
    expect(options?.batchSizes).toEqual(DEFAULT_BATCH_SIZES)
    expect(options?.samples).toBe(4096)
    expect(options?.cpuSamples).toBe(256)
    expect(options?.repetitions).toBe(1)
    expect(options?.out).toMatch(/^runs[/\\]bench-train-.*\.json$/)
  })

  it('parses lists', () => {
    const options = parseTrainBenchOptions([
      '--models',
      'cnn,mlp',
      '--backends',
      'cpu',
      '--batch-sizes',
      '8, 64',
    ])
    expect(options?.models).toEqual(['cnn', 'mlp'])
    expect(options?.backends).toEqual(['cpu'])
    expect(options?.batchSizes).toEqual([8, 64])
  })

  it('returns undefined for --help', () => {
    expect(parseTrainBenchOptions(['--help'])).toBeUndefined()
  })

  const invalid: [string, string[]][] = [
    ['unknown model', ['--models', 'resnet']],
    ['auto backend', ['--backends', 'auto']],
    ['repeated batch size', ['--batch-sizes', '32,32']],
    ['empty list item', ['--models', 'mlp,']],
    ['zero samples', ['--samples', '0']],
    ['fractional batch size', ['--batch-sizes', '3.5']],
    ['unknown option', ['--epochs', '2']],
    ['empty out path', ['--out', '']],
  ]
  for (const [name, argv] of invalid) {
    it(`rejects ${name}`, () => {
      expect(() => parseTrainBenchOptions(argv)).toThrow(TrainBenchUsageError)
    })
  }
})

describe('bench:train operation counts', () => {
  it('counts mlp forward operations', () => {
    const model = buildModel('mlp', 1)
    try {
      const products = layerProducts(model, 32)
      expect(products.map(({ m, k, n }) => [m, k, n])).toEqual([
        [32, 784, 200],
        [32, 200, 200],
        [32, 200, 10],
      ])
      expect(forwardFlopsPerSample(products, 32)).toBe(2 * (784 * 200 + 200 * 200 + 200 * 10))
    } finally {
      model.dispose()
    }
  })

  it('counts cnn convolutions as im2col products', () => {
    const tensorsBefore = tf.memory().numTensors
    const model = buildModel('cnn', 1)
    try {
      const products = layerProducts(model, 4)
      expect(products.map(({ m, k, n }) => [m, k, n])).toEqual([
        [4 * 28 * 28, 25, 32],
        [4 * 14 * 14, 25 * 32, 64],
        [4, 7 * 7 * 64, 512],
        [4, 512, 10],
      ])
      const expected = 2 * (28 * 28 * 25 * 32 + 14 * 14 * 800 * 64 + 3136 * 512 + 512 * 10)
      expect(forwardFlopsPerSample(products, 4)).toBe(expected)
    } finally {
      model.dispose()
    }
    expect(tf.memory().numTensors).toBe(tensorsBefore)
  })
})

describe('bench:train checks', () => {
  it('passes cells that meet every target', () => {
    const checks = evaluateTrainChecks([
      cell({}),
      cell({ model: 'cnn', trainer: { samplesPerSecond: 60, loss: 1 } }),
      cell({ model: 'cnn', backend: 'cpu', trainer: { samplesPerSecond: 10, loss: 1 } }),
    ])
    expect(checks.map((check) => check.passed)).toEqual([true, true, true])
  })

  it('fails the lowest speedup and a low share', () => {
    const checks = evaluateTrainChecks([
      cell({ speedupOverStockFit: 1.2, matMulShare: 0.3 }),
      cell({ batchSize: 128 }),
    ])
    expect(checks[0]?.passed).toBe(false)
    expect(checks[0]?.measured).toContain('1.20x')
    expect(checks[1]?.passed).toBe(false)
  })

  it('leaves the speedup unjudged without cells', () => {
    expect(evaluateTrainChecks([])[0]?.passed).toBeNull()
  })

  it('skips cells without a bare fit', () => {
    const checks = evaluateTrainChecks([
      cell({ speedupOverStockFit: 3 }),
      cell({ model: 'cnn', stockFit: null, speedupOverStockFit: null, speedupOverFit: 1.1 }),
    ])
    expect(checks[0]?.passed).toBe(true)
    expect(checks[0]?.measured).toContain('3.00x at the lowest (mlp on wasm at batch 32)')
  })
})

describe('bench:train run', () => {
  it('writes positive rates for a tiny run', async () => {
    const out = join(mkdtempSync(join(tmpdir(), 'bench-train-')), 'report.json')
    const result = await runBench([
      '--models',
      'mlp',
      '--backends',
      'wasm,cpu',
      '--batch-sizes',
      '16',
      '--samples',
      '64',
      '--cpu-samples',
      '32',
      '--out',
      out,
    ])
    expect(result.stderr).not.toContain('Error')
    expect(result.code).toBe(0)
    expect(result.stdout).toContain('matMul GFLOP/s')
    const report = JSON.parse(readFileSync(out, 'utf8')) as TrainBenchReport
    expect(report.backends.filter((backend) => backend.loaded).map((b) => b.name)).toEqual([
      'wasm',
      'cpu',
    ])
    expect(report.cells).toHaveLength(2)
    for (const measured of report.cells) {
      expect(measured.samples).toBe(measured.backend === 'cpu' ? 32 : 64)
      for (const rate of [
        measured.trainer.samplesPerSecond,
        measured.fit.samplesPerSecond,
        measured.stockFit?.samplesPerSecond ?? Number.NaN,
        measured.trainGflops,
        measured.matMulGflops,
        measured.matMulShare,
      ]) {
        expect(Number.isFinite(rate)).toBe(true)
        expect(rate).toBeGreaterThan(0)
      }
      expect(Number.isFinite(measured.trainer.loss)).toBe(true)
      expect(measured.leakedTensors).toBe(0)
    }
    expect(report.checks.length).toBeGreaterThan(0)
  })

  it('rejects fewer samples than a batch', () => {
    expect(() => parseTrainBenchOptions(['--batch-sizes', '32', '--samples', '16'])).toThrow(
      'Expected --samples to be at least the largest batch size, 32, got 16',
    )
    expect(() =>
      parseTrainBenchOptions(['--batch-sizes', '64', '--backends', 'cpu', '--cpu-samples', '8']),
    ).toThrow('Expected --cpu-samples to be at least the largest batch size, 64, got 8')
    expect(
      parseTrainBenchOptions(['--batch-sizes', '64', '--backends', 'wasm', '--cpu-samples', '8'])
        ?.cpuSamples,
    ).toBe(8)
  })

  it('exits with code 2 on an invalid option', async () => {
    const result = await runBench(['--batch-sizes', 'many'])
    expect(result.code).toBe(2)
    expect(result.stderr).toContain(
      "Expected --batch-sizes to be an integer from 1 to 60000, got 'many'",
    )
  })
})
