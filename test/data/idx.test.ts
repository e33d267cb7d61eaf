import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { afterAll, describe, expect, it } from 'vitest'
import { IdxFormatError } from '../../data/errors.ts'
import type { IdxImages, IdxLabels } from '../../data/idx.ts'
import { parseIdx, readIdxFile } from '../../data/idx.ts'

/** Builds an IDX labels file: magic 2049, the count, then one byte per label. */
function labelsFile(labels: readonly number[], claimedCount = labels.length): Uint8Array {
  const bytes = new Uint8Array(8 + labels.length)
  const view = new DataView(bytes.buffer)
  view.setUint32(0, 2049)
  view.setUint32(4, claimedCount)
  bytes.set(labels, 8)
  return bytes
}

/** Builds an IDX images file: magic 2051, count, rows, cols, then `pixels`. */
function imagesFile(count: number, rows: number, cols: number, pixels: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(16 + pixels.length)
  const view = new DataView(bytes.buffer)
  view.setUint32(0, 2051)
  view.setUint32(4, count)
  view.setUint32(8, rows)
  view.setUint32(12, cols)
  bytes.set(pixels, 16)
  return bytes
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

const samplePixels = Uint8Array.from({ length: 3 * 2 * 4 }, (_, i) => (i * 37) % 256)
const rawImages = imagesFile(3, 2, 4, samplePixels)
const rawLabels = labelsFile([5, 0, 4, 1, 9, 2])

describe('parseIdx', () => {
  it('parses a raw labels file', () => {
    const parsed = parseIdx(rawLabels, 'labels') as IdxLabels
    expect(parsed.kind).toBe('labels')
    expect(parsed.count).toBe(6)
    expect(Array.from(parsed.labels)).toEqual([5, 0, 4, 1, 9, 2])
  })

  it('parses a raw images file', () => {
    const parsed = parseIdx(rawImages, 'images') as IdxImages
    expect(parsed.kind).toBe('images')
    expect(parsed.count).toBe(3)
    expect(parsed.rows).toBe(2)
    expect(parsed.cols).toBe(4)
    expect(Array.from(parsed.pixels)).toEqual(Array.from(samplePixels))
  })

  it('parses gzip labels like raw', () => {
    const compressed = gzipSync(rawLabels)
    expect(compressed[0]).toBe(0x1f)
    expect(compressed[1]).toBe(0x8b)
    expect(parseIdx(compressed, 'labels.gz')).toEqual(parseIdx(rawLabels, 'labels'))
  })

  it('parses gzip images like raw', () => {
    const compressed = gzipSync(rawImages)
    expect(parseIdx(compressed, 'images.gz')).toEqual(parseIdx(rawImages, 'images'))
  })

  it('rejects a truncated images file', () => {
    const truncated = imagesFile(60000, 28, 28, new Uint8Array(700))
    const error = thrownBy(() => parseIdx(truncated, 'train-images'))
    expect(error).toBeInstanceOf(IdxFormatError)
    expect(error.name).toBe('IdxFormatError')
    expect(error.message).toContain('train-images')
    expect(error.message).toContain('60000 images of 28x28 (47040000 bytes)')
    expect(error.message).toContain('700 bytes follow the header')
  })

  it('rejects a truncated labels file', () => {
    const error = thrownBy(() => parseIdx(labelsFile([1, 2, 3], 10), 'labels'))
    expect(error).toBeInstanceOf(IdxFormatError)
    expect(error.message).toContain('10 labels (10 bytes)')
    expect(error.message).toContain('3 bytes follow the header')
  })

  it('rejects trailing extra bytes', () => {
    const padded = new Uint8Array(rawImages.length + 5)
    padded.set(rawImages)
    const error = thrownBy(() => parseIdx(padded, 'padded'))
    expect(error).toBeInstanceOf(IdxFormatError)
    expect(error.message).toContain('3 images of 2x4 (24 bytes)')
    expect(error.message).toContain('29 bytes follow the header')
  })

  it('rejects a wrong magic number', () => {
    const bytes = labelsFile([1, 2])
    new DataView(bytes.buffer).setUint32(0, 0x00000d03)
    const error = thrownBy(() => parseIdx(bytes, 'floats.idx'))
    expect(error).toBeInstanceOf(IdxFormatError)
    expect(error.message).toContain('floats.idx')
    expect(error.message).toContain('0x00000D03')
    expect(error.message).toContain('3331')
    expect(error.message).toContain('2049')
    expect(error.message).toContain('2051')
  })

  it('rejects a label above 9', () => {
    const error = thrownBy(() => parseIdx(labelsFile([3, 7, 11, 2]), 'labels'))
    expect(error).toBeInstanceOf(IdxFormatError)
    expect(error.message).toContain('index 2')
    expect(error.message).toContain('is 11')
  })

  it('rejects a file shorter than its header', () => {
    const error = thrownBy(() => parseIdx(rawImages.subarray(0, 10), 'short'))
    expect(error).toBeInstanceOf(IdxFormatError)
    expect(error.message).toContain('needs 16 bytes but the file has 10')
  })

  it('rejects corrupt gzip data', () => {
    const compressed = gzipSync(rawImages)
    const corrupt = compressed.subarray(0, compressed.length - 8)
    const error = thrownBy(() => parseIdx(corrupt, 'broken.gz'))
    expect(error).toBeInstanceOf(IdxFormatError)
    expect(error.message).toContain('broken.gz')
    expect(error.message).toContain('invalid gzip data')
  })

  it('parses a subarray at an odd byteOffset', () => {
    const backing = new Uint8Array(rawImages.length + 8)
    backing.fill(0xee)
    backing.set(rawImages, 3)
    const slice = backing.subarray(3, 3 + rawImages.length)
    expect(slice.byteOffset).toBe(3)

    const parsed = parseIdx(slice, 'slice') as IdxImages
    expect(parsed.count).toBe(3)
    expect(parsed.rows).toBe(2)
    expect(parsed.cols).toBe(4)
    expect(Array.from(parsed.pixels)).toEqual(Array.from(samplePixels))
  })

  it('parses labels at an odd byteOffset', () => {
    const backing = new Uint8Array(rawLabels.length + 2)
    backing.set(rawLabels, 1)
    const parsed = parseIdx(backing.subarray(1, 1 + rawLabels.length), 'slice') as IdxLabels
    expect(Array.from(parsed.labels)).toEqual([5, 0, 4, 1, 9, 2])
  })
})

describe('readIdxFile', () => {
  const folder = mkdtempSync(join(tmpdir(), 'dlearn-idx-'))
  afterAll(() => rmSync(folder, { recursive: true, force: true }))

  it('reads a gzip file from disk', () => {
    const path = join(folder, 'labels.gz')
    writeFileSync(path, gzipSync(rawLabels))
    const parsed = readIdxFile(path) as IdxLabels
    expect(parsed.kind).toBe('labels')
    expect(Array.from(parsed.labels)).toEqual([5, 0, 4, 1, 9, 2])
  })

  it('names the path in errors', () => {
    const path = join(folder, 'bad-labels')
    writeFileSync(path, labelsFile([1, 12]))
    const error = thrownBy(() => readIdxFile(path))
    expect(error).toBeInstanceOf(IdxFormatError)
    expect(error.message).toContain(path)
  })

  it('names the path of a missing file', () => {
    const path = join(folder, 'absent')
    const error = thrownBy(() => readIdxFile(path))
    expect(error.message).toContain(path)
  })
})
