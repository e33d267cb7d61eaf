import { describe, expect, it } from 'vitest'
import { loadMnist } from '../../data/index.ts'
import type { RoundMetrics } from '../../node/metrics.ts'
import { Peer } from '../../node/peer.ts'
import { DEFAULT_SPEC, validateSpec } from '../../node/spec.ts'
import { checkTensorLeaks, runPeers } from './peers.ts'

const mnist = loadMnist()

checkTensorLeaks()

describe('a peer whose model diverged', () => {
  it('downloads the model most deltas were trained from', async () => {
    const spec = validateSpec({
      ...DEFAULT_SPEC,
      swarm: 'diverge',
      peers: 3,
      trainSamples: 1500,
      testSamples: 300,
    })
    const rounds: RoundMetrics[] = []
    const peers = await Promise.all(
      [0, 1, 2].map((peerIndex) =>
        Peer.create({
          spec,
          peerIndex,
          mnist,
          backend: 'wasm',
          maxRounds: 4,
          onRound: (metrics) => rounds.push(metrics),
        }),
      ),
    )
    // Peer 2 starts from other weights, as a peer cut off from the others would end up.
    const diverged = peers[2] as Peer
    const weights = diverged.trainer.getWeights()
    const kernel = weights[0] as Float32Array
    kernel[0] = (kernel[0] as number) + 0.5
    diverged.trainer.setWeights(weights)

    await runPeers(peers)
    const hashes = (peerIndex: number) =>
      new Map(rounds.filter((m) => m.peerIndex === peerIndex).map((m) => [m.round, m.modelHash]))
    const [first, second, third] = [hashes(0), hashes(1), hashes(2)]
    expect([...first.keys()]).toEqual([0, 1, 2, 3])
    expect(second).toEqual(first)
    // Round 0 averaged the same deltas onto another base, so peer 2 still differed after it.
    expect(third.get(0)).not.toBe(first.get(0))
    // It skips at most the round of its download, then has the swarm's model.
    const after = [...third.keys()].filter((round) => round > 0)
    expect(after[0]).toBeLessThanOrEqual(2)
    for (const round of after) expect(third.get(round), `round ${round}`).toBe(first.get(round))
    expect(third.get(3)).toBe(first.get(3))
  })
})
