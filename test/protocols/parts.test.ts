import { createHash } from 'node:crypto'
import type { PeerId } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { describe, expect, it } from 'vitest'
import { PartDecodeError } from '../../protocols/errors.ts'
import {
  PartAssembler,
  type PartAssemblerInit,
  type PartResult,
} from '../../protocols/part-assembler.ts'
import {
  decodePart,
  encodePart,
  isPartMessage,
  MAX_PART_COUNT,
  type PartMessage,
  partHeaderSize,
  splitIntoParts,
} from '../../protocols/parts.ts'
import { createRandom, filledHash } from './fixtures.ts'

const MIB = 1024 * 1024
const SPEC_HASH = filledHash(0xa1)
// Multihash of an Ed25519 peer id: identity code, length 36, then the protobuf public key.
const ED25519_MULTIHASH_BYTES = 38
const HEADER_BYTES = partHeaderSize(ED25519_MULTIHASH_BYTES)

// Peer ids of the Ed25519 keys that generateKeyPairFromSeed in @libp2p/crypto makes from the
// seeds 32 x 0x01 and 32 x 0x02.
const alice: PeerId = peerIdFromString('12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5')
const bob: PeerId = peerIdFromString('12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq')

/** Random bytes from a seeded generator, so a failing case reproduces. */
function randomBytes(length: number, seed: number): Uint8Array {
  const random = createRandom(seed)
  const bytes = new Uint8Array(length)
  for (let i = 0; i < length; i++) {
    bytes[i] = random() & 0xff
  }
  return bytes
}

function sha256(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(bytes).digest())
}

/** Fisher-Yates shuffle with a seeded generator. */
function shuffled<T>(items: T[], seed: number): T[] {
  const random = createRandom(seed)
  const out = [...items]
  for (let i = out.length - 1; i > 0; i--) {
    const j = random() % (i + 1)
    ;[out[i], out[j]] = [out[j] as T, out[i] as T]
  }
  return out
}

function split(message: Uint8Array, maxPartBytes: number, sender = alice, round = 5) {
  return splitIntoParts({ specHash: SPEC_HASH, round, sender, message, maxPartBytes })
}

/** Decodes an encoded part, changes some fields and encodes it again. */
function reencode(bytes: Uint8Array, changes: Partial<PartMessage>): Uint8Array {
  return encodePart({ ...decodePart(bytes), ...changes })
}

function makeAssembler(init: Partial<PartAssemblerInit> = {}): PartAssembler {
  return new PartAssembler({
    maxMessageBytes: 8 * MIB,
    maxBufferedBytes: 32 * MIB,
    timeoutMs: 30_000,
    ...init,
  })
}

/** Adds parts in order and returns every result. */
function addAll(assembler: PartAssembler, parts: Uint8Array[], from: PeerId): PartResult[] {
  return parts.map((part) => assembler.add(decodePart(part), from.toString()))
}

function reasonOf(result: PartResult | undefined): string {
  return result?.status === 'invalid' ? result.reason : `(status ${result?.status}, no reason)`
}

function messageOf(result: PartResult | undefined): Uint8Array | undefined {
  return result?.status === 'complete' ? result.message : undefined
}

/** Runs decodePart and returns the PartDecodeError it throws. */
function decodeError(bytes: Uint8Array): PartDecodeError {
  try {
    decodePart(bytes)
  } catch (error) {
    if (error instanceof PartDecodeError) {
      return error
    }
    throw new Error(`expected a PartDecodeError, got ${String(error)}`)
  }
  throw new Error('expected decodePart to throw, but it returned a part')
}

