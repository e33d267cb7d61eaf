import { type ChildProcess, spawn } from 'node:child_process'
import { createWriteStream, mkdirSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join, resolve } from 'node:path'
import { type LauncherToPeer, NEXT_PEER, type PeerToLauncher } from '../../node/ipc.ts'
import type { RoundMetrics } from '../../node/metrics.ts'
import { stopAllChildren, trackChild } from './children.ts'
import { Progress } from './progress.ts'
import { type ModeSummary, readModeMetrics, summarizeMode } from './run-folder.ts'
import { writeFileAtomic } from './write-atomic.ts'

const PEER_CLI = resolve(import.meta.dirname, '../../node/cli.ts')
const PEER_HOST = resolve(import.meta.dirname, '../../node/peer-host.ts')

/** Lowest base port accepted, because binding a port below 1024 needs root on most systems. */
export const MIN_BASE_PORT = 1024
const MAX_PORT = 65535
/** Starts of one peer process before a port still taken at bind time fails the run. */
const MAX_LISTEN_ATTEMPTS = 5

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
  /**
   * Peer i listens on 127.0.0.1 port basePort + i (the late peer on basePort + peers). A peer
   * whose port is taken listens on the next free port above that range instead.
   * @default undefined, so every peer listens on a port the OS picks
   */
  basePort?: number
  /** Extra `npm run peer` options passed to every peer, such as ['--train-samples', '6000']. */
  peerArgs?: string[]
  /**
   * Peers that one process hosts, from 1 to `peers`. With K > 1 the launcher starts ceil(peers
   * / K) processes of node/peer-host.ts, the last one with the remaining peers. Each loads the
   * data and the backend once. A late peer always gets a process of its own.
   * @default 1, so every peer is a process of node/cli.ts
   */
  peersPerProcess?: number
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
  /**
   * `pids[i]` is the id of the process that hosts peer i, and `addresses[i]` contains the
   * multiaddrs that peer i listens on.
   */
  | { type: 'peers-started'; mode: string; pids: number[]; addresses: string[][] }
  /**
   * A peer listens on `port` in place of `requestedPort`, because another socket held that port
   * before the peer started (`when: 'probe'`) or when the peer bound it (`when: 'bind'`, and the
   * peer is started again). Port 0 means the OS picks one, when no port above the range was free.
   */
  | {
      type: 'port-moved'
      mode: string
      peerIndex: number
      requestedPort: number
      port: number
      when: 'probe' | 'bind'
    }
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
  peersPerProcess: number
  parallel?: ModeSummary & { wallSeconds: number }
  serial?: ModeSummary & { wallSeconds: number }
  centralised?: ModeSummary & { wallSeconds: number }
  /** Serial time to target divided by parallel time to target; null unless both reached it. */
  speedup: number | null
}

/** Raised when a peer process fails; the message ends with its error or the tail of its log. */
export class PeerProcessError extends Error {
  static override name = 'PeerProcessError'

  /** The process's exit code, when it exited with one. */
  readonly exitCode: number | undefined
  /** The peer that failed, when the process named it or hosts only that peer. */
  readonly peerIndex: number | undefined

  constructor(message: string, exitCode?: number, peerIndex?: number) {
    super(message)
    this.name = 'PeerProcessError'
    this.exitCode = exitCode
    this.peerIndex = peerIndex
  }
}

interface Deferred {
  promise: Promise<void>
  resolve: () => void
}

function deferred(): Deferred {
  let resolve: () => void = () => {}
  const promise = new Promise<void>((r) => {
    resolve = r
  })
  return { promise, resolve }
}

/** One peer of a mode run, in whichever process hosts it. */
interface PeerSlot {
  index: number
  /** Host process; its child is replaced when the launcher starts it again on other ports. */
  process: PeerProcess
  /** Port the peer is asked to listen on; 0 lets the OS pick. */
  port: number
  addresses: string[]
  listening: Deferred
  ready: Deferred
  done: Deferred
}

/** A process of node/cli.ts (one peer) or node/peer-host.ts (several peers). */
interface PeerProcess {
  child: ChildProcess
  logPath: string
  peers: PeerSlot[]
}

function logTail(path: string): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-15).join('\n')
  } catch {
    return '(no log)'
  }
}

