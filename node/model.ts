import * as tf from '@tensorflow/tfjs'
import type { ModelName } from './spec.ts'

const IMAGE_SIDE = 28

/**
 * Builds the named model with weights drawn from `seed`, so every peer of a swarm starts from
 * identical weights. Every model takes flat [batch, 784] images; the CNNs reshape them to
 * 28x28x1 themselves. The last layer outputs logits; the loss applies the softmax.
 */
export function buildModel(name: ModelName, seed: number): tf.Sequential {
  switch (name) {
    case 'mlp':
      return denseStack([200, 200, 10], seed)
    case 'mlp-large':
      return denseStack([1536, 192, 10], seed)
    case 'mlp-wide':
      return denseStack([512, 512, 10], seed, 0.2)
    case 'cnn':
      return convolutionalNetwork(
        [
          { filters: 32, kernelSize: 5 },
          { filters: 64, kernelSize: 5 },
        ],
        [512, 10],
        seed,
      )
    case 'cnn-small':
      return convolutionalNetwork([{ filters: 32, kernelSize: 3 }], [10], seed)
  }
}

/**
 * Returns the seed of the initial kernel of the model's `index`-th layer with weights. 'mlp' and
 * 'mlp-large' have always used `seed * 8 + index`, so their initial weights and hashes are kept.
 */
function kernelSeed(seed: number, index: number): number {
  return seed * 8 + index
}

/**
 * Builds dense layers of these widths on 784 inputs, ReLU on all but the last, with dropout of
 * `dropoutRate` after each hidden layer when it is above 0.
 */
function denseStack(widths: number[], seed: number, dropoutRate = 0): tf.Sequential {
  const model = tf.sequential()
  widths.forEach((units, index) => {
    const hidden = index < widths.length - 1
    model.add(
      tf.layers.dense({
        units,
        activation: hidden ? 'relu' : undefined,
        kernelInitializer: tf.initializers.glorotUniform({ seed: kernelSeed(seed, index) }),
        biasInitializer: 'zeros',
        ...(index === 0 ? { inputShape: [IMAGE_SIDE * IMAGE_SIDE] } : {}),
      }),
    )
    if (hidden && dropoutRate > 0) {
      model.add(new SeededDropout({ rate: dropoutRate, seed: `${seed}:dropout:${index}` }))
    }
  })
  return model
}

interface ConvolutionSpec {
  filters: number
  kernelSize: number
}

/**
 * Builds a CNN on flat 784 inputs: a reshape to 28x28x1, then per entry of `convolutions` a
 * 'same'-padded ReLU convolution and 2x2 max-pooling, then dense layers of `widths`, ReLU on
 * all but the last.
 */
function convolutionalNetwork(
  convolutions: ConvolutionSpec[],
  widths: number[],
  seed: number,
): tf.Sequential {
  const model = tf.sequential()
  model.add(
    tf.layers.reshape({
      targetShape: [IMAGE_SIDE, IMAGE_SIDE, 1],
      inputShape: [IMAGE_SIDE * IMAGE_SIDE],
    }),
  )
  let weighted = 0
  for (const { filters, kernelSize } of convolutions) {
    model.add(
      tf.layers.conv2d({
        filters,
        kernelSize,
        padding: 'same',
        activation: 'relu',
        kernelInitializer: tf.initializers.glorotUniform({ seed: kernelSeed(seed, weighted++) }),
        biasInitializer: 'zeros',
      }),
    )
    model.add(tf.layers.maxPooling2d({ poolSize: 2, strides: 2 }))
  }
  model.add(tf.layers.flatten())
  widths.forEach((units, index) => {
    model.add(
      tf.layers.dense({
        units,
        activation: index < widths.length - 1 ? 'relu' : undefined,
        kernelInitializer: tf.initializers.glorotUniform({ seed: kernelSeed(seed, weighted++) }),
        biasInitializer: 'zeros',
      }),
    )
  })
  return model
}

interface SeededDropoutArgs {
  /** Fraction of the inputs set to zero while training, from 0 up to but not including 1. */
  rate: number
  /** Seed of the mask stream. */
  seed: string
  name?: string
}

/**
 * Dropout whose masks come from a seeded stream: the n-th training call of a layer draws its
 * mask from seed `${seed}:${n}`. A peer that runs the same batches therefore trains to the same
 * bits, which tf.layers.dropout does not promise: unseeded it draws from Math.random, and with
 * a seed it reuses one mask for every batch. Outside training the layer passes its input on.
 *
 * NOTE: the call counter starts at 0 in every new instance, so a peer that restores a
 * checkpoint draws masks that differ from those of a peer that trained without a restart.
 */
export class SeededDropout extends tf.layers.Layer {
  static className = 'SeededDropout'
  readonly rate: number
  readonly seed: string
  private calls = 0

  constructor(args: SeededDropoutArgs) {
    super({ name: args.name })
    if (!Number.isFinite(args.rate) || args.rate < 0 || args.rate >= 1) {
      throw new RangeError(`Expected dropout rate to be in [0, 1), got ${args.rate}`)
    }
    this.rate = args.rate
    this.seed = args.seed
  }

  override call(inputs: tf.Tensor | tf.Tensor[], kwargs: Record<string, unknown>): tf.Tensor {
    const input = Array.isArray(inputs) ? inputs[0] : inputs
    if (input === undefined) throw new TypeError('SeededDropout expected one input tensor')
    if (kwargs.training !== true || this.rate === 0) return tf.clone(input)
    const maskSeed = `${this.seed}:${this.calls++}`
    return tf.dropout(input, this.rate, undefined, maskSeed)
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), rate: this.rate, seed: this.seed }
  }
}
tf.serialization.registerClass(SeededDropout)

/** Returns the SHA-256 (hex) of the weights' float32 bytes, in layer order. */
export async function hashWeights(weights: Float32Array[]): Promise<string> {
  const { createHash } = await import('node:crypto')
  const hash = createHash('sha256')
  for (const values of weights) {
    hash.update(new Uint8Array(values.buffer, values.byteOffset, values.byteLength))
  }
  return hash.digest('hex')
}
