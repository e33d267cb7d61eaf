import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import * as tf from '@tensorflow/tfjs'
import { afterAll, describe, expect, it } from 'vitest'
import { loadMnist } from '../../data/index.ts'
import {
  type ExportedRun,
  exportedRunOf,
  fileSystemHandler,
  loadModel,
  MODEL_JSON,
  saveModel,
} from '../../node/export.ts'
import { buildModel, hashWeights } from '../../node/model.ts'
import { DEFAULT_SPEC, MODEL_NAMES, type ModelName } from '../../node/spec.ts'
import { type Examples, Trainer, toExamples } from '../../node/trainer.ts'
import { checkTensorLeaks } from './peers.ts'

const CLI = resolve(import.meta.dirname, '../../node/cli.ts')
const PIXELS = 784
const EVALUATION_BATCH = 2000
const TRAIN_SAMPLES = 2000
const ROUNDS = 2

checkTensorLeaks()
const mnist = loadMnist()
const testSet = toExamples(mnist.test.images, mnist.test.labels)
const folder = mkdtempSync(join(tmpdir(), 'dlearn-export-'))

afterAll(() => {
  rmSync(folder, { recursive: true, force: true })
})

function firstRows(count: number): Uint32Array {
  return Uint32Array.from({ length: count }, (_, i) => i)
}

async function weightsHash(model: tf.LayersModel): Promise<string> {
  return hashWeights(model.getWeights().map((w) => w.dataSync() as Float32Array))
}

/** Fraction of `examples` whose largest logit is at their label, predicted in chunks. */
function accuracyOf(model: tf.LayersModel, examples: Examples): number {
  let correct = 0
  for (let start = 0; start < examples.count; start += EVALUATION_BATCH) {
    const size = Math.min(EVALUATION_BATCH, examples.count - start)
    const predicted = tf.tidy(() => {
      const images = examples.images.subarray(start * PIXELS, (start + size) * PIXELS)
      const logits = model.predict(tf.tensor2d(images, [size, PIXELS]), { batchSize: size })
      return (logits as tf.Tensor).argMax(1).dataSync()
    })
    for (let i = 0; i < size; i++) if (predicted[i] === examples.labels[start + i]) correct++
  }
  return correct / examples.count
}

function logitsOf(model: tf.LayersModel, count: number): Float32Array {
  return tf.tidy(() => {
    const images = tf.tensor2d(testSet.images.subarray(0, count * PIXELS), [count, PIXELS])
    return (model.predict(images) as tf.Tensor).dataSync() as Float32Array
  })
}

function freshFolder(name: string): string {
  return join(folder, name)
}

