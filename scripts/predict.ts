// Command line entry point: npm run predict -- MODEL IMAGE.png prints the digit a saved model
// reads in a PNG image.
import { readFileSync, statSync } from 'node:fs'
import { basename, dirname } from 'node:path'
import { parseArgs } from 'node:util'
import * as tf from '@tensorflow/tfjs'
import { PNG } from 'pngjs'
import { exportedRunOf, loadModel, MODEL_JSON } from '../node/export.ts'

/** Exit code for invalid arguments, a missing or invalid image and a missing or invalid model. */
export const EXIT_USAGE = 2

/** Side of an MNIST image in pixels. */
const SIDE = 28
const CLASSES = 10
/**
 * ITU-R BT.601 luma weights of red, green and blue. They sum to 1, so white stays exactly 1,
 * unlike those of tf.image.rgbToGrayscale in tfjs-core 4.22, which sum to 0.9999.
 */
const LUMA = [0.299, 0.587, 0.114] as const

export const USAGE = `Usage: npm run predict -- MODEL IMAGE.png
       node scripts/predict.ts MODEL IMAGE.png

Loads a model saved with --save-model and prints the digit it reads in a PNG image, with the
softmax probability of that digit.

Arguments:
  MODEL          model folder (with ${MODEL_JSON} and a weights .bin file), or its ${MODEL_JSON}
  IMAGE.png      PNG image of one digit: grey, RGB or RGBA, any size

The image is converted to grey (transparent pixels count as white), padded to a square, scaled
to ${SIDE}x${SIDE} and to [0, 1]. MNIST digits are white on black, so an image whose mean
brightness is above 0.5 is inverted first, and the output says so.

Options:
  -h, --help     print this help and exit
`

/** An image file that is missing, unreadable or not a PNG. */
export class ImageError extends Error {
  static override name = 'ImageError'

  constructor(message: string) {
    super(message)
    this.name = 'ImageError'
  }
}

/** A model folder that is missing, cannot be loaded, or does not map 784 pixels to 10 digits. */
export class ModelLoadError extends Error {
  static override name = 'ModelLoadError'

  constructor(message: string) {
    super(message)
    this.name = 'ModelLoadError'
  }
}

/** An image prepared as the model's input. */
export interface DigitImage {
  /** 784 pixels in [0, 1], white digit on black, row-major. */
  pixels: Float32Array
  width: number
  height: number
  /** Mean brightness of the grey image before any inversion, in [0, 1]. */
  mean: number
  /** True when the image had a light background and was inverted. */
  inverted: boolean
}

/** Reads a PNG file and prepares it as an MNIST input. Throws ImageError naming the path. */
export function readDigitImage(path: string): DigitImage {
  const png = decodePng(path)
  const { width, height } = png
  const grey = toGrey(png)
  let sum = 0
  for (const value of grey) sum += value
  const mean = sum / grey.length

  const inverted = mean > 0.5
  if (inverted) for (let i = 0; i < grey.length; i++) grey[i] = 1 - (grey[i] as number)
  return { pixels: toMnistSize(grey, width, height), width, height, mean, inverted }
}

function decodePng(path: string): PNG {
  let bytes: Buffer
  try {
    bytes = readFileSync(path)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    const reason = code === 'ENOENT' ? 'not found' : `unreadable (${(error as Error).message})`
    throw new ImageError(`Image ${path} ${reason}. Expected the path of a PNG file`)
  }
  try {
    // pngjs returns 8-bit RGBA for every PNG colour type and bit depth.
    return PNG.sync.read(bytes)
  } catch (error) {
    throw new ImageError(
      `Image ${path} is not a valid PNG file (${(error as Error).message}). Convert it to PNG first, for example with ImageMagick: convert ${path} ${basename(path)}.png`,
    )
  }
}

/** Converts RGBA pixels to grey in [0, 1], with transparent pixels composited over white. */
function toGrey(png: PNG): Float32Array {
  const { data } = png
  const [red, green, blue] = LUMA
  const grey = new Float32Array(png.width * png.height)
  for (let i = 0; i < grey.length; i++) {
    const offset = i * 4
    const luma =
      (red * (data[offset] as number) +
        green * (data[offset + 1] as number) +
        blue * (data[offset + 2] as number)) /
      255
    const alpha = (data[offset + 3] as number) / 255
    grey[i] = alpha * luma + (1 - alpha)
  }
  return grey
}

/**
 * Pads a white-on-black grey image with black to a square, so the digit keeps its aspect ratio,
 * and scales it to 28x28. An image at least twice that size is first averaged over whole
 * blocks, so thin strokes survive, and bilinear resizing does the rest.
 *
 * NOTE: MNIST digits were also cropped to their bounding box, scaled to fit 20x20 and centred by
 * their centre of mass. This does none of that, so a small or off-centre digit reads worse.
 */
function toMnistSize(grey: Float32Array, width: number, height: number): Float32Array {
  return tf.tidy(() => {
    const side = Math.max(width, height)
    const top = Math.floor((side - height) / 2)
    const left = Math.floor((side - width) / 2)
    let image: tf.Tensor4D = tf.tensor4d(grey, [1, height, width, 1])
    image = tf.pad(image, [
      [0, 0],
      [top, side - height - top],
      [left, side - width - left],
      [0, 0],
    ])
    const block = Math.floor(side / SIDE)
    if (block > 1) image = tf.avgPool(image, block, block, 'valid')
    const resized = tf.image.resizeBilinear(image, [SIDE, SIDE])
    return tf.clipByValue(resized, 0, 1).dataSync() as Float32Array
  })
}

