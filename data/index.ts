export { IdxFormatError, MnistDigestError, MnistNotFoundError, PartitionError } from './errors.ts'
export type { IdxImages, IdxLabels } from './idx.ts'
export {
  gunzipIfCompressed,
  IDX_IMAGES_MAGIC,
  IDX_LABELS_MAGIC,
  parseIdx,
  readIdxFile,
} from './idx.ts'
export type { LoadMnistOptions, Mnist, MnistFileName, MnistSplit } from './mnist.ts'
export { defaultMnistDir, loadMnist, MNIST_FILES, MNIST_SHA256 } from './mnist.ts'
export type { Partition, ShardOptions, ShardSizeOptions } from './partition.ts'
export {
  CLASS_COUNT,
  formatPartition,
  parsePartition,
  shardIndices,
  shardSizes,
} from './partition.ts'
export {
  deriveSeed,
  Random,
  sampleDirichlet,
  sampleGamma,
  sampleLogGamma,
  shuffleInPlace,
} from './random.ts'
