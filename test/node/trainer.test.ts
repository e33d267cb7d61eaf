import * as tf from '@tensorflow/tfjs'
import { beforeAll, describe, expect, it } from 'vitest'
import { loadMnist } from '../../data/index.ts'
import { selectBackend } from '../../node/backend.ts'
import { setQuiet } from '../../node/log.ts'
import { DEFAULT_SPEC, type ModelName, type OptimizerName } from '../../node/spec.ts'
import { type Examples, Trainer, toExamples } from '../../node/trainer.ts'

function firstRows(count: number): Uint32Array {
  return Uint32Array.from({ length: count }, (_, i) => i)
}

function concatenate(weights: Float32Array[]): Buffer {
  return Buffer.concat(weights.map((w) => Buffer.from(w.buffer, w.byteOffset, w.byteLength)))
}

let shard: Examples
let test: Examples

beforeAll(async () => {
  setQuiet(true)
  await selectBackend('wasm')
  const mnist = loadMnist()
  shard = toExamples(mnist.train.images, mnist.train.labels, firstRows(2000))
  test = toExamples(mnist.test.images, mnist.test.labels, firstRows(200))
})

function smallShard(count: number): Examples {
  return {
    count,
    images: shard.images.subarray(0, count * 784),
    labels: shard.labels.subarray(0, count),
  }
}

describe('Trainer', () => {
  const cases: { model: ModelName; optimizer: OptimizerName; samples: number }[] = [
    { model: 'mlp', optimizer: 'adam', samples: 256 },
    { model: 'mlp-wide', optimizer: 'adam', samples: 128 },
    { model: 'cnn-small', optimizer: 'sgd', samples: 64 },
  ]
  for (const { model, optimizer, samples } of cases) {
    it(`repeats ${model} with ${optimizer} bit for bit`, async () => {
      const spec = { ...DEFAULT_SPEC, model, optimizer, batchSize: 32, learningRate: 0.01 }
      const tensorsBefore = tf.memory().numTensors
      const first = new Trainer(spec, smallShard(samples), test, 3)
      const second = new Trainer(spec, smallShard(samples), test, 3)
      try {
        const initial = concatenate(first.getWeights())
        const tensorsAfterBuild = tf.memory().numTensors
        const firstLoss = await first.train(2)
        const secondLoss = await second.train(2)
        expect(tf.memory().numTensors).toBe(tensorsAfterBuild)

        expect(Number.isFinite(firstLoss)).toBe(true)
        expect(firstLoss).toBeGreaterThan(0)
        expect(secondLoss).toBe(firstLoss)
        const trained = concatenate(first.getWeights())
        expect(trained.equals(initial)).toBe(false)
        expect(concatenate(second.getWeights()).equals(trained)).toBe(true)
      } finally {
        first.dispose()
        second.dispose()
      }
      expect(tf.memory().numTensors).toBe(tensorsBefore)
    })
  }

  it('lowers the loss over rounds and evaluates', async () => {
    const trainer = new Trainer({ ...DEFAULT_SPEC, batchSize: 32 }, shard, test, 0)
    try {
      const before = trainer.evaluate()
      const firstLoss = await trainer.train(0)
      const secondLoss = await trainer.train(1)
      const after = trainer.evaluate()
      expect(secondLoss).toBeLessThan(firstLoss)
      expect(after.accuracy).toBeGreaterThan(before.accuracy)
      expect(after.accuracy).toBeGreaterThan(0.7)
      expect(Number.isFinite(after.loss)).toBe(true)
    } finally {
      trainer.dispose()
    }
  })

  it('differs by peer index', async () => {
    const spec = { ...DEFAULT_SPEC, batchSize: 32 }
    const first = new Trainer(spec, smallShard(128), test, 0)
    const second = new Trainer(spec, smallShard(128), test, 1)
    try {
      await first.train(0)
      await second.train(0)
      expect(concatenate(first.getWeights()).equals(concatenate(second.getWeights()))).toBe(false)
    } finally {
      first.dispose()
      second.dispose()
    }
  })

  it('stops on abort without leaking tensors', async () => {
    const trainer = new Trainer({ ...DEFAULT_SPEC, batchSize: 10, localEpochs: 5 }, shard, test, 0)
    try {
      const tensorsBefore = tf.memory().numTensors
      const controller = new AbortController()
      controller.abort(new Error('test abort'))
      // The loop checks the signal when it yields, after 50 ms of training.
      await expect(trainer.train(0, controller.signal)).rejects.toThrow('test abort')
      expect(tf.memory().numTensors).toBe(tensorsBefore)
    } finally {
      trainer.dispose()
    }
  })
})
