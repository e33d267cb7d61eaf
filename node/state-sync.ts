import type { PeerId, Stream } from '@libp2p/interface'
import * as lp from 'it-length-prefixed'
import {
  DEFAULT_STATE_CHUNK_BYTES,
  decodeStateHeader,
  decodeStateRequest,
  encodeStateChunks,
  encodeStateHeader,
  encodeStateRequest,
  MAX_STATE_CHUNK_BYTES,
  MAX_STATE_FRAME_BYTES,
  STATE_HASH_BYTES,
  STATE_REQUEST_BYTES,
  STATE_SYNC_PROTOCOL,
  StateChunkAssembler,
  StateDecodeError,
  type StateHeader,
  type StateHeaderInit,
  type StateRequest,
  type StateStatus,
} from '../protocols/index.ts'
import { StateSyncError, type StateSyncFailure } from './errors.ts'
import type { Host } from './host.ts'
import { log } from './log.ts'
import { hashWeights } from './model.ts'

/** Milliseconds a served stream may go without progress before it is aborted. @default 30 s */
export const DEFAULT_STATE_STREAM_TIMEOUT_MS = 30_000
/** Full model transfers one peer serves at once. @default 4 */
export const DEFAULT_MAX_STATE_TRANSFERS = 4
/** Milliseconds a status query may take, dial included. @default 10 s */
export const DEFAULT_STATUS_TIMEOUT_MS = 10_000
/** Milliseconds a download may go without a frame before the donor is abandoned. @default 10 s */
export const DEFAULT_STALL_MS = 10_000

/** The model a peer serves: the weights that start `round`, with their hash and shapes. */
export interface StateSnapshot {
  round: number
  /** SHA-256 of the weights as hashWeights computes it, 64 hex characters. */
  modelHash: string
  shapes: number[][]
  /** One array per shape. The handler reads them while it sends, so they must not change. */
  weights: Float32Array[]
}

/**
 * Model provider of the state handler. It is an interface so that the handler does not depend
 * on the Peer class.
 */
export interface StateSource {
  /** SHA-256 of the swarm spec, 32 bytes; requests for another spec get status wrong-spec. */
  specHash: Uint8Array
  /** Returns the current model, or undefined while there is none to serve (status busy). */
  snapshot(): StateSnapshot | undefined
}

/** Progress of one full model transfer, passed to StateHandlerInit.onChunkSent. */
export interface StateChunkEvent {
  /** The requesting peer. */
  peerId: PeerId
  /** Index of the chunk, from 0. */
  index: number
  /** Weight bytes handed to the stream so far, this chunk included. */
  sentBytes: number
  totalBytes: number
}

export interface StateHandlerInit {
  /** Payload bytes per chunk frame, 1 to MAX_STATE_CHUNK_BYTES. @default 256 KiB */
  chunkBytes?: number
  /**
   * Milliseconds a stream may wait for the request or for the requester to take the next
   * frame before it is aborted. @default DEFAULT_STATE_STREAM_TIMEOUT_MS
   */
  timeoutMs?: number
  /** Full model transfers served at once; a further model request gets status busy. @default 4 */
  maxTransfers?: number
  /** Called each time the stream takes a chunk frame to send. */
  onChunkSent?: (event: StateChunkEvent) => void
}

/** Model status of a donor, from a status request. */
export interface DonorStatus {
  round: number
  /** SHA-256 of the donor's weights, 64 hex characters. */
  modelHash: string
  shapes: number[][]
}

export interface QueryStatusOptions {
  signal?: AbortSignal
  /** Milliseconds the whole query may take, dial included. @default DEFAULT_STATUS_TIMEOUT_MS */
  timeoutMs?: number
}

export interface FetchStateOptions {
  /** Shapes the model must have; a donor whose shapes differ is skipped. */
  expectedShapes: number[][]
  signal?: AbortSignal
  /** Milliseconds without a frame before a donor is abandoned. @default DEFAULT_STALL_MS */
  stallMs?: number
  /** Milliseconds each status query may take. @default DEFAULT_STATUS_TIMEOUT_MS */
  statusTimeoutMs?: number
  /**
   * Uniform generator in [0, 1) that orders donors with the same round, so peers that join at
   * once spread over them. @default Math.random
   */
  rng?: () => number
}

