/** Multiple of the recent round times that a peer waits before it closes a round without a peer. */
const ROUND_FACTOR = 2
/** Rounds whose times the deadline follows. */
const WINDOW = 5

/**
 * The time a peer waits for the others' deltas after publishing its own. It starts at the
 * ceiling and then follows the swarm: ROUND_FACTOR times the longest of the last WINDOW rounds
 * in which every delta arrived (training, turns and waiting together), kept between a floor and
 * a ceiling. A peer that stalls therefore costs the others one deadline per round, and after a
 * few normal rounds that deadline is a small multiple of a normal round.
 */
export class AdaptiveDeadline {
  private readonly floorMs: number
  private readonly ceilingMs: number
  private readonly roundTimes: number[] = []

  constructor(floorMs: number, ceilingMs: number) {
    if (!(floorMs > 0 && floorMs <= ceilingMs)) {
      throw new RangeError(`Expected 0 < floor (${floorMs} ms) <= ceiling (${ceilingMs} ms)`)
    }
    this.floorMs = floorMs
    this.ceilingMs = ceilingMs
  }

  /** Milliseconds to wait in the next round. */
  get currentMs(): number {
    if (this.roundTimes.length === 0) return this.ceilingMs
    const followed = ROUND_FACTOR * Math.max(...this.roundTimes)
    return Math.min(this.ceilingMs, Math.max(this.floorMs, followed))
  }

  /**
   * Records how long a round took. Rounds closed by the deadline are left out, so a stalled
   * peer never raises the deadline it is waited for.
   */
  record(roundMs: number, deadlineHit: boolean): void {
    if (deadlineHit) return
    this.roundTimes.push(roundMs)
    if (this.roundTimes.length > WINDOW) this.roundTimes.shift()
  }
}
