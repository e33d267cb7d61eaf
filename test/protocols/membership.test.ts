import { describe, expect, it } from 'vitest'
import {
  decodeMembership,
  encodeDelta,
  encodeMembership,
  isMembershipMessage,
  MEMBERSHIP_MESSAGE_BYTES,
  MembershipDecodeError,
  validateMembership,
} from '../../protocols/index.ts'
import { buildMessage, filledHash } from './fixtures.ts'

function leave(round: number, hashByte = 1): Uint8Array {
  return encodeMembership({ kind: 'leave', version: 1, specHash: filledHash(hashByte), round })
}

describe('membership message', () => {
  it('round-trips at an odd byte offset', () => {
    const bytes = encodeMembership({
      kind: 'join',
      version: 1,
      specHash: filledHash(0x5a),
      round: 0x01020304,
    })
    expect(bytes.byteLength).toBe(MEMBERSHIP_MESSAGE_BYTES)
    const shifted = new Uint8Array(bytes.byteLength + 3)
    shifted.set(bytes, 3)
    const decoded = decodeMembership(shifted.subarray(3))
    expect(decoded.kind).toBe('join')
    expect(decoded.round).toBe(0x01020304)
    expect(decoded.specHash).toEqual(filledHash(0x5a))
  })

  it('tells join from leave', () => {
    expect(decodeMembership(leave(7)).kind).toBe('leave')
    expect(decodeMembership(leave(7)).round).toBe(7)
  })

  it('is told apart from a delta', () => {
    expect(isMembershipMessage(leave(2))).toBe(true)
    expect(isMembershipMessage(encodeDelta(buildMessage([[2]])))).toBe(false)
    expect(isMembershipMessage(new Uint8Array([0x44, 0x4c]))).toBe(false)
  })

  it('rejects a truncated message', () => {
    const bytes = leave(2)
    expect(() => decodeMembership(bytes.subarray(0, 40))).toThrow(MembershipDecodeError)
    expect(validateMembership(bytes.subarray(0, 40), filledHash(1)).result).toBe('reject')
  })

  it('rejects an unknown version', () => {
    const bytes = leave(2)
    bytes[4] = 7
    expect(() => decodeMembership(bytes)).toThrow(/version at byte offset 4 is 7/)
  })

  it('ignores another swarm spec', () => {
    expect(validateMembership(leave(2), filledHash(2)).result).toBe('ignore')
    expect(validateMembership(leave(2), filledHash(1)).result).toBe('accept')
  })
})
