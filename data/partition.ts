import { PartitionError } from './errors.ts'
import { deriveSeed, Random, sampleDirichlet, shuffleInPlace } from './random.ts'

/**
 * Partitioners that split the training set into one shard per peer. Every peer computes the same
 * split from the shared seed and keeps only its own shard, so no peer sends indices to another.
 * The shards are always disjoint. For `iid`, `dirichlet` and `classes` their union is the whole
 * training set; `iid-per-client` and `shards` use as many examples as their sizes take.
 */

/**
 * A rule for splitting the training set into shards. `iid` deals shuffled examples evenly,
 * `dirichlet` gives each peer Dir(alpha) proportions of every class (small alpha gives strong
 * label skew), and `classes` gives each peer examples of `classesPerPeer` digit classes only.
 * McMahan et al. (2017) used two more: `iid-per-client` gives each peer `size` random examples.
 * `shards` sorts the examples by label, cuts them into `count` runs of `size` and deals each
 * peer `count / peers` runs drawn at random.
 */
export type Partition =
  | { kind: 'iid' }
  | { kind: 'dirichlet'; alpha: number }
  | { kind: 'classes'; classesPerPeer: number }
  | { kind: 'iid-per-client'; size: number }
  | { kind: 'shards'; count: number; size: number }

/** The partition kinds that split each class separately. */
type ClassWisePartition = Extract<Partition, { kind: 'dirichlet' | 'classes' }>

export type ShardSizeOptions = {
  /** Seed shared by all peers of a run. Any safe integer. */
  seed: number
  /** Number of shards, one per peer. */
  peers: number
}

export type ShardOptions = ShardSizeOptions & {
  /** This peer's shard, 0..peers-1. */
  index: number
}

/** Number of label classes: the MNIST digits 0-9. */
export const CLASS_COUNT = 10

const ACCEPTED_FORMS = `iid, dirichlet:ALPHA with ALPHA > 0, classes:K with K in 1..${CLASS_COUNT}, iid-per-client:N with N >= 1, or shards:COUNTxSIZE such as shards:200x300`
const SHARDS_PATTERN = /^(\d+)x(\d+)$/
const DECIMAL_PATTERN = /^\+?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/
const INTEGER_PATTERN = /^\d+$/

/** Parses a partition spec: `iid`, `dirichlet:ALPHA` or `classes:K`. Throws PartitionError. */
export function parsePartition(text: string): Partition {
  if (text === 'iid') {
    return { kind: 'iid' }
  }

  const separator = text.indexOf(':')
  const kind = separator === -1 ? text : text.slice(0, separator)
  const argument = separator === -1 ? '' : text.slice(separator + 1)
  if (kind === 'dirichlet' && DECIMAL_PATTERN.test(argument)) {
    const partition: Partition = { kind: 'dirichlet', alpha: Number(argument) }
    validatePartition(partition, text)
    return partition
  }
  if (kind === 'iid-per-client' && INTEGER_PATTERN.test(argument)) {
    const partition: Partition = { kind: 'iid-per-client', size: Number(argument) }
    validatePartition(partition, text)
    return partition
  }
  const shards = kind === 'shards' ? SHARDS_PATTERN.exec(argument) : null
  if (shards !== null) {
    const partition: Partition = {
      kind: 'shards',
      count: Number(shards[1]),
      size: Number(shards[2]),
    }
    validatePartition(partition, text)
    return partition
  }
  if (kind === 'classes' && INTEGER_PATTERN.test(argument)) {
    const partition: Partition = { kind: 'classes', classesPerPeer: Number(argument) }
    validatePartition(partition, text)
    return partition
  }
  throw new PartitionError(`Invalid partition "${text}": expected ${ACCEPTED_FORMS}.`)
}

/** Formats a partition as the spec that `parsePartition` accepts. */
export function formatPartition(partition: Partition): string {
  switch (partition.kind) {
    case 'iid':
      return 'iid'
    case 'dirichlet':
      return `dirichlet:${partition.alpha}`
    case 'classes':
      return `classes:${partition.classesPerPeer}`
    case 'iid-per-client':
      return `iid-per-client:${partition.size}`
    case 'shards':
      return `shards:${partition.count}x${partition.size}`
  }
}

/**
 * Returns the training-set indices of shard `options.index`, in ascending order. Builds no index
 * array of any other shard. Throws PartitionError on invalid options or when any shard would be
 * empty, so all peers of a run reject the same settings.
 */
