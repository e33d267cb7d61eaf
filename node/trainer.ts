import { setImmediate as yieldToEventLoop } from 'node:timers/promises'
import * as tf from '@tensorflow/tfjs'
import { deriveSeed, Random, shuffleInPlace } from '../data/index.ts'
import { buildModel } from './model.ts'
import { createOptimizer, type Optimizer } from './optimizer.ts'
import type { SwarmSpec } from './spec.ts'

const PIXELS = 784
const CLASSES = 10
const EVALUATION_BATCH = 2000
/** Milliseconds of training between yields, so gossipsub keeps serving while a peer trains. */
const YIELD_INTERVAL_MS = 50

/** Images scaled to [0, 1] (count x 784, row-major) and their labels. */
export interface Examples {
  count: number
  images: Float32Array
  labels: Uint8Array
}

/** Scales the selected rows of a uint8 IDX image array to float32 in [0, 1]. */
export function toExamples(pixels: Uint8Array, labels: Uint8Array, rows?: Uint32Array): Examples {
  const count = rows?.length ?? labels.length
  const images = new Float32Array(count * PIXELS)
  const selected = new Uint8Array(count)
  for (let i = 0; i < count; i++) {
    const row = rows === undefined ? i : (rows[i] as number)
    const source = row * PIXELS
    const target = i * PIXELS
    for (let p = 0; p < PIXELS; p++) images[target + p] = (pixels[source + p] as number) / 255
    selected[i] = labels[row] as number
  }
  return { count, images, labels: selected }
}

export interface EvaluationResult {
  accuracy: number
  loss: number
}

/**
 * One peer's model, optimiser and data.
 *
 * Each training step copies its mini-batch from the shard's typed arrays into one reused
 * buffer and uploads it, because a resident shard measured slower. With tfjs-backend-wasm 4.22
 * on a 2-core AMD EPYC machine, the upload takes about 20 us for 32 images. tf.gather of 32
 * rows of a resident 6000-image tensor takes about 1.5 ms, and tf.slice about 9 ms because
 * the wasm Slice kernel copies its whole input to JS. The step runs each layer's `call`, which
 * skips the symbolic checks of `model.apply`.
 */
export class Trainer {
  readonly model: tf.Sequential
  readonly shapes: number[][]
  private readonly variables: tf.Variable[]
  private readonly optimizer: Optimizer
  private readonly spec: SwarmSpec
  private readonly shard: Examples
  private readonly test: Examples
  private readonly peerIndex: number

  constructor(spec: SwarmSpec, shard: Examples, test: Examples, peerIndex: number) {
    this.spec = spec
    this.shard = shard
    this.test = test
    this.peerIndex = peerIndex
    this.model = buildModel(spec.model, spec.seed)
    this.variables = this.model.trainableWeights.map((weight) => {
      const value = weight.read()
      if (!(value instanceof tf.Variable)) {
        throw new TypeError(`Expected weight ${weight.name} to be held in a tf.Variable`)
      }
      return value
    })
    this.optimizer = createOptimizer(spec.optimizer, this.variables, spec.learningRate)
    this.shapes = this.model.getWeights().map((w) => [...w.shape])
  }

  get sampleCount(): number {
    return this.shard.count
  }

  /** Returns a copy of the current weights, one array per weight tensor in layer order. */
  getWeights(): Float32Array[] {
    return this.model
      .getWeights()
      .map((w) => w.dataSync() as Float32Array)
      .map((v) => v.slice())
  }

  setWeights(weights: Float32Array[]): void {
    const tensors = weights.map((values, i) => tf.tensor(values, this.shapes[i]))
    this.model.setWeights(tensors)
    for (const t of tensors) t.dispose()
  }

