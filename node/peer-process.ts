// The parts of a peer process that node/cli.ts (one peer) and node/peer-host.ts (several peers)
// share: the launcher's IPC channel, a peer's life from creation to its last round, and how the
// process ends and which exit code it returns.
import { constants } from 'node:os'
import type { Mnist } from '../data/index.ts'
import type { BackendName } from './backend.ts'
import { openStateDir, type StateDir } from './checkpoint.ts'
import { BackendUnavailableError, CheckpointError, IdentityError, UsageError } from './errors.ts'
import { prepareModelFolder, saveFinalModel } from './export.ts'
import type { LauncherToPeer, PeerToLauncher } from './ipc.ts'
import { log } from './log.ts'
import type { RoundMetrics } from './metrics.ts'
import type { PeerOptions } from './options.ts'
import { Peer, type PeerResult, type TurnGate } from './peer.ts'
import type { SharedTestSet } from './test-set.ts'

export const EXIT_USAGE = 2
/** Attempts at the launcher's dials before a failed dial fails the peer. */
const LAUNCH_DIAL_ATTEMPTS = 3

/** True when a launcher started this process with an IPC channel. */
export const launched = typeof process.send === 'function'

export function sendToLauncher(message: PeerToLauncher): void {
  process.send?.(message)
}

type Waiter = (message: LauncherToPeer) => void
/** Pending nextLauncherMessage calls, by message type and peer index, oldest first. */
const waiters = new Map<string, Waiter[]>()
let routing = false

function waiterKey(type: LauncherToPeer['type'], peerIndex: number): string {
  return `${type}:${peerIndex}`
}

/** Hands a launcher message to the oldest call waiting for it, and drops it when none waits. */
function routeMessage(message: LauncherToPeer): void {
  const key = waiterKey(message.type, message.peerIndex)
  const queue = waiters.get(key)
  const waiter = queue?.shift()
  if (queue?.length === 0) waiters.delete(key)
  waiter?.(message)
}

/**
 * Resolves with the next launcher message of the given type for peer `peerIndex`. One 'message'
 * listener serves every peer of the process, so a host of many peers stays under Node's
 * listener warning limit.
 */
export function nextLauncherMessage<T extends LauncherToPeer['type']>(
  type: T,
  peerIndex: number,
): Promise<Extract<LauncherToPeer, { type: T }>> {
  if (!routing) {
    process.on('message', routeMessage)
    routing = true
  }
  return new Promise((resolve) => {
    const key = waiterKey(type, peerIndex)
    const queue = waiters.get(key) ?? []
    queue.push((message) => resolve(message as Extract<LauncherToPeer, { type: T }>))
    waiters.set(key, queue)
  })
}

/** Returns a gate that requests every compute turn of peer `peerIndex` from the launcher. */
function launcherGate(peerIndex: number): TurnGate {
  return {
    async acquire(kind, round) {
      const granted = nextLauncherMessage('turn-grant', peerIndex)
      sendToLauncher({ type: 'turn-request', peerIndex, kind, round })
      await granted
    },
    release() {
      sendToLauncher({ type: 'turn-done', peerIndex })
    },
  }
}

/** Rejects with the signal's reason once it aborts, so a wait for the launcher ends with it. */
function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  signal.throwIfAborted()
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort)
        resolve(value)
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort)
        reject(error)
      },
    )
  })
}

/**
 * Opens the peer's state folder and empties its --save-model folder, so a bad folder fails the
 * process before it loads data and a backend.
 */
export async function preparePeer(options: PeerOptions): Promise<StateDir | undefined> {
  const state =
    options.stateDir === undefined
      ? undefined
      : await openStateDir(options.stateDir, options.spec, options.peerIndex)
  try {
    if (options.saveModel !== undefined) await prepareModelFolder(options.saveModel)
  } catch (error) {
    state?.release()
    throw error
  }
  return state
}

export interface PeerResources {
  state: StateDir | undefined
  mnist: Mnist
  /** Shared by the peers of one process. @default a test set of the peer's own */
  testSet?: SharedTestSet
  backend: BackendName
}

