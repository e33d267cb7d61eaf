import type { PeerId } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { PEER_EXCHANGE_PROTOCOL } from '../protocols/index.ts'
import type { Host } from './host.ts'
import { log } from './log.ts'

/** Milliseconds a peer list request may take, dial included. */
const EXCHANGE_TIMEOUT_MS = 10_000
/** Largest peer list in bytes that a peer reads; about 200 peers with two addresses each. */
const MAX_LIST_BYTES = 64 * 1024

/**
 * Serves `/dlearn/peers/1.0.0`: replies with the addresses of the peers subscribed to `topic`, as a
 * JSON array of multiaddr strings ending in /p2p/<peer id>, so that a peer that bootstrapped
 * from one member can connect to the rest of the swarm.
 */
export async function handlePeerExchange(host: Host, topic: string): Promise<void> {
  await host.handle(PEER_EXCHANGE_PROTOCOL, async ({ stream }) => {
    const addresses: string[] = []
    for (const peerId of host.services.pubsub.getSubscribers(topic)) {
      // The peer store contains the listen addresses that identify reported; a connection's
      // remote address may be an unreachable source port.
      try {
        const { addresses: known } = await host.peerStore.get(peerId)
        for (const { multiaddr: address } of known) {
          addresses.push(address.encapsulate(`/p2p/${peerId.toString()}`).toString())
        }
      } catch (error) {
        log.trace('no addresses of %s: %s', peerId.toString(), (error as Error).message)
      }
    }
    try {
      await stream.sink([new TextEncoder().encode(JSON.stringify(addresses))])
    } catch (error) {
      log.trace('peer list to %s failed: %s', stream.id, (error as Error).message)
    }
  })
}

/**
 * Asks `from` for its peer list and dials the listed peers this host is not connected to, at
 * most `maxDials` of them, so a lying member cannot make this host dial a long list of
 * addresses. Failures are logged and not thrown: the peer goes on with the connections it has.
 */
export async function exchangePeers(host: Host, from: PeerId, maxDials: number): Promise<void> {
  try {
    const stream = await host.dialProtocol(from, PEER_EXCHANGE_PROTOCOL, {
      signal: AbortSignal.timeout(EXCHANGE_TIMEOUT_MS),
    })
    const chunks: Uint8Array[] = []
    let length = 0
    for await (const chunk of stream.source) {
      length += chunk.byteLength
      if (length > MAX_LIST_BYTES) throw new Error(`peer list exceeds ${MAX_LIST_BYTES} bytes`)
      chunks.push(chunk.subarray())
    }
    const text = new TextDecoder().decode(Buffer.concat(chunks))
    const listed: unknown = JSON.parse(text)
    if (!Array.isArray(listed)) throw new Error('peer list is not a JSON array')
    const dialled = new Set<string>()
    for (const entry of listed) {
      if (typeof entry !== 'string') continue
      const address = multiaddr(entry)
      const peerId = address.getPeerId()
      if (peerId === null || peerId === host.peerId.toString()) continue
      if (host.getConnections().some((connection) => connection.remotePeer.toString() === peerId)) {
        continue
      }
      if (!dialled.has(peerId) && dialled.size >= maxDials) break
      dialled.add(peerId)
      host.dial(address).catch((error: Error) => {
        log.trace('dial of listed peer %s failed: %s', entry, error.message)
      })
    }
  } catch (error) {
    log.trace('peer list from %s failed: %s', from.toString(), (error as Error).message)
  }
}
