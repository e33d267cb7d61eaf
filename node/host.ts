import { type GossipsubEvents, gossipsub } from '@chainsafe/libp2p-gossipsub'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { bootstrap } from '@libp2p/bootstrap'
import { type Identify, identify } from '@libp2p/identify'
import type { Libp2p, PrivateKey, PubSub } from '@libp2p/interface'
import { mdns } from '@libp2p/mdns'
import { preSharedKey } from '@libp2p/pnet'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { toHex } from '../protocols/bytes.ts'
import { log } from './log.ts'
import { formatSwarmKey, parseSwarmKey } from './swarm-key.ts'

/** Largest gossipsub message in bytes that a host sends or accepts. @default 1 MiB */
export const DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024
/** Floor of gossipsub's per-peer send buffer, so a delta split into parts fits in it whole. */
const MIN_OUTBOUND_BUFFER_BYTES = 64 * 1024 * 1024
/**
 * Room for the gossipsub RPC envelope (topic, sender, sequence number, signature, key) around
 * the message data, so a message of the maximum size still fits the inbound frame limit.
 */
const RPC_OVERHEAD_BYTES = 64 * 1024
/** New inbound connections accepted per second from one address. */
const INBOUND_CONNECTIONS_PER_SECOND = 100
/** Inbound connections that may be upgrading at once: the launcher's largest swarm. */
const MAX_PENDING_INBOUND = 256

/**
 * Names of the errors a dial raises when the pre-shared keys of the two peers differ, seen with
 * libp2p 2.10 and @libp2p/pnet 2.0.47 over TCP. pnet encrypts the stream with XSalsa20, so a
 * wrong key turns the noise negotiation into random bytes. Either the side that reads them
 * closes the connection (EncryptionFailedError, such as "unexpected end of input"), or both
 * sides wait for a length that never arrives (TimeoutError at the dial timeout, 10 s by
 * default). A dialer with a key fails against a listener without one in pnet's nonce exchange
 * (UnexpectedEOFError, or TimeoutError after pnet's 1 s limit).
 */
const KEY_MISMATCH_ERRORS = new Set(['EncryptionFailedError', 'UnexpectedEOFError', 'TimeoutError'])

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
  /**
   * Bytes of a libp2p swarm key file (see node/swarm-key.ts). With a key, @libp2p/pnet encrypts
   * every connection with it before noise, so only peers with the same key can connect.
   * @default no key: any libp2p peer can connect
   */
  swarmKey?: Uint8Array
}

/** Returns the sender and sequence number of a gossipsub RPC message as one hex string. */
function senderAndSequence(message: { from?: Uint8Array; seqno?: Uint8Array }): string {
  return `${toHex(message.from ?? new Uint8Array())}:${toHex(message.seqno ?? new Uint8Array())}`
}

export type Host = Libp2p<{ pubsub: PubSub<GossipsubEvents>; identify: Identify }>

/**
 * Creates and starts a libp2p node: TCP, the pre-shared key when `swarmKey` is set, noise,
 * yamux, identify and gossipsub. Throws InvalidSwarmKeyError for a malformed `swarmKey`.
 */
