import { constants } from 'node:os'
import { loadMnist } from '../data/index.ts'
import { type BackendName, selectBackend } from './backend.ts'
import { openStateDir } from './checkpoint.ts'
import { BackendUnavailableError, CheckpointError, IdentityError, UsageError } from './errors.ts'
import { prepareModelFolder, saveFinalModel } from './export.ts'
import type { LauncherToPeer, PeerToLauncher } from './ipc.ts'
import { log, setQuiet } from './log.ts'
import type { RoundMetrics } from './metrics.ts'
import { parsePeerOptions, peerHelp } from './options.ts'
import { Peer, type TurnGate } from './peer.ts'

const EXIT_USAGE = 2

/** True when a launcher started this process with an IPC channel. */
const launched = typeof process.send === 'function'

function send(message: PeerToLauncher): void {
  process.send?.(message)
}

/** Resolves with the next launcher message of the given type. */
function nextMessage<T extends LauncherToPeer['type']>(
  type: T,
): Promise<Extract<LauncherToPeer, { type: T }>> {
  return new Promise((resolve) => {
    const onMessage = (message: LauncherToPeer) => {
      if (message.type !== type) return
      process.off('message', onMessage)
      resolve(message as Extract<LauncherToPeer, { type: T }>)
    }
    process.on('message', onMessage)
  })
}

/** A gate that asks the launcher for every compute turn. */
const launcherGate: TurnGate = {
  async acquire(kind, round) {
    const granted = nextMessage('turn-grant')
    send({ type: 'turn-request', kind, round })
    await granted
  },
  release() {
    send({ type: 'turn-done' })
  },
}

function describeRound(metrics: RoundMetrics): string {
  const accuracy = (metrics.accuracy * 100).toFixed(2)
  return `peer ${metrics.peerIndex} round ${metrics.round}: accuracy ${accuracy}% loss ${metrics.loss.toFixed(4)} contributors ${metrics.contributors} train ${metrics.trainMs} ms wait ${metrics.waitMs} ms model ${metrics.modelHash.slice(0, 12)}`
}

async function main(argv: string[]): Promise<number> {
  const options = parsePeerOptions(argv)
  if (options === undefined) {
    process.stdout.write(`${peerHelp()}\n`)
    return 0
  }
  setQuiet(options.quiet)
  const state =
    options.stateDir === undefined
      ? undefined
      : await openStateDir(options.stateDir, options.spec, options.peerIndex)
  if (options.saveModel !== undefined) await prepareModelFolder(options.saveModel)
  const mnist = loadMnist({ dataDir: options.dataDir, verifyDigests: options.verifyData })
  const backend: BackendName = await selectBackend(options.backend)
  const peer = await Peer.create({
    spec: options.spec,
    peerIndex: options.peerIndex,
    mnist,
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
    turnGate: launched ? launcherGate : undefined,
    onRound: (metrics) => {
      if (launched) send({ type: 'round', metrics })
      else if (!options.quiet) process.stdout.write(`${describeRound(metrics)}\n`)
    },
  })
  const stopOnSignal = (signal: NodeJS.Signals) => {
    stoppedBy = signal
    shutdown.abort(new Error(`stopped by ${signal}`))
  }
  process.once('SIGINT', stopOnSignal)
  process.once('SIGTERM', stopOnSignal)
  try {
    const addresses = peer.addresses()
    log.info('peer %s listening on %s', peer.peerId.toString(), addresses.join(' '))
    log.info('topic %s', peer.topic)
    let startedAt: Promise<number> | undefined
    if (launched) {
      const dial = nextMessage('dial')
      startedAt = nextMessage('start').then((message) => message.startedAt)
      send({ type: 'listening', peerId: peer.peerId.toString(), addresses })
      await peer.dial((await dial).addresses)
    }
    log.info('waiting for %d peers', options.minPeers)
    await peer.waitForSwarm(shutdown.signal)
    send({ type: 'ready' })
    const result = await peer.run(
      startedAt === undefined ? Date.now() : await startedAt,
      shutdown.signal,
    )
    if (options.saveModel !== undefined) {
      await saveFinalModel(peer.trainer, options.saveModel, options.spec, result)
    }
    send({ type: 'done', result })
    log.info(
      'peer %d finished %d rounds: accuracy %s%, model %s',
      options.peerIndex,
      result.rounds,
      (result.finalAccuracy * 100).toFixed(2),
      result.modelHash,
    )
    return 0
  } finally {
    await peer.stop()
    state?.release()
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

let finished = false
/** Aborted by SIGINT or SIGTERM, which stop the round loop after closing the metrics file. */
const shutdown = new AbortController()
let stoppedBy: NodeJS.Signals | undefined
if (launched) {
  // When the launcher dies, whatever ended it, the IPC channel closes and the peer goes too.
  process.on('disconnect', () => {
    if (!finished) process.exit(1)
  })
}

function finish(code: number): void {
  finished = true
  process.exitCode = code
  if (launched) process.disconnect()
  // libp2p is stopped by now; a handle it left open must not keep the process alive.
  setTimeout(() => process.exit(code), 2000).unref()
}

main(process.argv.slice(2)).then(finish, (error: unknown) => {
  const message = error instanceof Error ? error.message : String(error)
  if (stoppedBy !== undefined) {
    // Shells report a process ended by a signal as 128 plus the signal's number.
    log.info('peer stopped by %s', stoppedBy)
    finish(128 + (constants.signals[stoppedBy] ?? 0))
    return
  }
  if (error instanceof Error && USAGE_ERRORS.has(error.name)) {
    process.stderr.write(`${message}\n`)
    send({ type: 'failed', message })
    finish(EXIT_USAGE)
    return
  }
  log.error('%s', error instanceof Error ? (error.stack ?? message) : message)
  send({ type: 'failed', message, code: listenErrorCode(error) })
  finish(1)
})