describe('model export', () => {
  it.each<ModelName>(['mlp', 'mlp-wide'])('%s keeps its evaluated accuracy', async (name) => {
    const spec = { ...DEFAULT_SPEC, model: name, trainSamples: TRAIN_SAMPLES }
    const shard = toExamples(mnist.train.images, mnist.train.labels, firstRows(TRAIN_SAMPLES))
    const trainer = new Trainer(spec, shard, testSet, 0)
    const target = freshFolder(`trained-${name}`)
    try {
      for (let round = 0; round < ROUNDS; round++) await trainer.train(round)
      const evaluation = trainer.evaluate()
      const modelHash = await hashWeights(trainer.getWeights())
      const run: ExportedRun = {
        model: name,
        rounds: ROUNDS,
        accuracy: evaluation.accuracy,
        testSamples: testSet.count,
        modelHash,
      }
      await saveModel(trainer.model, target, run)

      const loaded = await tf.loadLayersModel(fileSystemHandler(target))
      try {
        expect(await weightsHash(loaded)).toBe(modelHash)
        expect(accuracyOf(loaded, testSet)).toBe(evaluation.accuracy)
        expect(exportedRunOf(loaded)).toEqual(run)
        // A trained model does far better than chance, so the comparison above means something.
        expect(evaluation.accuracy).toBeGreaterThan(0.8)
      } finally {
        loaded.dispose()
      }
    } finally {
      trainer.dispose()
    }
  })

  it.each(MODEL_NAMES)('%s loads with its layers and weights', async (name) => {
    const model = buildModel(name, 3)
    const target = freshFolder(`built-${name}`)
    try {
      await saveModel(model, target)
      const loaded = await loadModel(target)
      try {
        const classNames = (m: tf.LayersModel) => m.layers.map((layer) => layer.getClassName())
        expect(classNames(loaded)).toEqual(classNames(model))
        expect(await weightsHash(loaded)).toBe(await weightsHash(model))
        expect(logitsOf(loaded, 50)).toEqual(logitsOf(model, 50))
        expect(exportedRunOf(loaded)).toBeUndefined()
      } finally {
        loaded.dispose()
      }
    } finally {
      model.dispose()
    }
  })

  it('writes model.json in the TF.js layers format', async () => {
    const model = buildModel('mlp', 1)
    const target = freshFolder('format')
    const modelHash = await weightsHash(model)
    try {
      await saveModel(model, target)
    } finally {
      model.dispose()
    }
    const json = JSON.parse(readFileSync(join(target, MODEL_JSON), 'utf8'))
    expect(json.format).toBe('layers-model')
    expect(json.modelTopology.class_name).toBe('Sequential')
    expect(json.weightsManifest).toHaveLength(1)
    const [weightsName] = json.weightsManifest[0].paths
    expect(weightsName).toBe(`weights.${modelHash.slice(0, 16)}.bin`)
    const floats = 199_210
    expect(readFileSync(join(target, weightsName)).byteLength).toBe(floats * 4)
  })

  it('replaces the weights of an earlier save', async () => {
    const target = freshFolder('replace')
    const first = buildModel('mlp', 1)
    const second = buildModel('mlp', 2)
    try {
      await saveModel(first, target)
      await saveModel(second, target)
      const names = readdirSync(target).sort()
      expect(names).toHaveLength(2)
      expect(names[0]).toBe(MODEL_JSON)
      expect(names[1]).toMatch(/^weights\.[0-9a-f]{16}\.bin$/)
      const loaded = await loadModel(target)
      expect(await weightsHash(loaded)).toBe(await weightsHash(second))
      loaded.dispose()
    } finally {
      first.dispose()
      second.dispose()
    }
  })
})

