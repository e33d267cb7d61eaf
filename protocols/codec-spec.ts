/**
 * Codec specs: the codec text that parseCodec reads, the wire id and u32 parameter of each
 * codec, and payload sizes. codecs.ts describes the payload layouts and encodes them.
 */

import { CodecDecodeError, CodecSpecError } from './errors.ts'

/** A tensor codec: how the float32 values of a tensor are encoded on the wire. */
export type CodecSpec =
  | { name: 'float32' }
  | { name: 'float16' }
  | { name: 'int8'; blockSize: number }
  | { name: 'topk'; fraction: number }

/** Wire ids of the codecs, as written in the codec field of a delta message. */
export const CODEC_IDS = { float32: 0, float16: 1, int8: 2, topk: 3 } as const

/** Block size of `int8` when the codec text gives none. */
export const DEFAULT_INT8_BLOCK_SIZE = 256
/** Largest int8 block size. */
export const MAX_INT8_BLOCK_SIZE = 0xffff
/**
 * Largest value count the codecs accept, so that every payload size (at most 8 bytes per
 * value) is an exact integer in a double.
 */
export const MAX_CODEC_VALUE_COUNT = 2 ** 50

const CODEC_FORMS = 'float32, float16, int8[:BLOCK] or topk:FRACTION'
// The topk fraction travels as an integer number of billionths.
const FRACTION_PARTS = 1_000_000_000
export const FLOAT32_BYTES = 4
export const FLOAT16_BYTES = 2
export const TOPK_ENTRY_BYTES = 8
const DECIMAL_PATTERN = /^(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/

/**
 * Parses codec text: `float32`, `float16`, `int8` (block size 256), `int8:BLOCK` with an
 * integer BLOCK from 1 to 65535, or `topk:FRACTION` with 0 < FRACTION <= 1 and at most 9
 * decimal places. Throws CodecSpecError for any other text.
 */
export function parseCodec(text: string): CodecSpec {
  if (typeof text !== 'string') {
    throw new CodecSpecError(`Expected codec to be a string, got ${typeof text}`)
  }
  if (text === 'float32' || text === 'float16') {
    return { name: text }
  }
  if (text === 'int8') {
    return { name: 'int8', blockSize: DEFAULT_INT8_BLOCK_SIZE }
  }

  const separator = text.indexOf(':')
  const name = text.slice(0, separator)
  const parameter = text.slice(separator + 1)
  if (separator > 0 && name === 'int8') {
    const blockSize = /^\d+$/.test(parameter) ? Number(parameter) : Number.NaN
    if (!isValidBlockSize(blockSize)) {
      throw new CodecSpecError(
        `Expected codec int8:BLOCK to have an integer BLOCK from 1 to ${MAX_INT8_BLOCK_SIZE}, got '${text}'`,
      )
    }
    return { name: 'int8', blockSize }
  }
  if (separator > 0 && name === 'topk') {
    const fraction = DECIMAL_PATTERN.test(parameter) ? Number(parameter) : Number.NaN
    if (fractionToParts(fraction) === undefined) {
      throw new CodecSpecError(
        `Expected codec topk:FRACTION to have 0 < FRACTION <= 1 with at most 9 decimal places, got '${text}'`,
      )
    }
    return { name: 'topk', fraction }
  }
  throw new CodecSpecError(`Expected codec to be ${CODEC_FORMS}, got '${text}'`)
}

/** Formats a codec as the text parseCodec reads back into an equal spec. */
export function formatCodec(codec: CodecSpec): string {
  checkCodec(codec)
  switch (codec.name) {
    case 'float32':
    case 'float16':
      return codec.name
    case 'int8':
      return `int8:${codec.blockSize}`
    case 'topk':
      return `topk:${codec.fraction}`
  }
}

/** Checks that a CodecSpec built in code is valid. Throws CodecSpecError when it is not. */
export function checkCodec(codec: CodecSpec): void {
  if (typeof codec !== 'object' || codec === null) {
    throw new CodecSpecError(`Expected codec to be an object, got ${String(codec)}`)
  }
  switch (codec.name) {
    case 'float32':
    case 'float16':
      return
    case 'int8':
      if (!isValidBlockSize(codec.blockSize)) {
        throw new CodecSpecError(
          `Expected int8 blockSize to be an integer from 1 to ${MAX_INT8_BLOCK_SIZE}, got ${String(codec.blockSize)}`,
        )
      }
      return
    case 'topk':
      if (fractionToParts(codec.fraction) === undefined) {
        throw new CodecSpecError(
          `Expected topk fraction to be a number with 0 < fraction <= 1 and at most 9 decimal places, got ${String(codec.fraction)}`,
        )
      }
      return
    default: {
      const name: unknown = (codec as { name?: unknown }).name
      throw new CodecSpecError(
        `Expected codec name to be float32, float16, int8 or topk, got ${JSON.stringify(name) ?? String(name)}`,
      )
    }
  }
}

/** Returns the wire id of a codec: 0 float32, 1 float16, 2 int8, 3 topk. */
export function codecId(codec: CodecSpec): number {
  checkCodec(codec)
  return CODEC_IDS[codec.name]
}

/**
 * Returns the u32 codec parameter written next to the codec id: the block size for int8, the
 * fraction in billionths for topk, and 0 for float32 and float16.
 */
export function codecParam(codec: CodecSpec): number {
  checkCodec(codec)
  switch (codec.name) {
    case 'float32':
    case 'float16':
      return 0
    case 'int8':
      return codec.blockSize
    case 'topk':
      return fractionToParts(codec.fraction) as number
  }
}

/**
 * Builds the codec named by a wire id and its u32 parameter. Throws CodecDecodeError with
 * field `codec` for an unknown id, or `codecParam` for a parameter the codec does not allow.
 * Its offset is 0 because the caller knows where these fields sit in its layout.
 */
export function codecFromWire(id: number, param: number): CodecSpec {
  switch (id) {
    case CODEC_IDS.float32:
    case CODEC_IDS.float16: {
      const name = id === CODEC_IDS.float32 ? 'float32' : 'float16'
      if (param !== 0) {
        throw new CodecDecodeError('codecParam', 0, `is ${param}, expected 0 for ${name}`)
      }
      return { name }
    }
    case CODEC_IDS.int8:
      if (!isValidBlockSize(param)) {
        throw new CodecDecodeError(
          'codecParam',
          0,
          `is ${param}, expected an int8 block size from 1 to ${MAX_INT8_BLOCK_SIZE}`,
        )
      }
      return { name: 'int8', blockSize: param }
    case CODEC_IDS.topk:
      if (param < 1 || param > FRACTION_PARTS) {
        throw new CodecDecodeError(
          'codecParam',
          0,
          `is ${param}, expected a topk fraction in billionths from 1 to ${FRACTION_PARTS}`,
        )
      }
      return { name: 'topk', fraction: param / FRACTION_PARTS }
    default:
      throw new CodecDecodeError(
        'codec',
        0,
        `is ${id}, expected 0 (float32), 1 (float16), 2 (int8) or 3 (topk)`,
      )
  }
}

/** Returns how many of `count` values topk keeps: max(1, ceil(fraction * count)), or 0 when count is 0. */
export function topkCount(count: number, fraction: number): number {
  checkCount(count)
  checkCodec({ name: 'topk', fraction })
  const parts = fractionToParts(fraction) as number
  // BigInt keeps parts * count exact beyond 2^53. Because parts >= 1, the ceiling is at least 1
  // for any count >= 1, and because parts <= 10^9 it never exceeds count.
  const billion = BigInt(FRACTION_PARTS)
  return Number((BigInt(parts) * BigInt(count) + billion - 1n) / billion)
}

/** Returns the payload byte length of a tensor of `count` values under a codec. */
export function payloadSize(count: number, codec: CodecSpec): number {
  checkCount(count)
  checkCodec(codec)
  switch (codec.name) {
    case 'float32':
      return FLOAT32_BYTES * count
    case 'float16':
      return FLOAT16_BYTES * count
    case 'int8':
      return FLOAT32_BYTES * Math.ceil(count / codec.blockSize) + count
    case 'topk':
      return TOPK_ENTRY_BYTES * topkCount(count, codec.fraction)
  }
}

function isValidBlockSize(blockSize: number): boolean {
  return Number.isInteger(blockSize) && blockSize >= 1 && blockSize <= MAX_INT8_BLOCK_SIZE
}

/**
 * Returns fraction * 10^9 when fraction is in (0, 1] with at most 9 decimal places, and
 * undefined otherwise. Dividing the rounded integer by 10^9 gives back the nearest double to
 * that decimal, which equals `fraction` exactly when it has no further places.
 */
function fractionToParts(fraction: number): number | undefined {
  if (typeof fraction !== 'number' || !(fraction > 0 && fraction <= 1)) {
    return undefined
  }
  const parts = Math.round(fraction * FRACTION_PARTS)
  return parts / FRACTION_PARTS === fraction ? parts : undefined
}

export function checkCount(count: number): void {
  if (!Number.isInteger(count) || count < 0 || count > MAX_CODEC_VALUE_COUNT) {
    throw new RangeError(`Expected count to be an integer from 0 to 2^50, got ${String(count)}`)
  }
}
