import * as tf from '@tensorflow/tfjs'
import { beforeAll, describe, expect, it } from 'vitest'
import { Random } from '../../data/index.ts'
import { selectBackend } from '../../node/backend.ts'
import { setQuiet } from '../../node/log.ts'
import { createOptimizer } from '../../node/optimizer.ts'
import { SimdUpdate } from '../../node/simd-update.ts'
import type { OptimizerName } from '../../node/spec.ts'

function randomArray(random: Random, size: number, scale: number): Float32Array {
  return Float32Array.from({ length: size }, () => (random.nextFloat() * 2 - 1) * scale)
}

/** The largest |a - b| over all elements, relative to the largest |b|. */
function largestRelativeError(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length)
  let difference = 0
  let scale = 0
  for (let i = 0; i < a.length; i++) {
    difference = Math.max(difference, Math.abs((a[i] as number) - (b[i] as number)))
    scale = Math.max(scale, Math.abs(b[i] as number))
  }
  return difference / scale
}

describe('SimdUpdate', () => {
  // Sizes below, at and above a vector of 4, and one like the mlp's first kernel.
  const sizes = [1, 3, 4, 7, 1001, 784 * 200]

  it('matches a float64 Adam over 5 steps for every size', () => {
    const random = new Random(11)
    const update = new SimdUpdate(sizes, true)
    const weights = sizes.map((size) => randomArray(random, size, 0.5))
    const m = sizes.map((size) => new Float64Array(size))
    const v = sizes.map((size) => new Float64Array(size))
    const expected = weights.map((w) => Float64Array.from(w))
    let largest = 0
    for (let step = 1; step <= 5; step++) {
      const rate = 0.01 * step
      const epsilon = 1e-7
      sizes.forEach((size, index) => {
        const gradient = randomArray(random, size, 2)
        const next = update.adam(
          index,
          gradient,
          weights[index] as Float32Array,
          0.9,
          0.999,
          rate,
          epsilon,
        )
        const want = expected[index] as Float64Array
        const mi = m[index] as Float64Array
        const vi = v[index] as Float64Array
        for (let j = 0; j < size; j++) {
          const g = gradient[j] as number
          mi[j] = 0.9 * (mi[j] as number) + 0.1 * g
          vi[j] = 0.999 * (vi[j] as number) + 0.001 * g * g
          want[j] =
            (want[j] as number) -
            (rate * (mi[j] as number)) / (Math.sqrt(vi[j] as number) + epsilon)
        }
        largest = Math.max(largest, largestRelativeError(next, Float32Array.from(want)))
        weights[index] = next
      })
    }
    expect(largest).toBeLessThan(1e-6)
  })

  it('computes w - rate * g for every size', () => {
    const random = new Random(12)
    const update = new SimdUpdate(sizes, false)
    let largest = 0
    sizes.forEach((size, index) => {
      const gradient = randomArray(random, size, 2)
      const weights = randomArray(random, size, 0.5)
      const next = update.sgd(index, gradient, weights, 0.1)
      const want = weights.map((w, j) => w - 0.1 * (gradient[j] as number))
      largest = Math.max(largest, largestRelativeError(next, want))
    })
    expect(largest).toBeLessThan(1e-6)
  })
})

describe('createOptimizer', () => {
  beforeAll(() => {
    setQuiet(true)
  })

  const cases: { backend: 'wasm' | 'cpu'; optimizer: OptimizerName }[] = [
    { backend: 'wasm', optimizer: 'adam' },
    { backend: 'wasm', optimizer: 'sgd' },
    { backend: 'cpu', optimizer: 'adam' },
    { backend: 'cpu', optimizer: 'sgd' },
  ]
  for (const { backend, optimizer: name } of cases) {
    it(`follows tf.train.${name} on ${backend} over 10 steps`, async () => {
      await selectBackend(backend)
      const random = new Random(13)
      const shapes = [[30, 20], [20], [5]]
      const initial = shapes.map((shape) => randomArray(random, tf.util.sizeFromShape(shape), 1))
      const tensorsBefore = tf.memory().numTensors
      const ours = initial.map((values, i) =>
        tf.tidy(() => tf.variable(tf.tensor(values, shapes[i]))),
      )
      const theirs = initial.map((values, i) =>
        tf.tidy(() => tf.variable(tf.tensor(values, shapes[i]))),
      )
      const optimizer = createOptimizer(name, ours, 0.01)
      const reference = name === 'adam' ? tf.train.adam(0.01) : tf.train.sgd(0.01)
      try {
        for (let step = 0; step < 10; step++) {
          const gradients = shapes.map((shape) =>
            tf.tensor(randomArray(random, tf.util.sizeFromShape(shape), 1), shape),
          )
          optimizer.apply(gradients)
          reference.applyGradients(
            theirs.map((variable, i) => ({
              name: variable.name,
              tensor: gradients[i] as tf.Tensor,
            })),
          )
          for (const gradient of gradients) gradient.dispose()
        }
        let largest = 0
        ours.forEach((variable, i) => {
          const want = (theirs[i] as tf.Variable).dataSync() as Float32Array
          largest = Math.max(
            largest,
            largestRelativeError(variable.dataSync() as Float32Array, want),
          )
        })
        expect(largest).toBeLessThan(1e-5)
        // The first weight moved, so the comparison is not between two untouched copies.
        expect(
          largestRelativeError(ours[0]?.dataSync() as Float32Array, initial[0] as Float32Array),
        ).toBeGreaterThan(1e-3)
      } finally {
        optimizer.dispose()
        reference.dispose()
        for (const variable of [...ours, ...theirs]) variable.dispose()
      }
      expect(tf.memory().numTensors).toBe(tensorsBefore)
    })
  }
})
