// Size, speed and round-trip error of the delta codecs on one trained MLP delta.

import type { Mnist } from '../../data/index.ts'
import { parsePartition, shardIndices } from '../../data/index.ts'
import { subtractWeights } from '../../node/aggregate.ts'
import type { SwarmSpec } from '../../node/spec.ts'
import { Trainer, toExamples } from '../../node/trainer.ts'
import {
  type DeltaMessage,
  type DeltaTensor,
  decodeDelta,
  encodeDelta,
  encodedDeltaSize,
  parseCodec,
} from '../../protocols/index.ts'

const FLOAT32_BYTES = 4
const BYTES_PER_MB = 1_000_000

/** Encoded size of one delta in a codec, and its share of the float32 size. */
export interface CodecSize {
  codec: string
  bytes: number
  /** bytes divided by the float32 message's bytes. */
  ratio: number
}

/** One codec measured on a real delta. */
export interface CodecMeasurement extends CodecSize {
  /** Median encodeDelta throughput, in 10^6 bytes of float32 input per second. */
  encodeMBps: number
  /** Median decodeDelta throughput, in 10^6 bytes of float32 output per second. */
  decodeMBps: number
  /** ||decoded - delta|| / ||delta|| over all values (L2 norms). */
  relativeError: number
}

/**
 * Returns the encoded delta size of every codec for tensors of these shapes, with its ratio to
 * float32. Sizes come from the layout alone, so no delta is needed.
 */
export function codecSizes(shapes: number[][], codecs: string[]): CodecSize[] {
  const float32Bytes = encodedDeltaSize(shapes, { name: 'float32' })
  return codecs.map((codec) => {
    const bytes = encodedDeltaSize(shapes, parseCodec(codec))
    return { codec, bytes, ratio: bytes / float32Bytes }
  })
}

/** Returns the median of a non-empty list of numbers. */
export function median(values: number[]): number {
  if (values.length === 0) throw new RangeError('Expected at least one value for the median')
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  if (sorted.length % 2 === 1) return sorted[middle] as number
  return ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2
}

/**
 * Trains one round of peer `peerIndex` of the spec's swarm, as its first round would, and
 * returns the delta it would publish (trained minus initial weights) with the tensor shapes.
 */
export async function trainOneDelta(
  spec: SwarmSpec,
  mnist: Mnist,
  peerIndex = 0,
): Promise<DeltaTensor[]> {
  const trainLabels = mnist.train.labels.subarray(0, spec.trainSamples)
  const rows = shardIndices(trainLabels, parsePartition(spec.partition), {
    seed: spec.seed,
    peers: spec.peers,
    index: peerIndex,
  })
  const shard = toExamples(mnist.train.images, mnist.train.labels, rows)
  // The trainer needs a test set, but this delta is never evaluated, so one image will do.
  const test = toExamples(mnist.test.images.subarray(0, 784), mnist.test.labels.subarray(0, 1))
  const trainer = new Trainer(spec, shard, test, peerIndex)
  try {
    const base = trainer.getWeights()
    await trainer.train(0)
    const delta = subtractWeights(trainer.getWeights(), base)
    return delta.map((values, i) => ({ shape: trainer.shapes[i] as number[], values }))
  } finally {
    trainer.dispose()
  }
}

function relativeError(delta: DeltaTensor[], decoded: DeltaTensor[]): number {
  let errorSquares = 0
  let valueSquares = 0
  for (const [i, tensor] of delta.entries()) {
    const output = (decoded[i] as DeltaTensor).values
    for (let j = 0; j < tensor.values.length; j++) {
      const value = tensor.values[j] as number
      const difference = value - (output[j] as number)
      errorSquares += difference * difference
      valueSquares += value * value
    }
  }
  return valueSquares === 0 ? 0 : Math.sqrt(errorSquares / valueSquares)
}

/** Returns the median seconds of `repetitions` calls of `work`, after one untimed call. */
function medianSeconds(repetitions: number, work: () => unknown): number {
  work()
  const seconds: number[] = []
  for (let i = 0; i < repetitions; i++) {
    const start = performance.now()
    work()
    seconds.push((performance.now() - start) / 1000)
  }
  return median(seconds)
}

/**
 * Encodes and decodes `delta` with each codec, `repetitions` timed times each, and returns the
 * real encoded sizes, the median throughputs and the round-trip error. Throws when an encoded
 * message's size differs from encodedDeltaSize, because then the size column would be wrong.
 */
export function measureCodecs(
  delta: DeltaTensor[],
  codecs: string[],
  repetitions: number,
): CodecMeasurement[] {
  const shapes = delta.map((tensor) => tensor.shape)
  const sizes = codecSizes(shapes, codecs)
  let valueCount = 0
  for (const tensor of delta) valueCount += tensor.values.length
  const inputMB = (valueCount * FLOAT32_BYTES) / BYTES_PER_MB
  return sizes.map((size) => {
    const message: DeltaMessage = {
      version: 1,
      codec: parseCodec(size.codec),
      specHash: new Uint8Array(32),
      round: 0,
      sampleCount: 1,
      baseModelHash: new Uint8Array(32),
      tensors: delta,
    }
    const bytes = encodeDelta(message)
    if (bytes.byteLength !== size.bytes) {
      throw new Error(
        `encodeDelta wrote ${bytes.byteLength} bytes in ${size.codec}, but encodedDeltaSize gives ${size.bytes}`,
      )
    }
    const encodeSeconds = medianSeconds(repetitions, () => encodeDelta(message))
    const decodeSeconds = medianSeconds(repetitions, () => decodeDelta(bytes))
    return {
      ...size,
      encodeMBps: inputMB / encodeSeconds,
      decodeMBps: inputMB / decodeSeconds,
      relativeError: relativeError(delta, decodeDelta(bytes).tensors),
    }
  })
}
