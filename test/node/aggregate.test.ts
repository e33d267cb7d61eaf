import { spawnSync } from 'node:child_process'
import { resolve } from 'node:path'
import { describe, expect, it } from 'vitest'
import {
  type AggregationRule,
  aggregateDeltas,
  averageDeltas,
  type Contribution,
  parseAggregation,
  subtractWeights,
} from '../../node/aggregate.ts'
import { UsageError } from '../../node/errors.ts'
import { parsePeerOptions } from '../../node/options.ts'
import { DEFAULT_SPEC, hashSpec, validateSpec } from '../../node/spec.ts'

function constant(length: number, value: number): Float32Array[] {
  return [new Float32Array(length).fill(value), new Float32Array(3).fill(value)]
}

function fromWeights(
  peerId: string,
  sampleCount: number,
  weights: Float32Array[],
  base: Float32Array[],
): Contribution {
  return { peerId, sampleCount, delta: subtractWeights(weights, base) }
}

function bitsOf(weights: Float32Array[]): string {
  return weights
    .map((w) => Buffer.from(w.buffer, w.byteOffset, w.byteLength).toString('hex'))
    .join()
}

/** A deterministic pseudo-random float32 array, so the test needs no seed library. */
function noise(length: number, seed: number): Float32Array {
  const values = new Float32Array(length)
  let state = seed
  for (let i = 0; i < length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0
    values[i] = (state / 2 ** 32 - 0.5) * 0.2
  }
  return values
}

describe('averageDeltas', () => {
  it('gives the same bits in any arrival order', () => {
    const base = [noise(500, 1), noise(3, 2)]
    const contributions = ['peerC', 'peerA', 'peerE', 'peerB', 'peerD'].map((peerId, i) => ({
      peerId,
      sampleCount: 100 + 37 * i,
      delta: [noise(500, 10 + i), noise(3, 20 + i)],
    }))
    const reference = bitsOf(averageDeltas(base, contributions))
    const orders = [
      [4, 3, 2, 1, 0],
      [2, 0, 4, 1, 3],
      [1, 4, 0, 3, 2],
    ]
    for (const order of orders) {
      const shuffled = order.map((i) => contributions[i] as Contribution)
      expect(bitsOf(averageDeltas(base, shuffled))).toBe(reference)
    }
  })

  it('lets a lone peer keep its own weights', () => {
    const base = [noise(500, 3), noise(3, 4)]
    // Values chosen so that base + (local - base) in float32 differs from local for some entries.
    const local = [noise(500, 5).map((v) => v * 1e3), noise(3, 6).map((v) => v * 1e-3)]
    const next = averageDeltas(base, [fromWeights('self', 600, local, base)], {
      peerId: 'self',
      weights: local,
    })
    expect(bitsOf(next)).toBe(bitsOf(local))
  })

  it('averages three peers holding 0, 3 and 6 to 3', () => {
    const base = constant(4, 1.5)
    const contributions = [0, 3, 6].map((value, i) =>
      fromWeights(`peer${i}`, 200, constant(4, value), base),
    )
    const next = averageDeltas(base, contributions)
    for (const tensor of next) {
      for (const value of tensor) expect(value).toBe(3)
    }
  })

  it('weights by sample count: 100 at 0 and 300 at 1 give 0.75', () => {
    const base = constant(4, 0.5)
    const next = averageDeltas(base, [
      fromWeights('small', 100, constant(4, 0), base),
      fromWeights('large', 300, constant(4, 1), base),
    ])
    for (const tensor of next) {
      for (const value of tensor) expect(value).toBe(0.75)
    }
  })

  it('returns the base when nothing arrived', () => {
    const base = constant(4, 0.25)
    expect(bitsOf(averageDeltas(base, []))).toBe(bitsOf(base))
  })

  it('rejects a delta with a missing tensor', () => {
    const base = constant(4, 0)
    const broken: Contribution = { peerId: 'p', sampleCount: 1, delta: [new Float32Array(4)] }
    expect(() => averageDeltas(base, [broken, { ...broken, peerId: 'q' }])).toThrow(/tensor 1/)
  })
})

/** Builds one contribution per value, whose delta has that value in every coordinate. */
function perValue(values: number[]): Contribution[] {
  return values.map((value, i) => ({
    peerId: `peer${i}`,
    // Different sample counts, which the per-coordinate rules must ignore.
    sampleCount: 100 * (i + 1),
    delta: constant(4, value),
  }))
}

function expectEvery(weights: Float32Array[], expected: number): void {
  for (const tensor of weights) {
    for (const value of tensor) expect(value).toBe(expected)
  }
}

const MEAN: AggregationRule = { name: 'mean' }
const MEDIAN: AggregationRule = { name: 'median' }

