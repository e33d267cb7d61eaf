// The wire benchmark's JSON record, its checks against the stated targets, and its table.
import { accuracyAfter, type CodecAccuracy, roundsToTarget } from './bench-accuracy.ts'
import type { CodecMeasurement } from './bench-codecs.ts'
import type { GossipReport } from './bench-gossip.ts'
import type { BenchOptions } from './bench-options.ts'
import type { SwarmRound } from './bench-swarm.ts'

/** Largest int8 message size as a share of the float32 size. */
export const INT8_MAX_BYTES_RATIO = 0.27
/** Largest accuracy loss of int8 against float32, in percentage points. */
export const INT8_MAX_ACCURACY_LOSS_POINTS = 0.3
/** The top-k codec whose rounds to the target accuracy are checked. */
export const CHECKED_TOPK_CODEC = 'topk:0.1'
/** Width of the wrapped notes under the gossip table. */
const NOTE_WIDTH = 96

/** All measurements of one codec. */
export interface CodecResult extends CodecMeasurement {
  /** Accuracy of the codec's swarm after each round. */
  rounds: SwarmRound[]
  /** Accuracy after --rounds rounds. */
  accuracy: number | null
  /** accuracy minus float32's accuracy after --rounds rounds, in percentage points. */
  accuracyDifferencePoints: number | null
  /** Rounds until the accuracy first reached --target, or null when it did not. */
  roundsToTarget: number | null
  wallSeconds: number
}

/** A measured figure against its stated limit. */
export interface Check {
  name: string
  expected: string
  measured: string
  /** null when the run could not measure what the limit is stated for. */
  passed: boolean | null
}

export interface BenchReport {
  createdAt: string
  nodeVersion: string
  backend: string
  settings: Omit<BenchOptions, 'out'>
  model: { name: string; shapes: number[][]; values: number }
  codecs: CodecResult[]
  checks: Check[]
  gossip: GossipReport
}

/** Joins the codec measurements and the accuracy runs, which list the same codecs. */
export function combineCodecResults(
  measurements: CodecMeasurement[],
  accuracies: CodecAccuracy[],
  options: Pick<BenchOptions, 'rounds' | 'target'>,
): CodecResult[] {
  const baseline = accuracies.find((run) => run.codec === 'float32')
  const baselineAccuracy =
    baseline === undefined ? null : accuracyAfter(baseline.rounds, options.rounds)
  return measurements.map((measurement) => {
    const run = accuracies.find((candidate) => candidate.codec === measurement.codec)
    const rounds = run?.rounds ?? []
    const accuracy = accuracyAfter(rounds, options.rounds)
    return {
      ...measurement,
      rounds,
      accuracy,
      accuracyDifferencePoints:
        accuracy === null || baselineAccuracy === null ? null : (accuracy - baselineAccuracy) * 100,
      roundsToTarget: roundsToTarget(rounds, options.target),
      wallSeconds: run?.wallSeconds ?? 0,
    }
  })
}

function formatRounds(count: number): string {
  return `${count} ${count === 1 ? 'round' : 'rounds'}`
}

function percent(fraction: number, digits = 2): string {
  return `${(fraction * 100).toFixed(digits)}%`
}

function points(value: number): string {
  return `${value >= 0 ? '+' : ''}${value.toFixed(2)} pp`
}

function int8Check(codecs: CodecResult[]): CodecResult | undefined {
  return (
    codecs.find((codec) => codec.codec === 'int8:256') ??
    codecs.find((codec) => codec.codec.startsWith('int8:'))
  )
}