  /**
   * Trains `localEpochs` epochs on the shard, shuffled by a stream seeded from
   * (seed, peer index, round, epoch). Returns the mean training loss of the last epoch.
   */
  async train(round: number, signal?: AbortSignal): Promise<number> {
    const { batchSize } = this.spec
    const order = new Uint32Array(this.shard.count)
    const batchImages = new Float32Array(batchSize * PIXELS)
    const batchLabels = new Float32Array(batchSize * CLASSES)
    let meanLoss = 0
    for (let epoch = 0; epoch < this.spec.localEpochs; epoch++) {
      for (let i = 0; i < order.length; i++) order[i] = i
      const streamSeed = deriveSeed(this.spec.seed, `shuffle:${this.peerIndex}:${epoch}`, round)
      shuffleInPlace(order, new Random(streamSeed))
      // NOTE: reading each batch's loss waits for the step to finish. That costs nothing on
      // wasm, whose kernels run synchronously, but stalls a GPU backend's queue once per batch.
      // Keeping a running sum on the device would leave a tensor alive across yields, and
      // reading it at times set by the clock would make the loss depend on timing.
      let lossTotal = 0
      let batches = 0
      let lastYield = performance.now()
      for (let start = 0; start < order.length; start += batchSize) {
        const size = Math.min(batchSize, order.length - start)
        batchLabels.fill(0, 0, size * CLASSES)
        for (let j = 0; j < size; j++) {
          const row = order[start + j] as number
          batchImages.set(this.shard.images.subarray(row * PIXELS, (row + 1) * PIXELS), j * PIXELS)
          batchLabels[j * CLASSES + (this.shard.labels[row] as number)] = 1
        }
        const loss = this.step(
          batchImages.subarray(0, size * PIXELS),
          batchLabels.subarray(0, size * CLASSES),
          size,
        )
        lossTotal += loss.dataSync()[0] as number
        loss.dispose()
        batches++
        if (performance.now() - lastYield > YIELD_INTERVAL_MS) {
          await yieldToEventLoop()
          signal?.throwIfAborted()
          lastYield = performance.now()
        }
      }
      meanLoss = batches === 0 ? 0 : lossTotal / batches
    }
    return meanLoss
  }

  /** Runs one optimiser step on a mini-batch of `size` images and returns its mean loss. */
  private step(images: Float32Array, labels: Float32Array, size: number): tf.Scalar {
    return tf.tidy(() => {
      const xs = tf.tensor2d(images, [size, PIXELS])
      const ys = tf.tensor2d(labels, [size, CLASSES])
      const { value, grads } = tf.variableGrads(() => {
        let output: tf.Tensor = xs
        for (const layer of this.model.layers) {
          output = layer.call(output, { training: true }) as tf.Tensor
        }
        return tf.losses.softmaxCrossEntropy(ys, output) as tf.Scalar
      }, this.variables)
      this.optimizer.apply(this.variables.map((variable) => grads[variable.name] as tf.Tensor))
      return value
    })
  }

  /** Computes accuracy and mean cross-entropy on the test set, in chunks of 2000 images. */
  evaluate(): EvaluationResult {
    let correct = 0
    let lossSum = 0
    for (let start = 0; start < this.test.count; start += EVALUATION_BATCH) {
      const size = Math.min(EVALUATION_BATCH, this.test.count - start)
      const labels = this.test.labels.subarray(start, start + size)
      const [predicted, loss] = tf.tidy(() => {
        const xs = tf.tensor2d(this.test.images.subarray(start * PIXELS, (start + size) * PIXELS), [
          size,
          PIXELS,
        ])
        const ys = tf.oneHot(tf.tensor1d(Int32Array.from(labels), 'int32'), CLASSES)
        const logits = this.model.predict(xs, { batchSize: size }) as tf.Tensor
        const sum = tf.losses.softmaxCrossEntropy(
          ys,
          logits,
          undefined,
          undefined,
          tf.Reduction.SUM,
        )
        return [logits.argMax(1).dataSync(), sum.dataSync()[0] as number] as const
      })
      for (let i = 0; i < size; i++) if (predicted[i] === labels[i]) correct++
      lossSum += loss
    }
    return { accuracy: correct / this.test.count, loss: lossSum / this.test.count }
  }

  dispose(): void {
    this.optimizer.dispose()
    this.model.dispose()
  }
}
