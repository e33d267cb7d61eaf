import type { GossipSub } from '@chainsafe/libp2p-gossipsub'
import { describe, expect, it } from 'vitest'
import { createHost, type Host } from '../../node/host.ts'

/** Resolves once `host` has `count` subscribers of `topic`. */
async function waitForSubscribers(host: Host, topic: string, count: number): Promise<void> {
  const pubsub = host.services.pubsub
  while (pubsub.getSubscribers(topic).length < count) {
    await new Promise((resolve) =>
      pubsub.addEventListener('subscription-change', resolve, { once: true }),
    )
  }
}

describe('a host', () => {
  it('keeps a neutral gossip score for 13 peers on its own address', async () => {
    const topic = 'dlearn-host-test'
    const hosts = await Promise.all(Array.from({ length: 14 }, () => createHost()))
    try {
      const [observer, ...others] = hosts as [Host, ...Host[]]
      for (const host of hosts) host.services.pubsub.subscribe(topic)
      const address = observer.getMultiaddrs()[0]
      if (address === undefined) throw new Error('the observer has no address')
      await Promise.all(others.map((host) => host.dial(address)))
      await waitForSubscribers(observer, topic, others.length)
      // Gossipsub's default would give each -5 * (13 - 10)^2 = -45, below its gossip threshold.
      const gossipsub = observer.services.pubsub as unknown as GossipSub
      const scores = others.map((host) => gossipsub.getScore(host.peerId.toString()))
      expect(scores).toEqual(others.map(() => 0))
    } finally {
      await Promise.all(hosts.map((host) => host.stop()))
    }
  })
})