describe('part layout', () => {
  it('writes every field at its offset', () => {
    const sender = Uint8Array.of(0x00, 0x02, 0xee, 0xff)
    const bytes = encodePart({
      version: 1,
      specHash: filledHash(0xa1),
      round: 0x01020304,
      sender,
      digest: filledHash(0xd7),
      totalLength: 0x0a0b0c0d,
      partIndex: 0x0102,
      partCount: 0x0304,
      data: Uint8Array.of(9, 8, 7),
    })
    const expected = Uint8Array.from([
      ...[0x44, 0x4c, 0x50, 0x31], // magic "DLP1"
      0x01, // version
      ...new Array(32).fill(0xa1), // specHash
      ...[0x01, 0x02, 0x03, 0x04], // round
      0x04, // senderLength
      ...sender,
      ...new Array(32).fill(0xd7), // digest
      ...[0x0a, 0x0b, 0x0c, 0x0d], // totalLength
      ...[0x01, 0x02], // partIndex
      ...[0x03, 0x04], // partCount
      ...[9, 8, 7], // data
    ])
    expect(bytes).toEqual(expected)
    expect(bytes.byteLength).toBe(partHeaderSize(4) + 3)
    expect(isPartMessage(bytes)).toBe(true)
  })

  it('has a 120-byte header for Ed25519', () => {
    expect(alice.toMultihash().bytes.byteLength).toBe(ED25519_MULTIHASH_BYTES)
    expect(HEADER_BYTES).toBe(120)
    const [part] = split(new Uint8Array(10), 1000)
    expect(part?.byteLength).toBe(130)
  })

  it('decodes at odd byte offsets', () => {
    const message = randomBytes(5000, 7)
    const parts = split(message, 1200)
    expect(parts).toHaveLength(5)
    for (const [index, part] of parts.entries()) {
      for (const shift of [1, 3, 5]) {
        const buffer = new Uint8Array(part.byteLength + shift + 2).fill(0xee)
        buffer.set(part, shift)
        const decoded = decodePart(buffer.subarray(shift, shift + part.byteLength))
        expect(decoded.partIndex).toBe(index)
        expect(decoded.partCount).toBe(5)
        expect(decoded.round).toBe(5)
        expect(decoded.totalLength).toBe(5000)
        expect(decoded.specHash).toEqual(SPEC_HASH)
        expect(decoded.sender).toEqual(alice.toMultihash().bytes)
        expect(decoded.digest).toEqual(sha256(message))
        const start = index * (1200 - HEADER_BYTES)
        expect(decoded.data).toEqual(message.subarray(start, start + decoded.data.byteLength))
      }
    }
  })

  it('rejects a part cut short in each field', () => {
    const [part] = split(randomBytes(100, 1), 1000)
    const n = ED25519_MULTIHASH_BYTES
    const cases: [number, string, number][] = [
      [2, 'magic', 0],
      [4, 'version', 4],
      [20, 'specHash', 5],
      [39, 'round', 37],
      [41, 'senderLength', 41],
      [42 + n - 1, 'sender', 42],
      [42 + n + 31, 'digest', 42 + n],
      [74 + n + 3, 'totalLength', 74 + n],
      [78 + n + 1, 'partIndex', 78 + n],
      [80 + n + 1, 'partCount', 80 + n],
    ]
    for (const [length, field, offset] of cases) {
      const error = decodeError((part as Uint8Array).subarray(0, length))
      expect(error.name).toBe('PartDecodeError')
      expect(error.field).toBe(field)
      expect(error.offset).toBe(offset)
    }
  })

  it('rejects an unknown magic and version', () => {
    const [part] = split(randomBytes(100, 1), 1000)
    const badMagic = (part as Uint8Array).slice()
    badMagic[2] = 0x44
    expect(isPartMessage(badMagic)).toBe(false)
    expect(decodeError(badMagic).message).toMatch(/magic at byte offset 0 is 44 4c 44 31/)

    const badVersion = (part as Uint8Array).slice()
    badVersion[4] = 2
    expect(decodeError(badVersion).message).toMatch(/version at byte offset 4 is 2/)
  })

  it('rejects a senderLength of 0 or 65', () => {
    const [part] = split(randomBytes(100, 1), 1000)
    for (const senderLength of [0, 65]) {
      const bytes = (part as Uint8Array).slice()
      bytes[41] = senderLength
      const error = decodeError(bytes)
      expect(error.field).toBe('senderLength')
      expect(error.message).toContain(`is ${senderLength}, expected 1 to 64`)
    }
  })
})