/**
 * Hands out compute turns: one at a time across all peers in serial mode, whichever process
 * hosts them, and at once in parallel mode.
 */
class TurnScheduler {
  private readonly serial: boolean
  private readonly queue: PeerSlot[] = []
  private active: PeerSlot | undefined

  constructor(serial: boolean) {
    this.serial = serial
  }

  request(peer: PeerSlot): void {
    if (!this.serial) {
      grant(peer)
      return
    }
    this.queue.push(peer)
    this.pump()
  }

  finished(peer: PeerSlot): void {
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

/**
 * Largest swarm in which every peer dials all peers started before it, so every pair is
 * connected once before the peers report ready. In a larger swarm each peer dials a few earlier
 * peers (see launchDials), and the peer exchange adds a few more. When 100 peers dialled all
 * 4,950 pairs at once on a 2-core machine, dials passed libp2p 2.10's 10 s dial timeout.
 */
export const FULL_MESH_PEERS = 16

/**
 * Returns the earlier peers that peer `index` of a swarm of `peers` dials at launch: all of them
 * up to FULL_MESH_PEERS peers, otherwise index - 1, index - 2, index - 4 and so on. That
 * connects the swarm with paths of about log2(peers) hops and about log2(index) + 1 dials each.
 */
export function launchDials(index: number, peers: number): number[] {
  if (peers <= FULL_MESH_PEERS) return Array.from({ length: index }, (_, earlier) => earlier)
  const dials: number[] = []
  for (let step = 1; index - step >= 0; step *= 2) dials.push(index - step)
  return dials
}

/**
 * Returns the --min-peers value of every peer: the whole swarm up to FULL_MESH_PEERS, where each
 * peer connects to every other. In a larger swarm a peer connects to a few others only, so 2
 * makes it ready once it has a neighbour. Round 0 starts only when every peer is ready, and a
 * round waits for every member that announced itself, connected or not.
 */
export function launchMinPeers(peers: number): number {
  return peers <= FULL_MESH_PEERS ? peers : 2
}

/** Number of listen ports a swarm uses: one per peer, and one more for a late peer. */
export function listenPortCount(peers: number, joinLate: number | undefined): number {
  return joinLate === undefined ? peers : peers + 1
}

/** Highest base port at which `count` consecutive ports still end at or below 65535. */
export function maxBasePort(count: number): number {
  return MAX_PORT - count + 1
}

/**
 * Resolves true when a TCP server can listen on 127.0.0.1:port now. On Linux, libuv sets
 * SO_REUSEADDR for this probe and for the peer's libp2p listener alike, so both meet the same
 * conflicts.
 */
function isPortFree(port: number): Promise<boolean> {
  return new Promise((resolvePort, reject) => {
    const server = createServer()
    server.once('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'EADDRINUSE' || error.code === 'EACCES') resolvePort(false)
      else reject(error)
    })
    server.listen({ port, host: '127.0.0.1' }, () => server.close(() => resolvePort(true)))
  })
}

/**
 * Hands out the listen ports of one mode run: peer i gets basePort + i when it is free, and
 * otherwise the next free port above the range that no other peer of the run was given. A probe
 * only predicts the bind, since another program can take the port before the peer binds it,
 * so the launcher also requests a fallback port when a peer reports EADDRINUSE.
 */
class PortPlan {
  private readonly basePort: number | undefined
  private readonly given = new Set<number>()
  private nextFallback: number

  constructor(basePort: number | undefined, count: number) {
    this.basePort = basePort
    this.nextFallback = (basePort ?? 0) + count
  }

  /** Resolves with the port peer `index` should listen on; 0 lets the OS pick. */
  async assign(index: number): Promise<number> {
    if (this.basePort === undefined) return 0
    const port = this.basePort + index
    if (!this.given.has(port)) {
      this.given.add(port)
      if (await isPortFree(port)) return port
    }
    return this.fallback()
  }

