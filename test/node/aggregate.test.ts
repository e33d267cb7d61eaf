import { describe, expect, it } from 'vitest'
import { averageDeltas, type Contribution, subtractWeights } from '../../node/aggregate.ts'

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
