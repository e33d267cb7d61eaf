/** Maximum milliseconds a wait goes without re-checking its condition. */
const RECHECK_MS = 1000

/** A validated delta from one peer for one round. */
export interface ReceivedDelta {
  peerId: string
  round: number
  sampleCount: number
  baseModelHash: string
  delta: Float32Array[]
}

export interface CollectOptions {
  /** Contributions, the local one included, below which a round never closes before its deadline. */
  minPeers: number
  deadlineMs: number
  signal?: AbortSignal
  /**
   * With partial participation: how many peers publish a delta in this round, the local one
   * included when `local` is true. The round closes once that many members' deltas are in.
   * @default every expected member publishes
   */
  participants?: { count: number; local: boolean }
}

export interface CollectedRound {
  contributions: ReceivedDelta[]
  deadlineHit: boolean
  /**
   * Members the deadline closed the round without, and that sent nothing at all while the
   * round waited: crashed, stalled or cut off. Empty when the round closed before its deadline.
   */
  silent: string[]
}

/**
 * Buffers deltas by round. A round closes when the local peer's delta, one from every expected
 * peer, and at least `minPeers` deltas in all are in, or when the deadline passes. A peer is
 * expected in a round while it is subscribed, is a member from that round or earlier (admitted
 * at the start or announced by a join), and has not left before the round. Deltas from peers
 * that are not members are buffered but never averaged. Deltas for future rounds wait in the
 * buffer; deltas for closed rounds are counted as late and dropped.
 */
export class RoundCollector {
  lateMessages = 0
  duplicateMessages = 0
  private currentRound = 0
  private readonly localPeerId: string
  private readonly rounds = new Map<number, Map<string, ReceivedDelta>>()
  /** First round each known member contributes to. */
  private readonly members = new Map<string, number>()
  /** Last round of each peer that sent a leave message. */
  private readonly departures = new Map<string, number>()
  /** Highest round each peer sent a delta for, late ones included. */
  private readonly latestRounds = new Map<string, number>()
  /**
   * Members that missed a round's deadline, with the first round they are no longer awaited in.
   * A delta for the current round or a later one, or a join, makes them awaited again.
   */
  private readonly absentees = new Map<string, number>()
  /** When each peer's last delta, join or leave arrived, from performance.now(). */
  private readonly heardAt = new Map<string, number>()
  private wake: (() => void) | undefined

  constructor(localPeerId: string) {
    this.localPeerId = localPeerId
  }

  get round(): number {
    return this.currentRound
  }

  /**
   * Stores a delta of the current or the next round. A delta further ahead only records that
   * its sender reached that round, so the buffer contains at most two rounds.
   */
  add(received: ReceivedDelta): 'stored' | 'late' | 'duplicate' | 'ahead' {
    this.heardAt.set(received.peerId, performance.now())
    const latest = this.latestRounds.get(received.peerId) ?? -1
    if (received.round > latest) this.latestRounds.set(received.peerId, received.round)
    if (received.round < this.currentRound) {
      this.lateMessages++
      return 'late'
    }
    this.absentees.delete(received.peerId)
    if (received.round > this.currentRound + 1) return 'ahead'
    let senders = this.rounds.get(received.round)
    if (senders === undefined) {
      senders = new Map()
      this.rounds.set(received.round, senders)
    }
    if (senders.has(received.peerId)) {
      this.duplicateMessages++
      return 'duplicate'
    }
    senders.set(received.peerId, received)
    this.notify()
    return 'stored'
  }

  /**
   * Records that a peer is in `round`, from its reply to a status request. Like a delta
   * further ahead, it counts towards latestRound only when the peer is a member.
   */
  reportRound(peerId: string, round: number): void {
    if (round > (this.latestRounds.get(peerId) ?? -1)) this.latestRounds.set(peerId, round)
    this.notify()
  }

  /** Makes peers members from `firstRound` on, unless they are members already. */
  admit(peerIds: string[], firstRound: number): void {
    for (const peerId of peerIds)
      if (!this.members.has(peerId)) this.members.set(peerId, firstRound)
    this.notify()
  }