/**
 * Creates and starts one peer. Under a launcher its compute turns and round metrics go over the
 * IPC channel; otherwise `printRound` receives each round's metrics.
 */
export function createPeer(
  options: PeerOptions,
  resources: PeerResources,
  printRound?: (metrics: RoundMetrics) => void,
): Promise<Peer> {
  const { state, mnist, testSet, backend } = resources
  const peerIndex = options.peerIndex
  return Peer.create({
    spec: options.spec,
    peerIndex,
    mnist,
    testSet,
    backend,
    host: {
      listen: options.listen,
      bootstrap: options.bootstrap,
      mdns: options.mdns,
      privateKey: state?.privateKey,
      swarmKey: options.swarmKey,
    },
    mode: options.mode,
    join: options.join,
    resume: state?.checkpoint,
    onCheckpoint: state?.save,
    minPeers: options.minPeers,
    maxRounds: options.maxRounds,
    target: options.target,
    metricsPath: options.metricsPath,
    turnGate: launched ? launcherGate(peerIndex) : undefined,
    onRound: (metrics) => {
      if (launched) sendToLauncher({ type: 'round', peerIndex, metrics })
      else printRound?.(metrics)
    },
  })
}

/**
 * Dials the addresses the launcher sent, and dials again after a failure. When a hundred peers
 * connect at once on a machine whose cores are busy, a loopback dial can pass libp2p 2.10's 10 s
 * dial timeout. It can also be reset when the remote side passes its 10 s upgrade timeout. Either
 * may succeed on the next attempt. The launcher gives every peer the same options, so a failure that
 * repeats, such as a swarm key mismatch, is thrown after the last attempt.
 */
async function dialLaunchPeers(peer: Peer, addresses: string[], signal: AbortSignal) {
  for (let attempt = 1; ; attempt++) {
    try {
      await peer.dial(addresses)
      return
    } catch (error) {
      signal.throwIfAborted()
      if (attempt >= LAUNCH_DIAL_ATTEMPTS) throw error
      log.info(
        'peer %d: dial attempt %d of %d failed (%s), dialling again',
        peer.peerIndex,
        attempt,
        LAUNCH_DIAL_ATTEMPTS,
        error instanceof Error ? error.message : String(error),
      )
    }
  }
}

/**
 * Runs a created peer to its last round. Under a launcher it first reports its addresses, dials
 * the ones the launcher sends and waits for the launcher's start. Alone it starts once
 * --min-peers peers are subscribed. Saves the final model when --save-model is set.
 */
export async function runPeer(
  peer: Peer,
  options: PeerOptions,
  signal: AbortSignal,
): Promise<PeerResult> {
  const peerIndex = options.peerIndex
  const addresses = peer.addresses()
  log.info('peer %s listening on %s', peer.peerId.toString(), addresses.join(' '))
  log.info('topic %s', peer.topic)
  let startedAt: Promise<number> | undefined
  if (launched) {
    const dial = nextLauncherMessage('dial', peerIndex)
    startedAt = nextLauncherMessage('start', peerIndex).then((message) => message.startedAt)
    sendToLauncher({ type: 'listening', peerIndex, peerId: peer.peerId.toString(), addresses })
    await dialLaunchPeers(peer, (await abortable(dial, signal)).addresses, signal)
  }
  log.info('waiting for %d peers, this one included', options.minPeers)
  await peer.waitForSwarm(signal)
  sendToLauncher({ type: 'ready', peerIndex })
  const origin = startedAt === undefined ? Date.now() : await abortable(startedAt, signal)
  const result = await peer.run(origin, signal)
  if (options.saveModel !== undefined) {
    await saveFinalModel(peer.trainer, options.saveModel, options.spec, result)
  }
  sendToLauncher({ type: 'done', peerIndex, result })
  log.info(
    'peer %d finished after %d round(s): accuracy %s%, model %s',
    peerIndex,
    result.rounds,
    (result.finalAccuracy * 100).toFixed(2),
    result.modelHash,
  )
  return result
}

/** Raised by a process of several peers when one of them fails; `cause` is that peer's error. */
export class HostedPeerError extends Error {
  static override name = 'HostedPeerError'