  /** Resolves with the next free port above the range, or 0 when none up to 65535 is free. */
  async fallback(): Promise<number> {
    while (this.nextFallback <= MAX_PORT) {
      // Claim the candidate before the probe, so concurrent calls never return the same port.
      const port = this.nextFallback++
      if (this.given.has(port)) continue
      this.given.add(port)
      if (await isPortFree(port)) return port
    }
    return 0
  }
}

function describePortMove(event: Extract<LauncherEvent, { type: 'port-moved' }>): string {
  const instead = event.port === 0 ? 'a port the OS picks' : `port ${event.port}`
  const action =
    event.when === 'probe'
      ? `is in use, so it listens on ${instead}`
      : `was taken before the peer could bind it, so the peer restarts on ${instead}`
  return `${event.mode} peer ${event.peerIndex}: port ${event.requestedPort} ${action}\n`
}

function send(peer: PeerSlot, message: LauncherToPeer): void {
  const child = peer.process.child
  if (child.connected) child.send(message)
}

function grant(peer: PeerSlot): void {
  send(peer, { type: 'turn-grant', peerIndex: peer.index })
}

/** Names the peers of a process for messages: "peer 3" or "peers 0-24". */
function describePeers(indices: number[]): string {
  const first = indices[0] as number
  const last = indices[indices.length - 1] as number
  return indices.length === 1 ? `peer ${first}` : `peers ${first}-${last}`
}

interface ModeRun {
  mode: string
  peers: number
  partition: string
  serial: boolean
  /** Peers that one process hosts; see SwarmOptions.peersPerProcess. */
  peersPerProcess: number
  /** Rounds after which one extra peer starts with --join. */
  joinLate?: number
}

/** Starts one swarm of peer processes, runs it to the end and returns when every peer exited. */
async function runMode(run: ModeRun, options: SwarmOptions): Promise<number> {
  const folder = join(options.out, run.mode)
  mkdirSync(folder, { recursive: true })
  const progress = options.progress === false ? undefined : new Progress(run.mode, run.peers)
  const scheduler = new TurnScheduler(run.serial)
  let rejectFailure: (error: Error) => void = () => {}
  const failure = new Promise<never>((_, reject) => {
    rejectFailure = reject
  })
  failure.catch(() => {})
  // Once the run failed, no peer is started again, because runSwarm is stopping the others.
  let stopping = false
  const failed = (error: Error) => {
    stopping = true
    rejectFailure(error)
  }
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
  const plan = new PortPlan(options.basePort, listenPortCount(run.peers, late))
  const movePort = (event: Extract<LauncherEvent, { type: 'port-moved' }>) => {
    if (options.progress !== false) process.stdout.write(describePortMove(event))
    emit(event)
  }
  const assignPort = async (index: number): Promise<number> => {
    const port = await plan.assign(index)
    if (options.basePort !== undefined && port !== options.basePort + index) {
      const requestedPort = options.basePort + index
      movePort({
        type: 'port-moved',
        mode: run.mode,
        peerIndex: index,
        requestedPort,
        port,
        when: 'probe',
      })
    }
    return port
  }
  const peers: PeerSlot[] = []
  let startedAt = 0
  let lateJoined: Promise<void> | undefined
  /** Starts one process that hosts the peers `indices`, which listen on `firstPorts`. */
  const startProcess = (
    indices: number[],
    extraArgs: string[],
    firstPorts: number[],
  ): PeerProcess => {
    const first = indices[0] as number
    const last = indices[indices.length - 1] as number
    const logName = indices.length === 1 ? `peer-${first}.log` : `peers-${first}-${last}.log`
    const logPath = join(folder, logName)
    const processLabel = `${run.mode} ${describePeers(indices)}`
    // A process whose peer binds a taken port fails before 'listening'; it is started again
    // with that peer on the next free port, with the same deferreds, so the run counts each of
    // its peers once.
    const restart = (slot: PeerSlot, attempt: number) => {
      const requestedPort = slot.port
      plan.fallback().then(
        (port) => {
          if (stopping || options.signal?.aborted) return
          movePort({
            type: 'port-moved',
            mode: run.mode,
            peerIndex: slot.index,
            requestedPort,
            port,
            when: 'bind',
          })
          if (stopping) return
          slot.port = port
          host.child = launch(attempt + 1)
        },
        (error: Error) => failed(error),
      )
    }
    const launch = (attempt: number): ChildProcess => {
      const child = spawnProcess(host.peers, extraArgs)
      trackChild(child)

      // A restarted process appends to the log, so the failed attempt's error stays readable.
      const log = createWriteStream(logPath, { flags: attempt === 1 ? 'w' : 'a' })
      child.stdout?.pipe(log, { end: false })
      child.stderr?.pipe(log, { end: false })
      child.on('error', (error) =>
        failed(new PeerProcessError(`${processLabel} could not start: ${error.message}`)),
      )

      let failure: Extract<PeerToLauncher, { type: 'failed' }> | undefined
      const listened = new Set<number>()
      child.on('message', (message: PeerToLauncher) => {
        if (message.type === 'failed') {
          // The process exits right after this message; its exit code decides the launcher's.
          failure = message
          return
        }
        const peer = host.peers.find((slot) => slot.index === message.peerIndex)
        if (peer === undefined) {
          failed(
            new PeerProcessError(`${processLabel} sent a message for peer ${message.peerIndex}`),
          )
          return
        }
        switch (message.type) {
          case 'listening':
            listened.add(peer.index)
            peer.addresses = message.addresses
            peer.listening.resolve()
            break
          case 'ready':
            peer.ready.resolve()
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
            if (
              late !== undefined &&
              lateJoined === undefined &&
              message.metrics.round >= late - 1
            ) {
              lateJoined = startLatePeer()
              lateJoined.catch(() => {})
            }
            break
          case 'done':
            break
        }
      })

      child.on('exit', (code, signal) => {
        for (const peer of host.peers) scheduler.finished(peer)
        log.end()
        if (code === 0) {
          for (const peer of host.peers) peer.done.resolve()
          return
        }
        // A process of one peer may fail before it parsed its --peer-index.
        const failedIndex =
          failure?.peerIndex ?? (host.peers.length === 1 ? host.peers[0]?.index : undefined)
        const failedPeer = host.peers.find((slot) => slot.index === failedIndex)
        const portTaken =
          failure?.code === 'EADDRINUSE' &&
          failedPeer !== undefined &&
          !listened.has(failedPeer.index) &&
          failedPeer.port !== 0
        if (portTaken && attempt < MAX_LISTEN_ATTEMPTS) {
          restart(failedPeer, attempt)
          return
        }
        const how = signal === null ? `exit code ${code}` : `signal ${signal}`
        const reason =
          failure === undefined
            ? `stopped with ${how}; last lines of ${logPath}:\n${logTail(logPath)}`
            : `failed: ${failure.message}`
        // The process of several peers is named too, because its other peers stopped with it.
        const subject =
          failedIndex === undefined
            ? processLabel
            : host.peers.length === 1
              ? `${run.mode} peer ${failedIndex}`
              : `${run.mode} peer ${failedIndex} (process of ${describePeers(indices)}, log ${logPath})`
        failed(new PeerProcessError(`${subject} ${reason}`, code ?? undefined, failedIndex))
      })
      return child
    }
    const host: PeerProcess = {
      child: undefined as unknown as ChildProcess,
      logPath,
      peers: [],
    }
    for (const [i, index] of indices.entries()) {
      const slot: PeerSlot = {
        index,
        process: host,
        port: firstPorts[i] as number,
        addresses: [],
        listening: deferred(),
        ready: deferred(),
        done: deferred(),
      }
      host.peers.push(slot)
      peers.push(slot)
    }
    host.child = launch(1)
    return host
  }
  const peerArgs = (peer: PeerSlot, extraArgs: string[]): string[] => [
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
    String(launchMinPeers(run.peers)),
    '--peer-index',
    String(peer.index),
    '--rounds',
    String(options.rounds),
    '--target',
    String(options.target),
    '--listen',
    `/ip4/127.0.0.1/tcp/${peer.port}`,
    '--metrics',
    join(folder, `peer-${peer.index}.jsonl`),
    '--mode',
    run.mode,
    // Peer 0 saves the mode's final model beside its metrics.
    ...(peer.index === 0 ? ['--save-model', join(folder, 'model')] : []),
    ...(options.peerArgs ?? []),
    ...extraArgs,
  ]
  const spawnProcess = (hosted: PeerSlot[], extraArgs: string[]): ChildProcess => {
    const args =
      hosted.length === 1
        ? [PEER_CLI, ...peerArgs(hosted[0] as PeerSlot, extraArgs)]
        : [
            PEER_HOST,
            ...hosted.flatMap((peer, i) => [
              ...(i === 0 ? [] : [NEXT_PEER]),
              ...peerArgs(peer, extraArgs),
            ]),
          ]
    return spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] })
  }
  // Every port is probed before any peer starts, so peers start at once, as without a base port.
  const firstPorts: number[] = []
  for (let index = 0; index < run.peers; index++) firstPorts.push(await assignPort(index))
  const perProcess = run.peersPerProcess
  for (let first = 0; first < run.peers; first += perProcess) {
    const last = Math.min(first + perProcess, run.peers)
    const indices = Array.from({ length: last - first }, (_, i) => first + i)
    startProcess(indices, [], firstPorts.slice(first, last))
  }
  // NOTE: when the first peers finish before the late one has dialled them, its dial fails and
  // so does the whole launch; --join-late needs rounds that outlast a process start.
  const startLatePeer = async () => {
    const host = startProcess([run.peers], ['--join'], [await assignPort(run.peers)])
    const peer = host.peers[0] as PeerSlot
    await phase(peer.listening.promise)
    const others = peers.filter((other) => other !== peer)
    send(peer, {
      type: 'dial',
      peerIndex: peer.index,
      addresses: others.flatMap((other) => other.addresses),
    })
    await phase(peer.ready.promise)
    send(peer, { type: 'start', peerIndex: peer.index, startedAt })
    await phase(peer.done.promise)
  }
  const abort = new Promise<never>((_, reject) => {
    const onAbort = () => reject(options.signal?.reason ?? new Error('aborted'))
    if (options.signal?.aborted) onAbort()
    options.signal?.addEventListener('abort', onAbort, { once: true })
  })
  abort.catch(() => {})
  const phase = <T>(promise: Promise<T>) => Promise.race([promise, failure, abort])

  await phase(Promise.all(peers.map((peer) => peer.listening.promise)))
  for (const peer of peers) {
    const dialled = launchDials(peer.index, run.peers)
    const addresses = dialled.flatMap((index) => peers[index]?.addresses ?? [])
    send(peer, { type: 'dial', peerIndex: peer.index, addresses })
  }
  await phase(Promise.all(peers.map((peer) => peer.ready.promise)))
  emit({
    type: 'peers-started',
    mode: run.mode,
    pids: peers.map((peer) => peer.process.child.pid ?? -1),
    addresses: peers.map((peer) => peer.addresses),
  })
  if (callbackError !== undefined) throw callbackError
  startedAt = Date.now()
  for (const peer of peers) send(peer, { type: 'start', peerIndex: peer.index, startedAt })
  await phase(Promise.all(peers.map((peer) => peer.done.promise)))
  if (lateJoined !== undefined) await lateJoined
  return (Date.now() - startedAt) / 1000
}