export async function createHost(init: HostInit = {}): Promise<Host> {
  const maxMessageBytes = init.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES
  // pnet 2.0.47 ignores the first two lines of the file and rejects upper-case hex, so it gets
  // the key that parseSwarmKey has checked, rewritten in the canonical form.
  const connectionProtector =
    init.swarmKey === undefined
      ? undefined
      : preSharedKey({
          psk: new TextEncoder().encode(formatSwarmKey(parseSwarmKey(init.swarmKey))),
        })
  const peerDiscovery: Array<ReturnType<typeof bootstrap> | ReturnType<typeof mdns>> = []
  if (init.bootstrap !== undefined && init.bootstrap.length > 0) {
    peerDiscovery.push(bootstrap({ list: init.bootstrap, timeout: 0 }))
  }
  if (init.mdns === true) peerDiscovery.push(mdns())
  const host = await createLibp2p({
    privateKey: init.privateKey,
    addresses: { listen: init.listen ?? ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionProtector,
    connectionManager: {
      // libp2p 2.10 rejects a sixth new connection per second from one address, which a swarm
      // of peers starting at once on one machine (one loopback address) easily exceeds.
      inboundConnectionThreshold: INBOUND_CONNECTIONS_PER_SECOND,
      // libp2p resets an inbound connection while 10 others are still upgrading, and the first
      // peer of a swarm started at once gets a dial from every other one.
      maxIncomingPendingConnections: MAX_PENDING_INBOUND,
    },
    connectionMonitor: {
      // A peer busy training replies to libp2p's pings late, and aborting the connection then
      // loses the deltas in flight; a dead peer is still noticed when its socket closes.
      abortConnectionOnPingFailure: false,
    },
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    peerDiscovery,
    services: {
      identify: identify(),
      // NOTE: no topic score parameters are set, so a rejected message records an invalid
      // delivery with weight 0: the sender's score never drops and a flooding peer is never
      // graylisted.
      pubsub: gossipsub({
        // Gossipsub's default score takes 5 * (n - 10)^2 points from each of n > 10 peers on one
        // IP address and stops gossiping with them below -10, so a swarm of 12 or more peers on
        // one machine, or behind one NAT, would cut its own links.
        scoreParams: { IPColocationFactorWeight: 0 },
        // A delta that arrives before the remote subscription is known would be lost, so the
        // round loop republishes on every new subscriber instead of failing the publish.
        allowPublishToZeroTopicPeers: true,
        emitSelf: false,
        // Gossipsub checks a message's signature before it looks the message up among those it
        // has seen, so each copy that mesh peers forward costs a signature check over the whole
        // delta. Keying the seen messages by sender and sequence number (the message id of
        // signed messages) drops a copy first. A forged copy of an unseen message is still
        // checked and rejected, because only checked messages enter the cache.
        fastMsgIdFn: senderAndSequence,
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
  for (const address of init.bootstrap ?? []) {
    reportBootstrapFailure(host, address, init.swarmKey !== undefined)
  }
  return host
}

/**
 * Dials a bootstrap peer and logs the error when the dial fails. The bootstrap module dials the
 * same peer, but it logs a failure only to its debug log (DEBUG=libp2p:bootstrap*). libp2p's
 * dial queue merges the two dials into one.
 */
function reportBootstrapFailure(host: Host, address: string, hasSwarmKey: boolean): void {
  host.dial(multiaddr(address)).catch((error: unknown) => {
    // Stopping the host aborts its dials, which is no failure worth a line.
    if (host.status !== 'started') return
    log.error('%s', describeDialFailure(address, error, hasSwarmKey))
  })
}

/**
 * Describes a failed dial to `address` in one line: the error and, when the error is one that
 * a pre-shared key mismatch raises, that the keys likely differ. Never includes the key.
 */
export function describeDialFailure(address: string, error: unknown, hasSwarmKey: boolean): string {
  const errors = error instanceof AggregateError ? [error, ...error.errors] : [error]
  const names = errors.map((item: unknown) => (item instanceof Error ? item.name : 'Error'))
  const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error)
  const line = `dial to ${address} failed: ${message}`
  if (hasSwarmKey && names.some((name) => KEY_MISMATCH_ERRORS.has(name))) {
    const timedOut = names.includes('TimeoutError')
      ? ', unless the remote peer does not respond at all'
      : ''
    return `${line}. The pre-shared key likely differs: the remote peer uses another --swarm-key file or none${timedOut}`
  }
  if (!hasSwarmKey && names.includes('EncryptionFailedError')) {
    return `${line}. The remote peer may use a pre-shared key: start this peer with the --swarm-key file of that swarm`
  }
  return line
}
