import * as tf from '@tensorflow/tfjs'

type Pair = [number, number]
type Shape4 = [number, number, number, number]
type ExplicitPadding = [Pair, Pair, Pair, Pair]

/** Attributes of the Conv2DBackpropFilter kernel, as tfjs-core 4.22 declares them. */
interface Conv2DBackpropFilterAttrs {
  strides: number | Pair
  pad: 'valid' | 'same' | number | ExplicitPadding
  dataFormat: 'NHWC' | 'NCHW'
  dimRoundingMode?: 'floor' | 'round' | 'ceil'
  filterShape: Shape4
}

/** Attributes of the Conv2DBackpropInput kernel, as tfjs-core 4.22 declares them. */
interface Conv2DBackpropInputAttrs {
  strides: number | Pair
  pad: 'valid' | 'same' | number | ExplicitPadding
  dataFormat: 'NHWC' | 'NCHW'
  dimRoundingMode?: 'floor' | 'round' | 'ceil'
  inputShape: Shape4
}

/** The stock kernel that each of this project's wasm kernels replaced, or undefined for one it added. */
const stockKernels = new Map<string, tf.KernelConfig | undefined>()
/** This project's wasm kernels, by name. */
const projectKernels = new Map<string, tf.KernelConfig>()
/** Calls of withStockWasmKernels in progress; the last one to end restores this project's. */
let stockDepth = 0

/** Registers `kernel` on wasm in place of the stock kernel of that name, if there is one. */
function install(kernel: tf.KernelConfig): void {
  const stock = tf.getKernel(kernel.kernelName, 'wasm')
  if (stock !== undefined) tf.unregisterKernel(kernel.kernelName, 'wasm')
  tf.registerKernel(kernel)
  stockKernels.set(kernel.kernelName, stock)
  projectKernels.set(kernel.kernelName, kernel)
}

/** Registers `kernels` on wasm in place of whatever is registered under their names. */
function registerEach(kernels: Map<string, tf.KernelConfig | undefined>): void {
  for (const [name, kernel] of kernels) {
    if (tf.getKernel(name, 'wasm') !== undefined) tf.unregisterKernel(name, 'wasm')
    if (kernel !== undefined) tf.registerKernel(kernel)
  }
}

/**
 * Runs `task` with tfjs-backend-wasm's stock kernels in place of this project's, then puts this
 * project's back. The training benchmark times a bare model.fit and matMul with it. The stock
 * backend lacks Conv2DBackpropFilter, so a convolutional model cannot train during `task`.
 */
export async function withStockWasmKernels<T>(task: () => Promise<T> | T): Promise<T> {
  if (stockDepth === 0) registerEach(stockKernels)
  stockDepth++
  try {
    return await task()
  } finally {
    stockDepth--
    if (stockDepth === 0) registerEach(projectKernels)
  }
}

let matMulRegistered = false
let filterGradientRegistered = false
let inputGradientRegistered = false

/**
 * Registers every kernel replacement and addition this project makes for the wasm backend:
 * BatchMatMul, Conv2DBackpropFilter and Conv2DBackpropInput. Call it after the wasm backend
 * loads. It skips a kernel whose wasm building blocks are not registered.
 */
export function registerWasmKernels(): void {
  registerWasmMatMulFix()
  registerWasmConv2DBackpropFilter()
  registerWasmConv2DBackpropInput()
}

/**
 * Cost of xnnpack packing one float of the right-hand operand, in units of one float that the
 * wasm Transpose kernel copies. Measured on a 2-core AMD EPYC machine (tfjs-backend-wasm 4.22,
 * Node 22): 32x784 by 784x200 with a new right operand took 0.94 ms, and 0.66 ms as
 * (200x784 by 784x32)^T, where a transpose of 784x200 took 0.15 ms.
 */
const PACK_COST = 3

/**
 * Replaces the wasm BatchMatMul kernel. tfjs-backend-wasm 4.22 sends a product to xnnpack only
 * when neither operand is transposed and there is one batch. xnnpack then packs the right
 * operand into a new operator, which it caches by tensor. Every other product runs a scalar
 * loop at about a tenth of the speed, and the backward pass of every dense layer multiplies by
 * transposes. This kernel transposes operands explicitly, so xnnpack runs every product of one
 * batch. It also picks between C = A B and C = (B^T A^T)^T, whichever copies and packs fewer
 * floats. Training packs new weights at every step, and for 32 images by a 784x200 layer,
 * packing the 32x784 input instead is faster.
 */
