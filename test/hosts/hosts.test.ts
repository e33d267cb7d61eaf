import type { ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import type { RoundMetrics } from '../../node/metrics.ts'
import { HostNetwork, netnsUnavailableReason } from './netns.ts'

const CLI = resolve(import.meta.dirname, '../../node/cli.ts')
const HOSTS = 3
/** Every peer listens on this port of its own host's address. */
const PEER_PORT = 4001
const CUT_SECONDS = 20
/** Rounds after the heal round within which the models must agree again. */
const HEAL_ROUNDS = 2
/** Rounds the peers run after the agreement window, all of which must agree too. */
const LATER_ROUNDS = 4
/** Maximum seconds to wait after the restore for every peer to reach its last round. */
const STOP_WAIT_SECONDS = 120
/** A --rounds value the heal test never reaches, because the test stops its peers. */
const MAX_ROUNDS = 1000

const unavailable = netnsUnavailableReason()
let network: HostNetwork | undefined
const folders: string[] = []

beforeAll(() => {
  if (unavailable === undefined) network = HostNetwork.create(HOSTS)
  // Vitest's summary counts skipped tests but does not show why.
  else console.warn(`host network tests skipped: ${unavailable}`)
})

afterEach(() => {
  for (const folder of folders.splice(0)) rmSync(folder, { recursive: true, force: true })
  if (network === undefined) return
  network.killChildren()
  for (const host of network.hosts) network.restoreLink(host.index)
})

afterAll(() => {
  network?.destroy()
})

/** Returns the network, or skips the test with the reason the machine cannot build one. */
function requireNetwork(skip: (note: string) => never): HostNetwork {
  if (network === undefined) skip(unavailable ?? 'the host network was not built')
  return network
}

function makeFolder(): string {
  const folder = mkdtempSync(join(tmpdir(), 'dlearn-hosts-'))
  folders.push(folder)
  return folder
}

interface PeerProcess {
  child: ChildProcess
  /** stdout and stderr so far, interleaved as they arrived. */
  output(): string
  /** Resolves once `predicate` holds for the output, or rejects on exit. */
  waitUntil(predicate: (output: string) => boolean, description: string): Promise<void>
  /** Resolves with the first match of `pattern` in the output, or rejects on exit. */
  waitFor(pattern: RegExp): Promise<RegExpExecArray>
  exited: Promise<{ code: number | null; output: string }>
}

/** Starts `node node/cli.ts ARGS` inside host `index`'s namespace. */
function startPeer(hosts: HostNetwork, index: number, args: string[]): PeerProcess {
  const child = hosts.spawn(index, process.execPath, [CLI, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  const listeners = new Set<() => void>()
  const onData = (chunk: Buffer) => {
    output += chunk.toString()
    for (const listener of listeners) listener()
  }
  child.stdout?.on('data', onData)
  child.stderr?.on('data', onData)
  const exited = once(child, 'exit').then(([code]) => ({ code: code as number | null, output }))
  const waitUntil = (predicate: (output: string) => boolean, description: string) =>
    new Promise<void>((resolveWait, reject) => {
      const check = () => {
        if (!predicate(output)) return
        listeners.delete(check)
        resolveWait()
      }
      listeners.add(check)
      check()
      void exited.then(() => {
        if (!listeners.delete(check)) return
        reject(new Error(`peer exited before ${description}. Output:\n${output.slice(-3000)}`))
      })
    })
  const waitFor = async (pattern: RegExp) => {
    await waitUntil((text) => pattern.test(text), `printing ${pattern}`)
    return pattern.exec(output) as RegExpExecArray
  }
  return { child, output: () => output, waitUntil, waitFor, exited }
}

/** Highest round a peer has printed a line for, or -1 before its first. */
function lastPrintedRound(output: string): number {
  let last = -1
  for (const match of output.matchAll(/^peer \d+ round (\d+): /gm)) {
    last = Math.max(last, Number(match[1]))
  }
  return last
}

/**
 * Starts one peer on every host, listening on the host's address. Host 0 starts first, and the
 * others bootstrap from its address only, so they find each other through the swarm.
 */
async function startSwarm(
  hosts: HostNetwork,
  common: string[],
  folder: string,
): Promise<PeerProcess[]> {
  const peers: PeerProcess[] = []
  let bootstrap: string | undefined
  for (const host of hosts.hosts) {
    const args = [
      ...common,
      '--peer-index',
      String(host.index),
      '--listen',
      `/ip4/${host.address}/tcp/${PEER_PORT}`,
      '--metrics',
      join(folder, `peer-${host.index}.jsonl`),
    ]
    if (bootstrap !== undefined) args.push('--bootstrap', bootstrap)
    const peer = startPeer(hosts, host.index, args)
    peers.push(peer)
    const listening = (await peer.waitFor(/listening on (\S+)/))[1] as string
    expect(listening).toMatch(
      new RegExp(`^/ip4/${host.address.replaceAll('.', '\\.')}/tcp/${PEER_PORT}/p2p/`),
    )
    bootstrap ??= listening
  }
  return peers
}

/** Parses a metrics file line by line, failing the test on a line that does not parse. */
function readMetrics(path: string): RoundMetrics[] {
  const text = readFileSync(path, 'utf8')
  expect(text.endsWith('\n'), `${path} ends with a newline`).toBe(true)
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line, index) => {
      try {
        return JSON.parse(line) as RoundMetrics
      } catch {
        throw new Error(`${path} line ${index + 1} does not parse: ${line.slice(0, 200)}`)
      }
    })
}

/** Formats one row per round: each peer's model hash (12 hex digits), or '-' where it has no line. */
function hashTable(lines: RoundMetrics[][]): string {
  const lastRound = Math.max(...lines.flat().map((m) => m.round))
  const rows: string[] = []
  for (let round = 0; round <= lastRound; round++) {
    const cells = lines.map(
      (peerLines) => peerLines.find((m) => m.round === round)?.modelHash.slice(0, 12) ?? '-',
    )
    rows.push(`round ${round}: ${cells.join(' ')}`)
  }
  return rows.join('\n')
}

/** Lines of a peer's log about deadlines, catching up, downloads and errors. */
function eventLines(output: string): string {
  return output
    .split('\n')
    .filter((line) => /deadline|behind|download|join|error|fail/i.test(line))
    .slice(-20)
    .join('\n')
}

describe('host network', () => {
  it('cuts and restores one host link', async ({ skip }) => {
    const hosts = requireNetwork(skip)
    const [, host1] = hosts.hosts
    const server = hosts.spawn(1, process.execPath, [
      '-e',
      `require('node:net').createServer((socket) => socket.end('pong')).listen(5000, '${host1?.address}', () => console.log('ready'))`,
    ])
    const ready = new Promise<void>((resolveReady, reject) => {
      server.stdout?.on('data', () => resolveReady())
      server.once('exit', (code) => reject(new Error(`test server exited with code ${code}`)))
    })
    await ready
    // Connects from host 0 to host 1's server and prints what it reads, or exits 1 after 1 s.
    const client = `const socket = require('node:net').connect(5000, '${host1?.address}'); socket.setEncoding('utf8'); socket.on('data', (text) => process.stdout.write(text)); socket.on('error', () => process.exit(1)); setTimeout(() => process.exit(1), 1000).unref()`
    try {
      expect((await hosts.exec(0, process.execPath, ['-e', client])).stdout).toBe('pong')
      hosts.cutLink(1)
      await expect(hosts.exec(0, process.execPath, ['-e', client])).rejects.toThrow()
      hosts.restoreLink(1)
      expect((await hosts.exec(0, process.execPath, ['-e', client])).stdout).toBe('pong')
    } finally {
      server.kill('SIGKILL')
    }
  })
})

describe('peers on hosts of their own', () => {
  const data = [
    '--train-samples',
    '1500',
    '--test-samples',
    '300',
    '--backend',
    'wasm',
    '--no-verify-data',
  ]

  it('train together and agree every round', async ({ skip }) => {
    const hosts = requireNetwork(skip)
    const startedAt = performance.now()
    const folder = makeFolder()
    const rounds = 3
    const common = [
      '--swarm',
      'hosts',
      '--peers',
      String(HOSTS),
      '--rounds',
      String(rounds),
      '--deadline',
      '30',
      ...data,
    ]
    const peers = await startSwarm(hosts, common, folder)
    const results = await Promise.all(peers.map((peer) => peer.exited))
    for (const [index, { code, output }] of results.entries()) {
      expect(code, `peer ${index} exit code. Output:\n${output.slice(-3000)}`).toBe(0)
    }

    const lines = hosts.hosts.map((host) => readMetrics(join(folder, `peer-${host.index}.jsonl`)))
    for (const peerLines of lines) {
      expect(peerLines.map((m) => m.round)).toEqual([...Array(rounds).keys()])
      for (const m of peerLines) expect(m.contributors, `round ${m.round}`).toBe(HOSTS)
    }
    for (const round of Array(rounds).keys()) {
      const hashes = lines.map((peerLines) => peerLines[round]?.modelHash)
      expect(new Set(hashes).size, `model hashes of round ${round}: ${hashes.join(' ')}`).toBe(1)
    }

    console.info(
      `hosts: ${HOSTS} peers, ${rounds} rounds, test ${((performance.now() - startedAt) / 1000).toFixed(1)} s`,
    )
  }, 180_000)

  it('agree again after a cut link heals', async ({ skip }) => {
    const hosts = requireNetwork(skip)
    const startedAt = performance.now()
    const folder = makeFolder()
    const cutHost = 2
    // The peers run until the test stops them, whatever pace this machine trains at. A short
    // deadline keeps a round that misses a delta short, so several rounds pass during the cut.
    const common = [
      '--swarm',
      'hosts-heal',
      '--peers',
      String(HOSTS),
      '--rounds',
      String(MAX_ROUNDS),
      '--deadline',
      '5',
      '--deadline-floor',
      '2',
      ...data,
      // Rounds of a second or more, as real peers train, rather than of a few hundred ms.
      '--epochs',
      '6',
    ]
    const peers = await startSwarm(hosts, common, folder)
    await Promise.all(
      peers.map((peer, index) => peer.waitFor(new RegExp(`peer ${index} round 1: `))),
    )
    hosts.cutLink(cutHost)
    const cutAt = Date.now()
    await new Promise((resolveWait) => setTimeout(resolveWait, CUT_SECONDS * 1000))
    hosts.restoreLink(cutHost)
    const restoredAt = Date.now()

    // The peers run past the last round the agreement may come in, then LATER_ROUNDS more
    // rounds from where the furthest peer is by then, all of which must agree as well.
    const furthest = () => Math.max(...peers.map((peer) => lastPrintedRound(peer.output())))
    const stopRound = furthest() + 1 + HEAL_ROUNDS
    const reachRound = (round: number) =>
      Promise.all(
        peers.map((peer) =>
          peer.waitUntil((output) => lastPrintedRound(output) >= round, `round ${round}`),
        ),
      )
    const reachedAll = (async () => {
      await reachRound(stopRound)
      await reachRound(furthest() + LATER_ROUNDS)
    })().then(
      () => 'reached' as const,
      (error: Error) => error,
    )
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<'timed out'>((resolveWait) => {
      timer = setTimeout(() => resolveWait('timed out'), STOP_WAIT_SECONDS * 1000)
    })
    const outcome = await Promise.race([reachedAll, timedOut])
    clearTimeout(timer)
    for (const peer of peers) peer.child.kill('SIGTERM')
    const results = await Promise.all(peers.map((peer) => peer.exited))

    const lines = hosts.hosts.map((host) => readMetrics(join(folder, `peer-${host.index}.jsonl`)))
    const report = `${hashTable(lines)}\n${results
      .map(({ output }, index) => `peer ${index} log:\n${eventLines(output)}`)
      .join('\n')}`
    const writtenAt = (m: RoundMetrics) => Date.parse(m.time)
    const roundsDuringCut = lines.map((peerLines) =>
      peerLines
        .filter((m) => writtenAt(m) > cutAt && writtenAt(m) < restoredAt)
        .map((m) => m.round),
    )
    // The round a peer is in is the one after its last line. The heal round is the furthest.
    const healRound = Math.max(
      ...lines.map((peerLines) => {
        const before = peerLines.filter((m) => writtenAt(m) <= restoredAt)
        return (before.at(-1)?.round ?? -1) + 1
      }),
    )
    // A peer that downloads the model of round R has the others' model after round R - 1,
    // although it trained no round R - 1 and wrote no line for it.
    const downloads = results.map(({ output }) => {
      const held = new Map<number, string>()
      for (const match of output.matchAll(
        /downloaded the model of round (\d+) from \S+, hash (\w+)/g,
      )) {
        held.set(Number(match[1]) - 1, match[2] as string)
      }
      return held
    })
    const hashesOf = (round: number) =>
      lines.map(
        (peerLines, index) =>
          peerLines.find((m) => m.round === round)?.modelHash ?? downloads[index]?.get(round),
      )
    const lastRound = Math.max(...lines.flat().map((m) => m.round))
    const commonRounds = [...Array(lastRound + 1).keys()].filter(
      (round) => round >= healRound && hashesOf(round).every((hash) => hash !== undefined),
    )
    const agreementRound = commonRounds.find((round) => new Set(hashesOf(round)).size === 1)
    const laterRounds = commonRounds.filter((round) => round > (agreementRound ?? lastRound))
    // TCP resumes a connection only at its next retransmission, which backs off during the
    // cut, so deltas cross the healed link some seconds after the restore. The first round
    // with more contributors than during the cut shows when.
    const crossings = lines.flatMap((peerLines) => {
      const cutMax = Math.max(
        0,
        ...peerLines
          .filter((m) => writtenAt(m) > cutAt && writtenAt(m) < restoredAt)
          .map((m) => m.contributors),
      )
      const first = peerLines.find((m) => writtenAt(m) > restoredAt && m.contributors > cutMax)
      return first === undefined ? [] : [first]
    })
    const firstCrossing = crossings.sort((a, b) => writtenAt(a) - writtenAt(b))[0]
    const crossing =
      firstCrossing === undefined
        ? 'none'
        : `peer ${firstCrossing.peerIndex} round ${firstCrossing.round}, ${((writtenAt(firstCrossing) - restoredAt) / 1000).toFixed(1)} s after the restore`
    const seconds = ((performance.now() - startedAt) / 1000).toFixed(1)
    const during = roundsDuringCut
      .map((rounds, index) => `peer ${index} ${rounds[0]}-${rounds.at(-1)}`)
      .join(', ')
    console.info(
      `hosts heal: rounds during the ${CUT_SECONDS} s cut: ${during}; heal round ${healRound}, first delta across the healed link ${crossing}, agreement round ${agreementRound ?? 'none'}, ${laterRounds.length} later common rounds; test ${seconds} s`,
    )

    // An Error here means a peer exited on its own, and its output follows in the message.
    expect(
      outcome instanceof Error ? outcome.message : outcome,
      `peers reached round ${stopRound} and ${LATER_ROUNDS} rounds more within ${STOP_WAIT_SECONDS} s of the restore\n${report}`,
    ).toBe('reached')
    for (const [index, { code, output }] of results.entries()) {
      // A peer stopped by SIGTERM exits with 128 + 15, as a shell reports it.
      expect(code, `peer ${index} exit code. Output:\n${output.slice(-3000)}`).toBe(143)
      expect(output, `peer ${index} output`).toMatch(/stopped by SIGTERM/)
    }

    for (const [index, during] of roundsDuringCut.entries()) {
      expect(during.length, `rounds of peer ${index} during the cut`).toBeGreaterThan(0)
    }
    expect(
      agreementRound,
      `first round from ${healRound} in which all models agree\n${report}`,
    ).toBeDefined()
    expect(
      agreementRound,
      `agreement round, heal round ${healRound}\n${report}`,
    ).toBeLessThanOrEqual(healRound + HEAL_ROUNDS)
    for (const round of laterRounds) {
      expect(hashesOf(round), `model hashes of round ${round}\n${report}`).toEqual(
        Array(HOSTS).fill(hashesOf(round)[0]),
      )
    }
  }, 300_000)
})
