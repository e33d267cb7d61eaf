import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import * as tf from '@tensorflow/tfjs'
import { PNG } from 'pngjs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadMnist } from '../../data/index.ts'
import { loadModel, MODEL_JSON, saveModel } from '../../node/export.ts'
import { DEFAULT_SPEC } from '../../node/spec.ts'
import { Trainer, toExamples } from '../../node/trainer.ts'
import { predictDigit, readDigitImage } from '../../scripts/predict.ts'
import { checkTensorLeaks } from '../node/peers.ts'

const REPO_ROOT = resolve(import.meta.dirname, '../..')
const NODE = join(REPO_ROOT, 'node_modules/.bin/node')
const SCRIPT = join(REPO_ROOT, 'scripts/predict.ts')
const SIDE = 28
const PIXELS = SIDE * SIDE
const TRAIN_SAMPLES = 3000
/** Test images searched for digits that the model reads right. */
const CANDIDATES = 200

checkTensorLeaks()
const mnist = loadMnist()
const folder = mkdtempSync(join(tmpdir(), 'dlearn-predict-'))
const modelFolder = join(folder, 'model')
/** Test images, each of another digit, that the saved model reads right with probability > 0.9. */
const confident: { index: number; label: number }[] = []

beforeAll(async () => {
  const rows = Uint32Array.from({ length: TRAIN_SAMPLES }, (_, i) => i)
  const shard = toExamples(mnist.train.images, mnist.train.labels, rows)
  const test = toExamples(mnist.test.images, mnist.test.labels)
  const trainer = new Trainer({ ...DEFAULT_SPEC, trainSamples: TRAIN_SAMPLES }, shard, test, 0)
  try {
    await trainer.train(0)
    await saveModel(trainer.model, modelFolder)
  } finally {
    trainer.dispose()
  }
  const model = await loadModel(modelFolder)
  try {
    const seen = new Set<number>()
    for (let index = 0; index < CANDIDATES && confident.length < 3; index++) {
      const label = mnist.test.labels[index] as number
      if (seen.has(label)) continue
      const pixels = test.images.subarray(index * PIXELS, (index + 1) * PIXELS)
      const { digit, probability } = predictDigit(model, pixels)
      if (digit !== label || probability <= 0.9) continue
      seen.add(label)
      confident.push({ index, label })
    }
  } finally {
    model.dispose()
  }
  expect(confident).toHaveLength(3)
})

afterAll(() => {
  rmSync(folder, { recursive: true, force: true })
})

/** Returns the MNIST test image `index` as bytes, 0 black to 255 white. */
function mnistDigit(index: number): Uint8Array {
  return mnist.test.images.subarray(index * PIXELS, (index + 1) * PIXELS)
}

/**
 * Writes the digit as a PNG of `scale` times its size. `paint` maps a pixel byte to RGBA.
 * `colorType` is the PNG colour type: 0 grey, 2 RGB, 6 RGBA.
 */
function writeDigitPng(
  name: string,
  digit: Uint8Array,
  options: { scale?: number; colorType: 0 | 2 | 6; paint: (value: number) => number[] },
): string {
  const scale = options.scale ?? 1
  const side = SIDE * scale
  const png = new PNG({ width: side, height: side })
  for (let y = 0; y < side; y++) {
    for (let x = 0; x < side; x++) {
      const value = digit[Math.floor(y / scale) * SIDE + Math.floor(x / scale)] as number
      png.data.set(options.paint(value), (y * side + x) * 4)
    }
  }
  const path = join(folder, name)
  writeFileSync(path, PNG.sync.write(png, { colorType: options.colorType }))
  return path
}

function runCommand(
  command: string,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = spawn(command, args, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString()
  })
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString()
  })
  return once(child, 'exit').then(([code]) => ({ code: code as number, stdout, stderr }))
}

function predict(args: string[]) {
  return runCommand(NODE, [SCRIPT, ...args])
}

const whiteOnBlack = (value: number) => [value, value, value, 255]

describe('readDigitImage', () => {
  it('reads a 28x28 grey PNG as MNIST pixels', () => {
    const digit = mnistDigit(0)
    const path = writeDigitPng('exact.png', digit, { colorType: 0, paint: whiteOnBlack })
    const image = readDigitImage(path)
    expect(image.inverted).toBe(false)
    expect(image.pixels).toEqual(Float32Array.from(digit, (value) => value / 255))
  })
})