/** A model downloaded and checked against its hash and the expected shapes. */
export interface FetchedState {
  round: number
  /** SHA-256 of the weights, 64 hex characters. */
  modelHash: string
  weights: Float32Array[]
  donor: PeerId
}

const HASH_HEX_PATTERN = /^[0-9a-f]{64}$/

/**
 * Serves `/dlearn/state/1.0.0` on `host`: sends each requester a header from
 * `source.snapshot()` and, for a full model request, the weights in chunk frames. Throws
 * RangeError for an option out of range.
 */
export async function handleStateRequests(
  host: Host,
  source: StateSource,
  init: StateHandlerInit = {},
): Promise<void> {
  const chunkBytes = init.chunkBytes ?? DEFAULT_STATE_CHUNK_BYTES
  const timeoutMs = init.timeoutMs ?? DEFAULT_STATE_STREAM_TIMEOUT_MS
  const maxTransfers = init.maxTransfers ?? DEFAULT_MAX_STATE_TRANSFERS
  requireInteger('chunkBytes', chunkBytes, 1, MAX_STATE_CHUNK_BYTES)
  requireInteger('timeoutMs', timeoutMs, 1, 2 ** 31 - 1)
  requireInteger('maxTransfers', maxTransfers, 1, 2 ** 31 - 1)
  let transfers = 0

  /** Picks the response to a request; a snapshot in the result means the model is sent. */
  const respond = (request: StateRequest): { header: Uint8Array; snapshot?: StateSnapshot } => {
    const reject = (status: StateStatus) => ({ header: encodeStateHeader(rejectionHeader(status)) })
    if (!bytesEqual(request.specHash, source.specHash)) return reject('wrong-spec')
    if (request.kind === 'model' && transfers >= maxTransfers) return reject('busy')
    const snapshot = source.snapshot()
    if (snapshot === undefined) return reject('busy')
    let header: Uint8Array
    try {
      header = encodeStateHeader(snapshotHeader(snapshot))
    } catch (error) {
      log.error('cannot serve the model snapshot: %s', (error as Error).message)
      return reject('busy')
    }
    return request.kind === 'model' ? { header, snapshot } : { header }
  }

  await host.handle(STATE_SYNC_PROTOCOL, async ({ stream, connection }) => {
    const remote = connection.remotePeer
    const timer = new IdleTimer(timeoutMs, () => {
      stream.abort(new Error(`state stream made no progress for ${timeoutMs} ms`))
    })
    timer.reset()
    let reserved = false
    try {
      const requests = lp.decode(stream.source, { maxDataLength: STATE_REQUEST_BYTES })
      const first = await requests.next()
      if (first.done === true) {
        log.trace('state stream from %s closed before a request', remote.toString())
        await stream.close()
        return
      }
      const request = decodeStateRequest(first.value.subarray())
      timer.reset()
      const { header, snapshot } = respond(request)
      log.trace('state %s request from %s', request.kind, remote.toString())
      let frames: Iterable<Uint8Array> | AsyncIterable<Uint8Array> = [header]
      if (snapshot !== undefined) {
        // Reserved before the first await, so concurrent requests cannot exceed maxTransfers.
        transfers++
        reserved = true
        frames = modelFrames(
          header,
          snapshot.weights,
          chunkBytes,
          (index, sentBytes, totalBytes) => {
            timer.reset()
            init.onChunkSent?.({ peerId: remote, index, sentBytes, totalBytes })
          },
        )
      }
      await stream.sink(lp.encode(frames))
      await stream.close()
    } catch (error) {
      log.trace('state request from %s failed: %s', remote.toString(), (error as Error).message)
      stream.abort(error as Error)
    } finally {
      timer.clear()
      if (reserved) transfers--
    }
  })
}

/**
 * Yields the header, then the weights as chunk frames. `onChunkSent` runs when the consumer
 * requests the frame after a chunk, which a stream sink does once it has taken that chunk.
 */
async function* modelFrames(
  header: Uint8Array,
  weights: Float32Array[],
  chunkBytes: number,
  onChunkSent: (index: number, sentBytes: number, totalBytes: number) => void,
): AsyncGenerator<Uint8Array, void, undefined> {
  const totalBytes = weights.reduce((sum, values) => sum + values.byteLength, 0)
  yield header
  let index = 0
  let sentBytes = 0
  for (const chunk of encodeStateChunks(weights, chunkBytes)) {
    yield chunk
    sentBytes += chunk.byteLength
    onChunkSent(index, sentBytes, totalBytes)
    index++
  }
}

