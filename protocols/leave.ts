/**
 * Version-1 leave message: a peer announces on the delta topic that it will publish no delta
 * after `lastRound`. Peers still collecting a later round stop waiting for it, and peers that
 * finished stay online until every other peer has left or moved past their last round, so no
 * final delta is lost in a closing connection.
 *
 * Layout. Integers are big-endian.
 *
 * | offset | size | field     | contents                                       |
 * | -----: | :--- | :-------- | :--------------------------------------------- |
 * |      0 | 4    | magic     | ASCII `DLL1` (0x44 0x4c 0x4c 0x31)             |
 * |      4 | 1    | version   | u8, 1                                          |
 * |      5 | 32   | specHash  | SHA-256 of the swarm spec                      |
 * |     37 | 4    | lastRound | u32, last round the peer published a delta for |
 *
 * The message is always 41 bytes long.
 */

import { bytesEqual, toHex } from './bytes.ts'
import { DELTA_MESSAGE_VERSION } from './constants.ts'
import { LeaveDecodeError } from './errors.ts'

/** A decoded version-1 leave message. */
export interface LeaveMessage {
  version: 1
  /** SHA-256 of the swarm spec, 32 bytes. */
  specHash: Uint8Array
  lastRound: number
}

/** Byte length of every leave message. */
export const LEAVE_MESSAGE_BYTES = 41

const MAGIC = Uint8Array.of(0x44, 0x4c, 0x4c, 0x31)
const SPEC_HASH_BYTES = 32

/** True when the bytes start with the leave magic, so they should be decoded as a leave. */
export function isLeaveMessage(bytes: Uint8Array): boolean {
  return bytes.byteLength >= MAGIC.length && bytesEqual(bytes.subarray(0, MAGIC.length), MAGIC)
}

export function encodeLeave(message: LeaveMessage): Uint8Array {
  if (message.specHash.byteLength !== SPEC_HASH_BYTES) {
    throw new RangeError(`specHash has ${message.specHash.byteLength} bytes, expected 32`)
  }
  if (
    !Number.isInteger(message.lastRound) ||
    message.lastRound < 0 ||
    message.lastRound > 2 ** 32 - 1
  ) {
    throw new RangeError(`lastRound ${message.lastRound} is not a u32`)
  }
  const bytes = new Uint8Array(LEAVE_MESSAGE_BYTES)
  const view = new DataView(bytes.buffer)
  bytes.set(MAGIC, 0)
  view.setUint8(4, message.version)
  bytes.set(message.specHash, 5)
  view.setUint32(37, message.lastRound)
  return bytes
}

/** Decodes a leave message; throws LeaveDecodeError naming the invalid field. */
export function decodeLeave(bytes: Uint8Array): LeaveMessage {
  if (bytes.byteLength !== LEAVE_MESSAGE_BYTES) {
    throw new LeaveDecodeError('message', 0, `has ${bytes.byteLength} bytes, expected 41`)
  }
  if (!isLeaveMessage(bytes)) {
    throw new LeaveDecodeError(
      'magic',
      0,
      `is ${toHex(bytes.subarray(0, 4), ' ')}, expected 44 4c 4c 31 ("DLL1")`,
    )
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const version = view.getUint8(4)
  if (version !== DELTA_MESSAGE_VERSION) {
    throw new LeaveDecodeError(
      'version',
      4,
      `is ${version}, but only version ${DELTA_MESSAGE_VERSION} is supported`,
    )
  }
  return {
    version: 1,
    specHash: bytes.slice(5, 5 + SPEC_HASH_BYTES),
    lastRound: view.getUint32(37),
  }
}
