import { multiaddr } from '@multiformats/multiaddr'
import { describe, expect, it } from 'vitest'
import { loadMnist } from '../../data/index.ts'
import { createHost, type Host } from '../../node/host.ts'
import type { RoundMetrics } from '../../node/metrics.ts'
import { Peer } from '../../node/peer.ts'
import { DEFAULT_SPEC, type SwarmSpec, validateSpec } from '../../node/spec.ts'
import { checkTensorLeaks, runPeers } from './peers.ts'

const mnist = loadMnist()

checkTensorLeaks()

/** Runs a connected swarm of spec.peers in-process peers and returns their round metrics. */
async function runSwarm(spec: SwarmSpec, maxRounds: number): Promise<RoundMetrics[]> {
  const rounds: RoundMetrics[] = []
  const peers = await Promise.all(
    Array.from({ length: spec.peers }, (_, peerIndex) =>
      Peer.create({
        spec,
        peerIndex,
        mnist,
        backend: 'wasm',
        maxRounds,
        onRound: (m) => rounds.push(m),
      }),
    ),
  )
  await runPeers(peers)
  return rounds
}

function hashesByRound(rounds: RoundMetrics[]): Map<number, Set<string>> {
  const byRound = new Map<number, Set<string>>()
  for (const m of rounds) byRound.set(m.round, (byRound.get(m.round) ?? new Set()).add(m.modelHash))
  return byRound
}

describe('deltas on the wire', () => {
  it('carry a 1.5-million-parameter model in parts', async () => {
    const spec = validateSpec({
      ...DEFAULT_SPEC,
      swarm: 'large',
      model: 'mlp-large',
      peers: 3,
      // A lost part then fails the deadline check below instead of the test timeout.
      roundDeadlineSeconds: 60,
      trainSamples: 600,
      testSamples: 300,
    })
    const rounds = await runSwarm(spec, 3)
    expect(rounds).toHaveLength(9)
    for (const m of rounds) {
      expect(m.contributors).toBe(3)
      expect(m.deadlineHit).toBe(false)
      expect(m.rejectedMessages).toBe(0)
    }
    for (const hashes of hashesByRound(rounds).values()) expect(hashes.size).toBe(1)
    // 1,502,794 float32 values make a delta of about 6 MiB, so each peer took in at least two
    // other deltas of that size per round, split into 1 MiB gossip messages.
    const lastRound = rounds.filter((m) => m.round === 2)
    for (const m of lastRound) expect(m.bytesReceived).toBeGreaterThan(3 * 2 * 6_000_000)
  })

  for (const codec of ['int8', 'float16', 'topk:0.1']) {
    it(`leave every peer the same model with ${codec}`, async () => {
      const spec = validateSpec({
        ...DEFAULT_SPEC,
        swarm: `codec-${codec.replace(':', '-')}`,
        codec,
        peers: 3,
        trainSamples: 900,
        testSamples: 300,
      })
      const rounds = await runSwarm(spec, 2)
      expect(rounds).toHaveLength(6)
      for (const m of rounds) expect(m.contributors).toBe(3)
      for (const hashes of hashesByRound(rounds).values()) expect(hashes.size).toBe(1)
    })
  }
})

describe('gossipsub', () => {
  it('counts byte-identical messages from two peers twice', async () => {
    const hosts: Host[] = await Promise.all([createHost(), createHost(), createHost()])
    const [receiver, first, second] = hosts as [Host, Host, Host]
    const topic = '/dlearn/test/identical'
    try {
      for (const sender of [first, second]) {
        await sender.dial(multiaddr(receiver.getMultiaddrs()[0]?.toString() as string))
      }
      const received: string[] = []
      let bothArrived!: () => void
      const arrived = new Promise<void>((resolve) => {
        bothArrived = resolve
      })
      receiver.services.pubsub.addEventListener('message', (event) => {
        if (event.detail.topic !== topic || event.detail.type !== 'signed') return
        received.push(event.detail.from.toString())
        if (received.length === 2) bothArrived()
      })
      for (const host of hosts) host.services.pubsub.subscribe(topic)
      // Each sender publishes once it has seen the receiver's subscription.
      for (const sender of [first, second]) {
        while (
          !sender.services.pubsub.getSubscribers(topic).some((id) => id.equals(receiver.peerId))
        ) {
          await new Promise<void>((resolve) => {
            sender.services.pubsub.addEventListener('subscription-change', () => resolve(), {
              once: true,
            })
          })
        }
      }
      const zeros = new Uint8Array(1000)
      await first.services.pubsub.publish(topic, zeros)
      await second.services.pubsub.publish(topic, zeros)
      await arrived
      expect(received.sort()).toEqual([first.peerId.toString(), second.peerId.toString()].sort())
    } finally {
      await Promise.all(hosts.map((host) => host.stop()))
    }
  })
})
