import { type CodecSpec, decodeDelta, encodeDelta } from '../protocols/index.ts'

export interface EncodedDelta {
  /** The delta message as published. */
  bytes: Uint8Array
  /** The values the message carries, as receivers decode them. */
  sent: Float32Array[]
}

/**
 * Encodes a peer's deltas in the swarm's codec. With top-k, the values not sent are kept as a
 * residual and added to the next delta (error feedback), so no part of an update is lost over
 * rounds.
 */
export class DeltaEncoder {
  private readonly codec: CodecSpec
  private readonly specHash: Uint8Array
  private readonly shapes: number[][]
  private residual: Float32Array[] | undefined

  constructor(codec: CodecSpec, specHash: Uint8Array, shapes: number[][]) {
    this.codec = codec
    this.specHash = specHash
    this.shapes = shapes
  }

  /** Encodes `delta`, which it may change in place, for `round`. */
  encode(
    delta: Float32Array[],
    round: number,
    sampleCount: number,
    baseHash: string,
  ): EncodedDelta {
    const feedback = this.codec.name === 'topk'
    if (feedback && this.residual !== undefined) {
      for (const [i, values] of delta.entries()) {
        const carried = this.residual[i] as Float32Array
        for (let j = 0; j < values.length; j++) {
          values[j] = (values[j] as number) + (carried[j] as number)
        }
      }
    }
    const bytes = encodeDelta({
      version: 1,
      codec: this.codec,
      specHash: this.specHash,
      round,
      sampleCount,
      baseModelHash: Buffer.from(baseHash, 'hex'),
      tensors: delta.map((values, i) => ({ shape: this.shapes[i] as number[], values })),
    })
    if (this.codec.name === 'float32') return { bytes, sent: delta }
    const sent = decodeDelta(bytes).tensors.map((tensor) => tensor.values)
    if (feedback) {
      this.residual = delta.map((values, i) => {
        const carried = new Float32Array(values.length)
        const decoded = sent[i] as Float32Array
        for (let j = 0; j < values.length; j++) {
          carried[j] = (values[j] as number) - (decoded[j] as number)
        }
        return carried
      })
    }
    return { bytes, sent }
  }

  /** Forgets the residual, for a peer whose model was replaced by a download. */
  reset(): void {
    this.residual = undefined
  }
}