  /**
   * Records that a late peer contributes from `firstRound` on. A member's join for a round
   * already closed is stale, such as its first join pushed again after a reconnect, and changes
   * nothing: an absent member becomes awaited again with its next delta.
   */
  join(peerId: string, firstRound: number): void {
    if (this.members.has(peerId) && firstRound < this.currentRound) return
    this.members.set(peerId, firstRound)
    this.departures.delete(peerId)
    this.absentees.delete(peerId)
    this.heardAt.set(peerId, performance.now())
    this.notify()
  }

  /** Moves the collector to `round`, dropping what was buffered for earlier rounds. */
  skipTo(round: number): void {
    this.currentRound = round
    for (const buffered of this.rounds.keys()) if (buffered < round) this.rounds.delete(buffered)
    this.notify()
  }

  /**
   * Highest round any member sent a delta for, or -1. Deltas of non-members do not count, so a
   * stranger cannot make this peer believe it fell behind.
   */
  get latestRound(): number {
    let latest = -1
    for (const [peerId, round] of this.latestRounds) {
      if (this.members.has(peerId)) latest = Math.max(latest, round)
    }
    return latest
  }

  /**
   * True when `peerId` is a member that contributes to `round`: admitted or joined at that
   * round or earlier, and not left before it. Only members' deltas are averaged.
   */
  isExpected(peerId: string, round: number): boolean {
    const firstRound = this.members.get(peerId)
    if (firstRound === undefined || firstRound > round) return false
    const lastRound = this.departures.get(peerId)
    return lastRound === undefined || lastRound >= round
  }

  /**
   * True when `peerId` is expected in `round` and has not missed a deadline since it last sent a
   * delta or a join. While the contributions are a majority, a round waits only for awaited
   * peers, so a crashed or stalled member costs the others one deadline, not one per round.
   */
  isAwaited(peerId: string, round: number): boolean {
    const absentFrom = this.absentees.get(peerId)
    return this.isExpected(peerId, round) && (absentFrom === undefined || absentFrom > round)
  }

  /** Members that no round waits for, since they missed a deadline. */
  get absent(): string[] {
    return [...this.absentees.keys()]
  }

  /** Records that a peer publishes no delta after `lastRound`. */
  leave(peerId: string, lastRound: number): void {
    this.departures.set(peerId, lastRound)
    this.notify()
  }

  /** True when the peer sent a leave message. */
  hasLeft(peerId: string): boolean {
    return this.departures.has(peerId)
  }

  /** True when the peer left, or sent a delta for a round after `round`, so it closed `round`. */
  hasPassed(peerId: string, round: number): boolean {
    return this.departures.has(peerId) || (this.latestRounds.get(peerId) ?? -1) > round
  }

