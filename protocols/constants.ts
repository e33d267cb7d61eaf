/**
 * Protocol ids and gossipsub topic names of the dlearn wire protocol.
 */

import { InvalidTopicError } from './errors.ts'

/**
 * Version of the delta message layout in delta.ts. The delta topic contains it too, so peers
 * that speak different layouts never share a topic.
 */
export const DELTA_MESSAGE_VERSION = 1

/** Stream protocol id on which a peer serves its current model to peers that join late. */
export const STATE_SYNC_PROTOCOL = '/dlearn/state/1.0.0'

/**
 * Stream protocol id on which a peer pushes its current delta message straight to a peer that
 * just subscribed, so a delta published before the subscription was known is not lost. The
 * stream carries one delta message in the version-1 layout; closing the stream ends it.
 */
export const DELTA_PUSH_PROTOCOL = '/dlearn/delta/1.0.0'

/**
 * Stream protocol id on which a peer sends the addresses of the peers subscribed to its delta
 * topic, as one JSON array of multiaddr strings, and closes the stream.
 */
export const PEER_EXCHANGE_PROTOCOL = '/dlearn/peers/1.0.0'

/** Number of leading hex characters of the spec hash that the delta topic contains. */
export const TOPIC_SPEC_HASH_HEX_CHARS = 16

const SWARM_NAME_PATTERN = /^[A-Za-z0-9._-]+$/
const SWARM_NAME_CHARACTERS = "letters A-Z and a-z, digits 0-9, '.', '_' and '-'"

// A SHA-256 digest written as hex.
const SPEC_HASH_HEX_PATTERN = /^[0-9a-fA-F]{64}$/

/**
 * Builds the gossipsub topic on which a swarm publishes weight deltas:
 * `/dlearn/1/<swarm>/<first 16 hex chars of the spec hash>/deltas`.
 *
 * The spec hash is lowercased, so peers that format it differently still share a topic.
 * Throws InvalidTopicError when the swarm name is empty or contains characters other than
 * letters, digits, '.', '_' and '-', or when specHashHex is not 64 hex characters.
 */
export function deltaTopic(swarm: string, specHashHex: string): string {
  if (!SWARM_NAME_PATTERN.test(swarm)) {
    throw new InvalidTopicError(
      `invalid swarm name ${JSON.stringify(swarm)}: use one or more of the ${SWARM_NAME_CHARACTERS}`,
    )
  }
  if (!SPEC_HASH_HEX_PATTERN.test(specHashHex)) {
    throw new InvalidTopicError(
      `invalid spec hash ${JSON.stringify(specHashHex)}: expected a SHA-256 digest as 64 hex characters`,
    )
  }
  const specPrefix = specHashHex.slice(0, TOPIC_SPEC_HASH_HEX_CHARS).toLowerCase()
  return `/dlearn/${DELTA_MESSAGE_VERSION}/${swarm}/${specPrefix}/deltas`
}
