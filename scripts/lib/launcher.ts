import { type ChildProcess, spawn } from 'node:child_process'
import { createWriteStream, mkdirSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import type { LauncherToPeer, PeerToLauncher } from '../../node/ipc.ts'
import type { RoundMetrics } from '../../node/metrics.ts'
import { stopAllChildren, trackChild } from './children.ts'
import { Progress } from './progress.ts'
import { type ModeSummary, readModeMetrics, summarizeMode } from './run-folder.ts'
import { writeFileAtomic } from './write-atomic.ts'

const PEER_CLI = resolve(import.meta.dirname, '../../node/cli.ts')

export type LaunchMode = 'parallel' | 'serial'

export interface SwarmOptions {
  peers: number
  /** Launch modes to run, in order. The centralised reference runs after them. */
  modes: LaunchMode[]
  /** Also run one peer that holds the whole training set. @default true */
  centralised?: boolean
  rounds: number
  target: number
  partition: string
  model: string
  seed: number
  /** Run folder; created if missing. */
  out: string
  /** Extra `npm run peer` options passed to every peer, such as ['--train-samples', '6000']. */
  peerArgs?: string[]
  /**
   * Rounds after which one extra peer starts with a shard of its own. It downloads the current
   * model from the others and takes part from the next round on. @default no late peer
   */
  joinLate?: number
  /** Show progress on stdout. @default true */
  progress?: boolean
  /** Called for launcher events; an exception thrown here stops the swarm and is rethrown. */
  onEvent?: (event: LauncherEvent) => void
  signal?: AbortSignal
}

export type LauncherEvent =
  | { type: 'peers-started'; mode: string; pids: number[] }
  | { type: 'round'; mode: string; metrics: RoundMetrics }
  | { type: 'mode-done'; mode: string; summary: ModeSummary }

export interface SwarmSummary {
  createdAt: string
  target: number
  peers: number
  model: string
  backend: string
  partition: string
  seed: number
  maxRounds: number
  peerArgs: string[]
  parallel?: ModeSummary & { wallSeconds: number }
  serial?: ModeSummary & { wallSeconds: number }
  centralised?: ModeSummary & { wallSeconds: number }
  /** Serial time to target divided by parallel time to target; null unless both reached it. */
  speedup: number | null
}

/** Raised when a peer process fails; the message ends with the tail of its log. */
export class PeerProcessError extends Error {
  static override name = 'PeerProcessError'

  /** The peer's exit code, when it exited with one. */
  readonly exitCode: number | undefined

  constructor(message: string, exitCode?: number) {
    super(message)
    this.name = 'PeerProcessError'
    this.exitCode = exitCode
  }
}

interface PeerProcess {
  index: number
  child: ChildProcess
  logPath: string
  addresses: string[]
  listening: Promise<void>
  ready: Promise<void>
  done: Promise<void>
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve: () => void = () => {}
  const promise = new Promise<void>((r) => {
    resolve = r
  })
  return { promise, resolve }
}

function logTail(path: string): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-15).join('\n')
  } catch {
    return '(no log)'
  }
}

/** Hands out compute turns: one at a time in serial mode, at once in parallel mode. */
class TurnScheduler {
  private readonly serial: boolean
  private readonly queue: PeerProcess[] = []
  private active: PeerProcess | undefined

  constructor(serial: boolean) {
    this.serial = serial
  }

  request(peer: PeerProcess): void {
    if (!this.serial) {
      grant(peer)
      return
    }
    this.queue.push(peer)
    this.pump()
  }

  finished(peer: PeerProcess): void {
    if (this.active === peer) this.active = undefined
    this.pump()
  }

  private pump(): void {
    if (this.active !== undefined) return
    const next = this.queue.shift()
    if (next === undefined) return
    this.active = next
    grant(next)
  }
}

function send(peer: PeerProcess, message: LauncherToPeer): void {
  if (peer.child.connected) peer.child.send(message)
}