/**
 * Requests the model status of `peerId` for the swarm spec `specHash`. Throws StateSyncError
 * with one failure when the peer is unreachable, times out, sends an invalid response or
 * replies with status wrong-spec or busy, and the signal's reason when the signal aborts.
 */
export async function queryStatus(
  host: Host,
  peerId: PeerId,
  specHash: Uint8Array,
  options: QueryStatusOptions = {},
): Promise<DonorStatus> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_STATUS_TIMEOUT_MS
  const request: StateRequest = { version: 1, specHash, kind: 'status' }
  const exchangeOptions = { signal: options.signal, timeoutMs, resetOnFrame: false }
  return exchange(host, peerId, request, exchangeOptions, async (next) => {
    const header = await readHeader(peerId, next)
    await readEnd(peerId, next)
    return { round: header.round, modelHash: toHex(header.modelHash), shapes: header.shapes }
  })
}

/**
 * Downloads the current model from one of `donors`, after a status request to every donor in
 * parallel. The donors with the highest round go first, in an order drawn from `rng`, then the
 * lower rounds. A donor is skipped when its shapes differ from `expectedShapes`, its weights do
 * not match the hash it advertises, its stream stalls for `stallMs` or closes early, and the
 * next donor is tried. Throws StateSyncError listing each donor's failure when none succeeds,
 * and the signal's reason when the signal aborts.
 */
export async function fetchState(
  host: Host,
  donors: PeerId[],
  specHash: Uint8Array,
  options: FetchStateOptions,
): Promise<FetchedState> {
  const { expectedShapes, signal } = options
  const stallMs = options.stallMs ?? DEFAULT_STALL_MS
  const statusTimeoutMs = options.statusTimeoutMs ?? DEFAULT_STATUS_TIMEOUT_MS
  const rng = options.rng ?? Math.random
  signal?.throwIfAborted()
  if (donors.length === 0) {
    throw new StateSyncError('state sync failed: no donors to fetch the model from', [])
  }

  const statusFailures: Array<StateSyncFailure | undefined> = []
  const statuses = await Promise.all(
    donors.map(async (donor, index) => {
      try {
        const status = await queryStatus(host, donor, specHash, {
          signal,
          timeoutMs: statusTimeoutMs,
        })
        if (!sameShapes(status.shapes, expectedShapes)) {
          throw donorFailure(
            donor,
            'shape-mismatch',
            `model shapes ${formatShapes(status.shapes)} differ from the expected ${formatShapes(expectedShapes)}`,
          )
        }
        return status
      } catch (error) {
        signal?.throwIfAborted()
        const failure = toFailure(donor, error)
        statusFailures[index] = failure
        log.info(
          'state status of %s failed (%s): %s',
          failure.peerId,
          failure.reason,
          failure.message,
        )
        return undefined
      }
    }),
  )
  const failures = statusFailures.filter((failure) => failure !== undefined)

  const candidates = statuses.flatMap((status, index) =>
    status === undefined ? [] : [{ donor: donors[index] as PeerId, status, key: rng() }],
  )
  candidates.sort((a, b) => b.status.round - a.status.round || a.key - b.key)

  for (const [position, { donor }] of candidates.entries()) {
    try {
      const fetched = await download(host, donor, specHash, expectedShapes, stallMs, signal)
      log.info(
        'fetched the model of round %d (%s) from %s',
        fetched.round,
        fetched.modelHash.slice(0, 16),
        donor.toString(),
      )
      return fetched
    } catch (error) {
      signal?.throwIfAborted()
      const failure = toFailure(donor, error)
      failures.push(failure)
      const next = position + 1 < candidates.length ? 'trying the next donor' : 'no donor left'
      log.info(
        'state sync from %s failed (%s): %s; %s',
        failure.peerId,
        failure.reason,
        failure.message,
        next,
      )
    }
  }
  throw new StateSyncError(`state sync failed on all ${donors.length} donors`, failures)
}