/** Returns the model folder that MODEL names: MODEL itself, or its folder when it is a model.json. */
function modelFolder(path: string): string {
  try {
    if (statSync(path).isFile() && basename(path) === MODEL_JSON) return dirname(path)
  } catch {
    // A missing path is reported by loadModel, with the fix.
  }
  return path
}

/** Loads a saved model and checks that it maps 784 pixels to 10 logits. Throws ModelLoadError. */
export async function loadDigitModel(path: string): Promise<tf.LayersModel> {
  let model: tf.LayersModel
  try {
    model = await loadModel(modelFolder(path))
  } catch (error) {
    const message = (error as Error).message
    if ((error as Error).name === 'ModelFolderError') throw new ModelLoadError(message)
    throw new ModelLoadError(
      `Model ${path} could not be loaded: ${message}. Expected a folder written by --save-model`,
    )
  }
  const input = model.inputs[0]?.shape
  const output = model.outputs[0]?.shape
  if (model.inputs.length !== 1 || input?.length !== 2 || input[1] !== SIDE * SIDE) {
    model.dispose()
    throw new ModelLoadError(
      `Model ${path} takes input of shape [${input?.join(', ')}]. Expected one input of shape [null, ${SIDE * SIDE}], as every model of this project has`,
    )
  }
  if (model.outputs.length !== 1 || output?.length !== 2 || output[1] !== CLASSES) {
    model.dispose()
    throw new ModelLoadError(
      `Model ${path} outputs shape [${output?.join(', ')}]. Expected one output of shape [null, ${CLASSES}] (one logit per digit)`,
    )
  }
  return model
}

export interface Prediction {
  digit: number
  /** Softmax probability of `digit`. */
  probability: number
  /** Softmax probabilities of the digits 0 to 9. */
  probabilities: Float32Array
}

/** Runs the model on one 784-pixel image and applies the softmax to its logits. */
export function predictDigit(model: tf.LayersModel, pixels: Float32Array): Prediction {
  const probabilities = tf.tidy(() => {
    const logits = model.predict(tf.tensor2d(pixels, [1, SIDE * SIDE])) as tf.Tensor
    return tf.softmax(logits).dataSync() as Float32Array
  })
  let digit = 0
  for (let i = 1; i < probabilities.length; i++) {
    if ((probabilities[i] as number) > (probabilities[digit] as number)) digit = i
  }
  return { digit, probability: probabilities[digit] as number, probabilities }
}

function describeModel(path: string, model: tf.LayersModel): string {
  const run = exportedRunOf(model)
  if (run === undefined) return `model ${path}`
  const accuracy =
    run.accuracy === undefined
      ? 'test accuracy not measured'
      : `test accuracy ${(run.accuracy * 100).toFixed(2)}% on ${run.testSamples} images`
  const rounds = `${run.rounds} ${run.rounds === 1 ? 'round' : 'rounds'}`
  return `model ${path}: ${run.model}, ${rounds}, ${accuracy}`
}

function describeImage(path: string, image: DigitImage): string {
  const size = `${image.width}x${image.height}`
  if (!image.inverted) return `image ${path}: ${size}`
  return `image ${path}: ${size}, light background (mean ${image.mean.toFixed(2)}), inverted to white on black as in MNIST`
}

function fail(message: string): number {
  process.stderr.write(`error: ${message}\nRun with --help for usage.\n`)
  return EXIT_USAGE
}

/** Runs the command with the given arguments (without node and the script); returns its exit code. */
export async function main(args: string[]): Promise<number> {
  let parsed: ReturnType<typeof parseOptions>
  try {
    parsed = parseOptions(args)
  } catch (error) {
    // parseArgs throws a TypeError with a code such as ERR_PARSE_ARGS_UNKNOWN_OPTION.
    if ((error as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS_')) {
      return fail((error as Error).message)
    }
    throw error
  }
  if (parsed.values.help) {
    process.stdout.write(USAGE)
    return 0
  }
  const [modelPath, imagePath, ...extra] = parsed.positionals
  if (modelPath === undefined || imagePath === undefined || extra.length > 0) {
    return fail(`Expected two arguments, MODEL and IMAGE.png, got ${parsed.positionals.length}`)
  }

  // One image needs no accelerator, and the pure-JS backend loads no WebAssembly module.
  // Production mode silences that backend's advice to install tfjs-node.
  tf.enableProdMode()
  await tf.setBackend('cpu')
  let image: DigitImage
  let model: tf.LayersModel
  try {
    image = readDigitImage(imagePath)
    model = await loadDigitModel(modelPath)
  } catch (error) {
    if (error instanceof ImageError || error instanceof ModelLoadError) return fail(error.message)
    throw error
  }
  try {
    const prediction = predictDigit(model, image.pixels)
    process.stdout.write(`${describeModel(modelPath, model)}\n`)
    process.stdout.write(`${describeImage(imagePath, image)}\n`)
    process.stdout.write(
      `digit ${prediction.digit}, probability ${prediction.probability.toFixed(4)}\n`,
    )
  } finally {
    model.dispose()
  }
  return 0
}

function parseOptions(args: string[]) {
  return parseArgs({
    args,
    options: { help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
    strict: true,
  })
}

if (import.meta.main) {
  process.exitCode = await main(process.argv.slice(2))
}
