/**
 * Checks that gossipsub's topic validator runs on a delta message before delivering or
 * forwarding it.
 *
 * The verdicts are the string values of TopicValidatorResult in @libp2p/interface 2.11.
 * In @chainsafe/libp2p-gossipsub 14.1, 'ignore' drops the message without penalty, and 'reject'
 * drops it and records an invalid message delivery in the sender's peer score.
 */

import { bytesEqual, toHex } from './bytes.ts'
import { type CodecSpec, formatCodec } from './codecs.ts'
import { type DeltaMessage, type DeltaTensor, decodeDelta } from './delta.ts'
import { DeltaDecodeError, MembershipDecodeError } from './errors.ts'
import { decodeMembership, type MembershipMessage } from './membership.ts'

/** The local peer's view of what a valid delta looks like. */
export interface DeltaValidatorInit {
  /** SHA-256 of the local swarm spec, 32 bytes. */
  specHash: Uint8Array
  /** Expected tensor shapes, in the order the model lists its weights. */
  shapes: number[][]
  /** Maximum sampleCount a peer may report: the number of training samples in one shard. */
  maxSampleCount: number
  /** Current round of the local round loop. Deltas of earlier rounds are stale. */
  currentRound: () => number
  /** Codec of the local swarm spec; a delta in another codec is rejected. @default float32 */
  codec?: CodecSpec
}

export type DeltaVerdict =
  | { result: 'accept'; message: DeltaMessage }
  | { result: 'reject' | 'ignore'; reason: string }

/**
 * Decodes a delta message and decides whether gossipsub should accept, ignore or reject it.
 *
 * - reject: the bytes do not decode, the codec differs from the spec's, the tensor count or a
 *   shape differs from `shapes`,
 *   sampleCount is 0 or above maxSampleCount, or a value is NaN or infinite.
 * - ignore: the message belongs to another swarm spec, or to a round before currentRound().
 *   Neither is the sender's fault, so neither lowers its score.
 * - accept: everything else, including rounds after the current one, which the round loop
 *   buffers.
 *
 * The reason names the field and its value. An error other than DeltaDecodeError is a bug
 * and is rethrown.
 */
export function validateDelta(bytes: Uint8Array, init: DeltaValidatorInit): DeltaVerdict {
  let message: DeltaMessage
  try {
    // Bounding the values by the expected model keeps a hostile top-k header from making the
    // decoder allocate more than the local model holds.
    const maxValueCount = init.shapes.reduce(
      (sum, shape) => sum + shape.reduce((a, b) => a * b, 1),
      0,
    )
    message = decodeDelta(bytes, { maxValueCount })
  } catch (error) {
    if (error instanceof DeltaDecodeError) {
      return { result: 'reject', reason: error.message }
    }
    throw error
  }

  if (!bytesEqual(message.specHash, init.specHash)) {
    return {
      result: 'ignore',
      reason:
        `specHash ${hexPrefix(message.specHash)}… differs from the local swarm spec ` +
        `${hexPrefix(init.specHash)}…`,
    }
  }

  const currentRound = init.currentRound()
  if (message.round < currentRound) {
    return {
      result: 'ignore',
      reason: `round ${message.round} is older than the current round ${currentRound}`,
    }
  }

  const expectedCodec = formatCodec(init.codec ?? { name: 'float32' })
  const codec = formatCodec(message.codec)
  if (codec !== expectedCodec) {
    return {
      result: 'reject',
      reason: `codec ${codec} differs from the swarm spec's codec ${expectedCodec}`,
    }
  }

  const shapeProblem = findShapeMismatch(message, init.shapes)
  if (shapeProblem !== undefined) {
    return { result: 'reject', reason: shapeProblem }
  }

  if (message.sampleCount === 0) {
    return {
      result: 'reject',
      reason: 'sampleCount 0 is invalid, because a delta must be trained on at least one sample',
    }
  }
  if (message.sampleCount > init.maxSampleCount) {
    return {
      result: 'reject',
      reason: `sampleCount ${message.sampleCount} exceeds the maximum shard size ${init.maxSampleCount}`,
    }
  }

  // Runs last because it reads every value, while the checks above read only the header.
  const valueProblem = findNonFiniteValue(message)
  if (valueProblem !== undefined) {
    return { result: 'reject', reason: valueProblem }
  }

  return { result: 'accept', message }
}

export type MembershipVerdict =
  | { result: 'accept'; message: MembershipMessage }
  | { result: 'reject' | 'ignore'; reason: string }

/**
 * Decides whether gossipsub should accept, ignore or reject a join or leave message: reject when the
 * bytes do not decode, ignore when it belongs to another swarm spec, accept otherwise.
 */
export function validateMembership(bytes: Uint8Array, specHash: Uint8Array): MembershipVerdict {
  let message: MembershipMessage
  try {
    message = decodeMembership(bytes)
  } catch (error) {
    if (error instanceof MembershipDecodeError) return { result: 'reject', reason: error.message }
    throw error
  }
  if (!bytesEqual(message.specHash, specHash)) {
    return {
      result: 'ignore',
      reason: `${message.kind} for specHash ${hexPrefix(message.specHash)}… differs from the local swarm spec ${hexPrefix(specHash)}…`,
    }
  }
  return { result: 'accept', message }
}

function findShapeMismatch(message: DeltaMessage, shapes: number[][]): string | undefined {
  if (message.tensors.length !== shapes.length) {
    return `tensorCount ${message.tensors.length} differs from the expected ${shapes.length}`
  }
  for (let index = 0; index < shapes.length; index++) {
    const actual = (message.tensors[index] as DeltaTensor).shape
    const expected = shapes[index] as number[]
    if (!shapesEqual(actual, expected)) {
      return `tensors[${index}].shape [${actual.join(', ')}] differs from the expected [${expected.join(', ')}]`
    }
  }
  return undefined
}

function findNonFiniteValue(message: DeltaMessage): string | undefined {
  for (let index = 0; index < message.tensors.length; index++) {
    const values = (message.tensors[index] as DeltaTensor).values
    for (let i = 0; i < values.length; i++) {
      const value = values[i] as number
      // value - value is 0 for every finite number and NaN for NaN and both infinities.
      if (value - value !== 0) {
        return `tensors[${index}].values[${i}] is ${value}, expected a finite number`
      }
    }
  }
  return undefined
}

function shapesEqual(a: number[], b: number[]): boolean {
  if (a.length !== b.length) {
    return false
  }
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) {
      return false
    }
  }
  return true
}

function hexPrefix(bytes: Uint8Array): string {
  return toHex(bytes.subarray(0, 8))
}
