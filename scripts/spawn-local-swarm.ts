import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { parsePartition } from '../data/index.ts'
import { MODEL_NAMES } from '../node/spec.ts'
import { runCommand, stopOnSignals, UsageError } from './lib/command.ts'
import {
  type LaunchMode,
  listenPortCount,
  MIN_BASE_PORT,
  maxBasePort,
  runSwarm,
  type SwarmSummary,
} from './lib/launcher.ts'
import { renderConvergence } from './lib/plot.ts'

/**
 * Maximum peers one launcher starts, because a peer may receive a dial from every other one and
 * node/host.ts accepts at most 256 inbound connections that are still upgrading.
 */
const MAX_PEERS = 256

const HELP = `Usage: npm start -- [options]

Starts a swarm of peer processes on this machine, runs it in parallel mode, in serial mode
(one peer computes at a time) and as a centralised reference (one peer with all the data),
then writes summary.json and the convergence plots into the run folder.

Options:
  --peers N                number of peers (default: 4)
  --mode MODE              parallel, serial or both (default: both)
  --rounds N               maximum rounds per mode (default: 20)
  --target FRACTION        test accuracy at which a mode stops (default: 0.97)
  --partition P            iid, dirichlet:ALPHA, classes:K, iid-per-client:N or
                           shards:COUNTxSIZE (default: iid)
  --model NAME             ${MODEL_NAMES.join(', ')} (default: mlp)
  --seed N                 seed of weights, shards and shuffles (default: 1)
  --out DIR                run folder (default: runs/<timestamp>)
  --join-late K            start one extra peer, with a shard of its own, after K rounds;
                           it downloads the current model and trains from the next round
                           (default: no late peer)
  --base-port P            peer i listens on 127.0.0.1 port P+i, the late peer on P+N;
                           a peer whose port another program holds listens on the next
                           free port above that range, and the launcher prints which
                           (default: ports the OS picks)
  --peers-per-process K    run K peers in each peer process, 1 to N: one process
                           loads the data and the backend once for its K peers,
                           which still talk only over libp2p (default: 1)
  --no-centralised         skip the centralised reference run
  --help                   print this help

Options after -- are passed to every peer, for example:
  npm start -- --peers 2 -- --train-samples 6000 --test-samples 2000
(see npm run peer -- --help).`

function integerOption(name: string, text: string, min: number, max = 2 ** 31 - 1): number {
  const value = Number(text)
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new UsageError(`Expected --${name} to be an integer from ${min} to ${max}, got '${text}'`)
  }
  return value
}

function parseBasePort(text: string, peers: number, joinLate: number | undefined): number {
  const count = listenPortCount(peers, joinLate)
  const max = maxBasePort(count)
  const value = Number(text)
  if (!Number.isInteger(value) || value < MIN_BASE_PORT || value > max) {
    throw new UsageError(
      `Expected --base-port to be an integer from ${MIN_BASE_PORT} to ${max}, got '${text}': ` +
        `peer i listens on port P+i, so ${count} listen ports need P+${count - 1} <= 65535. ` +
        'Pick a port in that range, or leave out --base-port to let the OS pick ports',
    )
  }
  return value
}

function parsePeersPerProcess(text: string | undefined, peers: number): number {
  if (text === undefined) return 1
  const value = Number(text)
  if (!Number.isInteger(value) || value < 1 || value > peers) {
    throw new UsageError(
      `Expected --peers-per-process to be an integer from 1 to ${peers} (the --peers value), got '${text}'. ` +
        'Pass at most the peer count, or leave it out to run each peer in a process of its own',
    )
  }
  return value
}

interface LaunchOptions {
  peers: number
  modes: LaunchMode[]
  rounds: number
  target: number
  partition: string
  model: string
  seed: number
  out: string
  centralised: boolean
  joinLate: number | undefined
  basePort: number | undefined
  peersPerProcess: number
  peerArgs: string[]
}

