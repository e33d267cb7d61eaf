// Timed training epochs and matrix products for the training benchmark.
import * as tf from '@tensorflow/tfjs'
import type { Mnist } from '../../data/index.ts'
import { buildModel } from '../../node/model.ts'
import { DEFAULT_SPEC, type ModelName, type SwarmSpec } from '../../node/spec.ts'
import { type Examples, Trainer, toExamples } from '../../node/trainer.ts'

const PIXELS = 784
const CLASSES = 10
const LEARNING_RATE = 0.001
/** Minimum time of one timed run of a matrix product shape, in milliseconds. */
const MATMUL_MIN_MS = 20
/** Minimum number of calls in one timed run. */
const MATMUL_MIN_CALLS = 3
/** Batches of the untimed epoch before each timed one, so that V8 has compiled the hot code. */
const WARM_BATCHES = 16
/** Timed runs per shape, of which the fastest counts, so that a busy moment does not. */
const MATMUL_RUNS = 5

/** The matrix product [m, k] x [k, n] that a layer's forward pass amounts to. */
export interface LayerProduct {
  layer: string
  m: number
  k: number
  n: number
}

/**
 * Lists the matrix products of a model's forward pass for `batchSize` images. A dense layer is
 * [batch, in] x [in, units]. A convolution is its im2col form, [batch * outH * outW,
 * kH * kW * inChannels] x [kH * kW * inChannels, filters]. Other layers do no matrix work.
 */
export function layerProducts(model: tf.Sequential, batchSize: number): LayerProduct[] {
  const products: LayerProduct[] = []
  for (const layer of model.layers) {
    const className = layer.getClassName()
    if (className !== 'Dense' && className !== 'Conv2D') continue
    const kernel = layer.getWeights()[0]
    if (kernel === undefined) continue
    const shape = kernel.shape
    const n = shape[shape.length - 1] as number
    const k = shape.slice(0, -1).reduce((product, size) => product * size, 1)
    const output = layer.outputShape as number[]
    const positions = className === 'Conv2D' ? (output[1] as number) * (output[2] as number) : 1
    products.push({ layer: layer.name, m: batchSize * positions, k, n })
  }
  return products
}

/** Floating-point operations of one forward pass per image: 2 * m * n * k per product. */
export function forwardFlopsPerSample(products: LayerProduct[], batchSize: number): number {
  return products.reduce((sum, { m, n, k }) => sum + 2 * m * n * k, 0) / batchSize
}

/**
 * Times tf.matMul on random operands of each shape and returns the combined GFLOP/s. Each shape
 * counts its fastest of MATMUL_RUNS timed runs.
 */
export function matMulGflops(products: LayerProduct[]): number {
  let flops = 0
  let milliseconds = 0
  for (const { m, k, n } of products) {
    const a = tf.randomUniform([m, k])
    const b = tf.randomUniform([k, n])
    const multiply = () => {
      const product = tf.matMul(a, b)
      product.dataSync()
      product.dispose()
    }
    try {
      // Two untimed calls let the backend allocate and compile what it needs.
      multiply()
      multiply()
      let fastest = Number.POSITIVE_INFINITY
      for (let run = 0; run < MATMUL_RUNS; run++) {
        let calls = 0
        const start = performance.now()
        while (calls < MATMUL_MIN_CALLS || performance.now() - start < MATMUL_MIN_MS) {
          multiply()
          calls++
        }
        fastest = Math.min(fastest, (performance.now() - start) / calls)
      }
      milliseconds += fastest
      flops += 2 * m * k * n
    } finally {
      a.dispose()
      b.dispose()
    }
  }
  return flops / milliseconds / 1e6
}

/** Returns the first `count` training images, scaled to [0, 1]. */
export function firstExamples(mnist: Mnist, count: number): Examples {
  const rows = Uint32Array.from({ length: count }, (_, i) => i)
  return toExamples(mnist.train.images, mnist.train.labels, rows)
}

function trainSpec(model: ModelName, batchSize: number, seed: number, count: number): SwarmSpec {
  return {
    ...DEFAULT_SPEC,
    model,
    batchSize,
    seed,
    trainSamples: count,
    optimizer: 'adam',
    learningRate: LEARNING_RATE,
    localEpochs: 1,
  }
}

/** Returns the first `count` examples of `examples`, sharing its arrays. */
function headOf(examples: Examples, count: number): Examples {
  return {
    count,
    images: examples.images.subarray(0, count * PIXELS),
    labels: examples.labels.subarray(0, count),
  }
}

/**
 * Times one epoch of Trainer.train on `examples` and returns samples per second and the mean
 * loss. An untimed epoch of up to WARM_BATCHES batches runs first, on a separate trainer.
 */
export async function timeTrainer(
  model: ModelName,
  batchSize: number,
  seed: number,
  examples: Examples,
  signal?: AbortSignal,
): Promise<{ samplesPerSecond: number; loss: number }> {
  const warmCount = Math.min(examples.count, WARM_BATCHES * batchSize)
  const warm = new Trainer(
    trainSpec(model, batchSize, seed, warmCount),
    headOf(examples, warmCount),
    headOf(examples, 1),
    0,
  )
  try {
    await warm.train(0, signal)
  } finally {
    warm.dispose()
  }
  const trainer = new Trainer(
    trainSpec(model, batchSize, seed, examples.count),
    examples,
    headOf(examples, 1),
    0,
  )
  try {
    const start = performance.now()
    const loss = await trainer.train(0, signal)
    const seconds = (performance.now() - start) / 1000
    return { samplesPerSecond: examples.count / seconds, loss }
  } finally {
    trainer.dispose()
  }
}

function labelTensor(labels: Uint8Array): tf.Tensor2D {
  return tf.tidy(() =>
    tf.oneHot(tf.tensor1d(Int32Array.from(labels), 'int32'), CLASSES).toFloat(),
  ) as tf.Tensor2D
}

/**
 * Times one epoch of a bare model.fit on `examples`, held as two resident tensors, and returns
 * samples per second and the mean loss. The fit shuffles, uses Adam with the same learning
 * rate and softmax cross-entropy on the logits. An untimed fit on up to WARM_BATCHES batches runs
 * first.
 */
export async function timeModelFit(
  model: ModelName,
  batchSize: number,
  seed: number,
  examples: Examples,
): Promise<{ samplesPerSecond: number; loss: number }> {
  const network = buildModel(model, seed)
  network.compile({
    optimizer: tf.train.adam(LEARNING_RATE),
    loss: (labels: tf.Tensor, logits: tf.Tensor) => tf.losses.softmaxCrossEntropy(labels, logits),
  })
  const xs = tf.tensor2d(examples.images, [examples.count, PIXELS])
  const ys = labelTensor(examples.labels)
  const warmCount = Math.min(examples.count, WARM_BATCHES * batchSize)
  const warmXs = xs.slice(0, warmCount)
  const warmYs = ys.slice(0, warmCount)
  try {
    await network.fit(warmXs, warmYs, { batchSize, epochs: 1, shuffle: true, verbose: 0 })
    const start = performance.now()
    const history = await network.fit(xs, ys, { batchSize, epochs: 1, shuffle: true, verbose: 0 })
    const seconds = (performance.now() - start) / 1000
    const losses = history.history.loss as number[]
    return { samplesPerSecond: examples.count / seconds, loss: losses[losses.length - 1] ?? 0 }
  } finally {
    tf.dispose([xs, ys, warmXs, warmYs])
    network.optimizer.dispose()
    network.dispose()
  }
}
