/** Wire formats and topic names that dlearn peers exchange over libp2p. */

export {
  DELTA_MESSAGE_VERSION,
  DELTA_PUSH_PROTOCOL,
  deltaTopic,
  STATE_SYNC_PROTOCOL,
  TOPIC_SPEC_HASH_HEX_CHARS,
} from './constants.ts'
export {
  DELTA_HASH_BYTES,
  DELTA_HEADER_BYTES,
  type DeltaMessage,
  type DeltaTensor,
  decodeDelta,
  encodeDelta,
  encodedDeltaSize,
  MAX_TENSOR_COUNT,
  MAX_TENSOR_RANK,
} from './delta.ts'
export {
  DeltaDecodeError,
  DeltaEncodeError,
  InvalidTopicError,
  MembershipDecodeError,
} from './errors.ts'
export {
  decodeMembership,
  encodeMembership,
  isMembershipMessage,
  MEMBERSHIP_MESSAGE_BYTES,
  type MembershipMessage,
} from './membership.ts'
export {
  type DeltaValidatorInit,
  type DeltaVerdict,
  type MembershipVerdict,
  validateDelta,
  validateMembership,
} from './validator.ts'
