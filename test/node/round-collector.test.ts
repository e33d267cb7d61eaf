import { describe, expect, it } from 'vitest'
import { type ReceivedDelta, RoundCollector, voteOnBase } from '../../node/round-collector.ts'

function delta(peerId: string, round: number): ReceivedDelta {
  return { peerId, round, sampleCount: 10, baseModelHash: '00', delta: [new Float32Array(2)] }
}

describe('RoundCollector', () => {
  it('closes a round once every member delivered', async () => {
    const collector = new RoundCollector('self')
    const subscribers = ['a', 'b']
    collector.admit(subscribers, 0)
    collector.add(delta('self', 0))
    collector.add(delta('a', 0))
    const closing = collector.collect(0, {
      minPeers: 3,
      deadlineMs: 60_000,
    })
    collector.add(delta('b', 0))
    const round = await closing
    expect(round.deadlineHit).toBe(false)
    expect(round.contributions.map((c) => c.peerId).sort()).toEqual(['a', 'b', 'self'])
    expect(collector.round).toBe(1)
  })

  it('buffers future rounds and drops late ones', async () => {
    const collector = new RoundCollector('self')
    collector.admit(['a'], 0)
    collector.add(delta('a', 1))
    collector.add(delta('self', 0))
    collector.add(delta('a', 0))
    await collector.collect(0, { minPeers: 2, deadlineMs: 60_000 })
    expect(collector.add(delta('b', 0))).toBe('late')
    expect(collector.lateMessages).toBe(1)
    collector.add(delta('self', 1))
    const next = await collector.collect(1, {
      minPeers: 2,
      deadlineMs: 60_000,
    })
    expect(next.contributions.map((c) => c.peerId).sort()).toEqual(['a', 'self'])
  })

  it('counts a second delta from one sender as a duplicate', () => {
    const collector = new RoundCollector('self')
    expect(collector.add(delta('a', 0))).toBe('stored')
    expect(collector.add(delta('a', 0))).toBe('duplicate')
    expect(collector.duplicateMessages).toBe(1)
  })

  it('waits for minPeers even when every member delivered', async () => {
    const collector = new RoundCollector('self')
    collector.add(delta('self', 0))
    const closing = collector.collect(0, {
      minPeers: 2,
      deadlineMs: 60_000,
    })
    collector.admit(['a'], 0)
    collector.add(delta('a', 0))
    const round = await closing
    expect(round.contributions).toHaveLength(2)
  })

  it('waits for a member known only from its join', async () => {
    const collector = new RoundCollector('self')
    // A peer this one is not connected to, whose join and delta arrive through a neighbour.
    collector.join('far', 0)
    collector.add(delta('self', 0))
    const closing = collector.collect(0, { minPeers: 1, deadlineMs: 60_000 })
    collector.add(delta('far', 0))
    const round = await closing
    expect(round.deadlineHit).toBe(false)
    expect(round.contributions.map((c) => c.peerId).sort()).toEqual(['far', 'self'])
  })

  it('closes at the deadline with what arrived', async () => {
    const collector = new RoundCollector('self')
    collector.add(delta('self', 0))
    const round = await collector.collect(0, {
      minPeers: 2,
      deadlineMs: 50,
    })
    expect(round.deadlineHit).toBe(true)
    expect(round.contributions.map((c) => c.peerId)).toEqual(['self'])
  })

  it('stops expecting a peer after its last round', async () => {
    const collector = new RoundCollector('self')
    collector.admit(['a'], 0)
    collector.add(delta('self', 0))
    collector.add(delta('a', 0))
    collector.leave('a', 0)
    await collector.collect(0, { minPeers: 2, deadlineMs: 60_000 })
    collector.add(delta('self', 1))
    const next = await collector.collect(1, {
      minPeers: 2,
      deadlineMs: 60_000,
    })
    expect(next.deadlineHit).toBe(false)
    expect(next.contributions.map((c) => c.peerId)).toEqual(['self'])
  })

  it('waits for the last delta of a leaving peer', async () => {
    const collector = new RoundCollector('self')
    collector.admit(['a'], 0)
    collector.add(delta('self', 0))
    // The leave may overtake the delta it follows; round 0 must still wait for that delta.
    collector.leave('a', 0)
    const closing = collector.collect(0, {
      minPeers: 2,
      deadlineMs: 60_000,
    })
    collector.add(delta('a', 0))
    const round = await closing
    expect(round.deadlineHit).toBe(false)
    expect(round.contributions.map((c) => c.peerId).sort()).toEqual(['a', 'self'])
  })

  it('tells which peers passed a round', () => {
    const collector = new RoundCollector('self')
    collector.add(delta('a', 3))
    collector.add(delta('b', 2))
    collector.leave('c', 1)
    expect(collector.hasPassed('a', 2)).toBe(true)
    expect(collector.hasPassed('b', 2)).toBe(false)
    expect(collector.hasPassed('c', 2)).toBe(true)
    expect(collector.hasPassed('d', 2)).toBe(false)
  })
})

