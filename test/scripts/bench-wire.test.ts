import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { describe, expect, it } from 'vitest'
import type { RoundMetrics } from '../../node/metrics.ts'
import { encodedDeltaSize, parseCodec } from '../../protocols/index.ts'
import { roundsToTarget } from '../../scripts/lib/bench-accuracy.ts'
import { codecSizes, measureCodecs, median } from '../../scripts/lib/bench-codecs.ts'
import { amplificationPerPeer, inspectGossipsubSource } from '../../scripts/lib/bench-gossip.ts'
import {
  BenchUsageError,
  DEFAULT_CODECS,
  defaultOutPath,
  parseBenchOptions,
} from '../../scripts/lib/bench-options.ts'
import { BenchProgress, progressStyle } from '../../scripts/lib/bench-progress.ts'
import {
  type CodecResult,
  evaluateChecks,
  INT8_MAX_BYTES_RATIO,
} from '../../scripts/lib/bench-report.ts'
import { bytesReadByPeer } from '../../scripts/lib/bench-sockets.ts'
import { type SwarmRound, summarizeRounds } from '../../scripts/lib/bench-swarm.ts'
import { createRandom, MLP_SHAPES, MLP_VALUE_COUNT } from '../protocols/fixtures.ts'

const BENCH = resolve(import.meta.dirname, '../../scripts/bench-wire.ts')

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

function swarmRounds(accuracies: number[]): SwarmRound[] {
  return accuracies.map((accuracy, index) => ({
    rounds: index + 1,
    accuracy,
    distinctModels: 1,
    minContributors: 4,
    deadlineHits: 0,
    seconds: index + 1,
  }))
}

function codecResult(codec: string, ratio: number, accuracies: number[]): CodecResult {
  return {
    codec,
    bytes: Math.round(ratio * 1000),
    ratio,
    encodeMBps: 1,
    decodeMBps: 1,
    relativeError: 0,
    rounds: swarmRounds(accuracies),
    accuracy: accuracies[2] ?? null,
    accuracyDifferencePoints: null,
    roundsToTarget: roundsToTarget(swarmRounds(accuracies), 0.97),
    wallSeconds: 1,
  }
}

function metricsRow(peerIndex: number, round: number, fields: Partial<RoundMetrics>) {
  return {
    peerIndex,
    round,
    accuracy: 0.9,
    modelHash: 'a',
    contributors: 3,
    elapsedSeconds: round + 1,
    bytesReceived: 0,
    deadlineHit: false,
    ...fields,
  } as RoundMetrics
}

describe('bench-wire codec sizes', () => {
  it('keeps int8:256 within 27% of float32 for the MLP', () => {
    const [float32, float16, int8, topk] = codecSizes(MLP_SHAPES, DEFAULT_CODECS)
    expect(float32?.ratio).toBe(1)
    expect(float32?.bytes).toBe(encodedDeltaSize(MLP_SHAPES))
    expect(int8?.codec).toBe('int8:256')
    expect(int8?.ratio).toBeLessThanOrEqual(INT8_MAX_BYTES_RATIO)
    expect(float16?.ratio).toBeCloseTo(0.5, 3)
    expect(topk?.ratio).toBeCloseTo(0.2, 3)
  })

  it('measures real encodings of a small delta', () => {
    const random = createRandom(5)
    const shapes: [number, number][] = [
      [3, 4],
      [4, 2],
      [2, 300],
    ]
    const delta = shapes.map(([rows, columns]) => ({
      shape: [rows, columns],
      values: Float32Array.from({ length: rows * columns }, () => random() / 2 ** 32 - 0.5),
    }))
    const results = measureCodecs(delta, DEFAULT_CODECS, 2)
    const sizes = codecSizes(
      delta.map((tensor) => tensor.shape),
      DEFAULT_CODECS,
    )
    expect(results.map((result) => result.bytes)).toEqual(sizes.map((size) => size.bytes))
    const [float32, float16, int8, topk] = results
    expect(float32?.relativeError).toBe(0)
    expect(float16?.relativeError).toBeLessThan(1e-3)
    expect(int8?.relativeError).toBeLessThan(0.01)
    expect(topk?.relativeError).toBeGreaterThan(0.5)
    for (const result of results) {
      expect(Number.isFinite(result.encodeMBps)).toBe(true)
      expect(Number.isFinite(result.decodeMBps)).toBe(true)
    }
  })

  it('takes the median of odd and even counts', () => {
    expect(median([5, 1, 3])).toBe(3)
    expect(median([4, 1, 3, 2])).toBe(2.5)
    expect(() => median([])).toThrow(RangeError)
  })
})