function parseLaunchOptions(argv: string[]): LaunchOptions | undefined {
  const split = argv.indexOf('--')
  const own = split === -1 ? argv : argv.slice(0, split)
  const peerArgs = split === -1 ? [] : argv.slice(split + 1)
  let values: Record<string, string | boolean | undefined>
  try {
    values = parseArgs({
      args: own,
      strict: true,
      options: {
        peers: { type: 'string' },
        mode: { type: 'string' },
        rounds: { type: 'string' },
        target: { type: 'string' },
        partition: { type: 'string' },
        model: { type: 'string' },
        seed: { type: 'string' },
        out: { type: 'string' },
        'join-late': { type: 'string' },
        'base-port': { type: 'string' },
        'peers-per-process': { type: 'string' },
        'no-centralised': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values
  } catch (error) {
    // Node's message ends with a full stop of its own.
    const message = (error as Error).message.replace(/\.$/, '')
    throw new UsageError(
      `${message}. Peer options such as --train-samples go after a second --, as in: npm start -- --peers 2 -- --train-samples 2000. Run with --help for the launcher's options`,
    )
  }
  if (values.help === true) return undefined
  const mode = (values.mode as string | undefined) ?? 'both'
  if (!['parallel', 'serial', 'both'].includes(mode)) {
    throw new UsageError(`Expected --mode to be parallel, serial or both, got '${mode}'`)
  }
  const targetText = (values.target as string | undefined) ?? '0.97'
  const target = Number(targetText)
  if (!Number.isFinite(target) || target <= 0 || target > 1) {
    throw new UsageError(
      `Expected --target to be a fraction in (0, 1], such as 0.97, got '${targetText}'`,
    )
  }
  const partition = (values.partition as string | undefined) ?? 'iid'
  try {
    parsePartition(partition)
  } catch (error) {
    throw new UsageError(
      (error as Error).message.replace('Invalid partition', 'Invalid --partition'),
    )
  }
  const model = (values.model as string | undefined) ?? 'mlp'
  if (!(MODEL_NAMES as readonly string[]).includes(model)) {
    throw new UsageError(`Expected --model to be one of ${MODEL_NAMES.join(', ')}, got '${model}'`)
  }
  const rounds = integerOption('rounds', (values.rounds as string | undefined) ?? '20', 1)
  if (values['join-late'] !== undefined) {
    integerOption('join-late', values['join-late'] as string, 1, rounds - 1)
  }
  const peers = integerOption('peers', (values.peers as string | undefined) ?? '4', 1, MAX_PEERS)
  const joinLate =
    values['join-late'] === undefined
      ? undefined
      : integerOption('join-late', values['join-late'] as string, 1)
  const basePortText = values['base-port'] as string | undefined
  const stamp = new Date().toISOString().replace(/[:.]/g, '-')
  return {
    peers,
    modes: mode === 'both' ? ['parallel', 'serial'] : [mode as LaunchMode],
    rounds,
    target,
    partition,
    model,
    seed: integerOption('seed', (values.seed as string | undefined) ?? '1', 0),
    out: (values.out as string | undefined) ?? join('runs', stamp),
    centralised: values['no-centralised'] !== true,
    joinLate,
    basePort: basePortText === undefined ? undefined : parseBasePort(basePortText, peers, joinLate),
    peersPerProcess: parsePeersPerProcess(values['peers-per-process'] as string | undefined, peers),
    peerArgs,
  }
}

function describeMode(name: string, summary: SwarmSummary['parallel']): string {
  if (summary === undefined) return ''
  const time =
    summary.timeToTargetSeconds === null
      ? 'target not reached'
      : `target after ${summary.timeToTargetSeconds.toFixed(1)} s (${summary.roundsToTarget} rounds)`
  return `  ${name.padEnd(12)} ${time}, final accuracy ${(summary.finalAccuracy * 100).toFixed(2)}%\n`
}

async function main(argv: string[]): Promise<number> {
  const options = parseLaunchOptions(argv)
  if (options === undefined) {
    process.stdout.write(`${HELP}\n`)
    return 0
  }
  const signal = stopOnSignals('swarm')
  process.stdout.write(`run folder: ${options.out}\n`)
  const summary = await runSwarm({ ...options, signal: signal })
  const plots = await renderConvergence(options.out)
  process.stdout.write(
    `results (target ${(summary.target * 100).toFixed(1)}%, backend ${summary.backend}):\n` +
      describeMode('parallel', summary.parallel) +
      describeMode('serial', summary.serial) +
      describeMode('centralised', summary.centralised) +
      (summary.speedup === null
        ? ''
        : `  speedup     ${summary.speedup.toFixed(2)}x (serial / parallel time to target)\n`) +
      `summary: ${join(options.out, 'summary.json')}\nplots:   ${plots.pngPath}\n         ${plots.svgPath}\n`,
  )
  return 0
}

runCommand(main)
