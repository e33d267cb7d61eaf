import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createHost, type Host } from '../../node/host.ts'

/** The members of gossipsub 14.1 that the test stubs or fills, beside the wrapped forwarding. */
interface GossipsubInternals {
  mesh: Map<string, Set<string>>
  idontwants: Map<string, Map<string, number>>
  sendRpc(peer: string, rpc: unknown): boolean
  forwardMessage(msgIdStr: string, rawMsg: unknown, source?: string, exclude?: Set<string>): void
}

describe('gossipsub forwarding', () => {
  let host: Host

  beforeAll(async () => {
    host = await createHost()
  })

  afterAll(async () => {
    await host.stop()
  })

  it('skips the peers that sent an IDONTWANT for the message, and only for it', () => {
    const pubsub = host.services.pubsub as unknown as GossipsubInternals
    const topic = 'dlearn-test'
    pubsub.mesh.set(topic, new Set(['peer-a', 'peer-b', 'peer-c', 'peer-d']))
    pubsub.idontwants.set('peer-b', new Map([['message-1', 0]]))
    pubsub.idontwants.set('peer-c', new Map([['message-2', 0]]))
    const sent: string[] = []
    pubsub.sendRpc = (peer) => {
      sent.push(peer)
      return true
    }
    const message = { topic, data: new Uint8Array(4) }

    pubsub.forwardMessage('message-1', message, undefined, new Set(['peer-d']))
    expect(sent.sort()).toEqual(['peer-a', 'peer-c'])

    sent.length = 0
    pubsub.forwardMessage('message-3', message, 'peer-a')
    expect(sent.sort()).toEqual(['peer-b', 'peer-c', 'peer-d'])
    pubsub.mesh.delete(topic)
  })
})
