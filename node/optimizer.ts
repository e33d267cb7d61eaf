// Optimiser updates for the trainer: a SIMD WebAssembly module on the wasm backend, tensor
// operations elsewhere.
import * as tf from '@tensorflow/tfjs'
import { FLOAT_BYTES, WasmHeap } from './simd-update.ts'
import type { OptimizerName } from './spec.ts'

/** Adam's constants, as tf.train.adam uses them by default in tfjs-core 4.22. */
const ADAM_BETA1 = 0.9
const ADAM_BETA2 = 0.999
const ADAM_EPSILON = 1e-7

/**
 * Returns the step size and epsilon of Adam's step number `step` (from 1), with the bias
 * corrections of m / (1 - beta1^t) / (sqrt(v / (1 - beta2^t)) + epsilon) folded into them.
 */
function adamStep(learningRate: number, step: number): { rate: number; epsilon: number } {
  const secondRoot = Math.sqrt(1 - ADAM_BETA2 ** step)
  return {
    rate: (learningRate * secondRoot) / (1 - ADAM_BETA1 ** step),
    epsilon: ADAM_EPSILON * secondRoot,
  }
}

/** One optimiser over a fixed list of variables. */
export interface Optimizer {
  /** Applies one update, where `gradients[i]` is the gradient of `variables[i]`. */
  apply(gradients: tf.Tensor[]): void
  dispose(): void
}

/**
 * Builds the named optimiser. On wasm each update is one call per variable into a SIMD module,
 * which reads the gradient and weights in the backend's heap and writes the new weights into a
 * fresh tensor. Tensor-op Adam made 12 kernel calls per variable and, for the mlp at batch 32,
 * cost more than the gradient. Other backends use tensor operations.
 */
export function createOptimizer(
  name: OptimizerName,
  variables: tf.Variable[],
  learningRate: number,
): Optimizer {
  const heap = WasmHeap.open()
  if (heap === undefined) {
    return name === 'adam'
      ? new TensorAdam(variables, learningRate)
      : new TensorSgd(variables, learningRate)
  }
  return name === 'adam'
    ? new HeapAdam(variables, learningRate, heap)
    : new HeapSgd(variables, learningRate, heap)
}

/** Replaces each variable's value with a new tensor that `write` fills. */
function assignEach(
  heap: WasmHeap,
  variables: tf.Variable[],
  write: (index: number, address: number) => void,
): void {
  variables.forEach((variable, i) => {
    const next = heap.tensor([...variable.shape], (address) => write(i, address))
    variable.assign(next)
    next.dispose()
  })
}

/** Plain SGD, w - rate * g, in the SIMD module. */
class HeapSgd implements Optimizer {
  private readonly variables: tf.Variable[]
  private readonly learningRate: number
  private readonly heap: WasmHeap

  constructor(variables: tf.Variable[], learningRate: number, heap: WasmHeap) {
    this.variables = variables
    this.learningRate = learningRate
    this.heap = heap
  }

  apply(gradients: tf.Tensor[]): void {
    assignEach(this.heap, this.variables, (i, out) => {
      const variable = this.variables[i] as tf.Variable
      this.heap.kernels.sgd(
        this.heap.address(gradients[i] as tf.Tensor, variable.size),
        this.heap.address(variable, variable.size),
        out,
        variable.size * FLOAT_BYTES,
        this.learningRate,
      )
    })
  }

  dispose(): void {}
}

/**
 * Adam in the SIMD module, with its moments in the wasm heap. It computes tf.train.adam's
 * update in float32 with the bias corrections folded as adamStep does, so its bits differ from
 * tf.train.adam's.
 */
class HeapAdam implements Optimizer {
  private readonly variables: tf.Variable[]
  private readonly learningRate: number
  private readonly heap: WasmHeap
  /** Byte offsets of each variable's first and second moments. */
  private readonly moments: { first: number; second: number }[]
  private steps = 0

