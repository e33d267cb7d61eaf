import { createHash } from 'node:crypto'
import { CodecSpecError, formatCodec, parseCodec } from '../protocols/index.ts'
import { formatAggregation, parseAggregation } from './aggregate.ts'
import { UsageError } from './errors.ts'

export const MODEL_NAMES = ['mlp', 'mlp-large', 'mlp-wide', 'cnn', 'cnn-small'] as const
export type ModelName = (typeof MODEL_NAMES)[number]

export const OPTIMIZER_NAMES = ['adam', 'sgd'] as const
export type OptimizerName = (typeof OPTIMIZER_NAMES)[number]

/**
 * Settings that every peer of one swarm must share. Their hash is part of the gossipsub topic,
 * so peers whose specs differ never exchange deltas.
 */
export interface SwarmSpec {
  /** Swarm name, part of the topic. @default 'mnist' */
  swarm: string
  /**
   * Model architecture, all on flat 784-pixel images with 10 logits out:
   * - 'mlp': 784-200-200-10, ReLU, 199,210 parameters.
   * - 'mlp-large': 784-1536-192-10, ReLU, 1,502,794 parameters, whose float32 delta of about
   *   6 MiB needs several gossip messages.
   * - 'mlp-wide': 784-512-512-10, ReLU, dropout 0.2 after each hidden layer, 669,706 parameters.
   * - 'cnn': 5x5 convolutions of 32 and 64 channels ('same' padding, ReLU), each followed by 2x2
   *   max-pooling, then dense 512 (ReLU) and dense 10, 1,663,370 parameters.
   * - 'cnn-small': one 3x3 convolution of 32 channels ('same' padding, ReLU), 2x2 max-pooling,
   *   dense 10, 63,050 parameters.
   * @default 'mlp'
   */
  model: ModelName
  /** Seed of the initial weights, the shard partition and the per-epoch shuffles. @default 1 */
  seed: number
  /** Partition of the training set, in the form `iid`, `dirichlet:ALPHA` or `classes:K`. @default 'iid' */
  partition: string
  /** Number of shards the training set is cut into, one per peer. @default 1 */
  peers: number
  /** Training images used, counted from the start of the training set. @default 60000 */
  trainSamples: number
  /** Test images used for evaluation, counted from the start of the test set. @default 10000 */
  testSamples: number
  /** Local epochs per round. @default 1 */
  localEpochs: number
  /** Mini-batch size. @default 32 */
  batchSize: number
  optimizer: OptimizerName
  /** @default 0.001 */
  learningRate: number
  /**
   * Tensor codec of the delta messages, in parseCodec's form: 'float32', 'float16',
   * 'int8:BLOCK' or 'topk:FRACTION' (sent with error feedback). @default 'float32'
   */
  codec: string
  /**
   * Aggregation rule, in canonical form: 'mean' (weighted by sample count), 'median' (per
   * coordinate) or 'trimmed-mean:B' (per coordinate, the mean without the B largest and B
   * smallest values). The last two ignore sample counts. @default 'mean'
   */
  aggregation: string
  /**
   * L2 norm above which a delta is scaled down to this norm before the aggregation rule
   * applies; 0 turns clipping off. @default 0
   */
  clipNorm: number
  /**
   * Largest gossipsub message in bytes that a peer sends or accepts. A larger delta travels
   * in parts of at most this size. It is part of the spec, so every peer of a swarm has the
   * same limit on both sides and no peer sends a frame another rejects. @default 1 MiB
   */
  maxMessageBytes: number
  /**
   * Maximum time in seconds a peer waits for the deltas of a round after publishing its own.
   * After the first rounds the wait follows the swarm's recent waits (see AdaptiveDeadline),
   * between deadlineFloorSeconds and this ceiling. @default 300
   */
  roundDeadlineSeconds: number
  /** Shortest deadline in seconds that the adaptive deadline may reach. @default 10 */
  deadlineFloorSeconds: number
  /**
   * Fraction of the peers that train and publish in each round, in (0, 1]. In round r the
   * peer of shard i takes part when a draw from (seed, r, i) is below it (see participation.ts).
   * So every peer computes the round's participants without a request, and the others apply
   * the participants' deltas. @default 1
   */
  participation: number
}