export function registerWasmMatMulFix(): void {
  if (matMulRegistered) return
  const original = tf.getKernel('BatchMatMul', 'wasm')
  const transpose = tf.getKernel('Transpose', 'wasm')
  const fill = tf.getKernel('Fill', 'wasm')
  if (original === undefined || transpose === undefined || fill === undefined) return
  install({
    ...original,
    kernelFunc: (args) => {
      const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo }
      const attrs = args.attrs as { transposeA: boolean; transposeB: boolean }
      const backend = args.backend as tf.KernelBackend
      const swapLastTwo = (sequence: KernelSequence, x: tf.TensorInfo): tf.TensorInfo => {
        const rank = x.shape.length
        const perm = [...Array(rank - 2).keys(), rank - 1, rank - 2]
        return sequence.run(transpose, { x }, { perm })
      }
      const multiply = (left: tf.TensorInfo, right: tf.TensorInfo): tf.TensorInfo =>
        original.kernelFunc({
          ...args,
          inputs: { a: left, b: right },
          attrs: { ...attrs, transposeA: false, transposeB: false },
        }) as tf.TensorInfo
      const { m, k, n } = productSizes(a, b, attrs.transposeA, attrs.transposeB)
      if (k === 0) {
        // An empty sum is 0. xnnpack rejects an empty inner dimension and writes nothing.
        const batch = tf.backend_util.assertAndGetBroadcastShape(
          a.shape.slice(0, -2),
          b.shape.slice(0, -2),
        )
        const shape = [...batch, m, n]
        return fill.kernelFunc({
          backend,
          inputs: {},
          attrs: { shape, value: 0, dtype: 'float32' },
        })
      }
      if (swapPays(a, b, attrs.transposeA, attrs.transposeB)) {
        // C^T = B^T A^T: B^T is B as stored when transposeB is set, and A^T likewise.
        return composite(backend, (sequence) => {
          const left = attrs.transposeB ? b : swapLastTwo(sequence, b)
          const right = attrs.transposeA ? a : swapLastTwo(sequence, a)
          const product = multiply(left, right)
          sequence.adopt(product)
          return swapLastTwo(sequence, product)
        })
      }
      if (!attrs.transposeA && !attrs.transposeB) return original.kernelFunc(args)
      return composite(backend, (sequence) => {
        const left = attrs.transposeA ? swapLastTwo(sequence, a) : a
        const right = attrs.transposeB ? swapLastTwo(sequence, b) : b
        return sequence.adopt(multiply(left, right))
      })
    },
  })
  matMulRegistered = true
}

/** Returns the sizes of the product [m, k] x [k, n] that a BatchMatMul computes per batch. */
function productSizes(
  a: tf.TensorInfo,
  b: tf.TensorInfo,
  transposeA: boolean,
  transposeB: boolean,
): { m: number; k: number; n: number } {
  const fromEnd = (shape: number[], offset: number) => shape[shape.length - offset] as number
  return {
    m: fromEnd(a.shape, transposeA ? 1 : 2),
    k: fromEnd(a.shape, transposeA ? 2 : 1),
    n: fromEnd(b.shape, transposeB ? 2 : 1),
  }
}

/**
 * Returns true when C = (B^T A^T)^T copies and packs fewer floats than C = A B, for a product
 * of one batch. A transposed operand costs a copy in the direct form and none in the swapped one.
 * NOTE: the count treats B's packing as new each time, but xnnpack keeps it for an unchanged B.
 * So repeated inference on a few rows runs slower than the stock kernel (one image by a 784x200
 * layer: 0.35 against 0.05 ms). Training changes the weights at every step, so it gains.
 */
function swapPays(
  a: tf.TensorInfo,
  b: tf.TensorInfo,
  transposeA: boolean,
  transposeB: boolean,
): boolean {
  const batches = (shape: number[]) => shape.slice(0, -2).reduce((product, d) => product * d, 1)
  if (batches(a.shape) !== 1 || batches(b.shape) !== 1) return false
  const { m, k, n } = productSizes(a, b, transposeA, transposeB)
  const direct = (transposeA ? m * k : 0) + (transposeB ? k * n : 0) + PACK_COST * k * n
  const swapped = (transposeB ? 0 : k * n) + (transposeA ? 0 : m * k) + PACK_COST * m * k + m * n
  return swapped < direct
}

/**
 * Runs wasm kernels on one backend and disposes every intermediate result at the end, so a
 * composite kernel leaks no wasm memory when one of its steps throws.
 */
class KernelSequence {
  private readonly backend: tf.KernelBackend
  private readonly results: tf.TensorInfo[] = []