describe('aggregateDeltas', () => {
  it('trims 0 and 100 from [0, 1, 2, 100] to 1.5', () => {
    const next = aggregateDeltas(constant(4, 0), perValue([0, 1, 2, 100]), {
      rule: { name: 'trimmed-mean', trim: 1 },
      clipNorm: 0,
    })
    expectEvery(next, 1.5)
  })

  it('takes the median of [0, 3, 6, -1000] as 1.5', () => {
    const next = aggregateDeltas(constant(4, 0), perValue([0, 3, 6, -1000]), {
      rule: MEDIAN,
      clipNorm: 0,
    })
    expectEvery(next, 1.5)
  })

  it('takes the median of [5, -2, 9] as 5', () => {
    const next = aggregateDeltas(constant(4, 0.5), perValue([5, -2, 9]), {
      rule: MEDIAN,
      clipNorm: 0,
    })
    expectEvery(next, 5.5)
  })

  it('clips a delta of norm 10 to norm 1', () => {
    const base = [new Float32Array(2), new Float32Array(2)]
    const delta = [new Float32Array([6, 0]), new Float32Array([0, -8])]
    const next = aggregateDeltas(base, [{ peerId: 'p', sampleCount: 10, delta }], {
      rule: MEAN,
      clipNorm: 1,
    })
    expect([...(next[0] as Float32Array)]).toEqual([Math.fround(0.6), 0])
    expect([...(next[1] as Float32Array)]).toEqual([0, Math.fround(-0.8)])
  })

  it('leaves a delta within the clip norm unchanged', () => {
    const base = [new Float32Array(2), new Float32Array(2)]
    const delta = [new Float32Array([0.25, 0]), new Float32Array([0, -0.5])]
    const next = aggregateDeltas(base, [{ peerId: 'p', sampleCount: 10, delta }], {
      rule: MEAN,
      clipNorm: 1,
    })
    expect(bitsOf(next)).toBe(bitsOf(delta))
  })

  it('clips each delta before the median', () => {
    // The deltas have norms 1, 4 and 8 over the 7 coordinates of constant(4, ...). Clipped to
    // norm 1, their values are 1/sqrt(7), 1/sqrt(7) and -1/sqrt(7), so the median is 1/sqrt(7).
    const values = [1 / Math.sqrt(7), 4 / Math.sqrt(7), -8 / Math.sqrt(7)].map(Math.fround)
    const next = aggregateDeltas(constant(4, 0), perValue(values), { rule: MEDIAN, clipNorm: 1 })
    for (const tensor of next) {
      for (const value of tensor) expect(value).toBeCloseTo(1 / Math.sqrt(7), 6)
    }
  })

  it('weights clipped deltas by sample count under mean', () => {
    // 100 samples at 0.5 and 300 at 2, which clipping to norm 1 over one coordinate brings to 1.
    const base = [new Float32Array(1)]
    const next = aggregateDeltas(
      base,
      [
        { peerId: 'a', sampleCount: 100, delta: [new Float32Array([0.5])] },
        { peerId: 'b', sampleCount: 300, delta: [new Float32Array([2])] },
      ],
      { rule: MEAN, clipNorm: 1 },
    )
    expect(next[0]?.[0]).toBe(0.875)
  })

  it('falls back to the median when 2 * B leaves no value', () => {
    const contributions = perValue([0, 3, 6, -1000])
    const trimmed = aggregateDeltas(constant(4, 0), contributions, {
      rule: { name: 'trimmed-mean', trim: 2 },
      clipNorm: 0,
    })
    expectEvery(trimmed, 1.5)
  })

  const rules: [string, AggregationRule, number][] = [
    ['mean', MEAN, 0],
    ['mean with clipping', MEAN, 0.05],
    ['median', MEDIAN, 0],
    ['median with clipping', MEDIAN, 0.05],
    ['trimmed-mean:1', { name: 'trimmed-mean', trim: 1 }, 0],
    ['trimmed-mean:2 with clipping', { name: 'trimmed-mean', trim: 2 }, 0.05],
  ]
  for (const [label, rule, clipNorm] of rules) {
    it(`gives the same bits in any order: ${label}`, () => {
      const base = [noise(500, 1), noise(3, 2)]
      // Six peers, so the median takes the mean of two middle values.
      const contributions = ['peerC', 'peerA', 'peerF', 'peerE', 'peerB', 'peerD'].map(
        (peerId, i) => ({
          peerId,
          sampleCount: 100 + 37 * i,
          delta: [noise(500, 10 + i), noise(3, 20 + i)],
        }),
      )
      // A coordinate where -0 and +0 meet, whose sum depends on the order they are added in.
      ;(contributions[0]?.delta[1] as Float32Array)[0] = -0
      ;(contributions[1]?.delta[1] as Float32Array)[0] = 0
      const options = { rule, clipNorm }
      const reference = bitsOf(aggregateDeltas(base, contributions, options))
      const orders = [
        [5, 4, 3, 2, 1, 0],
        [2, 0, 4, 1, 5, 3],
        [1, 5, 0, 3, 2, 4],
      ]
      for (const order of orders) {
        const shuffled = order.map((i) => contributions[i] as Contribution)
        expect(bitsOf(aggregateDeltas(base, shuffled, options))).toBe(reference)
      }
    })
  }

  it('matches averageDeltas bit for bit under mean without clipping', () => {
    const base = [noise(500, 7), noise(3, 8)]
    const contributions = [0, 1, 2].map((i) => ({
      peerId: `peer${i}`,
      sampleCount: 50 + i,
      delta: [noise(500, 30 + i), noise(3, 40 + i)],
    }))
    expect(bitsOf(aggregateDeltas(base, contributions, { rule: MEAN, clipNorm: 0 }))).toBe(
      bitsOf(averageDeltas(base, contributions)),
    )
  })

  it('clips a lone local delta instead of keeping its weights', () => {
    const base = [new Float32Array([1]), new Float32Array([1])]
    const local = [new Float32Array([4]), new Float32Array([5])]
    const next = aggregateDeltas(base, [fromWeights('self', 10, local, base)], {
      rule: MEDIAN,
      clipNorm: 1,
      local: { peerId: 'self', weights: local },
    })
    // The delta (3, 4) has norm 5, so it shrinks to (0.6, 0.8).
    expect(next[0]?.[0]).toBe(Math.fround(1 + 0.6))
    expect(next[1]?.[0]).toBe(Math.fround(1 + 0.8))
  })
})

