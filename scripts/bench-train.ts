// npm run bench:train: training speed per model, backend and batch size.
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'
import * as tf from '@tensorflow/tfjs'
import { loadMnist, type Mnist } from '../data/index.ts'
import { type BackendName, selectBackend } from '../node/backend.ts'
import { buildModel } from '../node/model.ts'
import type { ModelName } from '../node/spec.ts'
import type { Examples } from '../node/trainer.ts'
import { withStockWasmKernels } from '../node/wasm-kernels.ts'
import { runBenchmark } from './lib/bench-main.ts'
import type { BenchProgress } from './lib/bench-progress.ts'
import {
  firstExamples,
  forwardFlopsPerSample,
  layerProducts,
  matMulGflops,
  timeModelFit,
  timeTrainer,
} from './lib/bench-train-measure.ts'
import {
  parseTrainBenchOptions,
  TRAIN_BENCH_HELP,
  type TrainBenchOptions,
  TrainBenchUsageError,
} from './lib/bench-train-options.ts'
import {
  type BackendStatus,
  type EpochTiming,
  evaluateTrainChecks,
  formatTrainReport,
  type TrainBenchReport,
  type TrainCell,
} from './lib/bench-train-report.ts'
import { writeFileAtomic } from './lib/write-atomic.ts'

/** Loads every requested backend once and records why each one that failed could not load. */
async function loadBackends(names: BackendName[]): Promise<BackendStatus[]> {
  const statuses: BackendStatus[] = []
  for (const name of names) {
    try {
      await selectBackend(name)
      statuses.push({ name, loaded: true })
    } catch (error) {
      statuses.push({ name, loaded: false, reason: (error as Error).message })
    }
  }
  return statuses
}

interface CellRequest {
  model: ModelName
  backend: BackendName
  batchSize: number
  examples: Examples
  seed: number
  repetitions: number
  signal: AbortSignal
}

function faster(best: EpochTiming | undefined, timing: EpochTiming): EpochTiming {
  return best === undefined || timing.samplesPerSecond > best.samplesPerSecond ? timing : best
}

/**
 * Measures one model on one backend at one batch size: the matMul rate, Trainer.train, and
 * model.fit with this project's kernels and with the backend's stock ones.
 */
async function measureCell(request: CellRequest): Promise<TrainCell> {
  const { model, backend, batchSize, examples, seed } = request
  await selectBackend(backend)
  const tensorsBefore = tf.memory().numTensors

  const shapeModel = buildModel(model, seed)
  const products = layerProducts(shapeModel, batchSize)
  shapeModel.dispose()
  const forwardFlops = forwardFlopsPerSample(products, batchSize)
  // The bare rate is the stock kernel's: this project's BatchMatMul changes the product's form.
  const matMul =
    backend === 'wasm'
      ? await withStockWasmKernels(() => matMulGflops(products))
      : matMulGflops(products)
  // Only wasm has kernels of this project, and its stock kernels cannot train a convolution.
  const stockFitRuns = backend === 'wasm' && !model.startsWith('cnn')

  let trainer: EpochTiming | undefined
  let fit: EpochTiming | undefined
  let stockFit: EpochTiming | undefined
  for (let repetition = 0; repetition < request.repetitions; repetition++) {
    trainer = faster(trainer, await timeTrainer(model, batchSize, seed, examples, request.signal))
    fit = faster(fit, await timeModelFit(model, batchSize, seed, examples))
    if (stockFitRuns) {
      const timing = await withStockWasmKernels(() =>
        timeModelFit(model, batchSize, seed, examples),
      )
      stockFit = faster(stockFit, timing)
    }
  }
  if (trainer === undefined || fit === undefined) throw new Error('Expected repetitions >= 1')
  if (backend !== 'wasm') stockFit = fit

  const trainGflops = (3 * forwardFlops * trainer.samplesPerSecond) / 1e9
  return {
    model,
    backend,
    batchSize,
    samples: examples.count,
    trainer,
    fit,
    speedupOverFit: trainer.samplesPerSecond / fit.samplesPerSecond,
    stockFit: stockFit ?? null,
    speedupOverStockFit:
      stockFit === undefined ? null : trainer.samplesPerSecond / stockFit.samplesPerSecond,
    forwardMflopsPerSample: forwardFlops / 1e6,
    trainGflops,
    matMulGflops: matMul,
    matMulShare: trainGflops / matMul,
    leakedTensors: tf.memory().numTensors - tensorsBefore,
  }
}

/**
 * Measures every combination, backends innermost, so the figures that the checks compare
 * (wasm against cpu, Trainer against model.fit) are taken close together in time.
 */
async function measure(
  options: TrainBenchOptions,
  mnist: Mnist,
  loaded: BackendName[],
  progress: BenchProgress,
  signal: AbortSignal,
): Promise<TrainCell[]> {
  const examples = firstExamples(mnist, options.samples)
  const cpuExamples = firstExamples(mnist, options.cpuSamples)
  const cells: TrainCell[] = []
  const total = options.models.length * options.batchSizes.length * loaded.length
  for (const model of options.models) {
    for (const batchSize of options.batchSizes) {
      for (const backend of loaded) {
        signal.throwIfAborted()
        progress.show(
          `${cells.length + 1} of ${total}: ${model} on ${backend} at batch ${batchSize}`,
        )
        cells.push(
          await measureCell({
            model,
            backend,
            batchSize,
            examples: backend === 'cpu' ? cpuExamples : examples,
            seed: options.seed,
            repetitions: options.repetitions,
            signal,
          }),
        )
      }
    }
  }
  return cells
}

/** Measures every requested model, backend and batch size, then prints and writes the report. */
async function run(
  options: TrainBenchOptions,
  progress: BenchProgress,
  signal: AbortSignal,
): Promise<number> {
  progress.show('loading MNIST')
  const mnist = loadMnist()
  const createdAt = new Date().toISOString()
  progress.show('loading backends')
  const backends = await loadBackends(options.backends)
  const loaded = backends.filter((backend) => backend.loaded).map((backend) => backend.name)
  if (loaded.length === 0) {
    throw new TrainBenchUsageError(
      `None of the backends ${options.backends.join(', ')} could load: ${backends.map((b) => b.reason).join('; ')}`,
    )
  }
  const cells = await measure(options, mnist, loaded, progress, signal)
  progress.done()
  const { out, ...settings } = options
  const report: TrainBenchReport = {
    createdAt,
    nodeVersion: process.version,
    settings,
    backends,
    cells,
    checks: evaluateTrainChecks(cells),
  }
  mkdirSync(dirname(out), { recursive: true })
  writeFileAtomic(out, `${JSON.stringify(report, null, 2)}\n`)
  process.stdout.write(formatTrainReport(report, out))
  return 0
}

runBenchmark(
  { parse: parseTrainBenchOptions, help: TRAIN_BENCH_HELP, measure: run },
  process.argv.slice(2),
)
