import * as tf from '@tensorflow/tfjs'
import { afterAll, beforeAll, expect } from 'vitest'
import { selectBackend } from '../../node/backend.ts'
import type { Peer } from '../../node/peer.ts'

/**
 * Selects the wasm backend before the file's tests and checks after them that every tensor
 * they created was disposed. Returns a function that gives the tensor count before the tests,
 * for checks inside a test.
 */
export function checkTensorLeaks(): () => number {
  let tensorsBefore = 0
  beforeAll(async () => {
    await selectBackend('wasm')
    tensorsBefore = tf.memory().numTensors
  })
  afterAll(() => {
    expect(tf.memory().numTensors).toBe(tensorsBefore)
  })
  return () => tensorsBefore
}

/** Connects every peer to the ones before it, as the launcher does. */
export async function connectPeers(peers: Peer[]): Promise<void> {
  for (const [index, peer] of peers.entries()) {
    await peer.dial(peers.slice(0, index).flatMap((other) => other.addresses()))
  }
}

/** Connects the peers, runs them all to their last round and stops them, whatever happens. */
export async function runPeers(peers: Peer[]): Promise<void> {
  try {
    await connectPeers(peers)
    await Promise.all(peers.map((peer) => peer.waitForSwarm()))
    await Promise.all(peers.map((peer) => peer.run()))
  } finally {
    await Promise.all(peers.map((peer) => peer.stop()))
  }
}