  constructor(backend: tf.KernelBackend) {
    this.backend = backend
  }

  /** Takes a result that the caller computed, so that it is disposed with the others. */
  adopt(result: tf.TensorInfo): tf.TensorInfo {
    this.results.push(result)
    return result
  }

  run(kernel: tf.KernelConfig, inputs: object, attrs: object): tf.TensorInfo {
    const result = kernel.kernelFunc({
      inputs: inputs as tf.NamedTensorInfoMap,
      attrs: attrs as tf.NamedAttrMap,
      backend: this.backend,
    }) as tf.TensorInfo
    this.results.push(result)
    return result
  }

  /** Disposes every result except `output`, which the caller returns. */
  disposeAllBut(output?: tf.TensorInfo): void {
    for (const result of this.results) {
      if (result !== output) this.backend.disposeData(result.dataId)
    }
  }
}

/** Looks up wasm kernels by name; returns undefined when any of them is not registered. */
function wasmKernels<Name extends string>(
  names: readonly Name[],
): Record<Name, tf.KernelConfig> | undefined {
  const kernels = {} as Record<Name, tf.KernelConfig>
  for (const name of names) {
    const kernel = tf.getKernel(name, 'wasm')
    if (kernel === undefined) return undefined
    kernels[name] = kernel
  }
  return kernels
}

/**
 * Runs the body of a composite kernel: `build` gets a KernelSequence and returns the output,
 * and every other intermediate result is disposed, also when a step throws.
 */
function composite(
  backend: tf.KernelBackend,
  build: (sequence: KernelSequence) => tf.TensorInfo,
): tf.TensorInfo {
  const sequence = new KernelSequence(backend)
  let output: tf.TensorInfo | undefined
  try {
    output = build(sequence)
    return output
  } finally {
    sequence.disposeAllBut(output)
  }
}

/**
 * Registers Conv2DBackpropFilter for the wasm backend, which tfjs-backend-wasm 4.22 lacks, so
 * the gradient of a convolution's filter (and so any CNN) can train there. It accepts every
 * attribute the kernel declares: any strides, 'same', 'valid', a number or explicit padding,
 * every dimRoundingMode, and both NHWC and NCHW. The kernel has no dilations attribute because
 * tfjs-core 4.22 computes no conv2d gradient for dilations above 1.
 *
 * The filter gradient is itself a convolution, dW[i, j, c, k] = sum over (b, p, q) of
 * x[b, p * strideH + i - top, q * strideW + j - left, c] * dy[b, p, q, k]: the input, with
 * channels as its batch and batch as its channels, convolved by dy (shaped [outH, outW, batch,
 * outChannels] and dilated by the strides) at stride 1. That runs in the wasm Conv2D kernel.
 */
export function registerWasmConv2DBackpropFilter(): void {
  if (filterGradientRegistered) return
  if (tf.getKernel('Conv2DBackpropFilter', 'wasm') !== undefined) {
    filterGradientRegistered = true
    return
  }
  const kernels = wasmKernels(['Conv2D', 'Transpose', 'Slice', 'Fill'] as const)
  if (kernels === undefined) return
  install({
    kernelName: 'Conv2DBackpropFilter',
    backendName: 'wasm',
    kernelFunc: (args) => {
      const { x, dy } = args.inputs as { x: tf.TensorInfo; dy: tf.TensorInfo }
      const attrs = args.attrs as unknown as Conv2DBackpropFilterAttrs
      const info = forwardConvolution(x.shape, attrs.filterShape, dy.shape, attrs)
      const channelsLast = info.dataFormat === 'channelsLast'
      const rows = windowRange(
        info.inHeight,
        info.outHeight,
        info.strideHeight,
        info.filterHeight,
        info.padInfo.top,
      )
      const columns = windowRange(
        info.inWidth,
        info.outWidth,
        info.strideWidth,
        info.filterWidth,
        info.padInfo.left,
      )
      return composite(args.backend as tf.KernelBackend, (sequence) => {
        if (rows === undefined || columns === undefined) {
          return sequence.run(
            kernels.Fill,
            {},
            { shape: attrs.filterShape, value: 0, dtype: 'float32' },
          )
        }
        // [inChannels, height, width, batch]: channels act as the batch of the convolution.
        let input = sequence.run(
          kernels.Transpose,
          { x },
          { perm: channelsLast ? [3, 1, 2, 0] : [1, 2, 3, 0] },
        )
        if (rows.keep < info.inHeight || columns.keep < info.inWidth) {
          const size = [info.inChannels, rows.keep, columns.keep, info.batchSize]
          input = sequence.run(kernels.Slice, { x: input }, { begin: [0, 0, 0, 0], size })
        }
        // [outHeight, outWidth, batch, outChannels]: the filter of the convolution.
        const filter = sequence.run(
          kernels.Transpose,
          { x: dy },
          { perm: channelsLast ? [1, 2, 0, 3] : [2, 3, 0, 1] },
        )
        const product = sequence.run(
          kernels.Conv2D,
          { x: input, filter },
          {
            strides: [1, 1],
            pad: [
              [0, 0],
              [rows.before, rows.after],
              [columns.before, columns.after],
              [0, 0],
            ],
            dataFormat: 'NHWC',
            dilations: [info.strideHeight, info.strideWidth],
          },
        )
        // [inChannels, filterHeight, filterWidth, outChannels] to the filter's layout.
        return sequence.run(kernels.Transpose, { x: product }, { perm: [1, 2, 0, 3] })
      })
    },
  })
  filterGradientRegistered = true
}