/** Downloads and checks the full model from one donor. */
async function download(
  host: Host,
  donor: PeerId,
  specHash: Uint8Array,
  expectedShapes: number[][],
  stallMs: number,
  signal: AbortSignal | undefined,
): Promise<FetchedState> {
  const request: StateRequest = { version: 1, specHash, kind: 'model' }
  const exchangeOptions = { signal, timeoutMs: stallMs, resetOnFrame: true }
  const received = await exchange(host, donor, request, exchangeOptions, async (next) => {
    const header = await readHeader(donor, next)
    if (!sameShapes(header.shapes, expectedShapes)) {
      throw donorFailure(
        donor,
        'shape-mismatch',
        `model shapes ${formatShapes(header.shapes)} differ from the expected ${formatShapes(expectedShapes)}`,
      )
    }
    const assembler = new StateChunkAssembler(header.shapes)
    while (!assembler.complete) {
      const chunk = await next()
      if (chunk === undefined) {
        throw donorFailure(
          donor,
          'closed',
          `stream ended after ${assembler.receivedBytes} of ${assembler.totalBytes} weight bytes`,
        )
      }
      assembler.add(chunk)
    }
    await readEnd(donor, next)
    return { header, weights: assembler.weights() }
  })

  const advertised = toHex(received.header.modelHash)
  const modelHash = await hashWeights(received.weights)
  if (modelHash !== advertised) {
    throw donorFailure(
      donor,
      'hash-mismatch',
      `weights hash to ${modelHash}, but the donor advertised ${advertised}`,
    )
  }
  return { round: received.header.round, modelHash, weights: received.weights, donor }
}

interface ExchangeOptions {
  signal: AbortSignal | undefined
  timeoutMs: number
  /** Restart the timeout on every received frame, so it limits a stall, not the whole exchange. */
  resetOnFrame: boolean
}

/**
 * Opens a state stream to `peerId`, sends `request`, and lets `read` consume the response
 * frames through `next`, which returns undefined at the end of the stream. Every error becomes
 * a StateSyncError with one failure, except the abort reason of `options.signal`.
 */
async function exchange<T>(
  host: Host,
  peerId: PeerId,
  request: StateRequest,
  options: ExchangeOptions,
  read: (next: () => Promise<Uint8Array | undefined>) => Promise<T>,
): Promise<T> {
  const { signal, timeoutMs } = options
  signal?.throwIfAborted()
  const controller = new AbortController()
  let timedOut = false
  const timer = new IdleTimer(timeoutMs, () => {
    timedOut = true
    controller.abort(new Error(`no response frame within ${timeoutMs} ms`))
  })
  const forwardAbort = () => controller.abort(signal?.reason)
  signal?.addEventListener('abort', forwardAbort, { once: true })
  timer.reset()

  let stream: Stream | undefined
  try {
    try {
      stream = await host.dialProtocol(peerId, STATE_SYNC_PROTOCOL, { signal: controller.signal })
    } catch (error) {
      signal?.throwIfAborted()
      if (timedOut) throw donorFailure(peerId, 'timed-out', `dial timed out after ${timeoutMs} ms`)
      throw donorFailure(peerId, 'dial-failed', `dial failed: ${(error as Error).message}`)
    }
    const opened = stream
    controller.signal.addEventListener('abort', () => opened.abort(controller.signal.reason), {
      once: true,
    })
    controller.signal.throwIfAborted()

    // The sink closes the stream for writing once the request is sent.
    await stream.sink(lp.encode([encodeStateRequest(request)]))
    const frames = lp.decode(stream.source, { maxDataLength: MAX_STATE_FRAME_BYTES })
    const result = await read(async () => {
      const frame = await frames.next()
      if (options.resetOnFrame) timer.reset()
      return frame.done === true ? undefined : frame.value.subarray()
    })
    await stream.close({ signal: controller.signal })
    return result
  } catch (error) {
    stream?.abort(error as Error)
    signal?.throwIfAborted()
    if (error instanceof StateSyncError) throw error
    if (timedOut) {
      const what = options.resetOnFrame ? 'no frame arrived for' : 'no response within'
      throw donorFailure(peerId, 'timed-out', `${what} ${timeoutMs} ms`)
    }
    const message = (error as Error).message
    if (isInvalidFrameError(error)) {
      throw donorFailure(peerId, 'invalid-response', `invalid response: ${message}`)
    }
    throw donorFailure(peerId, 'closed', `stream failed: ${message}`)
  } finally {
    timer.clear()
    signal?.removeEventListener('abort', forwardAbort)
  }
}

