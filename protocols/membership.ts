/**
 * Version-1 membership messages, published on the delta topic next to the deltas:
 *
 * - join: a peer that started late contributes deltas from `round` on. Until a join arrives,
 *   the others do not wait for a late peer, because it cannot contribute before it has
 *   downloaded the current model.
 * - leave: a peer publishes no delta after `round`. Peers still collecting a later round stop
 *   waiting for it, and peers that finished stay online until every other peer has left or
 *   moved past their last round, so no final delta is lost in a closing connection.
 *
 * Layout. Integers are big-endian.
 *
 * | offset | size | field    | contents                                              |
 * | -----: | :--- | :------- | :---------------------------------------------------- |
 * |      0 | 4    | magic    | ASCII `DLJ1` (join) or `DLL1` (leave)                 |
 * |      4 | 1    | version  | u8, 1                                                 |
 * |      5 | 32   | specHash | SHA-256 of the swarm spec                             |
 * |     37 | 4    | round    | u32: join, first round; leave, last round with a delta |
 *
 * The message is always 41 bytes long.
 */

import { bytesEqual, toHex } from './bytes.ts'
import { DELTA_MESSAGE_VERSION } from './constants.ts'
import { MembershipDecodeError } from './errors.ts'

/** A decoded version-1 join or leave message. */
export interface MembershipMessage {
  kind: 'join' | 'leave'
  version: 1
  /** SHA-256 of the swarm spec, 32 bytes. */
  specHash: Uint8Array
  /** First round the peer contributes to (join), or last round it contributed to (leave). */
  round: number
}

/** Byte length of every membership message. */
export const MEMBERSHIP_MESSAGE_BYTES = 41

const MAGIC_LENGTH = 4
const MAGICS = {
  join: Uint8Array.of(0x44, 0x4c, 0x4a, 0x31),
  leave: Uint8Array.of(0x44, 0x4c, 0x4c, 0x31),
}
const SPEC_HASH_BYTES = 32

function kindOf(bytes: Uint8Array): MembershipMessage['kind'] | undefined {
  if (bytes.byteLength < MAGIC_LENGTH) return undefined
  const magic = bytes.subarray(0, MAGIC_LENGTH)
  if (bytesEqual(magic, MAGICS.join)) return 'join'
  if (bytesEqual(magic, MAGICS.leave)) return 'leave'
  return undefined
}

/** True when the bytes start with a join or leave magic, so they should be decoded as one. */
export function isMembershipMessage(bytes: Uint8Array): boolean {
  return kindOf(bytes) !== undefined
}

export function encodeMembership(message: MembershipMessage): Uint8Array {
  if (message.specHash.byteLength !== SPEC_HASH_BYTES) {
    throw new RangeError(`specHash has ${message.specHash.byteLength} bytes, expected 32`)
  }
  if (!Number.isInteger(message.round) || message.round < 0 || message.round > 2 ** 32 - 1) {
    throw new RangeError(`round ${message.round} is not a u32`)
  }
  const bytes = new Uint8Array(MEMBERSHIP_MESSAGE_BYTES)
  const view = new DataView(bytes.buffer)
  bytes.set(MAGICS[message.kind], 0)
  view.setUint8(4, message.version)
  bytes.set(message.specHash, 5)
  view.setUint32(37, message.round)
  return bytes
}

/** Decodes a join or leave message; throws MembershipDecodeError naming the invalid field. */
export function decodeMembership(bytes: Uint8Array): MembershipMessage {
  if (bytes.byteLength !== MEMBERSHIP_MESSAGE_BYTES) {
    throw new MembershipDecodeError('message', 0, `has ${bytes.byteLength} bytes, expected 41`)
  }
  const kind = kindOf(bytes)
  if (kind === undefined) {
    throw new MembershipDecodeError(
      'magic',
      0,
      `is ${toHex(bytes.subarray(0, MAGIC_LENGTH), ' ')}, expected "DLJ1" or "DLL1"`,
    )
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const version = view.getUint8(4)
  if (version !== DELTA_MESSAGE_VERSION) {
    throw new MembershipDecodeError(
      'version',
      4,
      `is ${version}, but only version ${DELTA_MESSAGE_VERSION} is supported`,
    )
  }
  return {
    kind,
    version: 1,
    specHash: bytes.slice(5, 5 + SPEC_HASH_BYTES),
    round: view.getUint32(37),
  }
}
