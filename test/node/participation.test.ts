import { describe, expect, it } from 'vitest'
import { loadMnist } from '../../data/index.ts'
import type { RoundMetrics } from '../../node/metrics.ts'
import { participants } from '../../node/participation.ts'
import { Peer } from '../../node/peer.ts'
import { DEFAULT_SPEC, validateSpec } from '../../node/spec.ts'
import { checkTensorLeaks, runPeers } from './peers.ts'

const mnist = loadMnist()

checkTensorLeaks()

describe('participants', () => {
  it('draws about the fraction asked for', () => {
    let total = 0
    for (let round = 0; round < 200; round++) total += participants(1, round, 100, 0.1).size
    // 200 rounds of 100 draws at 0.1: mean 10 per round, standard error about 0.2.
    expect(total / 200).toBeGreaterThan(9)
    expect(total / 200).toBeLessThan(11)
  })

  it('repeats for one seed and round', () => {
    expect(participants(7, 3, 100, 0.1)).toEqual(participants(7, 3, 100, 0.1))
    expect(participants(7, 3, 100, 0.1)).not.toEqual(participants(7, 4, 100, 0.1))
  })

  it('picks one peer when the draws pick none', () => {
    for (let round = 0; round < 50; round++) {
      expect(participants(1, round, 4, 0.01).size).toBeGreaterThanOrEqual(1)
    }
  })

  it('takes every peer at 1', () => {
    expect([...participants(1, 0, 5, 1)]).toEqual([0, 1, 2, 3, 4])
  })
})

describe('a swarm with participation 0.5', () => {
  it('averages the chosen peers only and stays identical', async () => {
    const spec = validateSpec({
      ...DEFAULT_SPEC,
      swarm: 'participation',
      peers: 4,
      trainSamples: 1200,
      testSamples: 300,
      participation: 0.5,
    })
    const rounds: RoundMetrics[] = []
    const peers = await Promise.all(
      [0, 1, 2, 3].map((peerIndex) =>
        Peer.create({
          spec,
          peerIndex,
          mnist,
          backend: 'wasm',
          maxRounds: 3,
          onRound: (metrics) => rounds.push(metrics),
        }),
      ),
    )
    await runPeers(peers)
    expect(rounds).toHaveLength(12)
    for (let round = 0; round < 3; round++) {
      const chosen = participants(spec.seed, round, 4, 0.5)
      const lines = rounds.filter((m) => m.round === round)
      for (const m of lines) {
        expect(m.participated, `peer ${m.peerIndex} round ${round}`).toBe(chosen.has(m.peerIndex))
        expect(m.contributors, `peer ${m.peerIndex} round ${round}`).toBe(chosen.size)
        expect(m.deadlineHit).toBe(false)
      }
      expect(new Set(lines.map((m) => m.modelHash)).size, `round ${round}`).toBe(1)
    }
  })
})
