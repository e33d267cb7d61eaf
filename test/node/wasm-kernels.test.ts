import * as tf from '@tensorflow/tfjs'
import '@tensorflow/tfjs-backend-wasm'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { registerWasmKernels, withStockWasmKernels } from '../../node/wasm-kernels.ts'

type Pair = [number, number]
type Shape4 = [number, number, number, number]
type Padding = 'same' | 'valid' | number | [Pair, Pair, Pair, Pair]
type Rounding = 'floor' | 'round' | 'ceil'

interface ConvCase {
  x: Shape4
  filter: Shape4
  strides: number | Pair
  pad: Padding
  dataFormat: 'NHWC' | 'NCHW'
  dimRoundingMode?: Rounding
}

/** Relative error bound against the pure-JS 'cpu' backend, in the L2 norm. */
const MAX_RELATIVE_ERROR = 1e-5

function describeCase(c: ConvCase): string {
  const rounding = c.dimRoundingMode === undefined ? '' : ` ${c.dimRoundingMode}`
  return `x ${c.x} filter ${c.filter} strides ${c.strides} pad ${JSON.stringify(c.pad)} ${c.dataFormat}${rounding}`
}

/** Shape of dy for the forward convolution of a case. */
function outputShape(c: ConvCase): Shape4 {
  const info = tf.backend_util.computeConv2DInfo(
    c.x,
    c.filter,
    c.strides,
    1,
    c.pad,
    c.dimRoundingMode,
    false,
    tf.backend_util.convertConv2DDataFormat(c.dataFormat),
  )
  return c.dataFormat === 'NHWC'
    ? [info.batchSize, info.outHeight, info.outWidth, info.outChannels]
    : [info.batchSize, info.outChannels, info.outHeight, info.outWidth]
}

/** Runs both gradient kernels of one case on the active backend, from seeded random inputs. */
function gradients(c: ConvCase): { filter: Float32Array; input: Float32Array } {
  const attrs: tf.NamedAttrMap = { strides: c.strides, pad: c.pad, dataFormat: c.dataFormat }
  if (c.dimRoundingMode !== undefined) attrs.dimRoundingMode = c.dimRoundingMode
  const x = tf.randomUniform(c.x, -1, 1, 'float32', 11)
  const filter = tf.randomUniform(c.filter, -1, 1, 'float32', 12)
  const dy = tf.randomUniform(outputShape(c), -1, 1, 'float32', 13)
  try {
    const filterGradient = tf.engine().runKernel(
      'Conv2DBackpropFilter',
      { x, dy },
      {
        ...attrs,
        filterShape: c.filter,
      },
    ) as tf.Tensor
    const inputGradient = tf.engine().runKernel(
      'Conv2DBackpropInput',
      { dy, filter },
      {
        ...attrs,
        inputShape: c.x,
      },
    ) as tf.Tensor
    const result = {
      filter: filterGradient.dataSync() as Float32Array,
      input: inputGradient.dataSync() as Float32Array,
    }
    tf.dispose([filterGradient, inputGradient])
    return result
  } finally {
    tf.dispose([x, filter, dy])
  }
}

/** ||actual - expected|| / ||expected|| in the L2 norm, or ||actual|| when expected is zero. */
function relativeError(actual: Float32Array, expected: Float32Array): number {
  let difference = 0
  let reference = 0
  for (let i = 0; i < expected.length; i++) {
    difference += ((actual[i] as number) - (expected[i] as number)) ** 2
    reference += (expected[i] as number) ** 2
  }
  return reference === 0 ? Math.sqrt(difference) : Math.sqrt(difference / reference)
}

async function compareWithCpu(c: ConvCase): Promise<{ filter: number; input: number }> {
  await tf.setBackend('cpu')
  const expected = gradients(c)
  await tf.setBackend('wasm')
  const actual = gradients(c)
  expect(actual.filter.length).toBe(expected.filter.length)
  expect(actual.input.length).toBe(expected.input.length)
  return {
    filter: relativeError(actual.filter, expected.filter),
    input: relativeError(actual.input, expected.input),
  }
}

function wasmDataIds(): number {
  return (tf.findBackend('wasm') as tf.KernelBackend).numDataIds()
}

const explicitPadding: [Pair, Pair, Pair, Pair] = [
  [0, 0],
  [1, 2],
  [0, 3],
  [0, 0],
]

