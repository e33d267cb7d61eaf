/** Wire formats and topic names that dlearn peers exchange over libp2p. */

export {
  CODEC_IDS,
  type CodecSpec,
  checkCodec,
  codecFromWire,
  codecId,
  codecParam,
  DEFAULT_INT8_BLOCK_SIZE,
  formatCodec,
  MAX_CODEC_VALUE_COUNT,
  MAX_INT8_BLOCK_SIZE,
  parseCodec,
  payloadSize,
  topkCount,
} from './codec-spec.ts'
export { decodeTensor, encodeTensor } from './codecs.ts'
export {
  DELTA_MESSAGE_VERSION,
  DELTA_PUSH_PROTOCOL,
  deltaTopic,
  PEER_EXCHANGE_PROTOCOL,
  STATE_SYNC_PROTOCOL,
  TOPIC_SPEC_HASH_HEX_CHARS,
} from './constants.ts'
export {
  DEFAULT_MAX_DELTA_VALUES,
  DELTA_HASH_BYTES,
  DELTA_HEADER_BYTES,
  type DeltaDecodeOptions,
  type DeltaMessage,
  type DeltaTensor,
  decodeDelta,
  encodeDelta,
  encodedDeltaSize,
  MAX_TENSOR_COUNT,
  MAX_TENSOR_RANK,
} from './delta.ts'
export {
  CodecDecodeError,
  CodecEncodeError,
  CodecSpecError,
  DeltaDecodeError,
  DeltaEncodeError,
  InvalidTopicError,
  MembershipDecodeError,
  PartDecodeError,
  StateDecodeError,
} from './errors.ts'
export {
  decodeMembership,
  encodeMembership,
  isMembershipMessage,
  MEMBERSHIP_MESSAGE_BYTES,
  type MembershipMessage,
} from './membership.ts'
export {
  DEFAULT_MAX_PENDING_PER_SENDER,
  PartAssembler,
  type PartAssemblerInit,
  type PartResult,
} from './part-assembler.ts'
export {
  decodePart,
  encodePart,
  isPartMessage,
  MAX_PART_COUNT,
  MAX_PART_SENDER_BYTES,
  type PartMessage,
  partHeaderSize,
  type SplitInit,
  splitIntoParts,
} from './parts.ts'
export {
  DEFAULT_STATE_CHUNK_BYTES,
  decodeStateHeader,
  decodeStateRequest,
  encodeStateChunks,
  encodeStateHeader,
  encodeStateRequest,
  MAX_STATE_CHUNK_BYTES,
  MAX_STATE_FRAME_BYTES,
  MAX_STATE_TENSOR_COUNT,
  MAX_STATE_TENSOR_RANK,
  STATE_HASH_BYTES,
  STATE_REQUEST_BYTES,
  STATE_SYNC_VERSION,
  type StateHeader,
  type StateHeaderInit,
  type StateRequest,
  type StateRequestKind,
  type StateStatus,
  stateModelBytes,
} from './state.ts'
export { StateChunkAssembler } from './state-chunks.ts'
export {
  type DeltaValidatorInit,
  type DeltaVerdict,
  type MembershipVerdict,
  validateDelta,
  validateMembership,
} from './validator.ts'