describe('npm run predict', () => {
  it('prints the label of grey test digits', async () => {
    for (const { index, label } of confident) {
      const path = writeDigitPng(`digit-${index}.png`, mnistDigit(index), {
        colorType: 0,
        paint: whiteOnBlack,
      })
      const { code, stdout, stderr } = await predict([modelFolder, path])
      expect(code, stderr).toBe(0)
      expect(stdout).toMatch(new RegExp(`^digit ${label}, probability (0|1)\\.\\d{4}$`, 'm'))
      expect(stdout).not.toContain('inverted')
      // The model, the image and the digit, with no warning from TensorFlow.js in between.
      expect(stdout.trim().split('\n')).toHaveLength(3)
    }
  })

  it('inverts and resizes a black-on-white RGB image', async () => {
    const { index, label } = confident[0] as { index: number; label: number }
    const path = writeDigitPng('light.png', mnistDigit(index), {
      scale: 3,
      colorType: 2,
      paint: (value) => [255 - value, 255 - value, 255 - value, 255],
    })
    const { code, stdout, stderr } = await predict([join(modelFolder, MODEL_JSON), path])
    expect(code, stderr).toBe(0)
    expect(stdout).toContain('84x84, light background')
    expect(stdout).toContain('inverted to white on black')
    expect(stdout).toMatch(new RegExp(`^digit ${label}, `, 'm'))
  })

  it('reads black strokes on a transparent background', async () => {
    const { index, label } = confident[1] as { index: number; label: number }
    const path = writeDigitPng('transparent.png', mnistDigit(index), {
      scale: 2,
      colorType: 6,
      paint: (value) => [0, 0, 0, value],
    })
    const { code, stdout, stderr } = await predict([modelFolder, path])
    expect(code, stderr).toBe(0)
    expect(stdout).toContain('inverted')
    expect(stdout).toMatch(new RegExp(`^digit ${label}, `, 'm'))
  })

  it('runs as an npm script', async () => {
    const { index, label } = confident[2] as { index: number; label: number }
    const path = writeDigitPng('npm.png', mnistDigit(index), { colorType: 0, paint: whiteOnBlack })
    const { code, stdout, stderr } = await runCommand('npm', [
      'run',
      '--silent',
      'predict',
      '--',
      modelFolder,
      path,
    ])
    expect(code, stderr).toBe(0)
    expect(stdout).toMatch(new RegExp(`^digit ${label}, `, 'm'))
  })

  it('exits with code 2 on invalid input', async () => {
    const image = writeDigitPng('valid.png', mnistDigit(0), { colorType: 0, paint: whiteOnBlack })
    const notPng = join(folder, 'not-a.png')
    writeFileSync(notPng, 'this is text\n')
    const emptyFolder = join(folder, 'empty')
    mkdirSync(emptyFolder)
    const otherModel = join(folder, 'other-model')
    const small = tf.sequential({ layers: [tf.layers.dense({ units: 10, inputShape: [3] })] })
    await saveModel(small, otherModel)
    small.dispose()
    const missing = join(folder, 'missing')

    const cases: { args: string[]; message: string }[] = [
      { args: [], message: 'Expected two arguments, MODEL and IMAGE.png, got 0' },
      { args: [modelFolder], message: 'Expected two arguments, MODEL and IMAGE.png, got 1' },
      { args: ['--size', '3', modelFolder, image], message: "Unknown option '--size'" },
      { args: [modelFolder, `${missing}.png`], message: `Image ${missing}.png not found` },
      { args: [modelFolder, notPng], message: `Image ${notPng} is not a valid PNG file` },
      { args: [missing, image], message: `Model folder ${missing} not found` },
      { args: [emptyFolder, image], message: `Model folder ${emptyFolder} has no file` },
      {
        args: [otherModel, image],
        message: 'Expected one input of shape [null, 784]',
      },
    ]
    const results = await Promise.all(cases.map(({ args }) => predict(args)))
    for (const [i, { code, stdout, stderr }] of results.entries()) {
      const { args, message } = cases[i] as (typeof cases)[number]
      expect(code, `args ${args.join(' ')}: ${stderr}`).toBe(2)
      expect(stderr).toContain(message)
      expect(stderr).toContain('Run with --help for usage.')
      expect(stdout).toBe('')
    }
  })
})
