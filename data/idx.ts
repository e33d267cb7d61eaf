import { readFileSync } from 'node:fs'
import { gunzipSync } from 'node:zlib'
import { IdxFormatError } from './errors.ts'

/**
 * Reader for the IDX format that MNIST ships in. Only the two layouts MNIST uses are accepted:
 * unsigned-byte labels with one dimension and unsigned-byte images with three dimensions. All
 * header fields are big-endian u32 values.
 */

/** An IDX images file: `count` images of `rows` x `cols` pixels, row-major, one byte per pixel. */
export type IdxImages = {
  kind: 'images'
  count: number
  rows: number
  cols: number
  /** `count * rows * cols` bytes, image after image. */
  pixels: Uint8Array
}

/** An IDX labels file: one digit 0-9 per example. */
export type IdxLabels = {
  kind: 'labels'
  count: number
  labels: Uint8Array
}

/** Magic number of an IDX file of unsigned bytes with one dimension. */
export const IDX_LABELS_MAGIC = 0x00000801
/** Magic number of an IDX file of unsigned bytes with three dimensions. */
export const IDX_IMAGES_MAGIC = 0x00000803

const LABELS_HEADER_BYTES = 8
const IMAGES_HEADER_BYTES = 16
const MAX_LABEL = 9

/**
 * Decompresses `bytes` if they start with the gzip magic bytes 1F 8B, and otherwise returns them
 * unchanged. `source` names the input in error messages.
 */
export function gunzipIfCompressed(bytes: Uint8Array, source: string): Uint8Array {
  if (bytes.length < 2 || bytes[0] !== 0x1f || bytes[1] !== 0x8b) {
    return bytes
  }
  try {
    return gunzipSync(bytes)
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error)
    throw new IdxFormatError(
      `${source}: invalid gzip data (${reason}). Replace the file with an intact copy, or ` +
        'decompress it yourself and pass the raw IDX file.',
      { cause: error },
    )
  }
}

/**
 * Parses an IDX labels or images file, gzip-compressed or raw. `source` names the input in error
 * messages. For raw input the returned arrays are views into `bytes`, so do not modify `bytes`
 * afterwards. Throws IdxFormatError on an unknown magic number, a length that differs from the
 * header's claim, or a label outside 0-9.
 */
export function parseIdx(bytes: Uint8Array, source: string): IdxImages | IdxLabels {
  const data = gunzipIfCompressed(bytes, source)
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength)
  requireHeaderBytes(data, 4, 'an IDX magic number', source)
  const magic = view.getUint32(0)

  if (magic === IDX_LABELS_MAGIC) {
    return parseLabels(data, view, source)
  }
  if (magic === IDX_IMAGES_MAGIC) {
    return parseImages(data, view, source)
  }
  throw new IdxFormatError(
    `${source}: unknown IDX magic number ${formatHex(magic)} (${magic}). Expected ` +
      `${formatHex(IDX_LABELS_MAGIC)} (${IDX_LABELS_MAGIC}, unsigned-byte labels) or ` +
      `${formatHex(IDX_IMAGES_MAGIC)} (${IDX_IMAGES_MAGIC}, unsigned-byte images). ` +
      'Pass an MNIST IDX file, raw or gzip-compressed.',
  )
}

/** Reads and parses the IDX file at `path`. Errors from parsing name the path. */
export function readIdxFile(path: string): IdxImages | IdxLabels {
  return parseIdx(readFileSync(path), path)
}

function parseLabels(data: Uint8Array, view: DataView, source: string): IdxLabels {
  requireHeaderBytes(data, LABELS_HEADER_BYTES, 'an IDX labels header', source)
  const count = view.getUint32(4)
  const present = data.byteLength - LABELS_HEADER_BYTES
  if (present !== count) {
    throw new IdxFormatError(
      `${source}: header claims ${count} labels (${count} bytes) but ${present} bytes follow ` +
        'the header. The file is truncated or has extra bytes, so replace it with an intact copy.',
    )
  }

  const labels = new Uint8Array(data.buffer, data.byteOffset + LABELS_HEADER_BYTES, count)
  for (let i = 0; i < count; i++) {
    const label = labels[i] as number
    if (label > MAX_LABEL) {
      throw new IdxFormatError(
        `${source}: label at index ${i} is ${label}, expected a digit 0-${MAX_LABEL}. ` +
          'Pass an MNIST labels file.',
      )
    }
  }
  return { kind: 'labels', count, labels }
}

function parseImages(data: Uint8Array, view: DataView, source: string): IdxImages {
  requireHeaderBytes(data, IMAGES_HEADER_BYTES, 'an IDX images header', source)
  const count = view.getUint32(4)
  const rows = view.getUint32(8)
  const cols = view.getUint32(12)
  // Each factor is below 2^32, so the product may exceed 2^53 and lose precision, but it then
  // also exceeds any byte length a Uint8Array can have, so the comparison still rejects it.
  const expected = count * rows * cols
  const present = data.byteLength - IMAGES_HEADER_BYTES
  if (present !== expected) {
    throw new IdxFormatError(
      `${source}: header claims ${count} images of ${rows}x${cols} (${expected} bytes) but ` +
        `${present} bytes follow the header. The file is truncated or has extra bytes, so ` +
        'replace it with an intact copy.',
    )
  }

  const pixels = new Uint8Array(data.buffer, data.byteOffset + IMAGES_HEADER_BYTES, expected)
  return { kind: 'images', count, rows, cols, pixels }
}

function requireHeaderBytes(
  data: Uint8Array,
  needed: number,
  header: string,
  source: string,
): void {
  if (data.byteLength < needed) {
    throw new IdxFormatError(
      `${source}: ${header} needs ${needed} bytes but the file has ${data.byteLength}. ` +
        'Pass an MNIST IDX file, raw or gzip-compressed.',
    )
  }
}

function formatHex(value: number): string {
  return `0x${value.toString(16).toUpperCase().padStart(8, '0')}`
}
