import { createHash } from 'node:crypto'
import { constants, existsSync } from 'node:fs'
import { access, mkdir, readdir, readFile, rm } from 'node:fs/promises'
import { isAbsolute, join, normalize, resolve, sep } from 'node:path'
import * as tf from '@tensorflow/tfjs'
import { UsageError } from './errors.ts'
import { log } from './log.ts'
// model.ts registers SeededDropout for serialization, which loading 'mlp-wide' needs.
import { hashWeights } from './model.ts'
import type { PeerResult } from './peer.ts'
import type { ModelName, SwarmSpec } from './spec.ts'
import type { Trainer } from './trainer.ts'
import { removeTemporaryFiles, writeFileDurable } from './write-atomic.ts'

/** Name of the file with the topology and weights manifest in a model folder. */
export const MODEL_JSON = 'model.json'
/**
 * Weights files are named by content: `weights.<first 16 hex digits of SHA-256>.bin`. For a
 * model whose weights are all float32, as every model of buildModel, that is the start of the
 * model hash that metrics files record.
 */
const WEIGHTS_FILE = /^weights\.[0-9a-f]{16}\.bin$/
/** Key of this project's entry in the model's userDefinedMetadata. */
const METADATA_KEY = 'dlearn'

/** Bytes per value of the dtypes a weights manifest entry may name without quantization. */
const DTYPE_BYTES: Record<string, number> = {
  float32: 4,
  int32: 4,
  bool: 1,
  uint8: 1,
}

/** A model folder that is missing, incomplete or not in the TF.js layers format. */
export class ModelFolderError extends Error {
  static override name = 'ModelFolderError'

  constructor(message: string) {
    super(message)
    this.name = 'ModelFolderError'
  }
}

/** Record of the run that exported a model, stored in model.json's userDefinedMetadata. */
export interface ExportedRun {
  /** Architecture name from the swarm spec. */
  model: ModelName
  /** Rounds the run completed. */
  rounds: number
  /**
   * Test accuracy the run reported for exactly these weights, a fraction; absent when the
   * exported weights were never evaluated.
   */
  accuracy?: number
  /** Test images the accuracy was measured on, from the start of the MNIST test set. */
  testSamples: number
  /** SHA-256 (hex) of the exported weights, as hashWeights computes it. */
  modelHash: string
}

/**
 * Returns an IOHandler that saves a model to `folder` as `model.json` plus one weights file,
 * and loads it back, for `model.save` and `tf.loadLayersModel`. The pure-JS tfjs package
 * registers no `file://` handler in Node, so this takes its place.
 *
 * Saving writes the weights file under a name taken from its content, then `model.json`, each
 * to a temporary file renamed into place, then removes older weights files. Because
 * `model.json` is replaced last, the folder always contains a complete model, the old or the
 * new one. A folder must have one writer at a time.
 */
export function fileSystemHandler(folder: string, run?: ExportedRun): tf.io.IOHandler {
  return {
    save: (artifacts) => saveArtifacts(folder, artifacts, run),
    load: () => loadArtifacts(folder),
  }
}

async function saveArtifacts(
  folder: string,
  artifacts: tf.io.ModelArtifacts,
  run: ExportedRun | undefined,
): Promise<tf.io.SaveResult> {
  if (artifacts.modelTopology === undefined || artifacts.modelTopology instanceof ArrayBuffer) {
    throw new TypeError('fileSystemHandler saves layers models only, with a JSON topology')
  }
  const weights = new Uint8Array(tf.io.CompositeArrayBuffer.join(artifacts.weightData ?? []))
  const digest = createHash('sha256').update(weights).digest('hex')
  const weightsName = `weights.${digest.slice(0, 16)}.bin`

  await mkdir(folder, { recursive: true })
  await removeTemporaryFiles(folder)
  await writeFileDurable(join(folder, weightsName), [weights])
  const modelJson: tf.io.ModelJSON = {
    modelTopology: artifacts.modelTopology,
    format: artifacts.format,
    generatedBy: artifacts.generatedBy,
    convertedBy: artifacts.convertedBy,
    weightsManifest: [{ paths: [weightsName], weights: artifacts.weightSpecs ?? [] }],
    ...(artifacts.trainingConfig === undefined ? {} : { trainingConfig: artifacts.trainingConfig }),
    userDefinedMetadata: {
      ...artifacts.userDefinedMetadata,
      ...(run === undefined ? {} : { [METADATA_KEY]: run }),
    },
  }
  const text = `${JSON.stringify(modelJson)}\n`
  await writeFileDurable(join(folder, MODEL_JSON), [new TextEncoder().encode(text)])

  for (const name of await readdir(folder)) {
    if (name !== weightsName && WEIGHTS_FILE.test(name)) await rm(join(folder, name))
  }
  return {
    modelArtifactsInfo: {
      dateSaved: new Date(),
      modelTopologyType: 'JSON',
      modelTopologyBytes: Buffer.byteLength(JSON.stringify(artifacts.modelTopology)),
      weightSpecsBytes: Buffer.byteLength(JSON.stringify(artifacts.weightSpecs ?? [])),
      weightDataBytes: weights.byteLength,
    },
  }
}

async function loadArtifacts(folder: string): Promise<tf.io.ModelArtifacts> {
  const jsonPath = join(folder, MODEL_JSON)
  const modelJson = parseModelJson(jsonPath, await readModelFile(folder, jsonPath))
  return tf.io.getModelArtifactsForJSON(modelJson, async (manifest) => {
    const specs: tf.io.WeightsManifestEntry[] = []
    const buffers: ArrayBuffer[] = []
    for (const group of manifest) {
      specs.push(...group.weights)
      for (const path of group.paths) {
        const bytes = await readModelFile(folder, weightsPath(folder, path))
        buffers.push(new Uint8Array(bytes).buffer)
      }
    }
    const data = tf.io.CompositeArrayBuffer.join(buffers)
    const expected = expectedWeightBytes(specs)
    if (expected !== undefined && expected !== data.byteLength) {
      throw new ModelFolderError(
        `Weights files of ${folder} contain ${data.byteLength} bytes, but ${MODEL_JSON} lists weights of ${expected} bytes. Save the model again: the folder is incomplete or mixes two models`,
      )
    }
    return [specs, data]
  })
}

