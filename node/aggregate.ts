import { UsageError } from './errors.ts'
import { log } from './log.ts'

/** One peer's weight delta for a round, with the number of samples it trained on. */
export interface Contribution {
  peerId: string
  sampleCount: number
  delta: Float32Array[]
}

/**
 * Rule that combines the deltas of a round. `mean` weights each delta by its sample count.
 * `trimmed-mean` and `median` work per coordinate and ignore sample counts, so a peer that
 * claims a large shard gains no extra weight.
 */
export type AggregationRule =
  | { name: 'mean' }
  | { name: 'trimmed-mean'; trim: number }
  | { name: 'median' }

export const AGGREGATION_FORMS = 'mean, median or trimmed-mean:B (B an integer of at least 1)'

/**
 * Parses `mean`, `median` or `trimmed-mean:B`. Throws UsageError naming `option` and the
 * accepted forms.
 */
export function parseAggregation(text: string, option = 'aggregation'): AggregationRule {
  if (text === 'mean' || text === 'median') return { name: text }
  const match = /^trimmed-mean:(\d+)$/.exec(text)
  const trim = match === null ? Number.NaN : Number(match[1])
  if (!Number.isSafeInteger(trim) || trim < 1) {
    throw new UsageError(`Expected ${option} to be ${AGGREGATION_FORMS}, got '${text}'`)
  }
  return { name: 'trimmed-mean', trim }
}

/** Returns the canonical text of a rule, so `trimmed-mean:01` and `trimmed-mean:1` hash alike. */
export function formatAggregation(rule: AggregationRule): string {
  return rule.name === 'trimmed-mean' ? `trimmed-mean:${rule.trim}` : rule.name
}

export interface AggregateOptions {
  rule: AggregationRule
  /**
   * L2 norm, over all tensors of a delta, above which the delta is scaled down to this norm
   * before the rule applies. 0 turns clipping off.
   */
  clipNorm: number
  /** The local peer's id and trained weights, returned as they are when it is the only contributor. */
  local?: { peerId: string; weights: Float32Array[] }
}

/** Whether a trimmed mean fell back to the median before, so the fallback is logged once. */
let medianFallbackLogged = false

/**
 * Computes the next weights, `base` plus the deltas combined by `options.rule`, in float64 and in
 * peer-id order, so every peer that has the same set of contributions computes the same bits
 * whatever order they arrived in. A trimmed mean whose 2 * B is not below the number of
 * contributions falls back to the median for that call. When the only contribution is the local
 * peer's own and clipping leaves it unchanged, the local weights are returned as they are:
 * `base + (local - base)` rounded through float32 need not equal `local`.
 */
export function aggregateDeltas(
  base: Float32Array[],
  contributions: Contribution[],
  options: AggregateOptions,
): Float32Array[] {
  if (contributions.length === 0) return base.map((values) => values.slice())
  const ordered = [...contributions].sort((a, b) =>
    a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0,
  )
  for (const contribution of ordered) checkShapes(base, contribution)
  const scales = clipScales(ordered, options.clipNorm)
  const { local } = options
  if (local !== undefined && ordered.length === 1 && scales[0] === 1) {
    if (ordered[0]?.peerId === local.peerId) return local.weights.map((values) => values.slice())
  }

  const rule = options.rule
  if (rule.name === 'mean') return weightedMean(base, ordered, scales)
  if (rule.name === 'median') return perCoordinate(base, ordered, scales, median)
  const trim = rule.trim
  if (2 * trim >= ordered.length) {
    if (!medianFallbackLogged) {
      log.info(
        'trimmed-mean:%d needs more than %d deltas, got %d: using the median instead (logged once)',
        trim,
        2 * trim,
        ordered.length,
      )
      medianFallbackLogged = true
    }
    return perCoordinate(base, ordered, scales, median)
  }
  return perCoordinate(base, ordered, scales, (sorted) => trimmedMean(sorted, trim))
}

/**
 * Computes `w_next = base + sum(n_j * delta_j) / sum(n_j)`, the sample-weighted mean without
 * clipping, with the same ordering and lone-peer guarantees as aggregateDeltas.
 */