describe('aggregation in the spec', () => {
  it('parses each accepted form', () => {
    expect(parseAggregation('mean')).toEqual({ name: 'mean' })
    expect(parseAggregation('median')).toEqual({ name: 'median' })
    expect(parseAggregation('trimmed-mean:3')).toEqual({ name: 'trimmed-mean', trim: 3 })
  })

  for (const text of ['', 'Mean', 'trimmed-mean', 'trimmed-mean:0', 'trimmed-mean:1.5', 'max']) {
    it(`rejects '${text}'`, () => {
      expect(() => parseAggregation(text)).toThrow(UsageError)
      expect(() => parseAggregation(text)).toThrow(`got '${text}'`)
      expect(() => parseAggregation(text)).toThrow('trimmed-mean:B')
    })
  }

  it('hashes trimmed-mean:01 like trimmed-mean:1', () => {
    const spec = (aggregation: string) => validateSpec({ ...DEFAULT_SPEC, peers: 3, aggregation })
    const padded = spec('trimmed-mean:01')
    expect(padded.aggregation).toBe('trimmed-mean:1')
    expect(hashSpec(padded)).toEqual(hashSpec(spec('trimmed-mean:1')))
  })

  it('rejects a B that would trim every peer', () => {
    expect(() =>
      validateSpec({ ...DEFAULT_SPEC, peers: 4, aggregation: 'trimmed-mean:2' }),
    ).toThrow(/2 \* B < peers.*'trimmed-mean:2'/)
    expect(validateSpec({ ...DEFAULT_SPEC, peers: 5, aggregation: 'trimmed-mean:2' }).peers).toBe(5)
  })

  it('rejects a negative clipNorm', () => {
    expect(() => validateSpec({ ...DEFAULT_SPEC, clipNorm: -1 })).toThrow(UsageError)
  })

  it('takes --aggregation and --clip-norm from the command line', () => {
    const options = parsePeerOptions([
      '--peers',
      '3',
      '--aggregation',
      'trimmed-mean:1',
      '--clip-norm',
      '2.5',
    ])
    expect(options?.spec.aggregation).toBe('trimmed-mean:1')
    expect(options?.spec.clipNorm).toBe(2.5)
    const defaults = parsePeerOptions([])
    expect(defaults?.spec.aggregation).toBe('mean')
    expect(defaults?.spec.clipNorm).toBe(0)
  })

  it('rejects a bad --aggregation or --clip-norm', () => {
    expect(() => parsePeerOptions(['--aggregation', 'mode'])).toThrow(
      "Expected --aggregation to be mean, median or trimmed-mean:B (B an integer of at least 1), got 'mode'",
    )
    expect(() => parsePeerOptions(['--clip-norm=-1'])).toThrow(/--clip-norm.*got -1/)
    expect(() => parsePeerOptions(['--clip-norm', 'big'])).toThrow(/--clip-norm.*got 'big'/)
  })

  it('exits with code 2 on a bad --aggregation', () => {
    const cli = resolve(import.meta.dirname, '../../node/cli.ts')
    const child = spawnSync(process.execPath, [cli, '--aggregation', 'trimmed-mean:x'], {
      encoding: 'utf8',
    })
    expect(child.status).toBe(2)
    expect(child.stderr).toContain("got 'trimmed-mean:x'")
  })
})