function grant(peer: PeerProcess): void {
  send(peer, { type: 'turn-grant' })
}

interface ModeRun {
  mode: string
  peers: number
  partition: string
  serial: boolean
  /** Rounds after which one extra peer starts with --join. */
  joinLate?: number
}

/** Starts one swarm of peer processes, runs it to the end and returns when every peer exited. */
async function runMode(run: ModeRun, options: SwarmOptions): Promise<number> {
  const folder = join(options.out, run.mode)
  mkdirSync(folder, { recursive: true })
  const progress = options.progress === false ? undefined : new Progress(run.mode, run.peers)
  const scheduler = new TurnScheduler(run.serial)
  let failed: (error: Error) => void = () => {}
  const failure = new Promise<never>((_, reject) => {
    failed = reject
  })
  failure.catch(() => {})
  let callbackError: Error | undefined
  const emit = (event: LauncherEvent) => {
    try {
      options.onEvent?.(event)
    } catch (error) {
      callbackError ??= error as Error
      failed(error as Error)
    }
  }

  // A late peer brings a shard of its own, so the training set is cut into one more shard.
  const late = run.joinLate
  const shardCount = late === undefined ? run.peers : run.peers + 1
  const peers: PeerProcess[] = []
  let startedAt = 0
  let lateJoined: Promise<void> | undefined
  const startPeer = (index: number, extraArgs: string[]): PeerProcess => {
    const logPath = join(folder, `peer-${index}.log`)
    const args = [
      PEER_CLI,
      '--swarm',
      `local-${run.mode}`,
      '--model',
      options.model,
      '--seed',
      String(options.seed),
      '--partition',
      run.partition,
      '--peers',
      String(shardCount),
      '--min-peers',
      String(run.peers),
      '--peer-index',
      String(index),
      '--rounds',
      String(options.rounds),
      '--target',
      String(options.target),
      '--listen',
      '/ip4/127.0.0.1/tcp/0',
      '--metrics',
      join(folder, `peer-${index}.jsonl`),
      '--mode',
      run.mode,
      ...(options.peerArgs ?? []),
      ...extraArgs,
    ]
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] })
    trackChild(child)
    const log = createWriteStream(logPath)
    child.stdout?.pipe(log, { end: false })
    child.stderr?.pipe(log, { end: false })
    const listening = deferred()
    const ready = deferred()
    const done = deferred()
    const peer: PeerProcess = {
      index,
      child,
      logPath,
      addresses: [],
      listening: listening.promise,
      ready: ready.promise,
      done: done.promise,
    }
    child.on('error', (error) =>
      failed(new PeerProcessError(`${run.mode} peer ${index} could not start: ${error.message}`)),
    )
    let failure: string | undefined
    child.on('message', (message: PeerToLauncher) => {
      switch (message.type) {
        case 'listening':
          peer.addresses = message.addresses
          listening.resolve()
          break
        case 'ready':
          ready.resolve()
          break
        case 'turn-request':
          scheduler.request(peer)
          break
        case 'turn-done':
          scheduler.finished(peer)
          break
        case 'round':
          progress?.update(message.metrics)
          emit({ type: 'round', mode: run.mode, metrics: message.metrics })
          if (late !== undefined && lateJoined === undefined && message.metrics.round >= late - 1) {
            lateJoined = startLatePeer()
            lateJoined.catch(() => {})
          }
          break
        case 'done':
          break
        case 'failed':
          // The peer exits right after this message; its exit code decides the launcher's.
          failure = message.message
          break
      }
    })
    child.on('exit', (code, signal) => {
      scheduler.finished(peer)
      log.end()
      if (code === 0) {
        done.resolve()
        return
      }
      const how = signal === null ? `exit code ${code}` : `signal ${signal}`
      const reason =
        failure === undefined
          ? `stopped with ${how}; last lines of ${logPath}:\n${logTail(logPath)}`
          : `failed: ${failure}`
      failed(new PeerProcessError(`${run.mode} peer ${index} ${reason}`, code ?? undefined))
    })
    peers.push(peer)
    return peer
  }
  for (let index = 0; index < run.peers; index++) startPeer(index, [])
  // NOTE: when the first peers finish before the late one has dialled them, its dial fails and
  // so does the whole launch; --join-late needs rounds that outlast a process start.
  const startLatePeer = async () => {
    const peer = startPeer(run.peers, ['--join'])
    await phase(peer.listening)
    const others = peers.filter((other) => other !== peer)
    send(peer, { type: 'dial', addresses: others.flatMap((other) => other.addresses) })
    await phase(peer.ready)
    send(peer, { type: 'start', startedAt })
    await phase(peer.done)
  }
  const abort = new Promise<never>((_, reject) => {
    const onAbort = () => reject(options.signal?.reason ?? new Error('aborted'))
    if (options.signal?.aborted) onAbort()
    options.signal?.addEventListener('abort', onAbort, { once: true })
  })
  abort.catch(() => {})
  const phase = <T>(promise: Promise<T>) => Promise.race([promise, failure, abort])

  await phase(Promise.all(peers.map((peer) => peer.listening)))
  // Each peer dials the ones started before it, so every pair is connected once.
  for (const peer of peers) {
    send(peer, { type: 'dial', addresses: peers.slice(0, peer.index).flatMap((p) => p.addresses) })
  }
  await phase(Promise.all(peers.map((peer) => peer.ready)))
  emit({ type: 'peers-started', mode: run.mode, pids: peers.map((peer) => peer.child.pid ?? -1) })
  if (callbackError !== undefined) throw callbackError
  startedAt = Date.now()
  for (const peer of peers) send(peer, { type: 'start', startedAt })
  await phase(Promise.all(peers.map((peer) => peer.done)))
  if (lateJoined !== undefined) await lateJoined
  return (Date.now() - startedAt) / 1000
}

