/**
 * StateChunkAssembler: the receiving side of the state sync chunk frames that state.ts
 * describes.
 */

import { StateDecodeError } from './errors.ts'
import {
  FLOAT32_BYTES,
  HOST_IS_LITTLE_ENDIAN,
  product,
  stateModelBytes,
  swapFloat32ByteOrder,
} from './state.ts'

/**
 * Collects chunk payloads into the tensors that a header describes. Every chunk is checked
 * against totalBytes before it is copied, so a responder cannot make the buffer grow.
 */
export class StateChunkAssembler {
  readonly shapes: number[][]
  readonly totalBytes: number
  private readonly bytes: Uint8Array<ArrayBuffer>
  private received = 0
  private inHostOrder = HOST_IS_LITTLE_ENDIAN

  constructor(shapes: number[][]) {
    this.shapes = shapes.map((shape) => [...shape])
    this.totalBytes = stateModelBytes(shapes)
    this.bytes = new Uint8Array(this.totalBytes)
  }

  /** Number of weight bytes received so far. */
  get receivedBytes(): number {
    return this.received
  }

  /** True once totalBytes bytes have been received. */
  get complete(): boolean {
    return this.received === this.totalBytes
  }

  /**
   * Copies the next chunk payload, which may be at any byteOffset. Throws StateDecodeError for
   * an empty chunk or one that runs past totalBytes.
   */
  add(chunk: Uint8Array): void {
    if (chunk.byteLength === 0) {
      throw new StateDecodeError('chunk', 'payload', this.received, 'is empty')
    }
    if (chunk.byteLength > this.totalBytes - this.received) {
      throw new StateDecodeError(
        'chunk',
        'payload',
        this.received,
        `has ${chunk.byteLength} bytes, but only ${this.totalBytes - this.received} of the ${this.totalBytes} weight bytes remain`,
      )
    }
    this.bytes.set(chunk, this.received)
    this.received += chunk.byteLength
  }

  /**
   * Returns one Float32Array per shape. The arrays are views of the assembler's buffer, so
   * every call returns the same values. Throws StateDecodeError when fewer than totalBytes
   * bytes have been received.
   */
  weights(): Float32Array[] {
    if (!this.complete) {
      throw new StateDecodeError(
        'chunk',
        'payload',
        this.received,
        `ends after ${this.received} of ${this.totalBytes} weight bytes`,
      )
    }
    if (!this.inHostOrder) {
      swapFloat32ByteOrder(this.bytes)
      this.inHostOrder = true
    }
    const weights: Float32Array[] = []
    let offset = 0
    for (const shape of this.shapes) {
      const count = product(shape)
      // Every offset is a multiple of 4, so the views are aligned.
      weights.push(new Float32Array(this.bytes.buffer, offset, count))
      offset += count * FLOAT32_BYTES
    }
    return weights
  }
}
