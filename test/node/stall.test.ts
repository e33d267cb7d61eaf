import { describe, expect, it } from 'vitest'
import { loadMnist } from '../../data/index.ts'
import type { RoundMetrics } from '../../node/metrics.ts'
import { Peer, type TurnGate } from '../../node/peer.ts'
import { DEFAULT_SPEC, validateSpec } from '../../node/spec.ts'
import { checkTensorLeaks, connectPeers } from './peers.ts'

const mnist = loadMnist()

checkTensorLeaks()

describe('a stalled peer', () => {
  it('costs the others one deadline, not one per round', async () => {
    const spec = validateSpec({
      ...DEFAULT_SPEC,
      swarm: 'stall',
      peers: 3,
      trainSamples: 1500,
      testSamples: 300,
      roundDeadlineSeconds: 60,
      deadlineFloorSeconds: 1,
    })
    // Peer 2 never gets its training turn of round 2, as if its process were stopped.
    const stall = new AbortController()
    const stalled = new Promise<void>((_, reject) => {
      stall.signal.addEventListener('abort', () => reject(stall.signal.reason), { once: true })
    })
    stalled.catch(() => {})
    const stallingGate: TurnGate = {
      async acquire(kind, round) {
        if (kind === 'train' && round === 2) await stalled
      },
      release() {},
    }
    const rounds: RoundMetrics[] = []
    const peers = await Promise.all(
      [0, 1, 2].map((peerIndex) =>
        Peer.create({
          spec,
          peerIndex,
          mnist,
          backend: 'wasm',
          maxRounds: 5,
          turnGate: peerIndex === 2 ? stallingGate : undefined,
          onRound: (metrics) => rounds.push(metrics),
        }),
      ),
    )
    try {
      await connectPeers(peers)
      await Promise.all(peers.map((peer) => peer.waitForSwarm()))
      const stalledRun = peers[2]?.run() as Promise<unknown>
      stalledRun.catch(() => {})
      await Promise.all(peers.slice(0, 2).map((peer) => peer.run()))
      const survivors = rounds.filter((m) => m.peerIndex !== 2)
      expect(survivors).toHaveLength(10)
      for (const m of survivors.filter((m) => m.round === 2)) {
        expect(m.deadlineHit).toBe(true)
        expect(m.contributors).toBe(2)
        // The deadline followed the fast early rounds down towards the 1 s floor.
        expect(m.deadlineMs).toBeLessThan(30_000)
        expect(m.waitMs).toBeLessThan(m.deadlineMs + 2000)
      }
      // After one missed deadline the survivors stop waiting for the stalled peer.
      for (const m of survivors.filter((m) => m.round !== 2)) expect(m.deadlineHit).toBe(false)
      for (const m of survivors.filter((m) => m.round > 2)) expect(m.contributors).toBe(2)
    } finally {
      stall.abort(new Error('test finished'))
      await Promise.all(peers.map((peer) => peer.stop()))
    }
  })
})