/**
 * Runs the requested launch modes one after another, then the centralised reference, and
 * writes summary.json. Whatever way it ends, no peer process outlives it.
 */
export async function runSwarm(options: SwarmOptions): Promise<SwarmSummary> {
  mkdirSync(options.out, { recursive: true })
  const runs: ModeRun[] = options.modes.map((mode) => ({
    mode,
    peers: options.peers,
    partition: options.partition,
    serial: mode === 'serial',
    joinLate: options.joinLate,
  }))
  if (options.centralised !== false) {
    runs.push({ mode: 'centralised', peers: 1, partition: 'iid', serial: false })
  }
  const summary: SwarmSummary = {
    createdAt: new Date().toISOString(),
    target: options.target,
    peers: options.peers,
    model: options.model,
    backend: 'unknown',
    partition: options.partition,
    seed: options.seed,
    maxRounds: options.rounds,
    peerArgs: options.peerArgs ?? [],
    speedup: null,
  }
  try {
    for (const run of runs) {
      const wallSeconds = await runMode(run, options)
      const rows = readModeMetrics(options.out, run.mode)
      const modeSummary = summarizeMode(rows, options.target)
      summary[run.mode as 'parallel' | 'serial' | 'centralised'] = { ...modeSummary, wallSeconds }
      summary.backend = rows[0]?.backend ?? summary.backend
      options.onEvent?.({ type: 'mode-done', mode: run.mode, summary: modeSummary })
    }
  } finally {
    await stopAllChildren()
  }
  const parallel = summary.parallel?.timeToTargetSeconds
  const serial = summary.serial?.timeToTargetSeconds
  if (typeof parallel === 'number' && typeof serial === 'number' && parallel > 0) {
    summary.speedup = serial / parallel
  }
  writeFileAtomic(join(options.out, 'summary.json'), `${JSON.stringify(summary, null, 2)}\n`)
  return summary
}