/** Reads a file of the model folder. A missing file is a ModelFolderError that names the fix. */
async function readModelFile(folder: string, path: string): Promise<Buffer> {
  try {
    return await readFile(path)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code !== 'ENOENT' && code !== 'ENOTDIR' && code !== 'EISDIR') throw error
    const expected = `Expected a folder written by --save-model, with ${MODEL_JSON} and a weights .bin file`
    if (!existsSync(folder))
      throw new ModelFolderError(`Model folder ${folder} not found. ${expected}`)
    throw new ModelFolderError(`Model folder ${folder} has no file ${path}. ${expected}`)
  }
}

function parseModelJson(path: string, bytes: Buffer): tf.io.ModelJSON {
  let value: unknown
  try {
    value = JSON.parse(bytes.toString('utf8'))
  } catch (error) {
    throw new ModelFolderError(
      `${path} is not valid JSON (${(error as Error).message}). Expected a model saved by --save-model`,
    )
  }
  const json = value as Partial<tf.io.ModelJSON> | null
  const topology = json?.modelTopology as { class_name?: unknown } | undefined
  if (typeof topology !== 'object' || topology === null || !('class_name' in topology)) {
    throw new ModelFolderError(
      `${path} has no layers-model topology. Expected a TF.js layers model saved by --save-model or model.save`,
    )
  }
  const manifest = json?.weightsManifest
  const validGroup = (group: unknown) => {
    const { paths, weights } = (group ?? {}) as Partial<tf.io.WeightsManifestConfig[number]>
    return (
      Array.isArray(paths) &&
      paths.every((path) => typeof path === 'string') &&
      Array.isArray(weights)
    )
  }
  if (!Array.isArray(manifest) || !manifest.every(validGroup)) {
    throw new ModelFolderError(
      `${path} has no valid weightsManifest (a list of {paths, weights} groups). Save the model again with --save-model`,
    )
  }
  return json as tf.io.ModelJSON
}

/** Resolves a manifest path inside `folder`, and rejects a path that leads outside it. */
function weightsPath(folder: string, path: string): string {
  const normalized = normalize(path)
  if (isAbsolute(path) || normalized === '..' || normalized.startsWith(`..${sep}`)) {
    throw new ModelFolderError(
      `${join(folder, MODEL_JSON)} lists the weights path '${path}', which leads outside the model folder. Expected a file name inside it`,
    )
  }
  return resolve(folder, normalized)
}

/** Returns the byte count the specs describe, or undefined when a spec is quantized or unusual. */
function expectedWeightBytes(specs: tf.io.WeightsManifestEntry[]): number | undefined {
  let total = 0
  for (const spec of specs) {
    const bytes = DTYPE_BYTES[spec.dtype]
    if (bytes === undefined || spec.quantization !== undefined) return undefined
    total += spec.shape.reduce((product, size) => product * size, 1) * bytes
  }
  return total
}

/** Saves `model` to `folder` in the TF.js layers format, creating the folder if missing. */
export async function saveModel(
  model: tf.LayersModel,
  folder: string,
  run?: ExportedRun,
): Promise<tf.io.SaveResult> {
  return model.save(fileSystemHandler(folder, run))
}

/** Loads a model saved by saveModel (or any TF.js layers model folder with one model.json). */
export async function loadModel(folder: string): Promise<tf.LayersModel> {
  return tf.loadLayersModel(fileSystemHandler(folder))
}

/** Returns the run record that saveModel stored with a loaded model, or undefined. */
export function exportedRunOf(model: tf.LayersModel): ExportedRun | undefined {
  const metadata = model.getUserDefinedMetadata() as Record<string, unknown> | undefined
  const run = metadata?.[METADATA_KEY]
  return typeof run === 'object' && run !== null ? (run as ExportedRun) : undefined
}

/**
 * Creates the folder that --save-model names, so a path that cannot hold a model fails before
 * training rather than after it. Throws UsageError naming the folder.
 */
export async function prepareModelFolder(folder: string): Promise<void> {
  try {
    await mkdir(folder, { recursive: true })
    await access(folder, constants.W_OK)
  } catch (error) {
    throw new UsageError(
      `Invalid --save-model '${folder}': ${(error as Error).message}. Expected a writable folder, or a path where one can be created`,
    )
  }
}

/**
 * Saves a peer's final model with what the run reported about it. The reported accuracy is
 * kept only when the weights are the ones the last round evaluated, because a peer whose last
 * step was a model download has weights that no round measured.
 */
export async function saveFinalModel(
  trainer: Trainer,
  folder: string,
  spec: SwarmSpec,
  result: PeerResult,
): Promise<void> {
  const modelHash = await hashWeights(trainer.getWeights())
  const evaluated = result.rounds > 0 && modelHash === result.modelHash
  if (!evaluated && result.rounds > 0) {
    log.info(
      'model %s is not the one the last round evaluated, so it is saved without an accuracy',
      modelHash,
    )
  }
  await saveModel(trainer.model, folder, {
    model: spec.model,
    rounds: result.rounds,
    ...(evaluated ? { accuracy: result.finalAccuracy } : {}),
    testSamples: spec.testSamples,
    modelHash,
  })
  log.info('model saved to %s (%s)', resolve(folder), MODEL_JSON)
}