  constructor(variables: tf.Variable[], learningRate: number, heap: WasmHeap) {
    this.variables = variables
    this.learningRate = learningRate
    this.heap = heap
    this.moments = variables.map((v) => ({
      first: heap.allocate(v.size),
      second: heap.allocate(v.size),
    }))
  }

  apply(gradients: tf.Tensor[]): void {
    this.steps++
    const { rate, epsilon } = adamStep(this.learningRate, this.steps)
    assignEach(this.heap, this.variables, (i, out) => {
      const variable = this.variables[i] as tf.Variable
      const { first, second } = this.moments[i] as { first: number; second: number }
      this.heap.kernels.adam(
        this.heap.address(gradients[i] as tf.Tensor, variable.size),
        this.heap.address(variable, variable.size),
        first,
        second,
        out,
        variable.size * FLOAT_BYTES,
        ADAM_BETA1,
        1 - ADAM_BETA1,
        ADAM_BETA2,
        1 - ADAM_BETA2,
        rate,
        epsilon,
      )
    })
  }

  dispose(): void {
    for (const { first, second } of this.moments) {
      this.heap.free(first)
      this.heap.free(second)
    }
    this.moments.length = 0
  }
}

/** Plain SGD through tf.train.sgd, for backends whose data lives outside JS. */
class TensorSgd implements Optimizer {
  private readonly variables: tf.Variable[]
  private readonly optimizer: tf.SGDOptimizer

  constructor(variables: tf.Variable[], learningRate: number) {
    this.variables = variables
    this.optimizer = tf.train.sgd(learningRate)
  }

  apply(gradients: tf.Tensor[]): void {
    this.optimizer.applyGradients(
      this.variables.map((variable, i) => ({
        name: variable.name,
        tensor: gradients[i] as tf.Tensor,
      })),
    )
  }

  dispose(): void {
    this.optimizer.dispose()
  }
}

/**
 * Adam in tensor operations, with 12 element-wise passes per variable where tf.train.adam 4.22
 * makes 15 and creates several scalars per variable. It folds the bias corrections as adamStep
 * does.
 */
class TensorAdam implements Optimizer {
  private readonly variables: tf.Variable[]
  private readonly learningRate: number
  private readonly firstMoments: tf.Variable[]
  private readonly secondMoments: tf.Variable[]
  private steps = 0

  constructor(variables: tf.Variable[], learningRate: number) {
    this.variables = variables
    this.learningRate = learningRate
    // tf.tidy disposes the zero tensors but keeps the variables, which no scope tracks.
    this.firstMoments = variables.map((v) => tf.tidy(() => tf.variable(tf.zerosLike(v), false)))
    this.secondMoments = variables.map((v) => tf.tidy(() => tf.variable(tf.zerosLike(v), false)))
  }

  apply(gradients: tf.Tensor[]): void {
    this.steps++
    const folded = adamStep(this.learningRate, this.steps)
    tf.tidy(() => {
      const rate = tf.scalar(folded.rate)
      const epsilon = tf.scalar(folded.epsilon)
      const firstDecay = tf.scalar(1 - ADAM_BETA1)
      const secondDecay = tf.scalar(1 - ADAM_BETA2)
      this.variables.forEach((variable, i) => {
        const gradient = gradients[i] as tf.Tensor
        const m = this.firstMoments[i] as tf.Variable
        const v = this.secondMoments[i] as tf.Variable
        // m + (g - m)(1 - beta1) takes 3 passes and v + (g^2 - v)(1 - beta2) takes 4.
        const nextM = tf.add(m, tf.mul(tf.sub(gradient, m), firstDecay))
        const nextV = tf.add(v, tf.mul(tf.sub(tf.square(gradient), v), secondDecay))
        m.assign(nextM)
        v.assign(nextV)
        const step = tf.div(nextM, tf.add(tf.sqrt(nextV), epsilon))
        variable.assign(tf.sub(variable, tf.mul(step, rate)))
      })
    })
  }

  dispose(): void {
    for (const moment of [...this.firstMoments, ...this.secondMoments]) moment.dispose()
  }
}
