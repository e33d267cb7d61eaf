import { describe, expect, it } from 'vitest'
import { loadMnist } from '../../data/index.ts'
import type { RoundMetrics } from '../../node/metrics.ts'
import { Peer, type TurnGate } from '../../node/peer.ts'
import { DEFAULT_SPEC, validateSpec } from '../../node/spec.ts'
import { checkTensorLeaks, connectPeers } from './peers.ts'

const mnist = loadMnist()

checkTensorLeaks()

/** Returns a gate that delays the training of one round until `open()` is called. */
function holdRound(heldRound: number) {
  let open!: () => void
  const opened = new Promise<void>((resolve) => {
    open = resolve
  })
  const gate: TurnGate = {
    async acquire(kind, round) {
      if (kind === 'train' && round === heldRound) await opened
    },
    release() {},
  }
  return { gate, open }
}

describe('a late peer', () => {
  it('holds the swarm model after joining at round 3', async () => {
    // Four shards, three peers from the start; the fourth shard belongs to the late peer.
    const spec = validateSpec({
      ...DEFAULT_SPEC,
      swarm: 'join',
      peers: 4,
      trainSamples: 2000,
      testSamples: 500,
    })
    const { gate, open } = holdRound(3)
    const rounds: RoundMetrics[] = []
    let lateJoined!: () => void
    const lateStarted = new Promise<void>((resolve) => {
      lateJoined = resolve
    })
    const peers = await Promise.all(
      [0, 1, 2].map((peerIndex) =>
        Peer.create({
          spec,
          peerIndex,
          mnist,
          backend: 'wasm',
          minPeers: 3,
          maxRounds: 6,
          turnGate: gate,
          onRound: (metrics) => {
            rounds.push(metrics)
            if (metrics.round === 2 && metrics.peerIndex === 0) lateJoined()
          },
        }),
      ),
    )
    let late: Peer | undefined
    try {
      await connectPeers(peers)
      await Promise.all(peers.map((peer) => peer.waitForSwarm()))
      const startedAt = Date.now()
      const running = peers.map((peer) => peer.run(startedAt))

      await lateStarted
      const joinedAt: number[] = []
      late = await Peer.create({
        spec,
        peerIndex: 3,
        mnist,
        backend: 'wasm',
        minPeers: 3,
        maxRounds: 6,
        join: true,
        onRound: (metrics) => rounds.push(metrics),
        onJoin: (firstRound) => {
          joinedAt.push(firstRound)
          // The swarm is held before training round 3 until the join is announced.
          open()
        },
      })
      await late.dial(peers.flatMap((peer) => peer.addresses()))
      await late.waitForSwarm()
      const results = await Promise.all([...running, late.run(startedAt)])

      expect(joinedAt).toEqual([4])
      const hashAt = (peerIndex: number, round: number) =>
        rounds.find((m) => m.peerIndex === peerIndex && m.round === round)?.modelHash
      expect(hashAt(3, 3)).toBeUndefined()
      expect(hashAt(3, 4)).toMatch(/^[0-9a-f]{64}$/)
      expect(hashAt(3, 4)).toBe(hashAt(0, 4))
      expect(hashAt(3, 5)).toBe(hashAt(0, 5))
      // From round 4 on every peer averaged four deltas.
      const round5 = rounds.filter((m) => m.round === 5)
      expect(round5.map((m) => m.contributors)).toEqual([4, 4, 4, 4])
      expect(new Set(results.map((result) => result.modelHash)).size).toBe(1)
      for (const metrics of rounds) expect(metrics.deadlineHit).toBe(false)
    } finally {
      open()
      await late?.stop()
      await Promise.all(peers.map((peer) => peer.stop()))
    }
  })
})
