import * as tf from '@tensorflow/tfjs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadMnist } from '../../data/index.ts'
import { selectBackend } from '../../node/backend.ts'
import type { RoundMetrics } from '../../node/metrics.ts'
import { Peer, type PeerInit } from '../../node/peer.ts'
import { DEFAULT_SPEC, type SwarmSpec, validateSpec } from '../../node/spec.ts'

const mnist = loadMnist()

function smallSpec(overrides: Partial<SwarmSpec>): SwarmSpec {
  return validateSpec({ ...DEFAULT_SPEC, trainSamples: 1500, testSamples: 500, ...overrides })
}

async function startPeers(
  spec: SwarmSpec,
  extra: (index: number) => Partial<PeerInit> = () => ({}),
): Promise<Peer[]> {
  return Promise.all(
    Array.from({ length: spec.peers }, (_, peerIndex) =>
      Peer.create({ spec, peerIndex, mnist, backend: 'wasm', ...extra(peerIndex) }),
    ),
  )
}

/** Connects every peer to the ones before it, as the launcher does. */
async function connect(peers: Peer[]): Promise<void> {
  for (const [index, peer] of peers.entries()) {
    await peer.dial(peers.slice(0, index).flatMap((other) => other.addresses()))
  }
}

let tensorsBefore = 0

beforeAll(async () => {
  await selectBackend('wasm')
  tensorsBefore = tf.memory().numTensors
})

afterAll(() => {
  expect(tf.memory().numTensors).toBe(tensorsBefore)
})

describe('peers on loopback', () => {
  it('end a round with identical weights', async () => {
    const spec = smallSpec({ peers: 3, swarm: 'identical' })
    const rounds: RoundMetrics[] = []
    const peers = await startPeers(spec, () => ({ maxRounds: 1, onRound: (m) => rounds.push(m) }))
    try {
      await connect(peers)
      await Promise.all(peers.map((peer) => peer.waitForSwarm()))
      const results = await Promise.all(peers.map((peer) => peer.run()))
      expect(new Set(results.map((result) => result.modelHash)).size).toBe(1)
      const weights = peers.map((peer) =>
        Buffer.concat(peer.trainer.getWeights().map((w) => Buffer.from(w.buffer))).toString('hex'),
      )
      expect(weights[1]).toBe(weights[0])
      expect(weights[2]).toBe(weights[0])
      expect(rounds.map((m) => m.contributors)).toEqual([3, 3, 3])
      expect(rounds.every((m) => !m.deadlineHit)).toBe(true)
    } finally {
      await Promise.all(peers.map((peer) => peer.stop()))
    }
    expect(tf.memory().numTensors).toBe(tensorsBefore)
  })

  it('complete a round published before the mesh formed', async () => {
    const spec = smallSpec({ peers: 2, swarm: 'early', trainSamples: 200 })
    const firstRecipients: number[] = []
    let published!: () => void
    const bothPublished = new Promise<void>((resolve) => {
      published = resolve
    })
    const peers = await startPeers(spec, () => ({
      maxRounds: 1,
      onPublish: (round, recipients) => {
        if (round !== 0 || firstRecipients.length === 2) return
        firstRecipients.push(recipients)
        if (firstRecipients.length === 2) published()
      },
    }))
    try {
      // Both peers train and publish while they know no other peer at all.
      const runs = Promise.all(peers.map((peer) => peer.run()))
      await bothPublished
      expect(firstRecipients).toEqual([0, 0])
      await connect(peers)
      const results = await runs
      expect(results[0]?.modelHash).toBe(results[1]?.modelHash)
      expect(results[0]?.rounds).toBe(1)
    } finally {
      await Promise.all(peers.map((peer) => peer.stop()))
    }
    expect(tf.memory().numTensors).toBe(tensorsBefore)
  })

  it('reach 90% on a subset', async () => {
    const spec = smallSpec({ peers: 3, swarm: 'subset', trainSamples: 9000, testSamples: 2000 })
    const peers = await startPeers(spec, () => ({ maxRounds: 6, target: 0.9 }))
    try {
      await connect(peers)
      await Promise.all(peers.map((peer) => peer.waitForSwarm()))
      const results = await Promise.all(peers.map((peer) => peer.run()))
      for (const result of results) {
        expect(result.reachedTarget).toBe(true)
        expect(result.finalAccuracy).toBeGreaterThanOrEqual(0.9)
      }
    } finally {
      await Promise.all(peers.map((peer) => peer.stop()))
    }
    expect(tf.memory().numTensors).toBe(tensorsBefore)
  })
})
