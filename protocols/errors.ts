/**
 * Errors raised by the wire formats in this folder. Each class sets both a static and an
 * instance `name`, so callers can match on `error.name` after a bundler renames classes.
 */

/** Bytes that are not a valid version-1 delta message. */
export class DeltaDecodeError extends Error {
  static override name = 'DeltaDecodeError'

  /** The layout field that is invalid, e.g. `codec` or `tensors[2].dims[1]`. */
  readonly field: string
  /** Byte offset of that field from the start of the message. */
  readonly offset: number

  constructor(field: string, offset: number, problem: string) {
    super(`invalid delta message: ${field} at byte offset ${offset} ${problem}`)
    this.name = 'DeltaDecodeError'
    this.field = field
    this.offset = offset
  }
}

/**
 * A DeltaMessage that cannot be encoded, because a field has the wrong type or length or is out
 * of range.
 */
export class DeltaEncodeError extends Error {
  static override name = 'DeltaEncodeError'

  /** The message field that is invalid, e.g. `round` or `tensors[0].values`. */
  readonly field: string

  constructor(field: string, problem: string) {
    super(`cannot encode delta message: ${field} ${problem}`)
    this.name = 'DeltaEncodeError'
    this.field = field
  }
}

/** A swarm name or spec hash that cannot be part of a gossipsub topic name. */
export class InvalidTopicError extends Error {
  static override name = 'InvalidTopicError'

  constructor(message: string) {
    super(message)
    this.name = 'InvalidTopicError'
  }
}

/** Bytes that start like a join or leave message but are not a valid version-1 one. */
export class MembershipDecodeError extends Error {
  static override name = 'MembershipDecodeError'

  /** The layout field that is invalid, e.g. `version`. */
  readonly field: string
  /** Byte offset of that field from the start of the message. */
  readonly offset: number

  constructor(field: string, offset: number, problem: string) {
    super(`invalid membership message: ${field} at byte offset ${offset} ${problem}`)
    this.name = 'MembershipDecodeError'
    this.field = field
    this.offset = offset
  }
}

/** Bytes that start like a part message but are not a valid version-1 part message. */
export class PartDecodeError extends Error {
  static override name = 'PartDecodeError'

  /** The layout field that is invalid, e.g. `senderLength`. */
  readonly field: string
  /** Byte offset of that field from the start of the message. */
  readonly offset: number

  constructor(field: string, offset: number, problem: string) {
    super(`invalid part message: ${field} at byte offset ${offset} ${problem}`)
    this.name = 'PartDecodeError'
    this.field = field
    this.offset = offset
  }
}

/** Bytes that are not a valid version-1 state sync frame, or chunks that do not fit the header. */
export class StateDecodeError extends Error {
  static override name = 'StateDecodeError'

  /** The frame kind: `request`, `header` or `chunk`. */
  readonly frame: string
  /** The layout field that is invalid, e.g. `kind` or `shapes[1].dims[0]`. */
  readonly field: string
  /**
   * Byte offset of that field from the start of the frame, or for a chunk, from the start of
   * the weight bytes.
   */
  readonly offset: number

  constructor(frame: string, field: string, offset: number, problem: string) {
    super(`invalid state ${frame} frame: ${field} at byte offset ${offset} ${problem}`)
    this.name = 'StateDecodeError'
    this.frame = frame
    this.field = field
    this.offset = offset
  }
}

/** Codec text or a CodecSpec that names no valid tensor codec. */
export class CodecSpecError extends Error {
  static override name = 'CodecSpecError'

  constructor(message: string) {
    super(message)
    this.name = 'CodecSpecError'
  }
}

/** Tensor values that a codec cannot represent, such as NaN for int8. */
export class CodecEncodeError extends Error {
  static override name = 'CodecEncodeError'

  /** The invalid part of the input, e.g. `values[3]`. */
  readonly field: string
  /** Description of the problem, without the field name. */
  readonly problem: string

  constructor(codec: string, field: string, problem: string) {
    super(`cannot encode tensor as ${codec}: ${field} ${problem}`)
    this.name = 'CodecEncodeError'
    this.field = field
    this.problem = problem
  }
}

/** A tensor payload that is not valid for its codec and value count. */
export class CodecDecodeError extends Error {
  static override name = 'CodecDecodeError'

  /** The invalid part of the payload, e.g. `payload.indices[3]` or `payload.scales[0]`. */
  readonly field: string
  /** Byte offset of that part from the start of the payload. */
  readonly offset: number
  /** Description of the problem, without the field name. */
  readonly problem: string

  constructor(field: string, offset: number, problem: string) {
    super(`invalid tensor payload: ${field} at payload byte offset ${offset} ${problem}`)
    this.name = 'CodecDecodeError'
    this.field = field
    this.offset = offset
    this.problem = problem
  }
}