export function averageDeltas(
  base: Float32Array[],
  contributions: Contribution[],
  local?: { peerId: string; weights: Float32Array[] },
): Float32Array[] {
  return aggregateDeltas(base, contributions, { rule: { name: 'mean' }, clipNorm: 0, local })
}

function checkShapes(base: Float32Array[], contribution: Contribution): void {
  for (const [tensor, baseValues] of base.entries()) {
    const delta = contribution.delta[tensor]
    if (delta === undefined || delta.length !== baseValues.length) {
      throw new RangeError(
        `Delta of peer ${contribution.peerId} has no tensor ${tensor} of length ${baseValues.length}`,
      )
    }
  }
}

/** Returns, per contribution, the factor that brings its L2 norm down to `clipNorm`, or 1. */
function clipScales(ordered: Contribution[], clipNorm: number): Float64Array {
  const scales = new Float64Array(ordered.length).fill(1)
  if (clipNorm <= 0) return scales
  for (const [j, contribution] of ordered.entries()) {
    let squares = 0
    for (const values of contribution.delta) {
      for (const value of values) squares += value * value
    }
    const norm = Math.sqrt(squares)
    if (norm > clipNorm) scales[j] = clipNorm / norm
  }
  return scales
}

function weightedMean(
  base: Float32Array[],
  ordered: Contribution[],
  scales: Float64Array,
): Float32Array[] {
  let totalSamples = 0
  for (const contribution of ordered) totalSamples += contribution.sampleCount
  return base.map((baseValues, tensor) => {
    const sums = new Float64Array(baseValues.length)
    for (const [j, contribution] of ordered.entries()) {
      const delta = contribution.delta[tensor] as Float32Array
      const weight = contribution.sampleCount * (scales[j] as number)
      for (let k = 0; k < sums.length; k++)
        sums[k] = (sums[k] as number) + weight * (delta[k] as number)
    }
    const next = new Float32Array(baseValues.length)
    for (let k = 0; k < next.length; k++) {
      next[k] = (baseValues[k] as number) + (sums[k] as number) / totalSamples
    }
    return next
  })
}

/**
 * Applies `combine` to the sorted values of each coordinate. Float64Array's default sort orders
 * numbers by value and -0 before +0, so the sorted values, and the result, have the same bits
 * for any input order.
 */
function perCoordinate(
  base: Float32Array[],
  ordered: Contribution[],
  scales: Float64Array,
  combine: (sorted: Float64Array) => number,
): Float32Array[] {
  const values = new Float64Array(ordered.length)
  return base.map((baseValues, tensor) => {
    const deltas = ordered.map((contribution) => contribution.delta[tensor] as Float32Array)
    const next = new Float32Array(baseValues.length)
    for (let k = 0; k < next.length; k++) {
      for (let j = 0; j < values.length; j++) {
        values[j] = (scales[j] as number) * ((deltas[j] as Float32Array)[k] as number)
      }
      values.sort()
      next[k] = (baseValues[k] as number) + combine(values)
    }
    return next
  })
}

/** Median of sorted values; for an even count, the mean of the two middle ones. */
function median(sorted: Float64Array): number {
  const middle = sorted.length >> 1
  if (sorted.length % 2 === 1) return sorted[middle] as number
  return ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2
}

/** Unweighted mean of sorted values without the `trim` smallest and `trim` largest. */
function trimmedMean(sorted: Float64Array, trim: number): number {
  let sum = 0
  for (let j = trim; j < sorted.length - trim; j++) sum += sorted[j] as number
  return sum / (sorted.length - 2 * trim)
}

/** Returns `trained - base` per tensor, in float32. */
export function subtractWeights(trained: Float32Array[], base: Float32Array[]): Float32Array[] {
  return trained.map((values, tensor) => {
    const baseValues = base[tensor] as Float32Array
    const delta = new Float32Array(values.length)
    for (let k = 0; k < delta.length; k++)
      delta[k] = (values[k] as number) - (baseValues[k] as number)
    return delta
  })
}
