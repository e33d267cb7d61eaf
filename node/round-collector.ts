/** A validated delta from one peer for one round. */
export interface ReceivedDelta {
  peerId: string
  round: number
  sampleCount: number
  baseModelHash: string
  delta: Float32Array[]
}

export interface CollectOptions {
  /** Peer ids currently subscribed to the topic, the local peer excluded. */
  subscribers: () => string[]
  /** Swarm size, the local peer included, below which a round never closes before its deadline. */
  minPeers: number
  deadlineMs: number
  signal?: AbortSignal
}

export interface CollectedRound {
  contributions: ReceivedDelta[]
  deadlineHit: boolean
}

/**
 * Buffers deltas by round. A round closes when the local peer's delta and one from every
 * subscribed peer are in (and the swarm has at least `minPeers` peers), or when the deadline
 * passes. Deltas for future rounds wait in the buffer; deltas for closed rounds are counted as
 * late and dropped.
 */
export class RoundCollector {
  lateMessages = 0
  duplicateMessages = 0
  private currentRound = 0
  private readonly localPeerId: string
  private readonly rounds = new Map<number, Map<string, ReceivedDelta>>()
  private wake: (() => void) | undefined

  constructor(localPeerId: string) {
    this.localPeerId = localPeerId
  }

  get round(): number {
    return this.currentRound
  }

  add(received: ReceivedDelta): 'stored' | 'late' | 'duplicate' {
    if (received.round < this.currentRound) {
      this.lateMessages++
      return 'late'
    }
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

  /** Re-checks the waiting round, for example after the topic's subscribers changed. */
  notify(): void {
    this.wake?.()
  }

  /** Returns the delta the local peer stored for a round, if any. */
  local(round: number): ReceivedDelta | undefined {
    return this.rounds.get(round)?.get(this.localPeerId)
  }

  private isComplete(round: number, options: CollectOptions): boolean {
    const senders = this.rounds.get(round)
    if (senders === undefined || !senders.has(this.localPeerId)) return false
    const subscribers = options.subscribers()
    if (subscribers.length + 1 < options.minPeers) return false
    return subscribers.every((peerId) => senders.has(peerId))
  }

  /** Waits until `round` closes, then moves the collector to the next round. */
  async collect(round: number, options: CollectOptions): Promise<CollectedRound> {
    const deadline = Date.now() + options.deadlineMs
    let deadlineHit = false
    while (!this.isComplete(round, options)) {
      const remaining = deadline - Date.now()
      if (remaining <= 0) {
        deadlineHit = true
        break
      }
      options.signal?.throwIfAborted()
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining)
        const onAbort = () => resolve()
        options.signal?.addEventListener('abort', onAbort, { once: true })
        this.wake = () => {
          clearTimeout(timer)
          options.signal?.removeEventListener('abort', onAbort)
          resolve()
        }
      })
      this.wake = undefined
    }
    options.signal?.throwIfAborted()
    const contributions = [...(this.rounds.get(round)?.values() ?? [])]
    this.currentRound = round + 1
    for (const buffered of this.rounds.keys()) {
      if (buffered <= round) this.rounds.delete(buffered)
    }
    return { contributions, deadlineHit }
  }
}