describe('splitIntoParts', () => {
  it('cuts 6 MiB into 7 parts of at most 1 MiB', () => {
    const message = randomBytes(6 * MIB, 11)
    const parts = split(message, MIB)
    expect(parts).toHaveLength(7)
    for (const part of parts) {
      expect(part.byteLength).toBeLessThanOrEqual(MIB)
    }
    for (const part of parts.slice(0, -1)) {
      expect(part.byteLength).toBe(MIB)
    }
    const decoded = parts.map((part) => decodePart(part))
    expect(decoded.map((part) => part.partIndex)).toEqual([0, 1, 2, 3, 4, 5, 6])
    expect(decoded.reduce((sum, part) => sum + part.data.byteLength, 0)).toBe(6 * MIB)
  })

  it('gives one empty part for an empty message', () => {
    const parts = split(new Uint8Array(0), 1000)
    expect(parts).toHaveLength(1)
    const part = decodePart(parts[0] as Uint8Array)
    expect(part.partCount).toBe(1)
    expect(part.totalLength).toBe(0)
    expect(part.data.byteLength).toBe(0)
    const result = makeAssembler().add(part, alice.toString())
    expect(messageOf(result)).toEqual(new Uint8Array(0))
  })

  it('throws when the header leaves no room', () => {
    const message = randomBytes(100, 1)
    expect(() => split(message, 64)).toThrow(RangeError)
    expect(() => split(message, HEADER_BYTES)).toThrow(/at least 121, got 120/)
    expect(() => split(message, 1000.5)).toThrow(/maxPartBytes/)
    expect(split(message, HEADER_BYTES + 1)).toHaveLength(100)
  })

  it('throws above 65535 parts', () => {
    const message = new Uint8Array(MAX_PART_COUNT + 1)
    expect(() => split(message, HEADER_BYTES + 1)).toThrow(/needs 65536 parts/)
    expect(split(message, HEADER_BYTES + 2)).toHaveLength(32768)
  })
})

