import type { PeerId } from '@libp2p/interface'
import * as lp from 'it-length-prefixed'
import { afterEach, describe, expect, it } from 'vitest'
import { Random } from '../../data/random.ts'
import { StateSyncError } from '../../node/errors.ts'
import { createHost, type Host } from '../../node/host.ts'
import { hashWeights } from '../../node/model.ts'
import {
  fetchState,
  handleStateRequests,
  queryStatus,
  type StateHandlerInit,
  type StateSnapshot,
} from '../../node/state-sync.ts'
import { STATE_SYNC_PROTOCOL } from '../../protocols/index.ts'
import {
  decodeStateHeader,
  decodeStateRequest,
  encodeStateChunks,
  encodeStateHeader,
  encodeStateRequest,
  MAX_STATE_FRAME_BYTES,
  STATE_REQUEST_BYTES,
} from '../../protocols/state.ts'
import {
  createRandom,
  filledHash,
  randomFiniteValues,
  sameBits,
  shapeSize,
} from '../protocols/fixtures.ts'

/** 1,501,500 parameters: a dense kernel and its bias. */
const LARGE_SHAPES = [[1000, 1500], [1500]]
const SMALL_SHAPES = [[20, 30], [30]]
const SPEC_HASH = filledHash(0x5e)
const OTHER_SPEC_HASH = filledHash(0x0e)
/** Long enough that a healthy donor on a loaded machine does not look stalled. */
const STALL_MS = 1000

const hosts: Host[] = []

afterEach(async () => {
  await Promise.all(hosts.splice(0).map((host) => host.stop()))
})

async function startHost(): Promise<Host> {
  const host = await createHost()
  hosts.push(host)
  return host
}

async function buildSnapshot(
  shapes: number[][],
  round: number,
  seed: number,
): Promise<StateSnapshot> {
  const random = createRandom(seed)
  const weights = shapes.map((shape) => randomFiniteValues(shapeSize(shape), random))
  return { round, modelHash: await hashWeights(weights), shapes, weights }
}

/** Starts a host that serves `snapshot` for `specHash`. */
async function startDonor(
  snapshot: StateSnapshot | undefined,
  init: StateHandlerInit = {},
  specHash: Uint8Array = SPEC_HASH,
): Promise<Host> {
  const host = await startHost()
  await handleStateRequests(host, { specHash, snapshot: () => snapshot }, init)
  return host
}

/** Starts the client host and connects it to every donor. */
async function startClient(donors: Host[]): Promise<Host> {
  const client = await startHost()
  for (const donor of donors) await client.dial(donor.getMultiaddrs())
  return client
}

function expectSameWeights(actual: Float32Array[], expected: Float32Array[]): void {
  expect(actual.length).toBe(expected.length)
  for (const [index, values] of expected.entries()) {
    expect(sameBits(actual[index], values)).toBe(true)
  }
}

/** Runs `promise` and returns the StateSyncError it rejects with. */
async function syncError(promise: Promise<unknown>): Promise<StateSyncError> {
  try {
    await promise
  } catch (error) {
    if (error instanceof StateSyncError) return error
    throw new Error(`expected a StateSyncError, got ${String(error)}`)
  }
  throw new Error('expected a StateSyncError, but the call succeeded')
}

/**
 * Starts a donor whose handler reports `round` and then, on a model request, sends the header
 * and one chunk and stops sending. Resolves `requested` when the model request arrives.
 */
async function startStalledDonor(snapshot: StateSnapshot) {
  const host = await startHost()
  let release!: () => void
  const released = new Promise<void>((resolve) => {
    release = resolve
  })
  let requested!: () => void
  const modelRequested = new Promise<void>((resolve) => {
    requested = resolve
  })
  const header = encodeStateHeader({
    status: 'ok',
    round: snapshot.round,
    modelHash: Buffer.from(snapshot.modelHash, 'hex'),
    shapes: snapshot.shapes,
  })
  await host.handle(STATE_SYNC_PROTOCOL, async ({ stream }) => {
    try {
      const first = await lp.decode(stream.source, { maxDataLength: STATE_REQUEST_BYTES }).next()
      if (first.done === true) return
      const request = decodeStateRequest(first.value.subarray())
      const firstChunk = encodeStateChunks(snapshot.weights, 1024).next().value as Uint8Array
      async function* frames() {
        yield header
        if (request.kind === 'status') return
        requested()
        yield firstChunk
        await released
      }
      await stream.sink(lp.encode(frames()))
    } catch {
      // The client aborts the stream once it gives up on this donor.
    }
  })
  return { host, modelRequested, release }
}