  /**
   * Resolves once `condition` holds, re-checking it on every notify(). Resolves false when
   * `timeoutMs` passes first; rejects when the signal aborts.
   */
  async waitUntil(
    condition: () => boolean,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<boolean> {
    const deadline = Date.now() + timeoutMs
    while (!condition()) {
      const remaining = deadline - Date.now()
      if (remaining <= 0) return false
      signal?.throwIfAborted()
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer)
          signal?.removeEventListener('abort', done)
          resolve()
        }
        // Re-checks at least every RECHECK_MS, because gossipsub may drop a closed peer from
        // the topic's subscribers after the disconnect event that notified this wait.
        const timer = setTimeout(done, Math.min(remaining, RECHECK_MS))
        signal?.addEventListener('abort', done, { once: true })
        this.wake = done
      })
      this.wake = undefined
    }
    signal?.throwIfAborted()
    return true
  }

  /** Re-checks the waiting round, for example after the topic's subscribers changed. */
  notify(): void {
    this.wake?.()
  }

  /** Returns the delta the local peer stored for a round, if any. */
  local(round: number): ReceivedDelta | undefined {
    return this.rounds.get(round)?.get(this.localPeerId)
  }

  /** Returns the local delta and those of members, leaving out peers that never joined. */
  private memberDeltas(round: number, senders: Map<string, ReceivedDelta>): ReceivedDelta[] {
    return [...senders.values()].filter(
      (received) => received.peerId === this.localPeerId || this.isExpected(received.peerId, round),
    )
  }

  private isComplete(round: number, options: CollectOptions): boolean {
    const senders = this.rounds.get(round)
    const { participants } = options
    if (senders === undefined) return false
    if ((participants?.local ?? true) && !senders.has(this.localPeerId)) return false
    if (participants !== undefined) {
      // NOTE: deltas do not name their sender's shard, so a member that publishes out of turn
      // takes the place of a participant.
      return this.memberDeltas(round, senders).length >= participants.count
    }
    // Counting contributions, not subscribers, lets a peer close a round whose deltas reached it
    // through a neighbour, from peers it is not connected to.
    const contributions = this.memberDeltas(round, senders).length
    // Absent members are passed over only while the contributions are a strict majority of the
    // members. So the smaller side of a partition waits for the deadline in every round, falls
    // behind the larger side, and downloads its model once the link heals.
    let expected = 1
    for (const peerId of this.members.keys()) if (this.isExpected(peerId, round)) expected++
    const passOver = 2 * contributions > expected
    const awaited = (peerId: string) =>
      passOver ? this.isAwaited(peerId, round) : this.isExpected(peerId, round)
    // A member this round does not wait for (it left, joins at a later round, or is passed
    // over) counts towards minPeers, or the rest would wait for the deadline in every round
    // while it is away.
    let gone = 0
    for (const peerId of this.members.keys()) {
      if (peerId === this.localPeerId || senders.has(peerId)) continue
      // Members include peers known only from their join message, whose deltas come through
      // neighbours, so a swarm need not connect every pair of peers.
      if (awaited(peerId)) return false
      gone++
    }
    return contributions + gone >= options.minPeers
  }

  /** Waits until `round` closes, then moves the collector to the next round. */
  async collect(round: number, options: CollectOptions): Promise<CollectedRound> {
    const waitStart = performance.now()
    // A member two rounds ahead shows that this peer fell behind, as after a partition healed.
    // The round loop then downloads the swarm's model instead of waiting out the deadline.
    const closed = await this.waitUntil(
      () => this.isComplete(round, options) || this.latestRound > round + 1,
      options.deadlineMs,
      options.signal,
    )
    const senders = this.rounds.get(round) ?? new Map<string, ReceivedDelta>()
    const contributions = this.memberDeltas(round, senders)
    const silent: string[] = []
    // Under partial participation a missing delta may belong to any of the participants, so no
    // member is marked absent.
    if (!closed && options.participants === undefined) {
      for (const peerId of this.members.keys()) {
        if (peerId === this.localPeerId || senders.has(peerId)) continue
        if (!this.isExpected(peerId, round)) continue
        if (this.isAwaited(peerId, round)) this.absentees.set(peerId, round + 1)
        if ((this.heardAt.get(peerId) ?? 0) < waitStart) silent.push(peerId)
      }
    }
    this.currentRound = round + 1
    for (const buffered of this.rounds.keys()) {
      if (buffered <= round) this.rounds.delete(buffered)
    }
    return { contributions, deadlineHit: !closed, silent }
  }
}

/** The base model most contributions of a round were trained from, and who trained from it. */
export interface BaseVote {
  baseModelHash: string
  peerIds: string[]
}

/**
 * Picks the base model hash that most contributions share. A tie goes to the lowest hash, so
 * every peer that saw the same contributions picks the same model. Peers whose own base lost
 * have diverged from the swarm, after a partition or a round that closed at a deadline, and
 * download the winner's model.
 */
export function voteOnBase(contributions: ReceivedDelta[]): BaseVote | undefined {
  const groups = new Map<string, string[]>()
  for (const { baseModelHash, peerId } of contributions) {
    const group = groups.get(baseModelHash)
    if (group === undefined) groups.set(baseModelHash, [peerId])
    else group.push(peerId)
  }
  let winner: BaseVote | undefined
  for (const [baseModelHash, peerIds] of groups) {
    if (
      winner === undefined ||
      peerIds.length > winner.peerIds.length ||
      (peerIds.length === winner.peerIds.length && baseModelHash < winner.baseModelHash)
    )
      winner = { baseModelHash, peerIds }
  }
  return winner
}
