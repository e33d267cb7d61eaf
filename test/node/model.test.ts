import * as tf from '@tensorflow/tfjs'
import '@tensorflow/tfjs-backend-wasm'
import { beforeAll, describe, expect, it } from 'vitest'
import { buildModel } from '../../node/model.ts'
import { MODEL_NAMES, type ModelName } from '../../node/spec.ts'
import { registerWasmKernels } from '../../node/wasm-kernels.ts'

const PARAMETERS: Record<ModelName, number> = {
  mlp: 199_210,
  'mlp-large': 1_502_794,
  'mlp-wide': 669_706,
  cnn: 1_663_370,
  'cnn-small': 63_050,
}

const STEPS = 4
const BATCH = 32

function weightsOf(model: tf.Sequential): Float32Array[] {
  return model.getWeights().map((w) => w.dataSync() as Float32Array)
}

describe('buildModel', () => {
  beforeAll(async () => {
    await tf.setBackend('wasm')
    await tf.ready()
    registerWasmKernels()
  })

  it('lists a parameter count for every model', () => {
    expect(Object.keys(PARAMETERS).sort()).toEqual([...MODEL_NAMES].sort())
  })

  it.each(MODEL_NAMES)('%s has the documented parameter count', (name) => {
    const model = buildModel(name, 1)
    expect(model.countParams()).toBe(PARAMETERS[name])
    expect(model.outputs[0]?.shape).toEqual([null, 10])
    model.dispose()
  })

  it.each(MODEL_NAMES)('%s gets identical weights from one seed', (name) => {
    const first = buildModel(name, 7)
    const second = buildModel(name, 7)
    const other = buildModel(name, 8)
    const a = weightsOf(first)
    const b = weightsOf(second)
    expect(b.length).toBe(a.length)
    for (let i = 0; i < a.length; i++) expect(b[i]).toEqual(a[i])
    expect(weightsOf(other)[0]).not.toEqual(a[0])
    for (const model of [first, second, other]) model.dispose()
  })

  it.each(MODEL_NAMES)('%s trains on wasm without leaking tensors', (name) => {
    const start = tf.memory().numTensors
    const model = buildModel(name, 1)
    const optimizer = tf.train.adam(0.001)
    const xs = tf.randomUniform([BATCH, 784], 0, 1, 'float32', 5)
    const ys = tf.tidy(() =>
      tf.oneHot(tf.randomUniform([BATCH], 0, 10, 'int32', 6) as tf.Tensor1D, 10),
    )
    const losses: number[] = []
    const counts: number[] = []
    const began = performance.now()
    for (let step = 0; step < STEPS; step++) {
      const loss = tf.tidy((): tf.Scalar => {
        const cost = optimizer.minimize(
          () =>
            tf.losses.softmaxCrossEntropy(
              ys,
              model.apply(xs, { training: true }) as tf.Tensor,
            ) as tf.Scalar,
          true,
        )
        if (cost === null) throw new Error('Expected minimize to return the loss')
        return cost
      })
      losses.push(loss.dataSync()[0] as number)
      loss.dispose()
      counts.push(tf.memory().numTensors)
    }
    const perStep = (performance.now() - began) / STEPS
    console.log(
      `${name} on wasm: ${perStep.toFixed(0)} ms per step of ${BATCH}, losses ${losses.map((l) => l.toFixed(3)).join(' ')}`,
    )
    expect(tf.getBackend()).toBe('wasm')
    // The optimiser creates its slots in the first step; later steps keep the count.
    expect(counts[STEPS - 1]).toBe(counts[1])
    expect(losses[STEPS - 1]).toBeLessThan(losses[0] as number)
    tf.dispose([xs, ys])
    optimizer.dispose()
    model.dispose()
    expect(tf.memory().numTensors).toBe(start)
  })

  it('draws a new seeded dropout mask for every training call', () => {
    const first = buildModel('mlp-wide', 3)
    const second = buildModel('mlp-wide', 3)
    tf.tidy(() => {
      const xs = tf.randomUniform([4, 784], 0, 1, 'float32', 9)
      const inference = (first.apply(xs) as tf.Tensor).dataSync()
      const call1 = (first.apply(xs, { training: true }) as tf.Tensor).dataSync()
      const call2 = (first.apply(xs, { training: true }) as tf.Tensor).dataSync()
      const repeat1 = (second.apply(xs, { training: true }) as tf.Tensor).dataSync()
      expect(call1).not.toEqual(inference)
      expect(call2).not.toEqual(call1)
      expect(repeat1).toEqual(call1)
      expect((first.predict(xs) as tf.Tensor).dataSync()).toEqual(inference)
    })
    first.dispose()
    second.dispose()
  })
})