describe('state sync', () => {
  it('delivers a 1.5M-parameter model bit-identically', async () => {
    const snapshot = await buildSnapshot(LARGE_SHAPES, 7, 1)
    const donor = await startDonor(snapshot)
    const client = await startClient([donor])

    const status = await queryStatus(client, donor.peerId, SPEC_HASH)
    expect(status.round).toBe(7)
    expect(status.modelHash).toBe(snapshot.modelHash)
    expect(status.shapes).toEqual(LARGE_SHAPES)

    const fetched = await fetchState(client, [donor.peerId], SPEC_HASH, {
      expectedShapes: LARGE_SHAPES,
    })
    expect(fetched.round).toBe(7)
    expect(fetched.modelHash).toBe(snapshot.modelHash)
    expect(fetched.donor.equals(donor.peerId)).toBe(true)
    expect(fetched.weights.map((values) => values.length)).toEqual([1_500_000, 1500])
    expectSameWeights(fetched.weights, snapshot.weights)
  })

  it('skips a donor with another spec', async () => {
    const snapshot = await buildSnapshot(SMALL_SHAPES, 3, 2)
    const foreign = await startDonor(await buildSnapshot(SMALL_SHAPES, 9, 3), {}, OTHER_SPEC_HASH)
    const donor = await startDonor(snapshot)
    const client = await startClient([foreign, donor])

    const statusError = await syncError(queryStatus(client, foreign.peerId, SPEC_HASH))
    expect(statusError.failures.map((failure) => failure.reason)).toEqual(['wrong-spec'])

    const fetched = await fetchState(client, [foreign.peerId, donor.peerId], SPEC_HASH, {
      expectedShapes: SMALL_SHAPES,
    })
    expect(fetched.donor.equals(donor.peerId)).toBe(true)
    expect(fetched.round).toBe(3)
    expectSameWeights(fetched.weights, snapshot.weights)
  })

  it('skips a donor whose hash does not match', async () => {
    const liar = await buildSnapshot(SMALL_SHAPES, 9, 4)
    let liarChunks = 0
    const liarHost = await startDonor(
      { ...liar, modelHash: (await buildSnapshot(SMALL_SHAPES, 9, 5)).modelHash },
      { onChunkSent: () => liarChunks++ },
    )
    const snapshot = await buildSnapshot(SMALL_SHAPES, 8, 6)
    const donor = await startDonor(snapshot)
    const client = await startClient([liarHost, donor])

    const fetched = await fetchState(client, [liarHost.peerId, donor.peerId], SPEC_HASH, {
      expectedShapes: SMALL_SHAPES,
    })
    expect(liarChunks).toBeGreaterThan(0)
    expect(fetched.donor.equals(donor.peerId)).toBe(true)
    expect(fetched.round).toBe(8)
    expect(fetched.modelHash).toBe(snapshot.modelHash)

    const error = await syncError(
      fetchState(client, [liarHost.peerId], SPEC_HASH, { expectedShapes: SMALL_SHAPES }),
    )
    expect(error.failures.map((failure) => failure.reason)).toEqual(['hash-mismatch'])
  })

  it('completes from a second donor after a stop mid-transfer', async () => {
    const first = await buildSnapshot(LARGE_SHAPES, 8, 7)
    let stopped: Promise<void> | undefined
    let chunksSent = 0
    const firstDonor: Host = await startDonor(first, {
      chunkBytes: 64 * 1024,
      onChunkSent: () => {
        chunksSent++
        stopped ??= Promise.resolve(firstDonor.stop())
      },
    })
    const second = await buildSnapshot(LARGE_SHAPES, 7, 8)
    const secondDonor = await startDonor(second)
    const client = await startClient([firstDonor, secondDonor])

    const fetched = await fetchState(client, [firstDonor.peerId, secondDonor.peerId], SPEC_HASH, {
      expectedShapes: LARGE_SHAPES,
    })
    expect(stopped).toBeDefined()
    await stopped
    const firstChunkCount = Math.ceil((1_500_000 * 4) / (64 * 1024)) + 1
    expect(chunksSent).toBeLessThan(firstChunkCount)
    expect(fetched.donor.equals(secondDonor.peerId)).toBe(true)
    expect(fetched.round).toBe(7)
    expectSameWeights(fetched.weights, second.weights)
  })

  it('abandons a stalled donor', async () => {
    const stalledSnapshot = await buildSnapshot(SMALL_SHAPES, 9, 9)
    const stalled = await startStalledDonor(stalledSnapshot)
    const snapshot = await buildSnapshot(SMALL_SHAPES, 4, 10)
    const donor = await startDonor(snapshot)
    const client = await startClient([stalled.host, donor])
    try {
      const fetched = await fetchState(client, [stalled.host.peerId, donor.peerId], SPEC_HASH, {
        expectedShapes: SMALL_SHAPES,
        stallMs: STALL_MS,
      })
      await stalled.modelRequested
      expect(fetched.donor.equals(donor.peerId)).toBe(true)
      expectSameWeights(fetched.weights, snapshot.weights)

      const error = await syncError(
        fetchState(client, [stalled.host.peerId], SPEC_HASH, {
          expectedShapes: SMALL_SHAPES,
          stallMs: STALL_MS,
        }),
      )
      expect(error.failures.map((failure) => failure.reason)).toEqual(['timed-out'])
      expect(error.message).toMatch(/no frame arrived for 1000 ms/)
    } finally {
      stalled.release()
    }
  })

  it('picks donors of equal round in rng order', async () => {
    const snapshot = await buildSnapshot(SMALL_SHAPES, 5, 11)
    const donors = [await startDonor(snapshot), await startDonor(snapshot)]
    const lower = await startDonor(await buildSnapshot(SMALL_SHAPES, 4, 12))
    const client = await startClient([...donors, lower])
    const donorIds: PeerId[] = [...donors.map((donor) => donor.peerId), lower.peerId]

    // The donor that a generator seeded with `seed` puts first: each candidate draws one key in
    // donor order, and the lowest key goes first among equal rounds.
    const expectedIndex = (seed: number) => {
      const random = new Random(seed)
      const firstKey = random.nextFloat()
      const secondKey = random.nextFloat()
      return firstKey < secondKey ? 0 : 1
    }
    const seeds = [1, 2, 3, 4, 5, 6, 7, 8]
    const seedA = seeds.find((seed) => expectedIndex(seed) === 0) as number
    const seedB = seeds.find((seed) => expectedIndex(seed) === 1) as number
    expect(seedA).toBeDefined()
    expect(seedB).toBeDefined()

    for (const [seed, index] of [
      [seedA, 0],
      [seedB, 1],
    ] as const) {
      const random = new Random(seed)
      const fetched = await fetchState(client, donorIds, SPEC_HASH, {
        expectedShapes: SMALL_SHAPES,
        rng: () => random.nextFloat(),
      })
      expect(fetched.donor.equals(donorIds[index] as PeerId)).toBe(true)
      expect(fetched.round).toBe(5)
    }
  })

  it('answers busy beyond maxTransfers', async () => {
    const snapshot = await buildSnapshot(LARGE_SHAPES, 2, 15)
    const donor = await startDonor(snapshot, { maxTransfers: 1 })
    const holder = await startClient([donor])
    const client = await startClient([donor])

    // A requester that reads the header and nothing more keeps the only transfer open,
    // because yamux flow control stops the donor once the stream window is full.
    const stream = await holder.dialProtocol(donor.peerId, STATE_SYNC_PROTOCOL)
    try {
      await stream.sink(
        lp.encode([encodeStateRequest({ version: 1, specHash: SPEC_HASH, kind: 'model' })]),
      )
      const frames = lp.decode(stream.source, { maxDataLength: MAX_STATE_FRAME_BYTES })
      const first = await frames.next()
      if (first.done === true) throw new Error('the donor closed the stream before the header')
      expect(decodeStateHeader(first.value.subarray()).status).toBe('ok')

      const status = await queryStatus(client, donor.peerId, SPEC_HASH)
      expect(status.round).toBe(2)
      const error = await syncError(
        fetchState(client, [donor.peerId], SPEC_HASH, { expectedShapes: LARGE_SHAPES }),
      )
      expect(error.failures.map((failure) => failure.reason)).toEqual(['busy'])
    } finally {
      stream.abort(new Error('test finished'))
    }
  })

  it('lists each donor failure', async () => {
    const foreign = await startDonor(await buildSnapshot(SMALL_SHAPES, 1, 13), {}, OTHER_SPEC_HASH)
    const empty = await startDonor(undefined)
    const misshapen = await startDonor(await buildSnapshot([[30, 20], [20]], 2, 14))
    const client = await startClient([foreign, empty, misshapen])

    const error = await syncError(
      fetchState(client, [foreign.peerId, empty.peerId, misshapen.peerId], SPEC_HASH, {
        expectedShapes: SMALL_SHAPES,
      }),
    )
    expect(error.name).toBe('StateSyncError')
    expect(error.failures.map((failure) => failure.reason)).toEqual([
      'wrong-spec',
      'busy',
      'shape-mismatch',
    ])
    expect(error.failures.map((failure) => failure.peerId)).toEqual([
      foreign.peerId.toString(),
      empty.peerId.toString(),
      misshapen.peerId.toString(),
    ])
    expect(error.message).toMatch(/differ from the expected \[\[20, 30\], \[30\]\]/)
  })

  it('rejects an empty donor list', async () => {
    const client = await startHost()
    const error = await syncError(
      fetchState(client, [], SPEC_HASH, { expectedShapes: SMALL_SHAPES }),
    )
    expect(error.failures).toEqual([])
    expect(error.message).toMatch(/no donors/)
  })
})