describe('RoundCollector membership', () => {
  it('waits for an admitted member', async () => {
    const collector = new RoundCollector('self')
    collector.admit(['a'], 0)
    collector.add(delta('self', 0))
    const closing = collector.collect(0, {
      minPeers: 1,
      deadlineMs: 60_000,
    })
    expect(collector.isExpected('a', 0)).toBe(true)
    collector.add(delta('a', 0))
    const round = await closing
    expect(round.deadlineHit).toBe(false)
    expect(round.contributions).toHaveLength(2)
  })

  it('does not wait for a subscriber that never joined', async () => {
    const collector = new RoundCollector('self')
    collector.add(delta('self', 0))
    const round = await collector.collect(0, {
      minPeers: 1,
      deadlineMs: 60_000,
    })
    expect(round.deadlineHit).toBe(false)
    expect(round.contributions.map((c) => c.peerId)).toEqual(['self'])
  })

  it('expects a joined peer from its first round', () => {
    const collector = new RoundCollector('self')
    collector.join('late', 4)
    expect(collector.isExpected('late', 3)).toBe(false)
    expect(collector.isExpected('late', 4)).toBe(true)
    collector.leave('late', 6)
    expect(collector.isExpected('late', 6)).toBe(true)
    expect(collector.isExpected('late', 7)).toBe(false)
  })

  it('leaves deltas of non-members out', async () => {
    const collector = new RoundCollector('self')
    collector.add(delta('self', 0))
    collector.add(delta('stranger', 0))
    const round = await collector.collect(0, {
      minPeers: 1,
      deadlineMs: 60_000,
    })
    expect(round.contributions.map((c) => c.peerId)).toEqual(['self'])
  })
})

describe('RoundCollector absentees', () => {
  it('waits for a silent member in one deadline only', async () => {
    const collector = new RoundCollector('self')
    const subscribers = ['a', 'silent']
    collector.admit(subscribers, 0)
    const options = { minPeers: 3, deadlineMs: 50 }
    collector.add(delta('self', 0))
    collector.add(delta('a', 0))
    expect((await collector.collect(0, options)).deadlineHit).toBe(true)
    expect(collector.absent).toEqual(['silent'])
    expect(collector.isAwaited('silent', 1)).toBe(false)

    collector.add(delta('self', 1))
    collector.add(delta('a', 1))
    const next = await collector.collect(1, { ...options, deadlineMs: 60_000 })
    expect(next.deadlineHit).toBe(false)
    expect(next.contributions.map((c) => c.peerId).sort()).toEqual(['a', 'self'])

    // A late delta of a closed round does not make it awaited again; one of the current round does.
    expect(collector.add(delta('silent', 1))).toBe('late')
    expect(collector.isAwaited('silent', 2)).toBe(false)
    expect(collector.add(delta('silent', 2))).toBe('stored')
    expect(collector.isAwaited('silent', 2)).toBe(true)
    expect(collector.absent).toEqual([])
  })

  it('awaits an absent member again after its join', async () => {
    const collector = new RoundCollector('self')
    collector.admit(['gone'], 0)
    collector.add(delta('self', 0))
    await collector.collect(0, { minPeers: 2, deadlineMs: 50 })
    expect(collector.isAwaited('gone', 3)).toBe(false)
    collector.join('gone', 3)
    expect(collector.isAwaited('gone', 2)).toBe(false)
    expect(collector.isAwaited('gone', 3)).toBe(true)
  })
})

describe('RoundCollector latestRound', () => {
  it('counts members only', () => {
    const collector = new RoundCollector('self')
    collector.admit(['a'], 0)
    collector.add(delta('a', 2))
    collector.add(delta('stranger', 1000))
    expect(collector.latestRound).toBe(2)
    collector.reportRound('stranger', 2000)
    expect(collector.latestRound).toBe(2)
    collector.reportRound('a', 7)
    expect(collector.latestRound).toBe(7)
  })

  it('ends a round wait once a member is two rounds ahead', async () => {
    const collector = new RoundCollector('self')
    collector.admit(['a'], 0)
    collector.add(delta('self', 0))
    const waiting = collector.collect(0, {
      minPeers: 2,
      deadlineMs: 60_000,
    })
    collector.reportRound('a', 2)
    const round = await waiting
    expect(round.deadlineHit).toBe(false)
    expect(round.contributions.map((c) => c.peerId)).toEqual(['self'])
  })
})

describe('RoundCollector buffer', () => {
  it('keeps no delta beyond the next round', () => {
    const collector = new RoundCollector('self')
    collector.admit(['a'], 0)
    expect(collector.add(delta('a', 1))).toBe('stored')
    expect(collector.add(delta('a', 5))).toBe('ahead')
    expect(collector.latestRound).toBe(5)
  })
})

describe('voteOnBase', () => {
  const trained = (peerId: string, baseModelHash: string): ReceivedDelta => ({
    ...delta(peerId, 0),
    baseModelHash,
  })

  it('picks the base most contributions share', () => {
    const vote = voteOnBase([trained('a', 'ff'), trained('b', 'ff'), trained('c', '01')])
    expect(vote).toEqual({ baseModelHash: 'ff', peerIds: ['a', 'b'] })
  })

  it('breaks a tie with the lowest hash, whatever the order', () => {
    const contributions = [trained('a', 'ff'), trained('b', '01')]
    expect(voteOnBase(contributions)?.baseModelHash).toBe('01')
    expect(voteOnBase(contributions.reverse())?.baseModelHash).toBe('01')
  })

  it('returns undefined for no contributions', () => {
    expect(voteOnBase([])).toBeUndefined()
  })
})
