import { type GossipsubEvents, gossipsub } from '@chainsafe/libp2p-gossipsub'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { bootstrap } from '@libp2p/bootstrap'
import { type Identify, identify } from '@libp2p/identify'
import type { Libp2p, PrivateKey, PubSub } from '@libp2p/interface'
import { mdns } from '@libp2p/mdns'
import { tcp } from '@libp2p/tcp'
import { createLibp2p } from 'libp2p'

/** Largest gossipsub message in bytes that a host sends or accepts. @default 1 MiB */
export const DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
/** Floor of gossipsub's per-peer send buffer, so a delta split into parts fits in it whole. */
const MIN_OUTBOUND_BUFFER_BYTES = 64 * 1024 * 1024
/**
 * Room for the gossipsub RPC envelope (topic, sender, sequence number, signature, key) around
 * the message data, so a message of the maximum size still fits the inbound frame limit.
 */
const RPC_OVERHEAD_BYTES = 64 * 1024

export interface HostInit {
  /** Multiaddrs to listen on. @default ['/ip4/127.0.0.1/tcp/0'] */
  listen?: string[]
  /** Multiaddrs of peers to dial at start, each ending in /p2p/<peer id>. @default [] */
  bootstrap?: string[]
  /** Discover peers on the LAN with multicast DNS. @default false */
  mdns?: boolean
  /** @default DEFAULT_MAX_MESSAGE_BYTES */
  maxMessageBytes?: number
  privateKey?: PrivateKey
}

export type Host = Libp2p<{ pubsub: PubSub<GossipsubEvents>; identify: Identify }>

/** Creates and starts a libp2p node: TCP, noise, yamux, identify and gossipsub. */
export async function createHost(init: HostInit = {}): Promise<Host> {
  const maxMessageBytes = init.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES
  const peerDiscovery: Array<ReturnType<typeof bootstrap> | ReturnType<typeof mdns>> = []
  if (init.bootstrap !== undefined && init.bootstrap.length > 0) {
    peerDiscovery.push(bootstrap({ list: init.bootstrap, timeout: 0 }))
  }
  if (init.mdns === true) peerDiscovery.push(mdns())
  return createLibp2p({
    privateKey: init.privateKey,
    addresses: { listen: init.listen ?? ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    peerDiscovery,
    services: {
      identify: identify(),
      pubsub: gossipsub({
        // A delta that arrives before the remote subscription is known would be lost, so the
        // round loop republishes on every new subscriber instead of failing the publish.
        allowPublishToZeroTopicPeers: true,
        emitSelf: false,
        // Both sides of the size limit are set here: the receiver's frame limit, and the
        // round loop, which splits every delta into messages of at most maxMessageBytes.
        maxInboundDataLength: maxMessageBytes + RPC_OVERHEAD_BYTES,
        maxOutboundBufferSize: Math.max(
          MIN_OUTBOUND_BUFFER_BYTES,
          4 * (maxMessageBytes + RPC_OVERHEAD_BYTES),
        ),
      }),
    },
  })
}
