import { describe, expect, it } from 'vitest'
import {
  decodeLeave,
  encodeDelta,
  encodeLeave,
  isLeaveMessage,
  LEAVE_MESSAGE_BYTES,
  LeaveDecodeError,
  validateLeave,
} from '../../protocols/index.ts'
import { buildMessage, filledHash } from './fixtures.ts'

describe('leave message', () => {
  it('round-trips at an odd byte offset', () => {
    const bytes = encodeLeave({ version: 1, specHash: filledHash(0x5a), lastRound: 0x01020304 })
    expect(bytes.byteLength).toBe(LEAVE_MESSAGE_BYTES)
    const shifted = new Uint8Array(bytes.byteLength + 3)
    shifted.set(bytes, 3)
    const decoded = decodeLeave(shifted.subarray(3))
    expect(decoded.lastRound).toBe(0x01020304)
    expect(decoded.specHash).toEqual(filledHash(0x5a))
  })

  it('is told apart from a delta', () => {
    const leave = encodeLeave({ version: 1, specHash: filledHash(1), lastRound: 2 })
    expect(isLeaveMessage(leave)).toBe(true)
    expect(isLeaveMessage(encodeDelta(buildMessage([[2]])))).toBe(false)
    expect(isLeaveMessage(new Uint8Array([0x44, 0x4c]))).toBe(false)
  })

  it('rejects a truncated message', () => {
    const bytes = encodeLeave({ version: 1, specHash: filledHash(1), lastRound: 2 })
    expect(() => decodeLeave(bytes.subarray(0, 40))).toThrow(LeaveDecodeError)
    const verdict = validateLeave(bytes.subarray(0, 40), filledHash(1))
    expect(verdict.result).toBe('reject')
  })

  it('rejects an unknown version', () => {
    const bytes = encodeLeave({ version: 1, specHash: filledHash(1), lastRound: 2 })
    bytes[4] = 7
    expect(() => decodeLeave(bytes)).toThrow(/version at byte offset 4 is 7/)
  })

  it('ignores another swarm spec', () => {
    const bytes = encodeLeave({ version: 1, specHash: filledHash(1), lastRound: 2 })
    expect(validateLeave(bytes, filledHash(2)).result).toBe('ignore')
    expect(validateLeave(bytes, filledHash(1)).result).toBe('accept')
  })
})
