// Byte counts of the TCP sockets under an in-process swarm's libp2p connections.
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import type { Socket } from 'node:net'
import type { Peer } from '../../node/peer.ts'

interface TrackedSocket {
  socket: Socket
  /** `localPort>remotePort`, set once the socket is connected. */
  key?: string
}

/** Bytes read per socket, keyed `localPort>remotePort`. */
export type SocketSnapshot = Map<string, number>

function socketKey(socket: Socket): string | undefined {
  const { localPort, remotePort } = socket
  return localPort === undefined || remotePort === undefined
    ? undefined
    : `${localPort}>${remotePort}`
}

/**
 * Records every TCP socket this process opens or accepts while started, through Node's
 * `net.client.socket` and `net.server.socket` diagnostics channels. libp2p 2.10 keeps no byte
 * counts on a connection unless a metrics implementation is configured, and the project's host
 * configures none, so the socket counters are the raw numbers: noise, yamux, identify and
 * gossipsub control traffic included.
 */
export class SocketByteCounter {
  private readonly sockets: TrackedSocket[] = []

  private readonly onClient = (message: unknown): void => {
    const tracked: TrackedSocket = { socket: (message as { socket: Socket }).socket }
    this.sockets.push(tracked)
    // A client socket gets its local port on connect, and after close the port reads undefined.
    tracked.socket.once('connect', () => {
      tracked.key = socketKey(tracked.socket)
    })
  }

  private readonly onServer = (message: unknown): void => {
    const socket = (message as { socket: Socket }).socket
    this.sockets.push({ socket, key: socketKey(socket) })
  }

  start(): void {
    subscribe('net.client.socket', this.onClient)
    subscribe('net.server.socket', this.onServer)
  }

  stop(): void {
    unsubscribe('net.client.socket', this.onClient)
    unsubscribe('net.server.socket', this.onServer)
  }

  /** Returns the bytes read so far on each connected socket, closed ones included. */
  snapshot(): SocketSnapshot {
    const read: SocketSnapshot = new Map()
    for (const { socket, key } of this.sockets) {
      if (key !== undefined) read.set(key, (read.get(key) ?? 0) + socket.bytesRead)
    }
    return read
  }
}

function tcpPort(address: { toOptions(): { port: number } }): number {
  return address.toOptions().port
}

/**
 * Maps both ends of every connection between the swarm's peers to the index of the peer that
 * owns that end. An inbound connection on peer Q from peer P with remote port E is the socket
 * `Q's listen port>E` on Q and `E>Q's listen port` on P.
 */
export function socketOwners(peers: Peer[]): Map<string, number> {
  const indexById = new Map(peers.map((peer, index) => [peer.peerId.toString(), index]))
  const owners = new Map<string, number>()
  for (const [index, peer] of peers.entries()) {
    const listen = peer.host.getMultiaddrs()[0]
    if (listen === undefined) continue
    const listenPort = tcpPort(listen)
    for (const connection of peer.host.getConnections()) {
      if (connection.direction !== 'inbound') continue
      const dialer = indexById.get(connection.remotePeer.toString())
      const remotePort = tcpPort(connection.remoteAddr)
      owners.set(`${listenPort}>${remotePort}`, index)
      if (dialer !== undefined) owners.set(`${remotePort}>${listenPort}`, dialer)
    }
  }
  return owners
}

/**
 * Sums the bytes each peer read between two snapshots. Returns one total per peer index, and
 * the bytes on sockets that belong to no known connection end.
 */
export function bytesReadByPeer(
  owners: Map<string, number>,
  before: SocketSnapshot,
  after: SocketSnapshot,
  peerCount: number,
): { perPeer: number[]; unattributed: number } {
  const perPeer = new Array<number>(peerCount).fill(0)
  let unattributed = 0
  for (const [key, read] of after) {
    const bytes = read - (before.get(key) ?? 0)
    const owner = owners.get(key)
    if (owner === undefined) unattributed += bytes
    else perPeer[owner] = (perPeer[owner] as number) + bytes
  }
  return { perPeer, unattributed }
}
