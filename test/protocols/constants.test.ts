import { describe, expect, it } from 'vitest'
import {
  DELTA_MESSAGE_VERSION,
  deltaTopic,
  InvalidTopicError,
  STATE_SYNC_PROTOCOL,
} from '../../protocols/index.ts'

const SPEC_HASH_HEX = '0123456789abcdef'.repeat(4)

describe('deltaTopic', () => {
  it('formats swarm and spec hash prefix', () => {
    expect(deltaTopic('mnist', SPEC_HASH_HEX)).toBe('/dlearn/1/mnist/0123456789abcdef/deltas')
  })

  it('lowercases the spec hash', () => {
    expect(deltaTopic('mnist', SPEC_HASH_HEX.toUpperCase())).toBe(
      '/dlearn/1/mnist/0123456789abcdef/deltas',
    )
  })

  it('accepts dots, dashes and underscores', () => {
    expect(deltaTopic('lab-2_test.v1', SPEC_HASH_HEX)).toBe(
      '/dlearn/1/lab-2_test.v1/0123456789abcdef/deltas',
    )
  })

  it('rejects a swarm name with a slash', () => {
    expect(() => deltaTopic('a/b', SPEC_HASH_HEX)).toThrow(InvalidTopicError)
    expect(() => deltaTopic('a/b', SPEC_HASH_HEX)).toThrow(
      `invalid swarm name "a/b": use one or more of the letters A-Z and a-z, digits 0-9, '.', '_' and '-'`,
    )
  })

  it('rejects an empty swarm name', () => {
    expect(() => deltaTopic('', SPEC_HASH_HEX)).toThrow('invalid swarm name ""')
  })

  it('rejects whitespace in a swarm name', () => {
    for (const swarm of ['a b', 'a\tb', 'mnist\n', ' mnist']) {
      expect(() => deltaTopic(swarm, SPEC_HASH_HEX), JSON.stringify(swarm)).toThrow(
        InvalidTopicError,
      )
    }
  })

  it('rejects a spec hash that is not 64 hex characters', () => {
    for (const hex of ['', '0123456789abcdef', `${SPEC_HASH_HEX}0`, `${'g'.repeat(64)}`]) {
      expect(() => deltaTopic('mnist', hex), JSON.stringify(hex)).toThrow('invalid spec hash')
    }
  })
})

describe('protocol constants', () => {
  it('fix the message version and state protocol id', () => {
    expect(DELTA_MESSAGE_VERSION).toBe(1)
    expect(STATE_SYNC_PROTOCOL).toBe('/dlearn/state/1.0.0')
  })
})