  readonly peerIndex: number

  constructor(peerIndex: number, cause: unknown) {
    const message = cause instanceof Error ? cause.message : String(cause)
    super(`peer ${peerIndex}: ${message}`, { cause })
    this.name = 'HostedPeerError'
    this.peerIndex = peerIndex
  }
}

/**
 * Errors caused by an option value, a missing package, missing data or an unusable state
 * folder: exit code 2.
 */
const USAGE_ERRORS = new Set([
  UsageError.name,
  BackendUnavailableError.name,
  IdentityError.name,
  CheckpointError.name,
  'MnistNotFoundError',
  'MnistDigestError',
  'PartitionError',
  'IdxFormatError',
])

/**
 * Returns 'EADDRINUSE' when the error means a listen address was taken by another socket, so the
 * launcher can start the peer again on another port.
 * NOTE: libp2p 2.x reports a failed listen as UnsupportedListenAddressesError and keeps the Node
 * error only as text in its message, so the code is matched in that text.
 */
function listenErrorCode(error: unknown): 'EADDRINUSE' | undefined {
  if (!(error instanceof Error)) return undefined
  if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE') return 'EADDRINUSE'
  const wrapped = error.name === 'UnsupportedListenAddressesError'
  return wrapped && error.message.includes('EADDRINUSE') ? 'EADDRINUSE' : undefined
}

export interface PeerProcessContext {
  /** Aborted by SIGINT or SIGTERM once `handleSignals` was called. */
  signal: AbortSignal
  /**
   * Makes SIGINT and SIGTERM abort `signal`, which stops the round loops after closing their
   * metrics files. Before this call either signal ends the process at once.
   */
  handleSignals(): void
}

/**
 * Runs `main` as the body of a peer process and sets the exit code: main's result; 2 for a usage
 * error; 128 plus the signal's number after SIGINT or SIGTERM; 1 for any other error. A failure
 * is reported to the launcher, with the peer's index when the error is a HostedPeerError. Under
 * a launcher the process exits when the IPC channel closes, whatever ended the launcher.
 */
export function runPeerProcess(main: (context: PeerProcessContext) => Promise<number>): void {
  let finished = false
  let stoppedBy: NodeJS.Signals | undefined
  const shutdown = new AbortController()
  const stopOnSignal = (signal: NodeJS.Signals) => {
    stoppedBy = signal
    shutdown.abort(new Error(`stopped by ${signal}`))
  }
  if (launched) {
    process.on('disconnect', () => {
      if (!finished) process.exit(1)
    })
  }

  const finish = (code: number) => {
    finished = true
    process.exitCode = code
    if (launched) process.disconnect()
    // libp2p is stopped by now; a handle it left open must not keep the process alive.
    setTimeout(() => process.exit(code), 2000).unref()
  }

  const context: PeerProcessContext = {
    signal: shutdown.signal,
    handleSignals() {
      process.once('SIGINT', stopOnSignal)
      process.once('SIGTERM', stopOnSignal)
    },
  }
  main(context).then(finish, (error: unknown) => {
    const peerIndex = error instanceof HostedPeerError ? error.peerIndex : undefined
    const cause = error instanceof HostedPeerError ? error.cause : error
    const message = cause instanceof Error ? cause.message : String(cause)
    if (stoppedBy !== undefined) {
      // Shells report a process ended by a signal as 128 plus the signal's number.
      log.info('peer process stopped by %s', stoppedBy)
      finish(128 + (constants.signals[stoppedBy] ?? 0))
      return
    }
    const prefix = peerIndex === undefined ? '' : `peer ${peerIndex}: `
    if (cause instanceof Error && USAGE_ERRORS.has(cause.name)) {
      process.stderr.write(`${prefix}${message}\n`)
      sendToLauncher({ type: 'failed', peerIndex, message })
      finish(EXIT_USAGE)
      return
    }
    log.error('%s%s', prefix, cause instanceof Error ? (cause.stack ?? message) : message)
    sendToLauncher({ type: 'failed', peerIndex, message, code: listenErrorCode(cause) })
    finish(1)
  })
}
