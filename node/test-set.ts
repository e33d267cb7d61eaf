import type { Mnist } from '../data/index.ts'
import { type EvaluationResult, type Examples, toExamples } from './trainer.ts'

/** Test results kept per process: enough for the models of a few rounds after a split swarm. */
const KEPT_RESULTS = 64

/**
 * The test images of one process and the results of the models evaluated on them. The peers
 * that one process hosts (see peer-host.ts) share it, so they hold one float32 copy of the test
 * set, 31 MB for all 10,000 images. After an aggregation every member has the same model, and
 * a model whose hash another hosted peer already evaluated is not evaluated again: in a process
 * of K peers one evaluation serves K. Results are keyed by model hash and test-set size, and
 * evaluation is deterministic (dropout is off), so a kept result is the one the peer would compute.
 */
export class SharedTestSet {
  private readonly mnist: Mnist
  private readonly sets = new Map<number, Examples>()
  private readonly results = new Map<string, EvaluationResult>()

  constructor(mnist: Mnist) {
    this.mnist = mnist
  }

  /** Returns the first `count` test images, converting them once per process. */
  examples(count: number): Examples {
    let examples = this.sets.get(count)
    if (examples === undefined) {
      examples = toExamples(
        this.mnist.test.images.subarray(0, count * 784),
        this.mnist.test.labels.subarray(0, count),
      )
      this.sets.set(count, examples)
    }
    return examples
  }

  /** Returns the result of model `modelHash` on the first `count` test images, if a peer computed it. */
  lookup(modelHash: string, count: number): EvaluationResult | undefined {
    return this.results.get(`${count}:${modelHash}`)
  }

  remember(modelHash: string, count: number, result: EvaluationResult): void {
    const key = `${count}:${modelHash}`
    this.results.delete(key)
    this.results.set(key, result)
    // A Map iterates in insertion order, so its first key is the oldest.
    for (const oldest of this.results.keys()) {
      if (this.results.size <= KEPT_RESULTS) break
      this.results.delete(oldest)
    }
  }
}