/**
 * Rows (or columns) of x that the forward windows read, and the zero padding the filter
 * gradient's convolution needs around them. The windows cover padded rows 0 to
 * (outSize - 1) * stride + filterSize - 1, and padded row r is row r - padBefore of x.
 * Returns undefined when every window lies in the padding, so the gradient is zero.
 */
function windowRange(
  inSize: number,
  outSize: number,
  stride: number,
  filterSize: number,
  padBefore: number,
): { keep: number; before: number; after: number } | undefined {
  const needed = (outSize - 1) * stride + filterSize
  const keep = Math.min(inSize, needed - padBefore)
  if (outSize <= 0 || keep <= 0) return undefined
  return { keep, before: padBefore, after: needed - padBefore - keep }
}

/**
 * Computes the forward convolution's geometry from a gradient kernel's attributes and checks
 * that dy has the shape that convolution outputs.
 */
function forwardConvolution(
  xShape: number[],
  filterShape: number[],
  dyShape: number[],
  attrs: {
    strides: number | Pair
    pad: Conv2DBackpropFilterAttrs['pad']
    dataFormat: 'NHWC' | 'NCHW'
    dimRoundingMode?: 'floor' | 'round' | 'ceil'
  },
): tf.backend_util.Conv2DInfo {
  if (xShape.length !== 4 || dyShape.length !== 4 || filterShape.length !== 4) {
    throw new Error(
      `Expected x, dy and filter of rank 4 in a wasm conv2d gradient, got shapes [${xShape}], [${dyShape}] and [${filterShape}]`,
    )
  }
  const info = tf.backend_util.computeConv2DInfo(
    xShape as Shape4,
    filterShape as Shape4,
    attrs.strides,
    1,
    attrs.pad,
    attrs.dimRoundingMode,
    false,
    tf.backend_util.convertConv2DDataFormat(attrs.dataFormat),
  )
  const expected =
    info.dataFormat === 'channelsLast'
      ? [info.batchSize, info.outHeight, info.outWidth, info.outChannels]
      : [info.batchSize, info.outChannels, info.outHeight, info.outWidth]
  if (expected.some((size, axis) => size !== dyShape[axis])) {
    throw new Error(
      `Expected dy of shape [${expected}] for x of shape [${xShape}] and filter [${filterShape}] in a wasm conv2d gradient, got [${dyShape}]`,
    )
  }
  return info
}

/**
 * Replaces the wasm Conv2DBackpropInput kernel, a direct loop in tfjs-backend-wasm 4.22, with a
 * convolution in the wasm Conv2D kernel (XNNPACK). Measured on a 2-core AMD EPYC machine
 * (Node 22): for dy of [32, 14, 14, 64] and a 5x5x32x64 filter the loop takes about 340 ms and
 * this kernel about 40 ms. It accepts the same attributes as the filter gradient above.
 *
 * The input gradient is dx[b, h, w, c] = sum over (i, j, k) of dy'[b, h + top - i,
 * w + left - j, k] * W[i, j, c, k], where dy' is dy with stride - 1 zeros inserted after every
 * row and column: a stride-1 convolution of dy' with the filter flipped in both spatial axes
 * and its channel axes swapped.
 */
