// Optimiser updates for the trainer: element-wise loops in JS where the backend keeps tensor
// data in JS-visible memory (wasm, cpu), tensor operations elsewhere.
import * as tf from '@tensorflow/tfjs'
import { SimdUpdate } from './simd-update.ts'
import type { OptimizerName } from './spec.ts'

/** Adam's constants, as tf.train.adam uses them by default in tfjs-core 4.22. */
const ADAM_BETA1 = 0.9
const ADAM_BETA2 = 0.999
const ADAM_EPSILON = 1e-7

/** One optimiser over a fixed list of variables. */
export interface Optimizer {
  /** Applies one update, where `gradients[i]` is the gradient of `variables[i]`. */
  apply(gradients: tf.Tensor[]): void
  dispose(): void
}

/** The part of tfjs-backend-wasm 4.22's BackendWasm that gives a view of a tensor's heap memory. */
interface HeapBackend {
  typedArrayFromHeap(info: tf.TensorInfo): Float32Array
}

/**
 * Returns a function that reads a float32 tensor's values without copying where the active
 * backend allows it: a view of the wasm heap, or the cpu backend's own array. A view is valid
 * only until the next tensor allocation, which may grow the heap, and must not be written.
 * Returns undefined on other backends (tensorflow, tensorflow-gpu), whose data lives outside JS.
 */
function hostReader(): ((tensor: tf.Tensor) => Float32Array) | undefined {
  const name = tf.getBackend()
  if (name === 'wasm') {
    const backend = tf.backend() as unknown as HeapBackend
    return (tensor) => backend.typedArrayFromHeap(tensor)
  }
  // tfjs-backend-cpu 4.22's readSync, and so dataSync, returns the array it holds.
  if (name === 'cpu') return (tensor) => tensor.dataSync() as Float32Array
  return undefined
}

/**
 * Builds the named optimiser. On wasm and cpu each update is one JS loop per variable that
 * reads the gradient and the weights in place and uploads the new weights as one tensor: at
 * batch 32 with the mlp on wasm, tensor-op Adam cost more than the gradient itself, because each
 * of its 12 passes per variable is a separate kernel call.
 */
export function createOptimizer(
  name: OptimizerName,
  variables: tf.Variable[],
  learningRate: number,
): Optimizer {
  const read = hostReader()
  if (read === undefined) {
    return name === 'adam'
      ? new TensorAdam(variables, learningRate)
      : new TensorSgd(variables, learningRate)
  }
  return name === 'adam'
    ? new HostAdam(variables, learningRate, read)
    : new HostSgd(variables, learningRate, read)
}

/** Plain SGD, w - rate * g, computed by SimdUpdate. */
class HostSgd implements Optimizer {
  private readonly variables: tf.Variable[]
  private readonly learningRate: number
  private readonly read: (tensor: tf.Tensor) => Float32Array
  private readonly update: SimdUpdate

  constructor(
    variables: tf.Variable[],
    learningRate: number,
    read: (tensor: tf.Tensor) => Float32Array,
  ) {
    this.variables = variables
    this.learningRate = learningRate
    this.read = read
    this.update = new SimdUpdate(
      variables.map((v) => v.size),
      false,
    )
  }

  apply(gradients: tf.Tensor[]): void {
    this.variables.forEach((variable, i) => {
      const gradient = this.read(gradients[i] as tf.Tensor)
      const weights = this.read(variable)
      assignValues(variable, this.update.sgd(i, gradient, weights, this.learningRate))
    })
  }

  dispose(): void {}
}

/**
 * Adam computed by SimdUpdate, with its moments in SimdUpdate's memory. It computes
 * tf.train.adam's update in float32, with the bias corrections of
 * m / (1 - beta1^t) / (sqrt(v / (1 - beta2^t)) + epsilon) folded into one learning rate and one
 * epsilon per step, so its bits differ from tf.train.adam's.
 */
class HostAdam implements Optimizer {
  private readonly variables: tf.Variable[]
  private readonly learningRate: number
  private readonly read: (tensor: tf.Tensor) => Float32Array
  private readonly update: SimdUpdate
  private steps = 0

  constructor(
    variables: tf.Variable[],
    learningRate: number,
    read: (tensor: tf.Tensor) => Float32Array,
  ) {
    this.variables = variables
    this.learningRate = learningRate
    this.read = read
    this.update = new SimdUpdate(
      variables.map((v) => v.size),
      true,
    )
  }

  apply(gradients: tf.Tensor[]): void {
    this.steps++
    const secondRoot = Math.sqrt(1 - ADAM_BETA2 ** this.steps)
    const rate = (this.learningRate * secondRoot) / (1 - ADAM_BETA1 ** this.steps)
    const epsilon = ADAM_EPSILON * secondRoot
    this.variables.forEach((variable, i) => {
      const gradient = this.read(gradients[i] as tf.Tensor)
      const weights = this.read(variable)
      const next = this.update.adam(i, gradient, weights, ADAM_BETA1, ADAM_BETA2, rate, epsilon)
      assignValues(variable, next)
    })
  }

  dispose(): void {}
}

/** Uploads `values`, which the caller gives up, as one new tensor and makes it the variable's value. */
function assignValues(variable: tf.Variable, values: Float32Array): void {
  const tensor = tf.tensor(values, variable.shape, 'float32')
  variable.assign(tensor)
  tensor.dispose()
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
 * makes 15 and creates several scalars per variable. It folds the bias corrections as HostAdam
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
    const firstCorrection = 1 - ADAM_BETA1 ** this.steps
    const secondRoot = Math.sqrt(1 - ADAM_BETA2 ** this.steps)
    tf.tidy(() => {
      const rate = tf.scalar((this.learningRate * secondRoot) / firstCorrection)
      const epsilon = tf.scalar(ADAM_EPSILON * secondRoot)
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
