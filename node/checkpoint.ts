import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { PrivateKey } from '@libp2p/interface'
import { CheckpointError } from './errors.ts'
import { openIdentity } from './identity.ts'
import { log } from './log.ts'
import { hashWeights } from './model.ts'
import { hashSpec, type SwarmSpec } from './spec.ts'
import { removeTemporaryFiles, writeFileDurable } from './write-atomic.ts'

/** The checkpoint of a state folder, replaced whole after every round. */
export const CHECKPOINT_FILE = 'checkpoint.bin'

/**
 * Layout of a checkpoint file, version 1:
 *
 *   bytes 0-3    ASCII 'DLCK'
 *   bytes 4-7    format version, uint32 little-endian
 *   bytes 8-11   header length N, uint32 little-endian
 *   next N bytes the header, UTF-8 JSON (CheckpointHeader)
 *   zero bytes up to the next multiple of 4
 *   the weights: float32 in the platform byte order, tensor after tensor in layer order
 *
 * The platform byte order is little-endian on x86-64 and ARM64. A file moved to a host of the
 * other order fails the model hash check.
 */
const MAGIC = 'DLCK'
const FORMAT_VERSION = 1
const PREFIX_BYTES = 12
/** Largest header accepted. A header lists one length per tensor, so it stays far below this. */
const MAX_HEADER_BYTES = 64 * 1024
const HASH_HEX_PATTERN = /^[0-9a-f]{64}$/

/** The weights a round starts from. */
export interface ModelState {
  /** Round that starts from these weights. */
  round: number
  /** SHA-256 of the weights as hashWeights computes it, 64 hex characters. */
  modelHash: string
  /** One array per weight tensor, in layer order. */
  weights: Float32Array[]
}

/** The peer a checkpoint belongs to. A checkpoint of another peer or spec is rejected. */
export interface CheckpointOwner {
  /** SHA-256 of the swarm spec as hashSpec computes it, 64 hex characters. */
  specHash: string
  peerId: string
  peerIndex: number
}

interface CheckpointHeader extends CheckpointOwner {
  round: number
  modelHash: string
  /** Number of float32 values of each weight tensor, in layer order. */
  lengths: number[]
  /** ISO 8601 time of the save, for people reading the file. */
  savedAt: string
}

/** Returns the file's bytes as chunks: prefix, header and padding, then one chunk per tensor. */
export function encodeCheckpoint(state: ModelState, owner: CheckpointOwner): Uint8Array[] {
  const header: CheckpointHeader = {
    ...owner,
    round: state.round,
    modelHash: state.modelHash,
    lengths: state.weights.map((values) => values.length),
    savedAt: new Date().toISOString(),
  }
  const json = new TextEncoder().encode(JSON.stringify(header))
  const head = new Uint8Array(alignTo4(PREFIX_BYTES + json.byteLength))
  head.set(new TextEncoder().encode(MAGIC), 0)
  const view = new DataView(head.buffer)
  view.setUint32(4, FORMAT_VERSION, true)
  view.setUint32(8, json.byteLength, true)
  head.set(json, PREFIX_BYTES)
  const tensors = state.weights.map(
    (values) => new Uint8Array(values.buffer, values.byteOffset, values.byteLength),
  )
  return [head, ...tensors]
}

/**
 * Decodes a checkpoint file and checks it against `owner` and its own model hash. `path`
 * names the file in error messages. Throws CheckpointError for a truncated or corrupt file,
 * or one saved by another peer or for another swarm spec.
 */
