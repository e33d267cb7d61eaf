// Gossip amplification: bytes each peer receives against the delta bytes it needs.
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Mnist } from '../../data/index.ts'
import type { BackendName } from '../../node/backend.ts'
import type { RoundMetrics } from '../../node/metrics.ts'
import type { Peer } from '../../node/peer.ts'
import { DEFAULT_SPEC, validateSpec } from '../../node/spec.ts'
import { encodedDeltaSize, parseCodec } from '../../protocols/index.ts'
import {
  bytesReadByPeer,
  SocketByteCounter,
  type SocketSnapshot,
  socketOwners,
} from './bench-sockets.ts'
import { runInProcessSwarm, type SwarmRound } from './bench-swarm.ts'

/** How often the received-IDONTWANT state of every peer is sampled, in milliseconds. */
const IDONTWANT_POLL_MS = 200

/** One peer's received bytes against the bytes of the distinct deltas it needed. */
export interface PeerAmplification {
  peerIndex: number
  /** RoundMetrics.bytesReceived after the last round: data of the messages the validator saw. */
  validatorBytes: number
  validatorRatio: number
  /** Bytes read on the peer's TCP sockets from round 0 until every peer had left. */
  tcpBytes: number
  tcpRatio: number
}

/** IDONTWANT support of the installed gossipsub, read from its source and seen in the run. */
export interface IdontwantReport {
  packageVersion: string
  /** Whether the package's code sends IDONTWANT control messages, or null when unreadable. */
  sends: boolean | null
  /**
   * Whether the forward path (forwardMessage, selectPeersToForward) reads received IDONTWANTs
   * before it sends a message on, or null when those methods were not found.
   */
  forwardSkipsPeersThatSentIt: boolean | null
  /** Smallest message data in bytes for which the package sends IDONTWANT (its constant). */
  minDataBytes: number | null
  /** Gossipsub stream protocols between the swarm's peers, with the number of streams. */
  streamProtocols: Record<string, number>
  /** Distinct (receiver, sender, message id) IDONTWANT entries seen in the peers' state. */
  receivedEntries: number | null
}

export interface GossipReport {
  peers: number
  rounds: number
  codec: string
  trainSamples: number
  deltaBytes: number
  /** (peers - 1) * rounds * deltaBytes: the distinct delta bytes each peer needed. */
  neededBytes: number
  perPeer: PeerAmplification[]
  /** The swarm's rounds, to show whether every peer received every delta. */
  roundResults: SwarmRound[]
  /** TCP bytes read on sockets that belong to no connection between the swarm's peers. */
  unattributedTcpBytes: number
  idontwant: IdontwantReport
  wallSeconds: number
  /** Meaning of the two byte counts, as printed under the table. */
  notes: { validatorBytes: string; tcpBytes: string }
}

export const GOSSIP_NOTES: GossipReport['notes'] = {
  validatorBytes:
    'RoundMetrics.bytesReceived, the data of the messages the topic validator saw. Gossipsub ' +
    'drops duplicate copies before validation, so they are not in it.',
  tcpBytes:
    "everything read on the peer's TCP sockets from round 0 until every peer left, including " +
    'noise, yamux, identify and gossipsub control traffic.',
}

export interface GossipBenchInit {
  peers: number
  rounds: number
  trainSamples: number
  seed: number
  mnist: Mnist
  backend: BackendName
  onRound?: (metrics: RoundMetrics) => void
  signal?: AbortSignal
}

/** Returns the body of the compiled method `name`, assuming the 4-space indent of tsc's output. */
function methodBody(source: string, name: string): string | undefined {
  const start = source.search(new RegExp(`\\n {4}(?:async )?${name}\\s*\\(`))
  if (start === -1) return undefined
  const end = source.indexOf('\n    }\n', start)
  return end === -1 ? undefined : source.slice(start, end)
}

/**
 * Reads the installed @chainsafe/libp2p-gossipsub and reports whether it sends IDONTWANT and
 * whether its forward path skips the peers that sent one.
 */
export function inspectGossipsubSource(): Omit<
  IdontwantReport,
  'streamProtocols' | 'receivedEntries'
> {
  const entry = fileURLToPath(import.meta.resolve('@chainsafe/libp2p-gossipsub'))
  const root = join(dirname(entry), '..', '..')
  const packageVersion = (
    JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }
  ).version
  const source = readFileSync(entry, 'utf8')
  const forward = [methodBody(source, 'forwardMessage'), methodBody(source, 'selectPeersToForward')]
  let minDataBytes: number | null = null
  try {
    const constants = readFileSync(join(dirname(entry), 'constants.js'), 'utf8')
    const match = /GossipsubIdontwantMinDataSize\s*=\s*(\d+)/.exec(constants)
    minDataBytes = match === null ? null : Number(match[1])
  } catch {
    // An unreadable constants file leaves the threshold unknown, which the report shows.
  }
  return {
    packageVersion,
    sends: /sendIDontWants?\s*\(/i.test(source),
    forwardSkipsPeersThatSentIt: forward.includes(undefined)
      ? null
      : forward.some((body) => /idontwant/i.test(body as string)),
    minDataBytes,
  }
}