describe('model folder errors', () => {
  /** Saves a small model to a new folder and returns the folder and its weights file name. */
  async function savedFolder(name: string): Promise<{ target: string; weightsName: string }> {
    const target = freshFolder(name)
    const model = buildModel('cnn-small', 1)
    await saveModel(model, target)
    model.dispose()
    const json = JSON.parse(readFileSync(join(target, MODEL_JSON), 'utf8'))
    return { target, weightsName: json.weightsManifest[0].paths[0] }
  }

  function editModelJson(target: string, edit: (json: Record<string, unknown>) => unknown) {
    const path = join(target, MODEL_JSON)
    writeFileSync(path, JSON.stringify(edit(JSON.parse(readFileSync(path, 'utf8')))))
  }

  it('rejects a missing folder', async () => {
    const missing = freshFolder('missing')
    const load = loadModel(missing)
    await expect(load).rejects.toThrow(`Model folder ${missing} not found`)
    await expect(load).rejects.toMatchObject({ name: 'ModelFolderError' })
  })

  it('rejects a folder without model.json', async () => {
    const { target } = await savedFolder('no-json')
    rmSync(join(target, MODEL_JSON))
    const load = loadModel(target)
    await expect(load).rejects.toThrow(`has no file ${join(target, MODEL_JSON)}`)
    await expect(load).rejects.toMatchObject({ name: 'ModelFolderError' })
  })

  it('rejects a missing weights file', async () => {
    const { target, weightsName } = await savedFolder('no-weights')
    rmSync(join(target, weightsName))
    const load = loadModel(target)
    await expect(load).rejects.toThrow(`has no file ${join(target, weightsName)}`)
    await expect(load).rejects.toMatchObject({ name: 'ModelFolderError' })
  })

  it('rejects truncated weights', async () => {
    const { target, weightsName } = await savedFolder('truncated')
    const path = join(target, weightsName)
    const bytes = readFileSync(path)
    writeFileSync(path, bytes.subarray(0, bytes.byteLength - 4))
    const load = loadModel(target)
    await expect(load).rejects.toThrow(
      `contain ${bytes.byteLength - 4} bytes, but model.json lists weights of ${bytes.byteLength} bytes`,
    )
    await expect(load).rejects.toMatchObject({ name: 'ModelFolderError' })
  })

  it('rejects invalid JSON', async () => {
    const { target } = await savedFolder('invalid-json')
    writeFileSync(join(target, MODEL_JSON), '{"modelTopology": ')
    const load = loadModel(target)
    await expect(load).rejects.toThrow('is not valid JSON')
    await expect(load).rejects.toMatchObject({ name: 'ModelFolderError' })
  })

  it('rejects JSON without a topology', async () => {
    const { target } = await savedFolder('no-topology')
    editModelJson(target, (json) => ({ ...json, modelTopology: undefined }))
    await expect(loadModel(target)).rejects.toThrow('has no layers-model topology')
  })

  it('rejects a malformed weights manifest', async () => {
    const { target } = await savedFolder('bad-manifest')
    editModelJson(target, (json) => ({ ...json, weightsManifest: [{ paths: 'weights.bin' }] }))
    await expect(loadModel(target)).rejects.toThrow('has no valid weightsManifest')
  })

  it('rejects weights paths outside the folder', async () => {
    const { target, weightsName } = await savedFolder('escape')
    for (const path of [`../escape/${weightsName}`, join(target, weightsName)]) {
      editModelJson(target, (json) => {
        const manifest = json.weightsManifest as { paths: string[] }[]
        return { ...json, weightsManifest: [{ ...manifest[0], paths: [path] }] }
      })
      const load = loadModel(target)
      await expect(load).rejects.toThrow(`the weights path '${path}', which leads outside`)
      await expect(load).rejects.toMatchObject({ name: 'ModelFolderError' })
    }
  })
})

async function runPeer(args: string[]): Promise<{ code: number; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString()
  })
  const [code] = await once(child, 'exit')
  return { code: code as number, stderr }
}

describe('npm run peer --save-model', () => {
  it('saves the model whose accuracy the run reported', async () => {
    const target = freshFolder('peer-model')
    const metricsPath = join(folder, 'peer-metrics.jsonl')
    const testSamples = 1000
    const { code, stderr } = await runPeer([
      '--peers',
      '1',
      '--rounds',
      '1',
      '--train-samples',
      String(TRAIN_SAMPLES),
      '--test-samples',
      String(testSamples),
      '--backend',
      'wasm',
      '--quiet',
      '--metrics',
      metricsPath,
      '--save-model',
      target,
    ])
    expect(code, stderr).toBe(0)
    const lines = readFileSync(metricsPath, 'utf8').trim().split('\n')
    const last = JSON.parse(lines.at(-1) as string) as { accuracy: number; modelHash: string }

    const loaded = await tf.loadLayersModel(fileSystemHandler(target))
    try {
      expect(await weightsHash(loaded)).toBe(last.modelHash)
      const head = toExamples(mnist.test.images, mnist.test.labels, firstRows(testSamples))
      expect(accuracyOf(loaded, head)).toBe(last.accuracy)
      expect(exportedRunOf(loaded)).toEqual({
        model: 'mlp',
        rounds: 1,
        accuracy: last.accuracy,
        testSamples,
        modelHash: last.modelHash,
      })
    } finally {
      loaded.dispose()
    }
  })

  it('rejects a folder it cannot create', async () => {
    const file = join(folder, 'a-file')
    writeFileSync(file, '')
    const { code, stderr } = await runPeer(['--save-model', join(file, 'model')])
    expect(code).toBe(2)
    expect(stderr).toContain(`Invalid --save-model '${join(file, 'model')}'`)
  })
})