export function shardIndices(
  labels: Uint8Array,
  partition: Partition,
  options: ShardOptions,
): Uint32Array {
  const { seed, peers, index } = options
  validatePartition(partition, formatPartition(partition))
  validatePeers(seed, peers)
  if (!Number.isInteger(index) || index < 0 || index >= peers) {
    throw new PartitionError(
      `Invalid shard index ${index}: expected an integer in 0..${peers - 1} for ${peers} peers.`,
    )
  }

  let shard: Uint32Array
  if (partition.kind === 'iid-per-client') {
    requireExamples(partition.size * peers, labels.length, partition, peers)
    const start = index * partition.size
    shard = shuffledIndices(labels.length, seed).slice(start, start + partition.size)
  } else if (partition.kind === 'shards') {
    requireExamples(partition.count * partition.size, labels.length, partition, peers)
    requireWholeRuns(partition, peers)
    shard = runShard(labels, partition, seed, peers, index)
  } else if (partition.kind === 'iid') {
    requireNonEmptyShards(iidSizes(labels.length, peers), partition, seed)
    shard = iidShard(labels.length, seed, peers, index)
  } else {
    const classes = indicesByClass(labels)
    const cuts = classCuts(partition, seed, peers, classSizes(classes))
    requireNonEmptyShards(sizesFromCuts(cuts, peers), partition, seed)
    shard = classShard(classes, cuts, partition, seed, index)
  }
  return shard.sort()
}

/**
 * Returns the size of every shard, in shard order, without building index arrays. Entry `i`
 * equals `shardIndices(labels, partition, { seed, peers, index: i }).length`. Throws
 * PartitionError like `shardIndices`.
 */
export function shardSizes(
  labels: Uint8Array,
  partition: Partition,
  options: ShardSizeOptions,
): number[] {
  const { seed, peers } = options
  validatePartition(partition, formatPartition(partition))
  validatePeers(seed, peers)

  if (partition.kind === 'iid-per-client') {
    requireExamples(partition.size * peers, labels.length, partition, peers)
    return new Array<number>(peers).fill(partition.size)
  }
  if (partition.kind === 'shards') {
    requireExamples(partition.count * partition.size, labels.length, partition, peers)
    requireWholeRuns(partition, peers)
    return new Array<number>(peers).fill((partition.count / peers) * partition.size)
  }
  const sizes =
    partition.kind === 'iid'
      ? iidSizes(labels.length, peers)
      : sizesFromCuts(classCuts(partition, seed, peers, countClasses(labels)), peers)
  requireNonEmptyShards(sizes, partition, seed)
  return sizes
}

/** Throws PartitionError unless the training set contains the `needed` examples. */
function requireExamples(needed: number, count: number, partition: Partition, peers: number) {
  if (needed <= count) return
  throw new PartitionError(
    `Partition ${formatPartition(partition)} with ${peers} peers needs ${needed} training ` +
      `examples, but the training set has ${count}. Use fewer peers, smaller sizes or more ` +
      'training samples (--train-samples).',
  )
}

/** Throws PartitionError unless every peer gets the same whole number of runs. */
function requireWholeRuns(partition: Extract<Partition, { kind: 'shards' }>, peers: number) {
  if (partition.count % peers === 0) return
  throw new PartitionError(
    `Partition ${formatPartition(partition)} cannot give ${peers} peers the same number of ` +
      `its ${partition.count} runs. Use a peer count that divides ${partition.count}.`,
  )
}

/**
 * Returns shard `index` of a `shards` partition: the examples sorted by label (ties by index),
 * cut into runs of `size`, and the runs dealt in an order drawn from the seed.
 */
function runShard(
  labels: Uint8Array,
  partition: Extract<Partition, { kind: 'shards' }>,
  seed: number,
  peers: number,
  index: number,
): Uint32Array {
  const sorted = Uint32Array.from(indicesByClass(labels).flatMap((indices) => [...indices]))
  const runs = new Uint32Array(partition.count)
  for (let i = 0; i < runs.length; i++) runs[i] = i
  shuffleInPlace(runs, new Random(deriveSeed(seed, 'shards-deal')))
  const perPeer = partition.count / peers
  const shard = new Uint32Array(perPeer * partition.size)
  for (let k = 0; k < perPeer; k++) {
    const run = runs[index * perPeer + k] as number
    const start = run * partition.size
    shard.set(sorted.subarray(start, start + partition.size), k * partition.size)
  }
  return shard
}

