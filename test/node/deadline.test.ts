import { describe, expect, it } from 'vitest'
import { AdaptiveDeadline } from '../../node/deadline.ts'

describe('AdaptiveDeadline', () => {
  it('starts at the ceiling', () => {
    expect(new AdaptiveDeadline(1000, 60_000).currentMs).toBe(60_000)
  })

  it('follows twice the longest recent round', () => {
    const deadline = new AdaptiveDeadline(1000, 60_000)
    deadline.record(2000, false)
    deadline.record(3000, false)
    expect(deadline.currentMs).toBe(6000)
  })

  it('stays between floor and ceiling', () => {
    const deadline = new AdaptiveDeadline(5000, 10_000)
    deadline.record(10, false)
    expect(deadline.currentMs).toBe(5000)
    deadline.record(50_000, false)
    expect(deadline.currentMs).toBe(10_000)
  })

  it('ignores rounds closed by the deadline', () => {
    const deadline = new AdaptiveDeadline(1000, 60_000)
    deadline.record(2000, false)
    deadline.record(60_000, true)
    expect(deadline.currentMs).toBe(4000)
  })

  it('forgets waits older than five rounds', () => {
    const deadline = new AdaptiveDeadline(1000, 600_000)
    deadline.record(100_000, false)
    for (let i = 0; i < 5; i++) deadline.record(2000, false)
    expect(deadline.currentMs).toBe(4000)
  })

  it('rejects a floor above the ceiling', () => {
    expect(() => new AdaptiveDeadline(10, 5)).toThrow(/floor \(10 ms\) <= ceiling \(5 ms\)/)
  })
})