/** Filter sizes x strides x paddings x batch sizes on a 9x10 NHWC input. */
const GRID: ConvCase[] = []
for (const [height, width, inChannels, outChannels] of [
  [1, 1, 2, 3],
  [3, 3, 3, 4],
  [5, 4, 2, 3],
] as const) {
  for (const strides of [1, 2, [2, 3]] as (number | Pair)[]) {
    for (const pad of ['same', 'valid', 1, explicitPadding] as Padding[]) {
      for (const batch of [1, 3]) {
        GRID.push({
          x: [batch, 9, 10, inChannels],
          filter: [height, width, inChannels, outChannels],
          strides,
          pad,
          dataFormat: 'NHWC',
        })
      }
    }
  }
}

/** Rounding modes (which tfjs allows with numeric padding only), NCHW and the cnn's layers. */
const SPECIAL: ConvCase[] = [
  ...(['floor', 'round', 'ceil'] as const).flatMap((dimRoundingMode): ConvCase[] => [
    {
      x: [2, 8, 7, 2],
      filter: [3, 3, 2, 3],
      strides: 2,
      pad: 1,
      dataFormat: 'NHWC',
      dimRoundingMode,
    },
    {
      x: [2, 10, 9, 2],
      filter: [4, 2, 2, 3],
      strides: [3, 2],
      pad: 2,
      dataFormat: 'NHWC',
      dimRoundingMode,
    },
  ]),
  { x: [2, 3, 9, 10], filter: [3, 3, 3, 4], strides: 1, pad: 'same', dataFormat: 'NCHW' },
  { x: [2, 3, 9, 10], filter: [5, 4, 3, 2], strides: [2, 3], pad: 'valid', dataFormat: 'NCHW' },
  {
    x: [3, 2, 7, 8],
    filter: [2, 3, 2, 3],
    strides: 2,
    pad: [
      [0, 0],
      [0, 0],
      [2, 1],
      [1, 0],
    ],
    dataFormat: 'NCHW',
  },
  // Padding wider than the filter, so some windows lie wholly in it.
  { x: [2, 5, 5, 2], filter: [2, 2, 2, 3], strides: 3, pad: 4, dataFormat: 'NHWC' },
  // The layers of the 'cnn' model, the second at batch 4 to keep the cpu reference short.
  { x: [32, 28, 28, 1], filter: [5, 5, 1, 32], strides: 1, pad: 'same', dataFormat: 'NHWC' },
  { x: [4, 14, 14, 32], filter: [5, 5, 32, 64], strides: 1, pad: 'same', dataFormat: 'NHWC' },
]

describe('wasm conv2d gradient kernels', () => {
  let tensorsBefore = 0
  let dataIdsBefore = 0
  let worst = { filter: 0, input: 0 }

  beforeAll(async () => {
    await tf.setBackend('wasm')
    await tf.ready()
    registerWasmKernels()
    await tf.setBackend('cpu')
    await tf.ready()
  })

  afterAll(() => {
    console.log(
      `wasm vs cpu, largest relative error (L2): filter gradient ${worst.filter.toExponential(2)}, input gradient ${worst.input.toExponential(2)}, bound ${MAX_RELATIVE_ERROR}`,
    )
  })

  beforeEach(() => {
    tensorsBefore = tf.memory().numTensors
    dataIdsBefore = wasmDataIds()
  })

  afterEach(() => {
    expect(tf.memory().numTensors).toBe(tensorsBefore)
    expect(wasmDataIds()).toBe(dataIdsBefore)
  })

  it.each(GRID.map((c) => [describeCase(c), c] as const))('matches cpu: %s', async (_name, c) => {
    const error = await compareWithCpu(c)
    worst = {
      filter: Math.max(worst.filter, error.filter),
      input: Math.max(worst.input, error.input),
    }
    expect(error.filter).toBeLessThan(MAX_RELATIVE_ERROR)
    expect(error.input).toBeLessThan(MAX_RELATIVE_ERROR)
  })

  it.each(SPECIAL.map((c) => [describeCase(c), c] as const))(
    'matches cpu: %s',
    async (_name, c) => {
      const error = await compareWithCpu(c)
      worst = {
        filter: Math.max(worst.filter, error.filter),
        input: Math.max(worst.input, error.input),
      }
      expect(error.filter).toBeLessThan(MAX_RELATIVE_ERROR)
      expect(error.input).toBeLessThan(MAX_RELATIVE_ERROR)
    },
  )

  it('gives conv2d gradients equal to cpu through tf.grads', async () => {
    const run = (): Float32Array[] =>
      tf.tidy(() => {
        const x = tf.randomUniform([4, 12, 12, 3], -1, 1, 'float32', 21) as tf.Tensor4D
        const filter = tf.randomUniform([3, 3, 3, 5], -1, 1, 'float32', 22) as tf.Tensor4D
        const loss = (a: tf.Tensor, b: tf.Tensor) =>
          tf
            .conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 2, 'same')
            .square()
            .sum()
        return tf
          .grads(loss)([x, filter])
          .map((g) => g.dataSync() as Float32Array)
      })
    await tf.setBackend('cpu')
    const expected = run()
    await tf.setBackend('wasm')
    const actual = run()
    expect(relativeError(actual[0] as Float32Array, expected[0] as Float32Array)).toBeLessThan(
      MAX_RELATIVE_ERROR,
    )
    expect(relativeError(actual[1] as Float32Array, expected[1] as Float32Array)).toBeLessThan(
      MAX_RELATIVE_ERROR,
    )
  })

  it('rejects dy of the wrong shape', async () => {
    await tf.setBackend('wasm')
    const x = tf.zeros([1, 6, 6, 2])
    const dy = tf.zeros([1, 5, 5, 3])
    const filter = tf.zeros([3, 3, 2, 3])
    const attrs = { strides: 1, pad: 'same', dataFormat: 'NHWC' }
    try {
      expect(() =>
        tf
          .engine()
          .runKernel('Conv2DBackpropFilter', { x, dy }, { ...attrs, filterShape: [3, 3, 2, 3] }),
      ).toThrow(/Expected dy of shape \[1,6,6,3\]/)
      expect(() =>
        tf
          .engine()
          .runKernel('Conv2DBackpropInput', { dy, filter }, { ...attrs, inputShape: [1, 6, 6, 2] }),
      ).toThrow(/Expected dy of shape \[1,6,6,3\]/)
    } finally {
      tf.dispose([x, dy, filter])
    }
  })
})