describe('PartAssembler', () => {
  it('joins 7 shuffled parts of 6 MiB', () => {
    const message = randomBytes(6 * MIB, 11)
    const parts = split(message, MIB)
    const assembler = makeAssembler()
    const results = addAll(assembler, shuffled(parts, 3), alice)

    expect(results.slice(0, 6).map((result) => result.status)).toEqual(new Array(6).fill('partial'))
    const joined = messageOf(results[6])
    expect(joined).toBeDefined()
    expect(joined?.byteLength).toBe(6 * MIB)
    expect(Buffer.compare(joined as Uint8Array, message)).toBe(0)
    expect(sha256(joined as Uint8Array)).toEqual(decodePart(parts[0] as Uint8Array).digest)
    expect(assembler.pendingCount).toBe(0)
    expect(assembler.bufferedBytes).toBe(0)
    expect(assembler.invalid).toBe(0)
  })

  it('completes a message of one part', () => {
    const message = randomBytes(300, 4)
    const parts = split(message, 1000)
    expect(parts).toHaveLength(1)
    const [result] = addAll(makeAssembler(), parts, alice)
    expect(messageOf(result)).toEqual(message)
  })

  it('copies parts out of a reused Buffer', () => {
    const message = randomBytes(5000, 5)
    const parts = split(message, 1200)
    const assembler = makeAssembler()
    // One Buffer reused for every part, as a network read buffer can be.
    const shared = Buffer.alloc(1300)
    let result: PartResult | undefined
    for (const part of parts) {
      shared.set(part, 1)
      result = assembler.add(decodePart(shared.subarray(1, 1 + part.byteLength)), alice.toString())
      shared.fill(0xee)
    }
    expect(messageOf(result)).toEqual(message)
  })

  it('rejects a mutated byte by digest', () => {
    const parts = split(randomBytes(5000, 2), 1200)
    const corrupted = (parts[2] as Uint8Array).slice()
    corrupted[HEADER_BYTES + 10] = (corrupted[HEADER_BYTES + 10] as number) ^ 0x01
    parts[2] = corrupted
    const assembler = makeAssembler()
    const results = addAll(assembler, parts, alice)
    const last = results.at(-1)
    expect(last?.status).toBe('invalid')
    expect(reasonOf(last)).toMatch(/^digest [0-9a-f]{64} does not match the SHA-256/)
    expect(assembler.invalid).toBe(1)
    expect(assembler.pendingCount).toBe(0)
    expect(assembler.bufferedBytes).toBe(0)
  })

  it('rejects partIndex out of range', () => {
    const parts = split(randomBytes(5000, 2), 1200)
    const outOfRange = (parts[1] as Uint8Array).slice()
    new DataView(outOfRange.buffer).setUint16(78 + ED25519_MULTIHASH_BYTES, 5)
    const assembler = makeAssembler()
    const result = assembler.add(decodePart(outOfRange), alice.toString())
    expect(result.status).toBe('invalid')
    expect(reasonOf(result)).toBe('partIndex 5 is out of range for partCount 5')
    expect(assembler.invalid).toBe(1)
    expect(assembler.pendingCount).toBe(0)
  })

  it('rejects a partCount of 0', () => {
    const [part] = split(randomBytes(100, 2), 1000)
    const result = makeAssembler().add(
      decodePart(reencode(part as Uint8Array, { partCount: 0 })),
      alice.toString(),
    )
    expect(reasonOf(result)).toBe('partCount is 0, expected at least 1')
  })

  it('rejects a lying totalLength', () => {
    const parts = split(randomBytes(5000, 2), 1200)
    const assembler = makeAssembler()
    expect(addAll(assembler, parts.slice(0, 2), alice).map((r) => r.status)).toEqual([
      'partial',
      'partial',
    ])

    const longer = reencode(parts[2] as Uint8Array, { totalLength: 5001 })
    const result = assembler.add(decodePart(longer), alice.toString())
    expect(reasonOf(result)).toBe('totalLength 5001 differs from 5000 in earlier parts')

    // The honest parts still complete the message.
    const rest = addAll(assembler, parts.slice(2), alice)
    expect(rest.at(-1)?.status).toBe('complete')
    expect(assembler.invalid).toBe(1)
  })

  it('rejects a first part whose length does not fit', () => {
    const parts = split(randomBytes(5000, 2), 1200)
    // With 1080 data bytes per part, 5 parts carry at most 5400 bytes.
    const lie = reencode(parts[0] as Uint8Array, { totalLength: 9000 })
    const result = makeAssembler().add(decodePart(lie), alice.toString())
    expect(reasonOf(result)).toBe(
      'data length 1080 of part 0 of 5 does not fit totalLength 9000: the last part would ' +
        'carry 4680 bytes, expected 1 to 1080',
    )
  })

  it('rejects totalLength above maxMessageBytes', () => {
    const parts = split(randomBytes(5000, 2), 1200)
    const assembler = makeAssembler({ maxMessageBytes: 4000, maxBufferedBytes: 8000 })
    const result = assembler.add(decodePart(parts[0] as Uint8Array), alice.toString())
    expect(reasonOf(result)).toBe('totalLength 5000 exceeds maxMessageBytes 4000')
    expect(assembler.bufferedBytes).toBe(0)
  })

  it('checks the last part when it comes first', () => {
    const parts = split(randomBytes(5000, 2), 1200)
    const assembler = makeAssembler()
    // 5000 = 4 * 1080 + 680, so the last part fixes 1080 bytes for the others.
    expect(assembler.add(decodePart(parts[4] as Uint8Array), alice.toString()).status).toBe(
      'partial',
    )
    const short = decodePart(parts[0] as Uint8Array)
    short.data = short.data.subarray(0, 1000)
    expect(reasonOf(assembler.add(short, alice.toString()))).toBe(
      'data length 1000 of part 0 of 5 differs from 1080 in earlier parts',
    )
    expect(addAll(assembler, parts.slice(0, 4), alice).at(-1)?.status).toBe('complete')
  })

  it('rejects a last part that does not split evenly', () => {
    const parts = split(randomBytes(5000, 2), 1200)
    const last = decodePart(parts[4] as Uint8Array)
    last.data = last.data.subarray(0, 679)
    const result = makeAssembler().add(last, alice.toString())
    expect(reasonOf(result)).toMatch(/^data length 679 of part 4 of 5 does not fit totalLength/)
  })

  it('rejects a sender mismatch', () => {
    const parts = split(randomBytes(5000, 2), 1200, alice)
    const assembler = makeAssembler()
    const result = assembler.add(decodePart(parts[0] as Uint8Array), bob.toString())
    expect(result.status).toBe('invalid')
    expect(reasonOf(result)).toContain(
      `sender ${Buffer.from(alice.toMultihash().bytes).toString('hex')} differs from the ` +
        `gossipsub sender ${bob.toString()}`,
    )
    expect(assembler.pendingCount).toBe(0)
  })

  it('rejects a part of another message', () => {
    const first = split(randomBytes(5000, 2), 1200)
    const other = split(randomBytes(4000, 3), 1200)
    const firstDigest = decodePart(first[0] as Uint8Array).digest
    const assembler = makeAssembler()
    addAll(assembler, first.slice(0, 2), alice)

    // A part of the 4000-byte message, relabelled with the first message's digest.
    const foreign = reencode(other[2] as Uint8Array, { digest: firstDigest })
    const result = assembler.add(decodePart(foreign), alice.toString())
    expect(reasonOf(result)).toBe('partCount 4 differs from 5 in earlier parts')

    // A part of the same size but other bytes passes the length checks, and the digest
    // catches it at the end.
    const sameSize = split(randomBytes(5000, 4), 1200)
    const swapped = reencode(sameSize[2] as Uint8Array, { digest: firstDigest })
    expect(assembler.add(decodePart(swapped), alice.toString()).status).toBe('partial')
    const end = addAll(assembler, first.slice(3), alice)
    expect(reasonOf(end.at(-1))).toMatch(/^digest /)
    expect(assembler.invalid).toBe(2)
  })

  it('keeps parts of two messages apart', () => {
    const first = randomBytes(5000, 2)
    const second = randomBytes(4000, 3)
    const firstParts = split(first, 1200)
    const secondParts = split(second, 1200)
    const assembler = makeAssembler({ maxPendingPerSender: 2 })
    const interleaved = [...firstParts, ...secondParts].sort(
      (a, b) => decodePart(a).partIndex - decodePart(b).partIndex,
    )
    const completed = addAll(assembler, interleaved, alice)
      .map(messageOf)
      .filter((message) => message !== undefined)
    expect(completed).toHaveLength(2)
    expect(completed).toContainEqual(first)
    expect(completed).toContainEqual(second)
  })

  it('counts duplicates', () => {
    const parts = split(randomBytes(5000, 2), 1200)
    const assembler = makeAssembler()
    const from = alice.toString()
    expect(assembler.add(decodePart(parts[0] as Uint8Array), from).status).toBe('partial')
    expect(assembler.add(decodePart(parts[0] as Uint8Array), from).status).toBe('duplicate')
    expect(assembler.duplicates).toBe(1)

    expect(addAll(assembler, parts.slice(1), alice).at(-1)?.status).toBe('complete')
    // A part of a message already completed is a duplicate, not the start of a new message.
    expect(assembler.add(decodePart(parts[3] as Uint8Array), from).status).toBe('duplicate')
    expect(assembler.duplicates).toBe(2)
    expect(assembler.pendingCount).toBe(0)
  })

  it('remembers the last 65,536 completed messages', () => {
    const assembler = makeAssembler()
    const from = alice.toString()
    // One-part messages for 65,537 rounds, as a flooding peer would send.
    const first = decodePart(split(Uint8Array.of(1), 1000, alice, 0)[0] as Uint8Array)
    const second = decodePart(split(Uint8Array.of(1), 1000, alice, 1)[0] as Uint8Array)
    expect(assembler.add(first, from).status).toBe('complete')
    expect(assembler.add(second, from).status).toBe('complete')
    for (let round = 2; round <= 65_536; round++) {
      assembler.add({ ...second, round }, from)
    }
    // The oldest record gave way to the newest; the second one is still there.
    expect(assembler.add(second, from).status).toBe('duplicate')
    expect(assembler.add(first, from).status).toBe('complete')
  })

  it('drops the oldest past maxBufferedBytes', () => {
    const messages = [1, 2, 3].map((seed) => randomBytes(5000, seed))
    const parts = messages.map((message) => split(message, 1200))
    const assembler = makeAssembler({ maxMessageBytes: 5000, maxBufferedBytes: 10_000 })

    for (const messageParts of parts) {
      expect(
        assembler.add(decodePart(messageParts[0] as Uint8Array), alice.toString()).status,
      ).toBe('partial')
    }
    expect(assembler.dropped).toBe(1)
    expect(assembler.pendingCount).toBe(2)
    expect(assembler.bufferedBytes).toBe(10_000)

    // The second and third messages still complete. The first starts again from its second part.
    expect(messageOf(addAll(assembler, (parts[1] as Uint8Array[]).slice(1), alice).at(-1))).toEqual(
      messages[1],
    )
    expect(messageOf(addAll(assembler, (parts[2] as Uint8Array[]).slice(1), alice).at(-1))).toEqual(
      messages[2],
    )
    expect(addAll(assembler, (parts[0] as Uint8Array[]).slice(1), alice).at(-1)?.status).toBe(
      'partial',
    )
  })

  it('drops a sender past maxPendingPerSender', () => {
    const parts = [1, 2, 3].map((seed) => split(randomBytes(5000, seed), 1200))
    const assembler = makeAssembler({ maxPendingPerSender: 2 })
    for (const messageParts of parts) {
      assembler.add(decodePart(messageParts[0] as Uint8Array), alice.toString())
    }
    const bobParts = split(randomBytes(5000, 9), 1200, bob)
    assembler.add(decodePart(bobParts[0] as Uint8Array), bob.toString())
    expect(assembler.dropped).toBe(1)
    expect(assembler.pendingCount).toBe(3)
  })

  it('expires an incomplete message', () => {
    let now = 1_000
    const assembler = makeAssembler({ timeoutMs: 30_000, now: () => now })
    const parts = split(randomBytes(5000, 2), 1200)
    const from = alice.toString()
    expect(assembler.add(decodePart(parts[0] as Uint8Array), from).status).toBe('partial')

    now += 30_000
    expect(assembler.add(decodePart(parts[1] as Uint8Array), from).status).toBe('partial')
    expect(assembler.expired).toBe(0)

    now += 1
    expect(assembler.add(decodePart(parts[2] as Uint8Array), from).status).toBe('partial')
    expect(assembler.expired).toBe(1)
    expect(assembler.pendingCount).toBe(1)
    expect(assembler.bufferedBytes).toBe(5000)
  })

  it('completes identical deltas of two senders', () => {
    const message = randomBytes(5000, 2)
    const aliceParts = split(message, 1200, alice)
    const bobParts = split(message, 1200, bob)
    expect(decodePart(aliceParts[0] as Uint8Array).digest).toEqual(
      decodePart(bobParts[0] as Uint8Array).digest,
    )

    const assembler = makeAssembler()
    const aliceResults: PartResult[] = []
    const bobResults: PartResult[] = []
    for (let index = 0; index < aliceParts.length; index++) {
      aliceResults.push(...addAll(assembler, [aliceParts[index] as Uint8Array], alice))
      bobResults.push(...addAll(assembler, [bobParts[index] as Uint8Array], bob))
    }
    expect(messageOf(aliceResults.at(-1))).toEqual(message)
    expect(messageOf(bobResults.at(-1))).toEqual(message)
    expect(assembler.duplicates).toBe(0)
  })

  it('prunes earlier rounds', () => {
    const assembler = makeAssembler()
    const early = split(randomBytes(5000, 2), 1200, alice, 3)
    const current = split(randomBytes(5000, 3), 1200, alice, 4)
    addAll(assembler, [early[0] as Uint8Array, current[0] as Uint8Array], alice)
    expect(assembler.prune(4)).toBe(1)
    expect(assembler.pendingCount).toBe(1)
    expect(assembler.bufferedBytes).toBe(5000)
    expect(addAll(assembler, current.slice(1), alice).at(-1)?.status).toBe('complete')
  })

  it('rejects invalid options', () => {
    expect(() => makeAssembler({ maxMessageBytes: 0 })).toThrow(/`maxMessageBytes`/)
    expect(() => makeAssembler({ maxMessageBytes: 100, maxBufferedBytes: 99 })).toThrow(
      /Expected `maxBufferedBytes` to be an integer from 100 to .*, got 99/,
    )
    expect(() => makeAssembler({ timeoutMs: Number.NaN })).toThrow(/`timeoutMs`/)
    expect(() => makeAssembler({ maxPendingPerSender: 0 })).toThrow(/`maxPendingPerSender`/)
  })
})