describe('bench-wire options', () => {
  it('applies the documented defaults', () => {
    const options = parseBenchOptions([])
    expect(options?.codecs).toEqual(['float32', 'float16', 'int8:256', 'topk:0.1'])
    expect(options?.peers).toBe(4)
    expect(options?.rounds).toBe(3)
    expect(options?.topkRounds).toBe(6)
    expect(options?.target).toBe(0.97)
    expect(options?.trainSamples).toBe(60_000)
    expect(options?.gossipPeers).toBe(8)
    expect(options?.gossipRounds).toBe(2)
    expect(options?.out).toMatch(/^runs\/bench-wire-.+\.json$/)
  })

  it('derives topk rounds from --rounds', () => {
    expect(parseBenchOptions(['--rounds', '5'])?.topkRounds).toBe(8)
    expect(parseBenchOptions(['--rounds', '5', '--topk-rounds', '5'])?.topkRounds).toBe(5)
  })

  it('returns undefined for --help', () => {
    expect(parseBenchOptions(['--help'])).toBeUndefined()
  })

  it.each([
    [['--rounds', 'three'], /--rounds to be an integer from 1 to 1000, got 'three'/],
    [['--target', '97'], /--target to be a fraction in \(0, 1\], such as 0.97, got '97'/],
    [['--codecs', 'int8,float32'], /start with float32/],
    [['--codecs', 'float32,zip'], /float32, float16, int8\[:BLOCK\] or topk:FRACTION, got 'zip'/],
    [['--backend', 'tpu'], /--backend to be one of auto, .*got 'tpu'/],
    [
      ['--peers', '8', '--train-samples', '4'],
      /--train-samples \(4\) to be at least --peers \(8\)/,
    ],
    [['--rounds', '4', '--topk-rounds', '2'], /--topk-rounds to be at least --rounds \(4\)/],
    [['--frobnicate'], /Unknown option '--frobnicate'.*Accepted options: --codecs/],
  ])('rejects %j', (argv, message) => {
    expect(() => parseBenchOptions(argv)).toThrow(BenchUsageError)
    expect(() => parseBenchOptions(argv)).toThrow(message)
  })

  it('names the default output after the time', () => {
    const path = defaultOutPath(new Date('2026-12-04T15:17:24.674Z'))
    expect(path).toBe(join('runs', 'bench-wire-2026-12-04T15-17-24-674Z.json'))
  })
})

describe('bench-wire checks', () => {
  const options = { rounds: 3, topkRounds: 6, target: 0.97 }

  it('judges int8 at the round float32 reaches the target', () => {
    const codecs = [
      codecResult('float32', 1, [0.95, 0.971, 0.975]),
      codecResult('int8:256', 0.254, [0.95, 0.969, 0.974]),
      codecResult('topk:0.1', 0.2, [0.9, 0.95, 0.96, 0.965, 0.971, 0.973]),
    ]
    const [bytes, accuracy, topk] = evaluateChecks(codecs, options)
    expect(bytes?.passed).toBe(true)
    expect(accuracy?.passed).toBe(true)
    expect(accuracy?.measured).toBe('-0.20 pp')
    expect(accuracy?.expected).toMatch(/after 2 rounds, where float32 first reached 97.0%/)
    expect(topk?.passed).toBe(true)
    expect(topk?.measured).toBe('after 5 rounds')
  })

  it('fails int8 that loses more than 0.3 points', () => {
    const codecs = [
      codecResult('float32', 1, [0.95, 0.971, 0.975]),
      codecResult('int8:256', 0.3, [0.95, 0.96, 0.974]),
    ]
    const [bytes, accuracy] = evaluateChecks(codecs, options)
    expect(bytes?.passed).toBe(false)
    expect(accuracy?.passed).toBe(false)
    expect(accuracy?.measured).toBe('-1.10 pp')
  })

  it('leaves int8 accuracy unjudged when float32 misses the target', () => {
    const codecs = [
      codecResult('float32', 1, [0.9, 0.93, 0.95]),
      codecResult('int8:256', 0.254, [0.9, 0.93, 0.95]),
      codecResult('topk:0.1', 0.2, [0.8, 0.85, 0.9]),
    ]
    const [, accuracy, topk] = evaluateChecks(codecs, options)
    expect(accuracy?.passed).toBeNull()
    expect(accuracy?.expected).toMatch(/float32 did not reach 97.0% in 3 rounds/)
    expect(topk?.passed).toBe(false)
    expect(topk?.measured).toBe('not reached in 3 rounds (best 90.00%)')
  })
})