/** Throws PartitionError unless the partition's parameter is in range. `spec` names it. */
function validatePartition(partition: Partition, spec: string): void {
  if (partition.kind === 'dirichlet') {
    const { alpha } = partition
    if (!Number.isFinite(alpha) || alpha <= 0) {
      throw new PartitionError(
        `Invalid partition "${spec}": ALPHA must be a finite number > 0, got ${alpha}. ` +
          `Expected ${ACCEPTED_FORMS}.`,
      )
    }
  } else if (partition.kind === 'iid-per-client') {
    if (!Number.isInteger(partition.size) || partition.size < 1) {
      throw new PartitionError(
        `Invalid partition "${spec}": N must be an integer >= 1, got ${partition.size}. ` +
          `Expected ${ACCEPTED_FORMS}.`,
      )
    }
  } else if (partition.kind === 'shards') {
    const { count, size } = partition
    if (!Number.isInteger(count) || count < 1 || !Number.isInteger(size) || size < 1) {
      throw new PartitionError(
        `Invalid partition "${spec}": COUNT and SIZE must be integers >= 1, got ${count} and ` +
          `${size}. Expected ${ACCEPTED_FORMS}.`,
      )
    }
  } else if (partition.kind === 'classes') {
    const k = partition.classesPerPeer
    if (!Number.isInteger(k) || k < 1 || k > CLASS_COUNT) {
      throw new PartitionError(
        `Invalid partition "${spec}": K must be an integer in 1..${CLASS_COUNT}, got ${k}. ` +
          `Expected ${ACCEPTED_FORMS}.`,
      )
    }
  }
}

function validatePeers(seed: number, peers: number): void {
  if (!Number.isSafeInteger(seed)) {
    throw new PartitionError(`Invalid seed ${seed}: expected a safe integer.`)
  }
  if (!Number.isInteger(peers) || peers < 1) {
    throw new PartitionError(`Invalid peer count ${peers}: expected an integer >= 1.`)
  }
}

function requireNonEmptyShards(sizes: readonly number[], partition: Partition, seed: number) {
  const empty = sizes.indexOf(0)
  if (empty === -1) {
    return
  }
  const spec = formatPartition(partition)
  const advice =
    partition.kind === 'dirichlet'
      ? 'Use fewer peers, a larger ALPHA or another seed.'
      : 'Use fewer peers.'
  throw new PartitionError(
    `Shard ${empty} of ${sizes.length} would be empty with partition ${spec} and seed ${seed}. ` +
      advice,
  )
}

/**
 * Returns the position in the shuffled permutation where iid shard `index` starts. Shard sizes
 * are floor or ceiling of count / peers, so they differ by at most 1.
 */
function iidCut(count: number, peers: number, index: number): number {
  return Math.floor((index * count) / peers)
}

function iidSizes(count: number, peers: number): number[] {
  const sizes = []
  for (let i = 0; i < peers; i++) {
    sizes.push(iidCut(count, peers, i + 1) - iidCut(count, peers, i))
  }
  return sizes
}

/** Returns 0..count-1 in the order that the seed draws, shared by iid and iid-per-client. */
function shuffledIndices(count: number, seed: number): Uint32Array {
  const permutation = new Uint32Array(count)
  for (let i = 0; i < count; i++) {
    permutation[i] = i
  }
  shuffleInPlace(permutation, new Random(deriveSeed(seed, 'iid-shuffle')))
  return permutation
}

function iidShard(count: number, seed: number, peers: number, index: number): Uint32Array {
  return shuffledIndices(count, seed).slice(
    iidCut(count, peers, index),
    iidCut(count, peers, index + 1),
  )
}

/** Returns the number of examples of each class. Throws PartitionError on a label outside 0-9. */
function countClasses(labels: Uint8Array): number[] {
  const counts = new Array<number>(CLASS_COUNT).fill(0)
  for (let i = 0; i < labels.length; i++) {
    const label = labels[i] as number
    if (label >= CLASS_COUNT) {
      throw new PartitionError(
        `Invalid label ${label} at index ${i}: expected a class in 0..${CLASS_COUNT - 1}.`,
      )
    }
    counts[label] = (counts[label] as number) + 1
  }
  return counts
}

/** Returns, for each class, the indices of its examples in ascending order. */
function indicesByClass(labels: Uint8Array): Uint32Array[] {
  const counts = countClasses(labels)
  const classes = counts.map((count) => new Uint32Array(count))
  const filled = new Array<number>(CLASS_COUNT).fill(0)
  for (let i = 0; i < labels.length; i++) {
    const label = labels[i] as number
    const position = filled[label] as number
    ;(classes[label] as Uint32Array)[position] = i
    filled[label] = position + 1
  }
  return classes
}

function classSizes(classes: readonly Uint32Array[]): number[] {
  return classes.map((indices) => indices.length)
}

/**
 * Returns, for each class c, `peers + 1` cut points into the shuffled examples of c: shard i
 * gets positions cuts[c][i] up to but excluding cuts[c][i + 1]. The cuts start at 0, never
 * decrease and end at the class size, so every example goes to exactly one shard.
 */