async function readHeader(
  peerId: PeerId,
  next: () => Promise<Uint8Array | undefined>,
): Promise<StateHeader> {
  const frame = await next()
  if (frame === undefined) {
    throw donorFailure(peerId, 'closed', 'stream ended before the response header')
  }
  const header = decodeStateHeader(frame)
  if (header.status === 'wrong-spec') {
    throw donorFailure(peerId, 'wrong-spec', 'donor runs another swarm spec')
  }
  if (header.status === 'busy') {
    throw donorFailure(peerId, 'busy', 'donor is busy or has no model yet')
  }
  return header
}

async function readEnd(peerId: PeerId, next: () => Promise<Uint8Array | undefined>) {
  const frame = await next()
  if (frame !== undefined) {
    throw donorFailure(
      peerId,
      'invalid-response',
      `unexpected frame of ${frame.byteLength} bytes after the response`,
    )
  }
}

/** Calls `onIdle` once `ms` milliseconds pass without a reset; inactive until the first reset. */
class IdleTimer {
  private readonly ms: number
  private readonly onIdle: () => void
  private timeout: NodeJS.Timeout | undefined

  constructor(ms: number, onIdle: () => void) {
    this.ms = ms
    this.onIdle = onIdle
  }

  reset(): void {
    clearTimeout(this.timeout)
    this.timeout = setTimeout(this.onIdle, this.ms)
  }

  clear(): void {
    clearTimeout(this.timeout)
    this.timeout = undefined
  }
}

function snapshotHeader(snapshot: StateSnapshot): StateHeaderInit {
  if (!HASH_HEX_PATTERN.test(snapshot.modelHash)) {
    throw new RangeError(
      `modelHash ${JSON.stringify(snapshot.modelHash)} is not a SHA-256 digest as 64 lowercase hex characters`,
    )
  }
  if (snapshot.weights.length !== snapshot.shapes.length) {
    throw new RangeError(
      `the snapshot has ${snapshot.weights.length} weight arrays for ${snapshot.shapes.length} shapes`,
    )
  }
  snapshot.shapes.forEach((shape, index) => {
    const count = shape.reduce((product, dim) => product * dim, 1)
    const length = snapshot.weights[index]?.length
    if (length !== count) {
      throw new RangeError(
        `weights[${index}] has ${length} values, but shape [${shape.join(', ')}] needs ${count}`,
      )
    }
  })
  return {
    status: 'ok',
    round: snapshot.round,
    modelHash: Buffer.from(snapshot.modelHash, 'hex'),
    shapes: snapshot.shapes,
  }
}

function rejectionHeader(status: StateStatus): StateHeaderInit {
  return { status, round: 0, modelHash: new Uint8Array(STATE_HASH_BYTES), shapes: [] }
}

function donorFailure(
  peerId: PeerId,
  reason: StateSyncFailure['reason'],
  message: string,
): StateSyncError {
  const donor = peerId.toString()
  return new StateSyncError(`state sync from ${donor} failed`, [{ peerId: donor, reason, message }])
}

function toFailure(peerId: PeerId, error: unknown): StateSyncFailure {
  if (error instanceof StateSyncError && error.failures[0] !== undefined) return error.failures[0]
  return { peerId: peerId.toString(), reason: 'closed', message: (error as Error).message }
}

/** True for errors that mean the donor sent bytes that are not valid frames. */
function isInvalidFrameError(error: unknown): boolean {
  if (error instanceof StateDecodeError) return true
  const name = (error as Error).name
  return (
    name === 'InvalidDataLengthError' ||
    name === 'InvalidDataLengthLengthError' ||
    name === 'InvalidMessageLengthError'
  )
}

function sameShapes(a: number[][], b: number[][]): boolean {
  return (
    a.length === b.length &&
    a.every((shape, i) => {
      const other = b[i] as number[]
      return shape.length === other.length && shape.every((dim, axis) => dim === other[axis])
    })
  )
}

function formatShapes(shapes: number[][]): string {
  return `[${shapes.map((shape) => `[${shape.join(', ')}]`).join(', ')}]`
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0
}

function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')
}

function requireInteger(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(
      `Expected \`${name}\` to be an integer from ${min} to ${max}, got ${value}`,
    )
  }
}