/** Compares int8's size and accuracy loss and top-k's rounds to target with their limits. */
export function evaluateChecks(
  codecs: CodecResult[],
  options: Pick<BenchOptions, 'rounds' | 'topkRounds' | 'target'>,
): Check[] {
  const checks: Check[] = []
  const target = percent(options.target, 1)
  const baseline = codecs.find((codec) => codec.codec === 'float32')
  const int8 = int8Check(codecs)
  if (int8 !== undefined) {
    checks.push({
      name: `${int8.codec} bytes per delta`,
      expected: `<= ${percent(INT8_MAX_BYTES_RATIO, 0)} of float32`,
      measured: percent(int8.ratio),
      passed: int8.ratio <= INT8_MAX_BYTES_RATIO,
    })
  }
  if (int8 !== undefined && baseline !== undefined) {
    // The limit applies at the round where float32 first reaches the target. When it never
    // does, the difference after the last common round is shown but not judged.
    const targetRounds = baseline.roundsToTarget
    const compared = targetRounds ?? Math.min(options.rounds, baseline.rounds.length)
    const base = accuracyAfter(baseline.rounds, compared)
    const other = accuracyAfter(int8.rounds, compared)
    const difference = base === null || other === null ? null : (other - base) * 100
    const where =
      targetRounds === null
        ? `after ${formatRounds(compared)}; float32 did not reach ${target} in ${formatRounds(options.rounds)}`
        : `after ${formatRounds(compared)}, where float32 first reached ${target}`
    checks.push({
      name: `${int8.codec} accuracy against float32`,
      expected: `at most ${INT8_MAX_ACCURACY_LOSS_POINTS} pp below float32 ${where}`,
      measured: difference === null ? 'not measured' : points(difference),
      passed:
        difference === null || targetRounds === null
          ? null
          : difference >= -INT8_MAX_ACCURACY_LOSS_POINTS,
    })
  }
  const topk = codecs.find((codec) => codec.codec === CHECKED_TOPK_CODEC)
  if (topk !== undefined) {
    const best = Math.max(0, ...topk.rounds.map((round) => round.accuracy))
    checks.push({
      name: `${topk.codec} (error feedback) reaches ${target}`,
      expected: `within ${formatRounds(options.topkRounds)}`,
      measured:
        topk.roundsToTarget === null
          ? `not reached in ${formatRounds(topk.rounds.length)} (best ${percent(best)})`
          : `after ${formatRounds(topk.roundsToTarget)}`,
      passed: topk.roundsToTarget !== null,
    })
  }
  return checks
}

function row(cells: string[], widths: number[]): string {
  return cells
    .map((cell, i) =>
      i === 0 ? cell.padEnd(widths[i] as number) : cell.padStart(widths[i] as number),
    )
    .join('  ')
    .trimEnd()
}

function integer(value: number): string {
  return Math.round(value).toLocaleString('en-US')
}

function codecTable(report: BenchReport): string[] {
  const { target } = report.settings
  const header = [
    'codec',
    'bytes/delta',
    'vs float32',
    'encode MB/s',
    'decode MB/s',
    'rel. error',
    `acc. after ${formatRounds(report.settings.rounds)}`,
    'vs float32',
    `${percent(target, 1)} after`,
  ]
  const rows = report.codecs.map((codec) => [
    codec.codec,
    integer(codec.bytes),
    codec.ratio.toFixed(4),
    codec.encodeMBps.toFixed(0),
    codec.decodeMBps.toFixed(0),
    codec.relativeError.toExponential(1),
    codec.accuracy === null ? '-' : percent(codec.accuracy),
    codec.accuracyDifferencePoints === null ? '-' : points(codec.accuracyDifferencePoints),
    codec.roundsToTarget === null
      ? `not in ${formatRounds(codec.rounds.length)}`
      : formatRounds(codec.roundsToTarget),
  ])
  const widths = header.map((cell, i) =>
    Math.max(cell.length, ...rows.map((r) => (r[i] as string).length)),
  )
  return [row(header, widths), ...rows.map((cells) => row(cells, widths))]
}

function gossipTable(gossip: GossipReport): string[] {
  const header = ['peer', 'validator bytes', '/ needed', 'TCP bytes read', '/ needed']
  const rows = gossip.perPeer.map((peer) => [
    String(peer.peerIndex),
    integer(peer.validatorBytes),
    peer.validatorRatio.toFixed(2),
    integer(peer.tcpBytes),
    peer.tcpRatio.toFixed(2),
  ])
  const widths = header.map((cell, i) =>
    Math.max(cell.length, ...rows.map((r) => (r[i] as string).length)),
  )
  return [row(header, widths), ...rows.map((cells) => row(cells, widths))]
}

function describeIdontwantSending(idontwant: GossipReport['idontwant']): string {
  if (idontwant.sends === null) return 'sending unknown'
  if (!idontwant.sends) return 'does not send it'
  if (idontwant.minDataBytes === null) return 'sends it'
  return `sends it for messages of >= ${idontwant.minDataBytes} bytes`
}

