import * as tf from '@tensorflow/tfjs'
import type { ModelName } from './spec.ts'

/**
 * Builds the named model with weights drawn from `seed`, so every peer of a swarm starts from
 * identical weights. The last layer outputs logits; the loss applies the softmax.
 */
export function buildModel(name: ModelName, seed: number): tf.Sequential {
  switch (name) {
    case 'mlp':
      return denseStack([200, 200, 10], seed)
    case 'mlp-large':
      return denseStack([1536, 192, 10], seed)
  }
}

/** Builds dense layers of these widths on 784 inputs, ReLU on all but the last. */
function denseStack(widths: number[], seed: number): tf.Sequential {
  return tf.sequential({
    layers: widths.map((units, layer) =>
      tf.layers.dense({
        units,
        activation: layer < widths.length - 1 ? 'relu' : undefined,
        kernelInitializer: tf.initializers.glorotUniform({ seed: seed * 8 + layer }),
        biasInitializer: 'zeros',
        ...(layer === 0 ? { inputShape: [784] } : {}),
      }),
    ),
  })
}

/** Returns the SHA-256 (hex) of the weights' float32 bytes, in layer order. */
export async function hashWeights(weights: Float32Array[]): Promise<string> {
  const { createHash } = await import('node:crypto')
  const hash = createHash('sha256')
  for (const values of weights) {
    hash.update(new Uint8Array(values.buffer, values.byteOffset, values.byteLength))
  }
  return hash.digest('hex')
}