function classCuts(
  partition: ClassWisePartition,
  seed: number,
  peers: number,
  counts: readonly number[],
): Uint32Array[] {
  if (partition.kind === 'dirichlet') {
    return counts.map((count, c) => dirichletCuts(partition.alpha, seed, peers, count, c))
  }
  requireAllClassesAssigned(partition.classesPerPeer, peers)
  return counts.map((count, c) => assignedClassCuts(partition.classesPerPeer, peers, count, c))
}

function dirichletCuts(
  alpha: number,
  seed: number,
  peers: number,
  count: number,
  classIndex: number,
): Uint32Array {
  const random = new Random(deriveSeed(seed, 'dirichlet-proportions', classIndex))
  const proportions = sampleDirichlet(random, alpha, peers)
  const cuts = new Uint32Array(peers + 1)
  let cumulative = 0
  for (let i = 0; i < peers; i++) {
    cumulative += proportions[i] as number
    // Math.min keeps rounding in the running sum from pushing a cut past the class size.
    cuts[i + 1] = Math.min(count, Math.floor(count * cumulative))
  }
  // The proportions sum to 1 only up to rounding, so the last cut is set exactly.
  cuts[peers] = count
  return cuts
}

/** Returns whether classes:K assigns class `classIndex` to peer `peer`. */
function isClassAssigned(classesPerPeer: number, peer: number, classIndex: number): boolean {
  // Peer i is assigned classes (i*K + j) mod 10 for j < K, which includes c exactly when
  // (c - i*K) mod 10 < K.
  const offset = (((classIndex - peer * classesPerPeer) % CLASS_COUNT) + CLASS_COUNT) % CLASS_COUNT
  return offset < classesPerPeer
}

function requireAllClassesAssigned(classesPerPeer: number, peers: number): void {
  // Each peer's classes continue where the previous peer's end, so `peers` peers cover the
  // peers*K consecutive classes 0..peers*K-1 modulo 10.
  const needed = Math.ceil(CLASS_COUNT / classesPerPeer)
  if (peers < needed) {
    const firstUnassigned = peers * classesPerPeer
    const unassigned =
      firstUnassigned === CLASS_COUNT - 1
        ? `class ${firstUnassigned}`
        : `classes ${firstUnassigned}..${CLASS_COUNT - 1}`
    throw new PartitionError(
      `Partition classes:${classesPerPeer} with ${peers} peers assigns ${unassigned} to no peer, ` +
        `so it needs at least ${needed} peers. Start at least ${needed} peers or use a larger K.`,
    )
  }
}

function assignedClassCuts(
  classesPerPeer: number,
  peers: number,
  count: number,
  classIndex: number,
): Uint32Array {
  let assignees = 0
  for (let peer = 0; peer < peers; peer++) {
    if (isClassAssigned(classesPerPeer, peer, classIndex)) {
      assignees++
    }
  }

  // The assigned peers split the class evenly in peer order, and the others get empty ranges.
  const cuts = new Uint32Array(peers + 1)
  let rank = 0
  for (let peer = 0; peer < peers; peer++) {
    if (isClassAssigned(classesPerPeer, peer, classIndex)) {
      rank++
    }
    cuts[peer + 1] = Math.floor((rank * count) / assignees)
  }
  return cuts
}

function sizesFromCuts(cuts: readonly Uint32Array[], peers: number): number[] {
  const sizes = new Array<number>(peers).fill(0)
  for (const classCut of cuts) {
    for (let i = 0; i < peers; i++) {
      sizes[i] = (sizes[i] as number) + (classCut[i + 1] as number) - (classCut[i] as number)
    }
  }
  return sizes
}

function classShard(
  classes: readonly Uint32Array[],
  cuts: readonly Uint32Array[],
  partition: ClassWisePartition,
  seed: number,
  index: number,
): Uint32Array {
  let size = 0
  for (const classCut of cuts) {
    size += (classCut[index + 1] as number) - (classCut[index] as number)
  }

  const shard = new Uint32Array(size)
  let filled = 0
  classes.forEach((indices, c) => {
    const classCut = cuts[c] as Uint32Array
    const start = classCut[index] as number
    const end = classCut[index + 1] as number
    if (end === start) {
      return
    }
    // Each class is shuffled in full, so every peer gets the same order and cuts it alike.
    shuffleInPlace(indices, new Random(deriveSeed(seed, `${partition.kind}-class-shuffle`, c)))
    shard.set(indices.subarray(start, end), filled)
    filled += end - start
  })
  return shard
}