function describeIdontwantForwarding(idontwant: GossipReport['idontwant']): string {
  if (idontwant.forwardSkipsPeersThatSentIt === null) return 'forwarding use unknown'
  if (idontwant.forwardSkipsPeersThatSentIt) return 'forwarding skips peers that sent it'
  return 'forwarding ignores received IDONTWANTs (forwardMessage, selectPeersToForward)'
}

function describeIdontwant(gossip: GossipReport): string {
  const idontwant = gossip.idontwant
  const protocols = Object.entries(idontwant.streamProtocols)
    .map(([protocol, count]) => `${protocol} on ${count} streams`)
    .join(', ')
  const received =
    idontwant.receivedEntries === null
      ? 'received entries unknown'
      : `${idontwant.receivedEntries} received entries seen`
  return (
    `@chainsafe/libp2p-gossipsub ${idontwant.packageVersion} ` +
    `${describeIdontwantSending(idontwant)}; ${protocols || 'no gossipsub streams'}; ` +
    `${received}; ${describeIdontwantForwarding(idontwant)}`
  )
}

/** Breaks text into lines of at most NOTE_WIDTH characters, each indented by two spaces. */
function wrap(text: string): string[] {
  const lines: string[] = []
  let line = ''
  for (const word of text.split(' ')) {
    if (line !== '' && line.length + 1 + word.length > NOTE_WIDTH) {
      lines.push(`  ${line}`)
      line = word
    } else {
      line = line === '' ? word : `${line} ${word}`
    }
  }
  if (line !== '') lines.push(`  ${line}`)
  return lines
}

function verdictLabel(check: Check): string {
  if (check.passed === null) return 'n/a '
  return check.passed ? 'pass' : 'FAIL'
}

/**
 * Returns a warning for each swarm in which some peer closed a round at the deadline, because
 * that peer averaged fewer deltas and its bytes received fall short of the needed bytes.
 *
 * NOTE: under heavy CPU load, libp2p 2.10's connection monitor aborts connections whose ping
 * times out (abortConnectionOnPingFailure defaults to true), and the lost deltas show up here.
 */
function incompleteRoundWarnings(report: BenchReport): string[] {
  const swarms = [
    ...report.codecs.map((codec) => ({ name: `${codec.codec} swarm`, rounds: codec.rounds })),
    { name: 'gossip swarm', rounds: report.gossip.roundResults },
  ]
  const warnings: string[] = []
  for (const swarm of swarms) {
    const late = swarm.rounds.filter((round) => round.deadlineHits > 0)
    if (late.length === 0) continue
    const fewest = Math.min(...late.map((round) => round.minContributors))
    warnings.push(
      `warning: the ${swarm.name} closed ${late.length} of ${formatRounds(swarm.rounds.length)} ` +
        `at the round deadline, with as few as ${fewest} deltas; its figures are incomplete`,
    )
  }
  return warnings
}

/** Formats the report as the short text table the benchmark prints. */
export function formatReport(report: BenchReport, jsonPath: string): string {
  const { settings, gossip } = report
  const lines = [
    `wire benchmark: ${report.model.name} (${integer(report.model.values)} values), backend ${report.backend}, ` +
      `${settings.peers} peers, ${integer(settings.trainSamples)} train / ${integer(settings.testSamples)} test images, seed ${settings.seed}`,
    ...codecTable(report),
    'MB/s: 10^6 bytes of float32 values per second, median of ' +
      `${settings.repetitions} calls; rel. error: ||decoded - delta|| / ||delta||`,
    '',
    'checks:',
    ...report.checks.map(
      (check) =>
        `  ${verdictLabel(check)}  ${check.name}: ${check.measured} (expected ${check.expected})`,
    ),
    '',
    `gossip amplification: ${gossip.peers} peers, ${formatRounds(gossip.rounds)}, ${gossip.codec} delta of ` +
      `${integer(gossip.deltaBytes)} bytes, ${integer(gossip.neededBytes)} distinct delta bytes needed per peer`,
    ...gossipTable(gossip),
    ...wrap(`validator bytes: ${gossip.notes.validatorBytes}`),
    ...wrap(`TCP bytes: ${gossip.notes.tcpBytes}`),
    'IDONTWANT:',
    ...wrap(describeIdontwant(gossip)),
    ...incompleteRoundWarnings(report),
    `json: ${jsonPath}`,
  ]
  return `${lines.join('\n')}\n`
}
