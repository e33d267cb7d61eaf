import * as tf from '@tensorflow/tfjs'
import { beforeAll, describe, expect, it } from 'vitest'
import { Random } from '../../data/index.ts'
import { selectBackend } from '../../node/backend.ts'
import { setQuiet } from '../../node/log.ts'
import { createOptimizer } from '../../node/optimizer.ts'
import { instantiateKernels } from '../../node/simd-update.ts'
import type { OptimizerName } from '../../node/spec.ts'

function randomArray(random: Random, size: number, scale: number): Float32Array {
  return Float32Array.from({ length: size }, () => (random.nextFloat() * 2 - 1) * scale)
}

/** Returns the largest |a - b| over all elements. */
function largestDifference(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length)
  let difference = 0
  for (let i = 0; i < a.length; i++) {
    difference = Math.max(difference, Math.abs((a[i] as number) - (b[i] as number)))
  }
  return difference
}

/** Returns the largest |a - b| over all elements, relative to the largest |b|. */
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

/** Float arrays laid out one after another in a fresh WebAssembly memory, with a guard after each. */
function layOut(sizes: number[]): { memory: WebAssembly.Memory; offsets: number[] } {
  const guard = 4
  const offsets: number[] = []
  let offset = 0
  for (const size of sizes) {
    offsets.push(offset)
    offset += (size + guard) * 4
  }
  const memory = new WebAssembly.Memory({ initial: Math.ceil(offset / 65536) + 1 })
  new Float32Array(memory.buffer).fill(GUARD_VALUE)
  return { memory, offsets }
}

const GUARD_VALUE = 12345

describe('update kernels', () => {
  // Sizes below, at and above a vector of 4, and one like the mlp's first kernel.
  const sizes = [1, 3, 4, 7, 1001, 784 * 200]

  it('adam matches a float64 reference', () => {
    const random = new Random(11)
    let largest = 0
    for (const size of sizes) {
      // g, w, m, v, out
      const { memory, offsets } = layOut([size, size, size, size, size])
      const [g, w, m, v, out] = offsets as [number, number, number, number, number]
      const kernels = instantiateKernels(memory)
      const floats = new Float32Array(memory.buffer)
      floats.set(randomArray(random, size, 0.5), w / 4)
      floats.fill(0, m / 4, m / 4 + size)
      floats.fill(0, v / 4, v / 4 + size)
      const want = Float64Array.from(floats.subarray(w / 4, w / 4 + size))
      const wantM = new Float64Array(size)
      const wantV = new Float64Array(size)
      for (let step = 1; step <= 5; step++) {
        const rate = 0.01 * step
        const gradient = randomArray(random, size, 2)
        floats.set(gradient, g / 4)
        kernels.adam(g, w, m, v, out, size * 4, 0.9, 0.1, 0.999, 0.001, rate, 1e-7)
        floats.copyWithin(w / 4, out / 4, out / 4 + size)
        for (let j = 0; j < size; j++) {
          const gj = gradient[j] as number
          wantM[j] = 0.9 * (wantM[j] as number) + 0.1 * gj
          wantV[j] = 0.999 * (wantV[j] as number) + 0.001 * gj * gj
          want[j] =
            (want[j] as number) -
            (rate * (wantM[j] as number)) / (Math.sqrt(wantV[j] as number) + 1e-7)
        }
      }
      const result = floats.slice(out / 4, out / 4 + size)
      largest = Math.max(largest, largestDifference(result, Float32Array.from(want)))
      for (const start of [m, v, out]) {
        expect(floats[start / 4 + size]).toBe(GUARD_VALUE)
      }
    }
    expect(largest).toBeLessThan(1e-6)
  })

  it('sgd matches w - rate * g', () => {
    const random = new Random(12)
    let largest = 0
    for (const size of sizes) {
      const { memory, offsets } = layOut([size, size, size])
      const [g, w, out] = offsets as [number, number, number]
      const kernels = instantiateKernels(memory)
      const floats = new Float32Array(memory.buffer)
      const gradient = randomArray(random, size, 2)
      const weights = randomArray(random, size, 0.5)
      floats.set(gradient, g / 4)
      floats.set(weights, w / 4)
      kernels.sgd(g, w, out, size * 4, 0.1)
      const want = weights.map((x, j) => x - 0.1 * (gradient[j] as number))
      largest = Math.max(largest, largestDifference(floats.slice(out / 4, out / 4 + size), want))
      expect(floats[out / 4 + size]).toBe(GUARD_VALUE)
    }
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

  it('rejects a gradient of the wrong size on wasm', async () => {
    await selectBackend('wasm')
    const variable = tf.tidy(() => tf.variable(tf.ones([8])))
    const gradient = tf.ones([2])
    const optimizer = createOptimizer('sgd', [variable], 0.1)
    try {
      expect(() => optimizer.apply([gradient])).toThrow('Expected a tensor of 8 values, got 2')
      expect([...(variable.dataSync() as Float32Array)]).toEqual(new Array(8).fill(1))
    } finally {
      optimizer.dispose()
      tf.dispose([variable, gradient])
    }
  })

  it('updates wasm variables while cpu is active', async () => {
    await selectBackend('wasm')
    const variable = tf.tidy(() => tf.variable(tf.ones([6])))
    const gradient = tf.ones([6])
    const optimizer = createOptimizer('sgd', [variable], 0.5)
    try {
      await tf.setBackend('cpu')
      optimizer.apply([gradient])
      expect([...(variable.dataSync() as Float32Array)]).toEqual(new Array(6).fill(0.5))
    } finally {
      await tf.setBackend('wasm')
      optimizer.dispose()
      tf.dispose([variable, gradient])
    }
  })
})
