import type { CodecSpec, DeltaMessage } from '../../protocols/index.ts'

/** Kernel and bias shapes of the 784-200-200-10 MNIST MLP: three dense layers. */
export const MLP_SHAPES = [[784, 200], [200], [200, 200], [200], [200, 10], [10]]

/** Number of values in all MLP_SHAPES tensors together. */
export const MLP_VALUE_COUNT = 199_210

/** Deterministic 32-bit generator (mulberry32), so a failing case reproduces. */
export function createRandom(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return (t ^ (t >>> 14)) >>> 0
  }
}

/** Returns a 32-byte hash with every byte set to `byte`. */
export function filledHash(byte: number): Uint8Array {
  return new Uint8Array(32).fill(byte)
}

/**
 * Float32 values whose bit patterns are random u32 words, so they include NaNs with payloads,
 * infinities, subnormals and negative zero.
 */
export function randomBitValues(count: number, random: () => number): Float32Array {
  const words = new Uint32Array(count)
  for (let i = 0; i < count; i++) {
    words[i] = random()
  }
  return new Float32Array(words.buffer)
}

/** Finite float32 values in [-1, 1). */
export function randomFiniteValues(count: number, random: () => number): Float32Array {
  const values = new Float32Array(count)
  for (let i = 0; i < count; i++) {
    values[i] = random() / 2 ** 31 - 1
  }
  return values
}

/**
 * Finite float32 values with a random sign and a magnitude of 2^e, e uniform in
 * [minExponent, maxExponent), so they span many binades.
 */
export function randomWideRangeValues(
  count: number,
  random: () => number,
  minExponent: number,
  maxExponent: number,
): Float32Array {
  const values = new Float32Array(count)
  for (let i = 0; i < count; i++) {
    const exponent = minExponent + (random() / 2 ** 32) * (maxExponent - minExponent)
    const sign = random() % 2 === 0 ? 1 : -1
    values[i] = sign * 2 ** exponent
  }
  return values
}

export function shapeSize(shape: number[]): number {
  return shape.reduce((size, dim) => size * dim, 1)
}

/** Builds a valid message for `shapes` with finite values, round 5 and 100 samples. */
export function buildMessage(
  shapes: number[][],
  seed = 1,
  codec: CodecSpec = { name: 'float32' },
): DeltaMessage {
  const random = createRandom(seed)
  return {
    version: 1,
    codec,
    specHash: filledHash(0xa1),
    round: 5,
    sampleCount: 100,
    baseModelHash: filledHash(0xb2),
    tensors: shapes.map((shape) => ({
      shape,
      values: randomFiniteValues(shapeSize(shape), random),
    })),
  }
}

/** Reinterprets float values as their u32 bit patterns, for bit-exact comparison. */
export function bitsOf(values: Float32Array): Uint32Array {
  return new Uint32Array(values.buffer, values.byteOffset, values.length)
}

/**
 * Returns whether both arrays contain the same float32 bit patterns. Unlike toEqual, this
 * distinguishes NaN payloads and the two zeros, and it is fast on large arrays.
 */
export function sameBits(a: Float32Array | undefined, b: Float32Array | undefined): boolean {
  if (a === undefined || b === undefined || a.length !== b.length) {
    return false
  }
  const aBits = bitsOf(a)
  const bBits = bitsOf(b)
  for (let i = 0; i < aBits.length; i++) {
    if (aBits[i] !== bBits[i]) {
      return false
    }
  }
  return true
}

/**
 * Copies bytes into a larger buffer at byte offset 3, with 0xee bytes before and after, so a
 * decoder that ignores byteOffset or reads past the end sees the wrong bytes.
 */
export function atOddOffset(bytes: Uint8Array): Uint8Array {
  const backing = new Uint8Array(bytes.byteLength + 8).fill(0xee)
  backing.set(bytes, 3)
  return backing.subarray(3, 3 + bytes.byteLength)
}
