import { deriveSeed } from '../data/index.ts'

const UINT32_RANGE = 2 ** 32

/** Returns a peer's draw for a round: uniform in [0, 1) from (seed, round, peer index). */
function draw(seed: number, round: number, peerIndex: number): number {
  return deriveSeed(seed, `participation:${peerIndex}`, round) / UINT32_RANGE
}

/**
 * Returns the shard indices that train and publish in `round` when a fraction `participation`
 * of the peers takes part. These are the peers whose draw is below it. When there are none, the
 * peer with the lowest draw takes part, so every round has a participant. Every peer computes
 * the same set from the spec, without a request to any other peer.
 */
export function participants(
  seed: number,
  round: number,
  peers: number,
  participation: number,
): Set<number> {
  if (participation >= 1) return new Set(Array.from({ length: peers }, (_, index) => index))
  const chosen = new Set<number>()
  let lowest = 0
  let lowestDraw = Number.POSITIVE_INFINITY
  for (let index = 0; index < peers; index++) {
    const value = draw(seed, round, index)
    if (value < participation) chosen.add(index)
    if (value < lowestDraw) {
      lowestDraw = value
      lowest = index
    }
  }
  if (chosen.size === 0) chosen.add(lowest)
  return chosen
}
