import { describe, expect, it } from 'vitest'
import {
  type DeltaMessage,
  type DeltaValidatorInit,
  type DeltaVerdict,
  encodeDelta,
  validateDelta,
} from '../../protocols/index.ts'
import { buildMessage, filledHash, MLP_SHAPES } from './fixtures.ts'

const SHAPES = [[3, 2], [2]]

const INIT: DeltaValidatorInit = {
  specHash: filledHash(0xa1),
  shapes: SHAPES,
  maxSampleCount: 15_000,
  currentRound: () => 5,
}

function goodMessage(): DeltaMessage {
  return buildMessage(SHAPES)
}

function validate(message: DeltaMessage, init = INIT): DeltaVerdict {
  return validateDelta(encodeDelta(message), init)
}

function reasonOf(verdict: DeltaVerdict): string {
  return verdict.result === 'accept' ? '(accepted, no reason)' : verdict.reason
}

function withValue(value: number): DeltaMessage {
  const message = goodMessage()
  const values = message.tensors[1]?.values ?? new Float32Array()
  values[1] = value
  return message
}

describe('validateDelta', () => {
  it('accepts a good message', () => {
    const verdict = validate(goodMessage())

    const message = verdict.result === 'accept' ? verdict.message : undefined

    expect(verdict.result).toBe('accept')
    expect(message?.round).toBe(5)
    expect(message?.tensors[0]?.shape).toEqual([3, 2])
  })

  it('accepts a future round', () => {
    const verdict = validate({ ...goodMessage(), round: 9 })

    expect(verdict.result).toBe('accept')
  })

  it('accepts sampleCount at the cap', () => {
    const verdict = validate({ ...goodMessage(), sampleCount: 15_000 })

    expect(verdict.result).toBe('accept')
  })

  it('rejects undecodable bytes', () => {
    const verdict = validateDelta(Uint8Array.of(1, 2, 3), INIT)

    expect(verdict.result).toBe('reject')
    expect(reasonOf(verdict)).toContain('magic')
  })

  it('rejects a truncated message', () => {
    const bytes = encodeDelta(goodMessage())
    const verdict = validateDelta(bytes.subarray(0, bytes.length - 1), INIT)

    expect(verdict.result).toBe('reject')
    expect(reasonOf(verdict)).toContain('tensors[1].payloadLength')
  })

  it('rejects a wrong shape', () => {
    const verdict = validate(buildMessage([[2, 3], [2]]))

    expect(verdict.result).toBe('reject')
    expect(reasonOf(verdict)).toBe('tensors[0].shape [2, 3] differs from the expected [3, 2]')
  })

  it('rejects a wrong rank', () => {
    const verdict = validate(
      buildMessage([
        [3, 2],
        [2, 1],
      ]),
    )

    expect(verdict.result).toBe('reject')
    expect(reasonOf(verdict)).toContain('tensors[1].shape [2, 1]')
  })

  it('rejects a wrong tensor count', () => {
    const verdict = validate(buildMessage([[3, 2]]))

    expect(verdict.result).toBe('reject')
    expect(reasonOf(verdict)).toBe('tensorCount 1 differs from the expected 2')
  })

  it('rejects a NaN', () => {
    const verdict = validate(withValue(Number.NaN))

    expect(verdict.result).toBe('reject')
    expect(reasonOf(verdict)).toBe('tensors[1].values[1] is NaN, expected a finite number')
  })

  it('rejects an Infinity', () => {
    const verdict = validate(withValue(Number.POSITIVE_INFINITY))

    expect(verdict.result).toBe('reject')
    expect(reasonOf(verdict)).toContain('tensors[1].values[1] is Infinity')
  })

  it('rejects a negative Infinity', () => {
    const verdict = validate(withValue(Number.NEGATIVE_INFINITY))

    expect(verdict.result).toBe('reject')
    expect(reasonOf(verdict)).toContain('tensors[1].values[1] is -Infinity')
  })

  it('accepts the largest finite float32', () => {
    const verdict = validate(withValue(3.4028234663852886e38))

    expect(verdict.result).toBe('accept')
  })

  it('rejects sampleCount 0', () => {
    const verdict = validate({ ...goodMessage(), sampleCount: 0 })

    expect(verdict.result).toBe('reject')
    expect(reasonOf(verdict)).toContain('sampleCount 0')
  })

  it('rejects sampleCount above the cap', () => {
    const verdict = validate({ ...goodMessage(), sampleCount: 70_000 })

    expect(verdict.result).toBe('reject')
    expect(reasonOf(verdict)).toBe('sampleCount 70000 exceeds the maximum shard size 15000')
  })

  it('ignores another specHash', () => {
    const verdict = validate({ ...goodMessage(), specHash: filledHash(0xc3) })

    expect(verdict.result).toBe('ignore')
    expect(reasonOf(verdict)).toBe(
      'specHash c3c3c3c3c3c3c3c3… differs from the local swarm spec a1a1a1a1a1a1a1a1…',
    )
  })

  it('ignores another specHash before checking shapes', () => {
    const message = { ...buildMessage([[1]]), specHash: filledHash(0xc3) }
    const verdict = validate(message)

    expect(verdict.result).toBe('ignore')
  })

  it('ignores a stale round', () => {
    const verdict = validate({ ...goodMessage(), round: 4 })

    expect(verdict.result).toBe('ignore')
    expect(reasonOf(verdict)).toBe('round 4 is older than the current round 5')
  })

  it('reads currentRound on every call', () => {
    let round = 0
    const init = { ...INIT, currentRound: () => round }
    const bytes = encodeDelta({ ...goodMessage(), round: 3 })
    const before = validateDelta(bytes, init).result
    round = 4

    expect(before).toBe('accept')
    expect(validateDelta(bytes, init).result).toBe('ignore')
  })

  it('accepts a full MLP delta', () => {
    const init = { ...INIT, shapes: MLP_SHAPES }
    const verdict = validate(buildMessage(MLP_SHAPES), init)

    expect(verdict.result).toBe('accept')
  })
})
