import { multiaddr } from '@multiformats/multiaddr'
import * as tf from '@tensorflow/tfjs'
import { describe, expect, it } from 'vitest'
import { loadMnist } from '../../data/index.ts'
import { createHost, type Host } from '../../node/host.ts'
import type { RoundMetrics } from '../../node/metrics.ts'
import { Peer, type PeerInit } from '../../node/peer.ts'
import { DEFAULT_SPEC, hashSpec, type SwarmSpec, validateSpec } from '../../node/spec.ts'
import { type DeltaMessage, encodeDelta } from '../../protocols/index.ts'
import { checkTensorLeaks, connectPeers } from './peers.ts'

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

/** Resolves once the pubsub service knows `count` subscribers of the topic. */
async function waitForSubscribers(
  pubsub: Host['services']['pubsub'],
  topic: string,
  count: number,
) {
  while (pubsub.getSubscribers(topic).length < count) {
    await new Promise<void>((resolve) => {
      pubsub.addEventListener('subscription-change', () => resolve(), { once: true })
    })
  }
}

const tensorsBefore = checkTensorLeaks()

describe('peers on loopback', () => {
  it('end a round with identical weights', async () => {
    const spec = smallSpec({ peers: 3, swarm: 'identical' })
    const rounds: RoundMetrics[] = []
    const peers = await startPeers(spec, () => ({ maxRounds: 1, onRound: (m) => rounds.push(m) }))
    try {
      await connectPeers(peers)
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
    expect(tf.memory().numTensors).toBe(tensorsBefore())
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
      await connectPeers(peers)
      const results = await runs
      expect(results[0]?.modelHash).toBe(results[1]?.modelHash)
      expect(results[0]?.rounds).toBe(1)
    } finally {
      await Promise.all(peers.map((peer) => peer.stop()))
    }
    expect(tf.memory().numTensors).toBe(tensorsBefore())
  })

  it('reach 90% on a subset', async () => {
    const spec = smallSpec({ peers: 3, swarm: 'subset', trainSamples: 9000, testSamples: 2000 })
    const peers = await startPeers(spec, () => ({ maxRounds: 6, target: 0.9 }))
    try {
      await connectPeers(peers)
      await Promise.all(peers.map((peer) => peer.waitForSwarm()))
      const results = await Promise.all(peers.map((peer) => peer.run()))
      for (const result of results) {
        expect(result.reachedTarget).toBe(true)
        expect(result.finalAccuracy).toBeGreaterThanOrEqual(0.9)
      }
    } finally {
      await Promise.all(peers.map((peer) => peer.stop()))
    }
    expect(tf.memory().numTensors).toBe(tensorsBefore())
  })

  it('reject bad deltas and still agree', async () => {
    const spec = smallSpec({ peers: 2, swarm: 'hostile', trainSamples: 600 })
    const rounds: RoundMetrics[] = []
    const reasons: string[][] = [[], []]
    let rejectedAll!: () => void
    const allRejected = new Promise<void>((resolve) => {
      rejectedAll = resolve
    })
    const badMessages: Uint8Array[] = []
    const peers = await startPeers(spec, (index) => ({
      maxRounds: 1,
      onRound: (m) => rounds.push(m),
      onReject: (reason) => {
        reasons[index]?.push(reason)
        if (reasons.every((list) => list.length === badMessages.length)) rejectedAll()
      },
    }))
    const attacker = await createHost()
    try {
      await connectPeers(peers)
      for (const peer of peers) await attacker.dial(multiaddr(peer.addresses()[0] as string))
      await Promise.all(peers.map((peer) => peer.waitForSwarm()))
      const shapes = peers[0]?.trainer.shapes ?? []
      const good = (): DeltaMessage => ({
        version: 1,
        codec: { name: 'float32' },
        specHash: hashSpec(spec),
        round: 0,
        sampleCount: 100,
        baseModelHash: new Uint8Array(32),
        tensors: shapes.map((shape) => ({
          shape,
          values: new Float32Array(shape.reduce((a, b) => a * b, 1)),
        })),
      })
      const withNaN = good()
      withNaN.tensors[1]?.values.fill(Number.NaN)
      const wrongShape = good()
      wrongShape.tensors[0] = { shape: [784, 199], values: new Float32Array(784 * 199) }
      badMessages.push(
        new Uint8Array([1, 2, 3, 4, 5]),
        encodeDelta(withNaN),
        encodeDelta(wrongShape),
        encodeDelta({ ...good(), sampleCount: 60_000 }),
      )
      // The attacker is not subscribed, so the honest peers never wait for a delta from it.
      const attackerPubsub = attacker.services.pubsub
      const topic = peers[0]?.topic as string
      await waitForSubscribers(attackerPubsub, topic, 2)
      for (const bytes of badMessages) await attackerPubsub.publish(topic, bytes)
      await allRejected
      const results = await Promise.all(peers.map((peer) => peer.run()))
      expect(results[1]?.modelHash).toBe(results[0]?.modelHash)
      expect(rounds.map((m) => m.contributors)).toEqual([2, 2])
      expect(rounds.map((m) => m.rejectedMessages)).toEqual([4, 4])
      expect(reasons[0]?.some((reason) => /sampleCount/.test(reason))).toBe(true)
    } finally {
      await attacker.stop()
      await Promise.all(peers.map((peer) => peer.stop()))
    }
    expect(tf.memory().numTensors).toBe(tensorsBefore())
  })
})