export function registerWasmConv2DBackpropInput(): void {
  if (inputGradientRegistered) return
  const kernels = wasmKernels([
    'Conv2DBackpropInput',
    'Conv2D',
    'Transpose',
    'Reverse',
    'Reshape',
    'PadV2',
    'Slice',
    'Fill',
  ] as const)
  if (kernels === undefined) return
  install({
    ...kernels.Conv2DBackpropInput,
    kernelFunc: (args) => {
      const { dy, filter } = args.inputs as { dy: tf.TensorInfo; filter: tf.TensorInfo }
      const attrs = args.attrs as unknown as Conv2DBackpropInputAttrs
      const info = forwardConvolution(attrs.inputShape, filter.shape, dy.shape, attrs)
      const channelsLast = info.dataFormat === 'channelsLast'
      const { strideHeight, strideWidth, batchSize, outChannels } = info
      const rows = inputWindowRange(
        info.inHeight,
        info.outHeight,
        strideHeight,
        info.filterHeight,
        info.padInfo.top,
      )
      const columns = inputWindowRange(
        info.inWidth,
        info.outWidth,
        strideWidth,
        info.filterWidth,
        info.padInfo.left,
      )
      return composite(args.backend as tf.KernelBackend, (sequence) => {
        if (rows === undefined || columns === undefined) {
          return sequence.run(
            kernels.Fill,
            {},
            { shape: attrs.inputShape, value: 0, dtype: 'float32' },
          )
        }
        let gradient = channelsLast
          ? dy
          : sequence.run(kernels.Transpose, { x: dy }, { perm: [0, 2, 3, 1] })
        if (strideHeight > 1) {
          // [batch * outHeight, 1, outWidth, k] padded to [batch * outHeight, strideHeight, ...].
          const shape = [batchSize * info.outHeight, 1, info.outWidth, outChannels]
          const split = sequence.run(kernels.Reshape, { x: gradient }, { shape })
          const spread = sequence.run(
            kernels.PadV2,
            { x: split },
            {
              paddings: [
                [0, 0],
                [0, strideHeight - 1],
                [0, 0],
                [0, 0],
              ],
              constantValue: 0,
            },
          )
          const merged = [batchSize, info.outHeight * strideHeight, info.outWidth, outChannels]
          gradient = sequence.run(kernels.Reshape, { x: spread }, { shape: merged })
        }
        if (strideWidth > 1) {
          const height = info.outHeight * strideHeight
          const shape = [batchSize * height, info.outWidth, 1, outChannels]
          const split = sequence.run(kernels.Reshape, { x: gradient }, { shape })
          const spread = sequence.run(
            kernels.PadV2,
            { x: split },
            {
              paddings: [
                [0, 0],
                [0, 0],
                [0, strideWidth - 1],
                [0, 0],
              ],
              constantValue: 0,
            },
          )
          const merged = [batchSize, height, info.outWidth * strideWidth, outChannels]
          gradient = sequence.run(kernels.Reshape, { x: spread }, { shape: merged })
        }
        if (
          rows.begin > 0 ||
          columns.begin > 0 ||
          rows.size < info.outHeight * strideHeight ||
          columns.size < info.outWidth * strideWidth
        ) {
          gradient = sequence.run(
            kernels.Slice,
            { x: gradient },
            {
              begin: [0, rows.begin, columns.begin, 0],
              size: [batchSize, rows.size, columns.size, outChannels],
            },
          )
        }
        const flipped = sequence.run(kernels.Reverse, { x: filter }, { dims: [0, 1] })
        const swapped = sequence.run(kernels.Transpose, { x: flipped }, { perm: [0, 1, 3, 2] })
        const product = sequence.run(
          kernels.Conv2D,
          { x: gradient, filter: swapped },
          {
            strides: [1, 1],
            pad: [
              [0, 0],
              [rows.before, rows.after],
              [columns.before, columns.after],
              [0, 0],
            ],
            dataFormat: 'NHWC',
            dilations: [1, 1],
          },
        )
        if (channelsLast) return product
        return sequence.run(kernels.Transpose, { x: product }, { perm: [0, 3, 1, 2] })
      })
    },
  })
  inputGradientRegistered = true
}

/**
 * Rows (or columns) of the zero-spread dy that the input gradient's convolution reads, and its
 * zero padding. Output row h reads spread rows h + padBefore - filterSize + 1 to h + padBefore;
 * the spread dy has outSize * stride rows. Returns undefined when no output row reads a row of
 * dy, so the gradient is zero.
 */
function inputWindowRange(
  inSize: number,
  outSize: number,
  stride: number,
  filterSize: number,
  padBefore: number,
): { begin: number; size: number; before: number; after: number } | undefined {
  const start = padBefore - filterSize + 1
  const end = inSize + padBefore
  const begin = Math.max(0, start)
  const stop = Math.min(outSize * stride, end)
  if (stop <= begin) return undefined
  return { begin, size: stop - begin, before: begin - start, after: end - stop }
}