export async function decodeCheckpoint(
  bytes: Uint8Array,
  owner: CheckpointOwner,
  path: string,
): Promise<ModelState> {
  const fix = `Remove ${path} and start the peer with --join to download the swarm's model`
  const corrupt = (reason: string) =>
    new CheckpointError(`Invalid checkpoint ${path}: ${reason}. ${fix}`)
  if (bytes.byteLength < PREFIX_BYTES) {
    throw corrupt(`it has ${bytes.byteLength} bytes, fewer than the ${PREFIX_BYTES}-byte prefix`)
  }
  if (new TextDecoder().decode(bytes.subarray(0, 4)) !== MAGIC) {
    throw corrupt(`it does not start with '${MAGIC}', so it is not a dlearn checkpoint`)
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const version = view.getUint32(4, true)
  if (version !== FORMAT_VERSION) {
    throw corrupt(`format version ${version}, but this peer reads version ${FORMAT_VERSION}`)
  }
  const headerBytes = view.getUint32(8, true)
  if (headerBytes > MAX_HEADER_BYTES || PREFIX_BYTES + headerBytes > bytes.byteLength) {
    throw corrupt(`header length ${headerBytes} exceeds the file size ${bytes.byteLength}`)
  }
  let header: CheckpointHeader
  try {
    header = parseHeader(
      new TextDecoder('utf-8', { fatal: true }).decode(
        bytes.subarray(PREFIX_BYTES, PREFIX_BYTES + headerBytes),
      ),
    )
  } catch (error) {
    throw corrupt(`the header does not parse (${(error as Error).message})`)
  }

  if (header.specHash !== owner.specHash) {
    throw new CheckpointError(
      `Checkpoint ${path} was saved for swarm spec ${header.specHash}, but this peer runs spec ${owner.specHash}. Start the peer with the spec options it was saved with, or remove ${path} and start with --join to download the swarm's model`,
    )
  }
  if (header.peerId !== owner.peerId) {
    throw new CheckpointError(
      `Checkpoint ${path} was saved by peer ${header.peerId}, but the key in its state folder is peer ${owner.peerId}. ${fix}`,
    )
  }
  if (header.peerIndex !== owner.peerIndex) {
    throw new CheckpointError(
      `Checkpoint ${path} was saved with --peer-index ${header.peerIndex}, got ${owner.peerIndex}. Start the peer with --peer-index ${header.peerIndex}, or choose another --state-dir`,
    )
  }

  const weightsOffset = alignTo4(PREFIX_BYTES + headerBytes)
  const expectedBytes = weightsOffset + 4 * header.lengths.reduce((sum, n) => sum + n, 0)
  if (bytes.byteLength !== expectedBytes) {
    throw corrupt(`it has ${bytes.byteLength} bytes, but its header describes ${expectedBytes}`)
  }
  const weights: Float32Array[] = []
  let offset = weightsOffset
  for (const length of header.lengths) {
    // The copy starts a new ArrayBuffer, so the Float32Array is aligned whatever the offset.
    const copy = new Uint8Array(bytes.subarray(offset, offset + 4 * length))
    weights.push(new Float32Array(copy.buffer))
    offset += 4 * length
  }
  const modelHash = await hashWeights(weights)
  if (modelHash !== header.modelHash) {
    throw corrupt(`the weights hash to ${modelHash}, but the header records ${header.modelHash}`)
  }
  return { round: header.round, modelHash, weights }
}

/** Parses and type-checks the JSON header. Throws Error naming the first invalid field. */
function parseHeader(text: string): CheckpointHeader {
  const value = JSON.parse(text) as Record<string, unknown>
  const isCount = (n: unknown) => Number.isSafeInteger(n) && (n as number) >= 0
  const checks: Array<[keyof CheckpointHeader, boolean]> = [
    ['round', isCount(value.round)],
    ['modelHash', typeof value.modelHash === 'string' && HASH_HEX_PATTERN.test(value.modelHash)],
    ['specHash', typeof value.specHash === 'string' && HASH_HEX_PATTERN.test(value.specHash)],
    ['peerId', typeof value.peerId === 'string'],
    ['peerIndex', isCount(value.peerIndex)],
    ['lengths', Array.isArray(value.lengths) && value.lengths.every(isCount)],
  ]
  for (const [field, valid] of checks) {
    if (!valid) throw new Error(`field ${field} is missing or invalid`)
  }
  return value as unknown as CheckpointHeader
}

function alignTo4(n: number): number {
  return Math.ceil(n / 4) * 4
}

/**
 * Reads the checkpoint of `stateDir`, or returns undefined when there is none. Throws
 * CheckpointError as decodeCheckpoint does.
 */
export async function loadCheckpoint(
  stateDir: string,
  owner: CheckpointOwner,
): Promise<ModelState | undefined> {
  const path = join(stateDir, CHECKPOINT_FILE)
  let bytes: Uint8Array
  try {
    bytes = await readFile(path)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new CheckpointError(`Cannot read the checkpoint ${path}: ${(error as Error).message}`)
  }
  return decodeCheckpoint(bytes, owner, path)
}

/** Replaces the checkpoint of `stateDir` atomically, so a crash leaves the old or the new one. */
export async function saveCheckpoint(
  stateDir: string,
  state: ModelState,
  owner: CheckpointOwner,
): Promise<void> {
  await writeFileDurable(join(stateDir, CHECKPOINT_FILE), encodeCheckpoint(state, owner), 0o600)
}

/** A peer's state folder, opened and locked by openStateDir. */
export interface StateDir {
  privateKey: PrivateKey
  peerId: string
  /** The model of the last checkpoint, or undefined for a peer that never saved one. */
  checkpoint: ModelState | undefined
  /** Saves a checkpoint. A failure is logged, and the previous checkpoint stays in place. */
  save(state: ModelState): Promise<void>
  /** Unlocks the folder, which also happens on process exit. */
  release(): void
}

/**
 * Opens the state folder of a peer: locks it, loads or creates its private key, removes
 * temporary files left by a crash and loads its checkpoint. Throws IdentityError or
 * CheckpointError when the folder cannot be used, with the fix in the message.
 */
export async function openStateDir(
  stateDir: string,
  spec: SwarmSpec,
  peerIndex: number,
): Promise<StateDir> {
  const identity = await openIdentity(stateDir)
  try {
    const owner: CheckpointOwner = {
      specHash: Buffer.from(hashSpec(spec)).toString('hex'),
      peerId: identity.peerId,
      peerIndex,
    }
    const removed = await removeTemporaryFiles(stateDir)
    if (removed.length > 0) {
      log.info('removed %d temporary files of an interrupted save in %s', removed.length, stateDir)
    }
    const checkpoint = await loadCheckpoint(stateDir, owner)
    if (identity.created) log.info('created the key of peer %s in %s', identity.peerId, stateDir)
    if (checkpoint !== undefined) {
      log.info(
        'loaded the checkpoint taken before round %d (model %s) from %s',
        checkpoint.round,
        checkpoint.modelHash.slice(0, 16),
        stateDir,
      )
    }
    return {
      privateKey: identity.privateKey,
      peerId: identity.peerId,
      checkpoint,
      save: async (state) => {
        try {
          await saveCheckpoint(stateDir, state, owner)
        } catch (error) {
          log.error(
            'saving the checkpoint of round %d in %s failed: %s',
            state.round,
            stateDir,
            (error as Error).message,
          )
        }
      },
      release: identity.release,
    }
  } catch (error) {
    identity.release()
    throw error
  }
}
