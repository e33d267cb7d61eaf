import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { describe, expect, it } from 'vitest'
import {
  defaultMemoryOutPath,
  MAX_RSS_GROWTH,
  parseMemoryBenchOptions,
} from '../../scripts/lib/bench-memory-options.ts'
import {
  evaluateMemoryChecks,
  failedCheckMessages,
  type MemoryBenchReport,
  summarizeSamples,
} from '../../scripts/lib/bench-memory-report.ts'
import type { MemorySample } from '../../scripts/lib/bench-memory-swarm.ts'
import { BenchUsageError } from '../../scripts/lib/bench-options.ts'
import { MLP_SHAPES, MLP_VALUE_COUNT } from '../protocols/fixtures.ts'

const BENCH = resolve(import.meta.dirname, '../../scripts/bench-memory.ts')
const MIB = 1024 * 1024

function runBench(
  args: string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--expose-gc', BENCH, ...args], {
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

/** Samples for rounds 0 to `rounds`, with the rss (MiB) and numTensors that `at` returns. */
function samples(
  rounds: number,
  at: (round: number) => { rssMiB: number; numTensors: number },
): MemorySample[] {
  return Array.from({ length: rounds + 1 }, (_, round) => ({
    round,
    seconds: round * 0.5,
    numTensors: at(round).numTensors,
    tensorBytes: 1000,
    rss: at(round).rssMiB * MIB,
    heapUsed: 40 * MIB,
    heapTotal: 80 * MIB,
    external: 10 * MIB,
    arrayBuffers: 5 * MIB,
  }))
}

describe('bench-memory options', () => {
  it('applies the documented defaults', () => {
    const options = parseMemoryBenchOptions([])
    expect(options?.peers).toBe(4)
    expect(options?.rounds).toBe(200)
    expect(options?.baselineRound).toBe(20)
    expect(options?.trainSamples).toBe(1200)
    expect(options?.testSamples).toBe(500)
    expect(options?.backend).toBe('auto')
    expect(options?.out).toMatch(/^runs\/bench-memory-.+\.json$/)
  })

  it('lowers the default baseline to --rounds', () => {
    expect(parseMemoryBenchOptions(['--rounds', '8'])?.baselineRound).toBe(8)
    expect(
      parseMemoryBenchOptions(['--rounds', '25', '--baseline-round', '5'])?.baselineRound,
    ).toBe(5)
  })

  it('returns undefined for --help', () => {
    expect(parseMemoryBenchOptions(['--help'])).toBeUndefined()
  })

  it.each([
    [['--rounds', '0'], /--rounds to be an integer from 1 to 100000, got '0'/],
    [['--rounds', 'many'], /--rounds to be an integer from 1 to 100000, got 'many'/],
    [
      ['--rounds', '10', '--baseline-round', '11'],
      /--baseline-round to be at most --rounds \(10\)/,
    ],
    [
      ['--peers', '4', '--train-samples', '3'],
      /--train-samples \(3\) to be at least --peers \(4\)/,
    ],
    [['--backend', 'tpu'], /--backend to be one of auto, .*got 'tpu'/],
    [['--out', ''], /--out to be a file path/],
    [['--codecs', 'float32'], /Unknown option '--codecs'.*Accepted options: --peers/],
  ])('rejects %j', (argv, message) => {
    expect(() => parseMemoryBenchOptions(argv)).toThrow(BenchUsageError)
    expect(() => parseMemoryBenchOptions(argv)).toThrow(message)
  })

  it('names the default output after the time', () => {
    const path = defaultMemoryOutPath(new Date('2026-12-04T15:17:24.674Z'))
    expect(path).toBe(join('runs', 'bench-memory-2026-12-04T15-17-24-674Z.json'))
  })
})

describe('bench-memory figures', () => {
  const options = { rounds: 10, baselineRound: 4 }

  it('reads round 1, the baseline and the last round', () => {
    const run = samples(10, (round) => ({ rssMiB: 100 + round, numTensors: round === 0 ? 32 : 80 }))
    const figures = summarizeSamples(run, options)
    expect(figures.numTensors).toEqual({
      first: 80,
      baseline: 80,
      last: 80,
      min: 80,
      max: 80,
      ratio: 1,
    })
    expect(figures.rss.first).toBe(101 * MIB)
    expect(figures.rss.baseline).toBe(104 * MIB)
    expect(figures.rss.last).toBe(110 * MIB)
    expect(figures.rss.min).toBe(104 * MIB)
    expect(figures.rss.max).toBe(110 * MIB)
    expect(figures.rss.ratio).toBeCloseTo(110 / 104, 12)
    expect(figures.secondsPerRound).toBe(0.5)
  })

  it('passes flat tensors and small rss growth', () => {
    const run = samples(10, (round) => ({ rssMiB: round < 4 ? 50 : 100, numTensors: 80 }))
    const [tensors, rss] = evaluateMemoryChecks(run, summarizeSamples(run, options))
    expect(tensors?.passed).toBe(true)
    expect(tensors?.measured).toBe('80 in all 10 samples')
    expect(rss?.passed).toBe(true)
    expect(rss?.measured).toBe('+0.0% (100.0 to 100.0 MiB)')
  })

  it('fails a tensor count that grows after round 1', () => {
    const run = samples(10, (round) => ({ rssMiB: 100, numTensors: round >= 7 ? 81 : 80 }))
    const checks = evaluateMemoryChecks(run, summarizeSamples(run, options))
    expect(checks[0]?.passed).toBe(false)
    expect(checks[0]?.measured).toBe('80 (round 1) to 81 (round 7)')
    expect(failedCheckMessages(checks)).toEqual([
      'memory check failed: numTensors from round 1 to round 10 was 80 (round 1) to 81 (round 7), expected one value',
    ])
  })

  it('fails rss growth of the limit or more', () => {
    const grown = (growth: number) =>
      samples(10, (round) => ({ rssMiB: round === 10 ? 200 * (1 + growth) : 200, numTensors: 80 }))
    const below = grown(MAX_RSS_GROWTH - 0.001)
    const at = grown(MAX_RSS_GROWTH)
    expect(evaluateMemoryChecks(below, summarizeSamples(below, options))[1]?.passed).toBe(true)
    const [, rss] = evaluateMemoryChecks(at, summarizeSamples(at, options))
    expect(rss?.passed).toBe(false)
    expect(rss?.measured).toBe('+10.0% (200.0 to 220.0 MiB)')
    expect(rss?.expected).toBe('< +10.0%')
  })

  it('leaves checks unjudged without samples', () => {
    const run = samples(0, () => ({ rssMiB: 100, numTensors: 32 }))
    const figures = summarizeSamples(run, options)
    expect(figures.rss.baseline).toBeNull()
    expect(figures.secondsPerRound).toBeNull()
    const checks = evaluateMemoryChecks(run, figures)
    expect(checks.map((check) => check.passed)).toEqual([null, null])
    expect(failedCheckMessages(checks)).toEqual([])
  })
})

describe('bench-memory command', () => {
  it('exits 2 on an invalid option', async () => {
    const result = await runBench(['--baseline-round', '0'])
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/--baseline-round to be an integer from 1 to 100000, got '0'/)
  })

  it('writes the samples of a short run', async () => {
    const out = join(mkdtempSync(join(tmpdir(), 'dlearn-bench-memory-')), 'memory.json')
    const result = await runBench([
      ...['--rounds', '25', '--baseline-round', '5', '--train-samples', '400'],
      ...['--test-samples', '200', '--backend', 'wasm', '--out', out],
    ])
    // With CI set, no progress goes to stderr.
    expect(result.stderr).not.toMatch(/round \d+ of 25|loading MNIST/)
    expect(result.stdout).toContain(`json: ${out}`)

    const report = JSON.parse(readFileSync(out, 'utf8')) as MemoryBenchReport
    expect(report.garbageCollected).toBe(true)
    expect(report.backend).toBe('wasm')
    expect(report.model.shapes).toEqual(MLP_SHAPES)
    expect(report.model.values).toBe(MLP_VALUE_COUNT)
    expect(report.samples.map((sample) => sample.round)).toEqual(
      Array.from({ length: 26 }, (_, round) => round),
    )
    expect(report.swarm.roundsAtDeadline).toBe(0)
    expect(report.swarm.minContributors).toBe(4)
    expect(report.swarm.roundsWithDistinctModels).toBe(0)

    const trained = report.samples.filter((sample) => sample.round >= 1)
    // Four peers, each with the MLP's 6 weights; on wasm Adam's moments live outside tensors.
    const expectedTensors = trained[0]?.numTensors ?? 0
    expect(expectedTensors).toBeGreaterThanOrEqual(4 * 6)
    for (const sample of trained) {
      expect(sample.numTensors).toBe(expectedTensors)
      expect(sample.rss).toBeGreaterThan(sample.heapUsed)
      expect(sample.heapUsed).toBeGreaterThan(0)
    }
    const [tensors, rss] = report.checks
    expect(tensors?.passed).toBe(true)
    expect(report.figures.numTensors.min).toBe(expectedTensors)
    expect(report.figures.numTensors.max).toBe(expectedTensors)
    expect(report.figures.rss.baseline).toBe(report.samples[5]?.rss)
    expect(report.figures.rss.last).toBe(report.samples[25]?.rss)
    expect(report.figures.secondsPerRound).toBeGreaterThan(0)
    // rss over 20 rounds depends on the machine, so only its check and the exit code must agree.
    expect(result.code).toBe(rss?.passed === false ? 1 : 0)
  })
})
