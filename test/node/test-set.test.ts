import { describe, expect, it, vi } from 'vitest'
import { loadMnist } from '../../data/index.ts'
import type { RoundMetrics } from '../../node/metrics.ts'
import { Peer } from '../../node/peer.ts'
import { DEFAULT_SPEC, validateSpec } from '../../node/spec.ts'
import { SharedTestSet } from '../../node/test-set.ts'
import { Trainer } from '../../node/trainer.ts'
import { checkTensorLeaks, runPeers } from './peers.ts'

const mnist = loadMnist()

checkTensorLeaks()

describe('SharedTestSet', () => {
  it('converts each size once, scaled to [0, 1]', () => {
    const shared = new SharedTestSet(mnist)
    const examples = shared.examples(100)
    expect(shared.examples(100)).toBe(examples)
    expect(shared.examples(50)).not.toBe(examples)
    expect(examples.count).toBe(100)
    expect(examples.images.length).toBe(100 * 784)
    expect(Array.from(examples.labels.subarray(0, 5))).toEqual(
      Array.from(mnist.test.labels.subarray(0, 5)),
    )
    expect(examples.images[784 * 3 + 400]).toBe(
      Math.fround((mnist.test.images[784 * 3 + 400] as number) / 255),
    )
  })

  it('keeps the newest 64 results', () => {
    const shared = new SharedTestSet(mnist)
    shared.remember('a', 100, { accuracy: 0.5, loss: 1 })
    expect(shared.lookup('a', 100)).toEqual({ accuracy: 0.5, loss: 1 })
    expect(shared.lookup('a', 200)).toBeUndefined()
    for (let i = 0; i < 63; i++) shared.remember(`m${i}`, 100, { accuracy: i / 100, loss: 0 })
    expect(shared.lookup('a', 100)).toBeDefined()
    shared.remember('m63', 100, { accuracy: 0.63, loss: 0 })
    expect(shared.lookup('a', 100)).toBeUndefined()
    expect(shared.lookup('m0', 100)).toEqual({ accuracy: 0, loss: 0 })
  })
})

describe('peers sharing a test set', () => {
  it('evaluate each model once', async () => {
    const spec = validateSpec({
      ...DEFAULT_SPEC,
      swarm: 'shared-test-set',
      peers: 3,
      trainSamples: 1500,
      testSamples: 500,
    })
    const testSet = new SharedTestSet(mnist)
    const rounds: RoundMetrics[] = []
    const evaluate = vi.spyOn(Trainer.prototype, 'evaluate')
    try {
      const peers = await Promise.all(
        [0, 1, 2].map((peerIndex) =>
          Peer.create({
            spec,
            peerIndex,
            mnist,
            testSet,
            backend: 'wasm',
            maxRounds: 2,
            onRound: (metrics) => rounds.push(metrics),
          }),
        ),
      )
      await runPeers(peers)
      expect(rounds).toHaveLength(6)
      for (const round of [0, 1]) {
        const lines = rounds.filter((metrics) => metrics.round === round)
        expect(new Set(lines.map((metrics) => metrics.modelHash)).size).toBe(1)
        expect(new Set(lines.map((metrics) => metrics.accuracy)).size).toBe(1)
        expect(lines[0]?.accuracy).toBeGreaterThan(0.6)
      }
      // One evaluation per round serves all three peers.
      expect(evaluate).toHaveBeenCalledTimes(2)
    } finally {
      evaluate.mockRestore()
    }
  }, 60_000)
})