export const DEFAULT_SPEC: SwarmSpec = {
  swarm: 'mnist',
  model: 'mlp',
  seed: 1,
  partition: 'iid',
  peers: 1,
  trainSamples: 60_000,
  testSamples: 10_000,
  localEpochs: 1,
  batchSize: 32,
  optimizer: 'adam',
  learningRate: 0.001,
  codec: 'float32',
  maxMessageBytes: 1024 * 1024,
  aggregation: 'mean',
  clipNorm: 0,
  roundDeadlineSeconds: 300,
  deadlineFloorSeconds: 10,
  participation: 1,
}

/** Returns the SHA-256 of the spec's canonical JSON (keys sorted), so field order never matters. */
export function hashSpec(spec: SwarmSpec): Uint8Array {
  const entries = Object.entries(spec).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
  return new Uint8Array(createHash('sha256').update(JSON.stringify(entries)).digest())
}

function requireInteger(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new UsageError(`Expected ${name} to be an integer from ${min} to ${max}, got ${value}`)
  }
}

function requirePositive(name: string, value: number): void {
  if (!Number.isFinite(value) || value <= 0) {
    throw new UsageError(`Expected ${name} to be a finite number > 0, got ${value}`)
  }
}

/** Checks every field of a spec and throws UsageError naming the first invalid one. */
export function validateSpec(spec: SwarmSpec): SwarmSpec {
  if (!/^[A-Za-z0-9._-]+$/.test(spec.swarm)) {
    throw new UsageError(
      `Expected --swarm to contain only letters, digits, '.', '_' and '-', got '${spec.swarm}'`,
    )
  }
  if (!MODEL_NAMES.includes(spec.model)) {
    throw new UsageError(
      `Expected --model to be one of ${MODEL_NAMES.join(', ')}, got '${spec.model}'`,
    )
  }
  if (!OPTIMIZER_NAMES.includes(spec.optimizer)) {
    throw new UsageError(
      `Expected --optimizer to be one of ${OPTIMIZER_NAMES.join(', ')}, got '${spec.optimizer}'`,
    )
  }
  requireInteger('--seed', spec.seed, 0, 2 ** 32 - 1)
  requireInteger('--peers', spec.peers, 1, 10_000)
  requireInteger('--train-samples', spec.trainSamples, 1, 60_000)
  requireInteger('--test-samples', spec.testSamples, 1, 10_000)
  requireInteger('--epochs', spec.localEpochs, 1, 1000)
  requireInteger('--batch-size', spec.batchSize, 1, 60_000)
  requirePositive('--learning-rate', spec.learningRate)
  // Below 4 KiB a part's header would take a large share of every message.
  requireInteger('--max-message-bytes', spec.maxMessageBytes, 4096, 64 * 1024 * 1024)
  requirePositive('--deadline', spec.roundDeadlineSeconds)
  requirePositive('--deadline-floor', spec.deadlineFloorSeconds)
  if (!(spec.participation > 0 && spec.participation <= 1)) {
    throw new UsageError(
      `Expected --participation to be a fraction in (0, 1], such as 0.1, got ${spec.participation}`,
    )
  }
  if (spec.deadlineFloorSeconds > spec.roundDeadlineSeconds) {
    throw new UsageError(
      `Expected --deadline-floor (${spec.deadlineFloorSeconds}) to be at most --deadline (${spec.roundDeadlineSeconds}); lower --deadline-floor or raise --deadline`,
    )
  }
  try {
    // The canonical form keeps 'int8' and 'int8:256' from hashing to different topics.
    spec.codec = formatCodec(parseCodec(spec.codec))
  } catch (error) {
    if (error instanceof CodecSpecError) throw new UsageError(error.message)
    throw error
  }
  if (spec.trainSamples < spec.peers) {
    throw new UsageError(
      `Expected --train-samples (${spec.trainSamples}) to be at least --peers (${spec.peers}), so no shard is empty`,
    )
  }
  const aggregation = parseAggregation(spec.aggregation)
  // Each peer trains on one of the `peers` shards, so with a larger B no full round keeps a value.
  if (aggregation.name === 'trimmed-mean' && 2 * aggregation.trim >= spec.peers) {
    throw new UsageError(
      `Expected trimmed-mean:B to keep at least one of the ${spec.peers} peers' values (2 * B < peers), got '${spec.aggregation}'; use a smaller B or median`,
    )
  }
  // The canonical form keeps 'trimmed-mean:01' and 'trimmed-mean:1' from hashing differently.
  spec.aggregation = formatAggregation(aggregation)
  if (!Number.isFinite(spec.clipNorm) || spec.clipNorm < 0) {
    throw new UsageError(
      `Expected clipNorm to be a finite number >= 0 (0 turns clipping off), got ${spec.clipNorm}`,
    )
  }
  return spec
}