function streamProtocols(peers: Peer[]): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const peer of peers) {
    for (const connection of peer.host.getConnections()) {
      for (const stream of connection.streams) {
        const protocol = stream.protocol
        if (protocol?.startsWith('/meshsub/') === true)
          counts[protocol] = (counts[protocol] ?? 0) + 1
      }
    }
  }
  return counts
}

/**
 * Adds the IDONTWANT entries every peer has received to `seen`, read from gossipsub's private
 * `idontwants` map (sender peer id to message ids). Returns whether any peer has that map.
 *
 * NOTE: the map is internal to @chainsafe/libp2p-gossipsub 14 and drops an entry after a few
 * heartbeats. An entry that lives shorter than the poll interval is missed, so the count is a
 * lower bound.
 */
function sampleIdontwants(peers: Peer[], seen: Set<string>): boolean {
  let found = false
  for (const [index, peer] of peers.entries()) {
    const state = peer.host.services.pubsub as unknown as {
      idontwants?: Map<string, Map<string, number>>
    }
    if (!(state.idontwants instanceof Map)) continue
    found = true
    for (const [sender, messageIds] of state.idontwants) {
      for (const messageId of messageIds.keys()) seen.add(`${index}:${sender}:${messageId}`)
    }
  }
  return found
}

/** Divides each peer's received bytes by the distinct delta bytes it needed. */
export function amplificationPerPeer(
  metrics: RoundMetrics[],
  tcpBytes: number[],
  neededBytes: number,
): PeerAmplification[] {
  return tcpBytes.map((tcp, peerIndex) => {
    const rows = metrics.filter((row) => row.peerIndex === peerIndex)
    const validatorBytes = Math.max(0, ...rows.map((row) => row.bytesReceived))
    return {
      peerIndex,
      validatorBytes,
      validatorRatio: validatorBytes / neededBytes,
      tcpBytes: tcp,
      tcpRatio: tcp / neededBytes,
    }
  })
}

/**
 * Runs a float32 swarm of `peers` peers for `rounds` rounds. For each peer it measures the bytes
 * the topic validator saw and the bytes read on its TCP sockets. Both are divided by the
 * distinct delta bytes the peer needed, one delta from each other peer per round.
 */
export async function runGossipBenchmark(init: GossipBenchInit): Promise<GossipReport> {
  const spec = validateSpec({
    ...DEFAULT_SPEC,
    swarm: 'bench-gossip',
    seed: init.seed,
    peers: init.peers,
    trainSamples: init.trainSamples,
    // Accuracy does not matter here, so a small test set keeps evaluation short.
    testSamples: 500,
  })
  const counter = new SocketByteCounter()
  const seen = new Set<string>()
  let sampled = false
  let before: SocketSnapshot = new Map()
  let after: SocketSnapshot = new Map()
  const owners = new Map<string, number>()
  let protocols: Record<string, number> = {}
  let poll: ReturnType<typeof setInterval> | undefined
  counter.start()
  try {
    const result = await runInProcessSwarm({
      spec,
      mnist: init.mnist,
      backend: init.backend,
      rounds: init.rounds,
      onRound: init.onRound,
      signal: init.signal,
      beforeRun: (peers) => {
        before = counter.snapshot()
        for (const [key, owner] of socketOwners(peers)) owners.set(key, owner)
        protocols = streamProtocols(peers)
        poll = setInterval(() => {
          sampled = sampleIdontwants(peers, seen) || sampled
        }, IDONTWANT_POLL_MS)
      },
      afterRun: (peers) => {
        clearInterval(poll)
        sampled = sampleIdontwants(peers, seen) || sampled
        after = counter.snapshot()
        for (const [key, owner] of socketOwners(peers)) owners.set(key, owner)
      },
    })
    const deltaBytes = encodedDeltaSize(result.shapes, parseCodec(spec.codec))
    const neededBytes = (init.peers - 1) * init.rounds * deltaBytes
    const tcp = bytesReadByPeer(owners, before, after, init.peers)
    return {
      peers: init.peers,
      rounds: init.rounds,
      codec: spec.codec,
      trainSamples: init.trainSamples,
      deltaBytes,
      neededBytes,
      perPeer: amplificationPerPeer(result.metrics, tcp.perPeer, neededBytes),
      roundResults: result.rounds,
      unattributedTcpBytes: tcp.unattributed,
      idontwant: {
        ...inspectGossipsubSource(),
        streamProtocols: protocols,
        receivedEntries: sampled ? seen.size : null,
      },
      wallSeconds: result.wallSeconds,
      notes: GOSSIP_NOTES,
    }
  } finally {
    clearInterval(poll)
    counter.stop()
  }
}