describe('bench-wire swarm figures', () => {
  it('summarizes rounds over peers', () => {
    const rounds = summarizeRounds([
      metricsRow(1, 0, { accuracy: 0.8, modelHash: 'x' }),
      metricsRow(0, 0, { accuracy: 0.7, modelHash: 'x', elapsedSeconds: 3 }),
      metricsRow(0, 1, { accuracy: 0.9, modelHash: 'y', contributors: 1, deadlineHit: true }),
      metricsRow(1, 1, { accuracy: 0.91, modelHash: 'z' }),
    ])
    expect(rounds).toEqual([
      {
        rounds: 1,
        accuracy: 0.7,
        distinctModels: 1,
        minContributors: 3,
        deadlineHits: 0,
        seconds: 3,
      },
      {
        rounds: 2,
        accuracy: 0.9,
        distinctModels: 2,
        minContributors: 1,
        deadlineHits: 1,
        seconds: 2,
      },
    ])
  })

  it('divides received bytes by the needed bytes', () => {
    const metrics = [
      metricsRow(0, 0, { bytesReceived: 100 }),
      metricsRow(0, 1, { bytesReceived: 250 }),
      metricsRow(1, 1, { bytesReceived: 200 }),
    ]
    const [first, second] = amplificationPerPeer(metrics, [1000, 600], 200)
    expect(first?.validatorBytes).toBe(250)
    expect(first?.validatorRatio).toBe(1.25)
    expect(first?.tcpRatio).toBe(5)
    expect(second?.validatorRatio).toBe(1)
    expect(second?.tcpRatio).toBe(3)
  })

  it('attributes socket bytes to their owners', () => {
    const owners = new Map([
      ['4001>50000', 0],
      ['50000>4001', 1],
    ])
    const before = new Map([['4001>50000', 10]])
    const after = new Map([
      ['4001>50000', 110],
      ['50000>4001', 70],
      ['6000>7000', 5],
    ])
    expect(bytesReadByPeer(owners, before, after, 2)).toEqual({
      perPeer: [100, 70],
      unattributed: 5,
    })
  })

  it('reads the installed gossipsub version', () => {
    const report = inspectGossipsubSource()
    expect(report.packageVersion).toMatch(/^\d+\.\d+\.\d+/)
    expect(report.sends).not.toBeNull()
    expect(report.forwardSkipsPeersThatSentIt).not.toBeNull()
  })
})

describe('bench-wire progress', () => {
  it('stays silent under CI', () => {
    expect(progressStyle({ CI: 'true' }, true)).toBe('silent')
    expect(progressStyle({ CI: 'false' }, true)).toBe('redraw')
    expect(progressStyle({}, false)).toBe('lines')
  })

  it('clears a redrawn line when done', () => {
    const output: string[] = []
    const progress = new BenchProgress('redraw', (text) => output.push(text))
    progress.show('round 1')
    progress.done()
    expect(output).toEqual(['\r\x1b[2Kround 1', '\r\x1b[2K'])
  })
})

describe('bench-wire command', () => {
  it('exits 2 on an invalid option', async () => {
    const result = await runBench(['--gossip-peers', '1'])
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/--gossip-peers to be an integer from 2 to 64, got '1'/)
  })

  it('writes the JSON record of a tiny run', async () => {
    const out = join(mkdtempSync(join(tmpdir(), 'dlearn-bench-wire-')), 'bench.json')
    const result = await runBench([
      ...['--codecs', 'float32,int8,topk:0.1', '--peers', '2', '--rounds', '1'],
      ...['--topk-rounds', '1', '--train-samples', '400', '--test-samples', '100'],
      ...['--repetitions', '1', '--gossip-peers', '3', '--gossip-rounds', '1'],
      ...['--gossip-train-samples', '300', '--backend', 'wasm', '--out', out],
    ])
    expect(result.code).toBe(0)
    // With CI set, no progress goes to stderr.
    expect(result.stderr).not.toMatch(/round \d+ of|loading MNIST/)
    expect(result.stdout).toContain(`json: ${out}`)

    const report = JSON.parse(readFileSync(out, 'utf8'))
    expect(report.model.values).toBe(MLP_VALUE_COUNT)
    expect(report.model.shapes).toEqual(MLP_SHAPES)
    expect(report.codecs.map((codec: CodecResult) => codec.codec)).toEqual([
      'float32',
      'int8:256',
      'topk:0.1',
    ])
    for (const codec of report.codecs as CodecResult[]) {
      expect(codec.bytes).toBe(encodedDeltaSize(MLP_SHAPES, parseCodec(codec.codec)))
      expect(codec.rounds).toHaveLength(1)
      expect(codec.rounds[0]?.distinctModels).toBe(1)
      expect(codec.rounds[0]?.minContributors).toBe(2)
      expect(typeof codec.accuracy).toBe('number')
    }
    expect(report.checks).toHaveLength(3)

    expect(report.gossip.peers).toBe(3)
    expect(report.gossip.perPeer).toHaveLength(3)
    expect(report.gossip.neededBytes).toBe(2 * encodedDeltaSize(MLP_SHAPES))
    for (const peer of report.gossip.perPeer) {
      expect(peer.validatorRatio).toBeGreaterThanOrEqual(1)
      expect(peer.tcpBytes).toBeGreaterThanOrEqual(peer.validatorBytes)
    }
    expect(report.gossip.roundResults).toHaveLength(1)
    expect(report.gossip.roundResults[0].minContributors).toBe(3)
    expect(report.gossip.unattributedTcpBytes).toBe(0)
    expect(report.gossip.idontwant.streamProtocols).toHaveProperty(['/meshsub/1.2.0'])
  })
})
