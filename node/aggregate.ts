/** One peer's weight delta for a round, with the number of samples it trained on. */
export interface Contribution {
  peerId: string
  sampleCount: number
  delta: Float32Array[]
}

/**
 * Computes `w_next = base + sum(n_j * delta_j) / sum(n_j)`, summed in float64 in peer-id order,
 * so every peer that holds the same set of contributions computes the same bits whatever order
 * they arrived in. When the only contribution is the local peer's own, the local weights are
 * returned unchanged: `base + (local - base)` rounded through float32 need not equal `local`.
 */
export function averageDeltas(
  base: Float32Array[],
  contributions: Contribution[],
  local?: { peerId: string; weights: Float32Array[] },
): Float32Array[] {
  if (contributions.length === 0) return base.map((values) => values.slice())
  const only = contributions.length === 1 ? contributions[0] : undefined
  if (local !== undefined && only?.peerId === local.peerId) {
    return local.weights.map((values) => values.slice())
  }
  const ordered = [...contributions].sort((a, b) =>
    a.peerId < b.peerId ? -1 : a.peerId > b.peerId ? 1 : 0,
  )
  let totalSamples = 0
  for (const contribution of ordered) totalSamples += contribution.sampleCount
  return base.map((baseValues, tensor) => {
    const sums = new Float64Array(baseValues.length)
    for (const contribution of ordered) {
      const delta = contribution.delta[tensor]
      if (delta === undefined || delta.length !== baseValues.length) {
        throw new RangeError(
          `Delta of peer ${contribution.peerId} has no tensor ${tensor} of length ${baseValues.length}`,
        )
      }
      const weight = contribution.sampleCount
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
