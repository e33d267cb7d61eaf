// A process that hosts several peers, each with its own libp2p node, keys, shard and model. The
// MNIST files, the TensorFlow.js backend and the test set (see test-set.ts) load once and serve
// every peer of the process. The peers still talk to each other only through libp2p, over
// loopback TCP like peers in separate processes. The launcher starts it; see node/ipc.ts for the messages.

import { loadMnist } from '../data/index.ts'
import { selectBackend } from './backend.ts'
import type { StateDir } from './checkpoint.ts'
import { UsageError } from './errors.ts'
import { NEXT_PEER } from './ipc.ts'
import { log, setQuiet } from './log.ts'
import { type PeerOptions, parsePeerOptions, peerHelp } from './options.ts'
import type { Peer } from './peer.ts'
import {
  createPeer,
  HostedPeerError,
  type PeerProcessContext,
  preparePeer,
  runPeer,
  runPeerProcess,
} from './peer-process.ts'
import { SharedTestSet } from './test-set.ts'

const HELP = `Usage: node node/peer-host.ts PEER_OPTIONS [${NEXT_PEER} PEER_OPTIONS]...

Hosts one peer per group of peer options in this process. The groups must agree on --backend,
--data-dir, --no-verify-data and --quiet, because the process loads the data and the backend
once. The launcher (npm start -- --peers-per-process K) starts this process; the peer options
are those of npm run peer:

${peerHelp()}`

/** Splits the arguments at every NEXT_PEER into one group per peer. */
function splitGroups(argv: string[]): string[][] {
  const groups: string[][] = [[]]
  for (const argument of argv) {
    if (argument === NEXT_PEER) groups.push([])
    else groups[groups.length - 1]?.push(argument)
  }
  return groups
}

/** Parses every group; returns undefined when any of them requested --help. */
function parseGroups(argv: string[]): PeerOptions[] | undefined {
  const all: PeerOptions[] = []
  for (const group of splitGroups(argv)) {
    const options = parsePeerOptions(group)
    if (options === undefined) return undefined
    all.push(options)
  }
  const first = all[0] as PeerOptions
  const processWide = (options: PeerOptions) =>
    [options.backend, options.dataDir, options.verifyData, options.quiet].join('\n')
  for (const options of all) {
    if (processWide(options) !== processWide(first)) {
      throw new UsageError(
        `Peer ${options.peerIndex} differs from peer ${first.peerIndex} in --backend, --data-dir, --no-verify-data or --quiet. Pass the same values to every peer, because the peers of one process share them`,
      )
    }
  }
  const indices = new Set(all.map((options) => options.peerIndex))
  if (indices.size !== all.length) {
    throw new UsageError(
      `Expected a distinct --peer-index for every hosted peer, got ${all.map((options) => options.peerIndex).join(', ')}`,
    )
  }
  return all
}

/** Stops the peers that were created, in reverse order, and releases their state folders. */
async function stopAll(peers: Peer[], states: Array<StateDir | undefined>): Promise<void> {
  for (const peer of [...peers].reverse()) await peer.stop()
  for (const state of states) state?.release()
}

async function main(argv: string[], context: PeerProcessContext): Promise<number> {
  const all = parseGroups(argv)
  if (all === undefined) {
    process.stdout.write(`${HELP}\n`)
    return 0
  }
  const first = all[0] as PeerOptions
  setQuiet(first.quiet)
  const states: Array<StateDir | undefined> = []
  const peers: Peer[] = []
  try {
    for (const options of all) {
      try {
        states.push(await preparePeer(options))
      } catch (error) {
        throw new HostedPeerError(options.peerIndex, error)
      }
    }
    const mnist = loadMnist({ dataDir: first.dataDir, verifyDigests: first.verifyData })
    const testSet = new SharedTestSet(mnist)
    const backend = await selectBackend(first.backend)
    // Every peer is created before any reports its addresses, so a peer that cannot listen fails
    // the process before the launcher sends dials to the others.
    for (const [i, options] of all.entries()) {
      try {
        peers.push(await createPeer(options, { state: states[i], mnist, testSet, backend }))
      } catch (error) {
        throw new HostedPeerError(options.peerIndex, error)
      }
    }
    for (const [i, peer] of peers.entries()) {
      log.info('hosting peer %d as %s', all[i]?.peerIndex, peer.peerId.toString())
    }
    context.handleSignals()
    // The first peer that fails stops the others, and the process fails with its error.
    const failure = new AbortController()
    const signal = AbortSignal.any([context.signal, failure.signal])
    await Promise.all(
      peers.map((peer, i) => {
        const options = all[i] as PeerOptions
        return runPeer(peer, options, signal).catch((error: unknown) => {
          const hosted = new HostedPeerError(options.peerIndex, error)
          failure.abort(hosted)
          throw hosted
        })
      }),
    )
    return 0
  } finally {
    await stopAll(peers, states)
  }
}

runPeerProcess((context) => main(process.argv.slice(2), context))