describe('wasm BatchMatMul replacement', () => {
  /** [a shape, b shape, transposeA, transposeB]: direct and swapped forms, batches, transposes. */
  const cases: [number[], number[], boolean, boolean][] = [
    [[32, 784], [784, 200], false, false],
    [[2000, 784], [784, 200], false, false],
    [[32, 784], [32, 200], true, false],
    [[32, 200], [10, 200], false, true],
    [[200, 32], [10, 200], true, true],
    [[1, 5, 3], [1, 3, 7], false, false],
    [[3, 4, 5], [3, 6, 5], false, true],
    [[2, 5, 4], [2, 5, 6], true, false],
    [[0, 4], [0, 3], true, false],
    [[2, 0], [0, 3], false, false],
  ]

  beforeAll(async () => {
    await tf.setBackend('wasm')
    await tf.ready()
    registerWasmKernels()
  })

  it.each(
    cases.map((c) => [`${c[0]} x ${c[1]} transposeA ${c[2]} transposeB ${c[3]}`, c] as const),
  )('matches cpu: %s', async (_name, [aShape, bShape, transposeA, transposeB]) => {
    const random = (shape: number[], seed: number) =>
      tf.randomUniform(shape, -1, 1, 'float32', seed)
    const product = () =>
      tf.tidy(() =>
        tf.matMul(random(aShape, 1), random(bShape, 2), transposeA, transposeB).dataSync(),
      ) as Float32Array
    await tf.setBackend('cpu')
    const expected = product()
    await tf.setBackend('wasm')
    const dataIdsBefore = wasmDataIds()
    const actual = product()
    expect(wasmDataIds()).toBe(dataIdsBefore)
    expect(actual.length).toBe(expected.length)
    expect(relativeError(actual, expected)).toBeLessThan(MAX_RELATIVE_ERROR)
  })

  it('restores kernels after nested sections', async () => {
    const ours = tf.getKernel('BatchMatMul', 'wasm')
    let inside: tf.KernelConfig | undefined
    const section = () =>
      withStockWasmKernels(async () => {
        await Promise.resolve()
        inside = tf.getKernel('BatchMatMul', 'wasm')
      })
    await Promise.all([section(), section()])
    expect(inside).not.toBe(ours)
    expect(tf.getKernel('BatchMatMul', 'wasm')).toBe(ours)
    await expect(
      withStockWasmKernels(() => {
        throw new Error('task failed')
      }),
    ).rejects.toThrow('task failed')
    expect(tf.getKernel('BatchMatMul', 'wasm')).toBe(ours)
  })
})
