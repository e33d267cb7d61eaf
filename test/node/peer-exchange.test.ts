import { once } from 'node:events'
import { createServer, type Socket } from 'node:net'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { describe, expect, it } from 'vitest'
import { createHost } from '../../node/host.ts'
import { exchangePeers } from '../../node/peer-exchange.ts'
import { PEER_EXCHANGE_PROTOCOL } from '../../protocols/index.ts'

describe('the peer exchange', () => {
  it('dials no more listed peers than its cap', async () => {
    // Every listed address leads to this server, which counts the connections it accepts.
    const sockets: Socket[] = []
    const server = createServer((socket) => sockets.push(socket))
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    const { port } = server.address() as { port: number }
    const listed = await Promise.all(
      Array.from({ length: 40 }, async () => {
        // @libp2p/crypto's key type comes from another copy of @libp2p/interface; see identity.ts.
        const key = (await generateKeyPair('Ed25519')) as unknown as PrivateKey
        const peerId = peerIdFromPrivateKey(key)
        return `/ip4/127.0.0.1/tcp/${port}/p2p/${peerId.toString()}`
      }),
    )
    const liar = await createHost()
    const asker = await createHost()
    try {
      await liar.handle(PEER_EXCHANGE_PROTOCOL, async ({ stream }) => {
        await stream.sink([new TextEncoder().encode(JSON.stringify(listed))])
      })
      await asker.dial(multiaddr(liar.getMultiaddrs()[0]?.toString() ?? ''))
      await exchangePeers(asker, liar.peerId, 3)
      // exchangePeers starts its dials before it returns, so the queue contains all of them.
      expect(asker.getDialQueue()).toHaveLength(3)
      while (sockets.length < 3) await once(server, 'connection')
      expect(sockets).toHaveLength(3)
    } finally {
      for (const socket of sockets) socket.destroy()
      server.close()
      await Promise.all([liar.stop(), asker.stop()])
    }
  })
})
