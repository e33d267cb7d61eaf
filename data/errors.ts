/**
 * Errors raised while reading MNIST and splitting it into shards. Each class sets both a static
 * and an instance `name`, so callers can match on `error.name` after a bundler renames classes.
 */

/** Bytes that are not a valid IDX file of unsigned-byte labels or images. */
export class IdxFormatError extends Error {
  static override name = 'IdxFormatError'

  constructor(message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'IdxFormatError'
  }
}

/** One or more of the four MNIST files that are absent from the data folder. */
export class MnistNotFoundError extends Error {
  static override name = 'MnistNotFoundError'

  constructor(message: string) {
    super(message)
    this.name = 'MnistNotFoundError'
  }
}

/** An MNIST file whose SHA-256 digest differs from the digest of the canonical file. */
export class MnistDigestError extends Error {
  static override name = 'MnistDigestError'

  constructor(message: string) {
    super(message)
    this.name = 'MnistDigestError'
  }
}

/** An invalid partition spec, or shard options that cannot split the training set. */
export class PartitionError extends Error {
  static override name = 'PartitionError'

  constructor(message: string) {
    super(message)
    this.name = 'PartitionError'
  }
}