/**
 * Runs the requested launch modes one after another, then the centralised reference, and
 * writes summary.json. Whatever way it ends, no peer process outlives it.
 */
export async function runSwarm(options: SwarmOptions): Promise<SwarmSummary> {
  if (options.basePort !== undefined) {
    const max = maxBasePort(listenPortCount(options.peers, options.joinLate))
    const port = options.basePort
    if (!Number.isInteger(port) || port < MIN_BASE_PORT || port > max) {
      throw new RangeError(
        `Expected basePort to be an integer from ${MIN_BASE_PORT} to ${max}, got ${port}`,
      )
    }
  }
  const peersPerProcess = options.peersPerProcess ?? 1
  if (
    !Number.isInteger(peersPerProcess) ||
    peersPerProcess < 1 ||
    peersPerProcess > options.peers
  ) {
    throw new RangeError(
      `Expected peersPerProcess to be an integer from 1 to ${options.peers} (the peer count), got ${peersPerProcess}`,
    )
  }
  mkdirSync(options.out, { recursive: true })
  const runs: ModeRun[] = options.modes.map((mode) => ({
    mode,
    peers: options.peers,
    partition: options.partition,
    serial: mode === 'serial',
    peersPerProcess,
    joinLate: options.joinLate,
  }))
  if (options.centralised !== false) {
    runs.push({
      mode: 'centralised',
      peers: 1,
      partition: 'iid',
      serial: false,
      peersPerProcess: 1,
    })
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
    peersPerProcess,
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
