import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import {
  CHECKPOINT_FILE,
  type CheckpointOwner,
  decodeCheckpoint,
  encodeCheckpoint,
  loadCheckpoint,
  saveCheckpoint,
} from '../../node/checkpoint.ts'
import { CheckpointError, IdentityError } from '../../node/errors.ts'
import { KEY_FILE, LOCK_FILE, openIdentity } from '../../node/identity.ts'
import { MetricsWriter, type RoundMetrics } from '../../node/metrics.ts'
import { hashWeights } from '../../node/model.ts'

const CLI = resolve(import.meta.dirname, '../../node/cli.ts')
const DEADLINE_SECONDS = 20
/** Time a survivor may wait beyond the deadline, for timer delay and event-loop lag on 2 busy cores. */
const WAIT_MARGIN_MS = 5000

/** Children and folders of the running test, removed in afterEach whatever the outcome. */
const children: ChildProcess[] = []
const folders: string[] = []

afterEach(() => {
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
  for (const folder of folders.splice(0)) rmSync(folder, { recursive: true, force: true })
})

function makeFolder(): string {
  const folder = mkdtempSync(join(tmpdir(), 'dlearn-restart-'))
  folders.push(folder)
  return folder
}

interface PeerProcess {
  child: ChildProcess
  /** Resolves with the first match of `pattern` in stdout and stderr, or rejects on exit. */
  waitFor(pattern: RegExp): Promise<RegExpExecArray>
  exited: Promise<{ code: number | null; output: string }>
}

/** Starts `node node/cli.ts` with `args`, collecting stdout and stderr together. */
function startPeer(args: string[]): PeerProcess {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  children.push(child)
  let output = ''
  const listeners = new Set<() => void>()
  const onData = (chunk: Buffer) => {
    output += chunk.toString()
    for (const listener of listeners) listener()
  }
  child.stdout?.on('data', onData)
  child.stderr?.on('data', onData)
  const exited = once(child, 'exit').then(([code]) => ({ code: code as number | null, output }))
  const waitFor = (pattern: RegExp) =>
    new Promise<RegExpExecArray>((resolveMatch, reject) => {
      const check = () => {
        const match = pattern.exec(output)
        if (match === null) return
        listeners.delete(check)
        resolveMatch(match)
      }
      listeners.add(check)
      check()
      void exited.then(() => {
        if (!listeners.delete(check)) return
        reject(new Error(`peer exited before printing ${pattern}. Output:\n${output.slice(-3000)}`))
      })
    })
  return { child, waitFor, exited }
}

/** Parses a metrics file line by line, failing the test on a line that does not parse. */
function readMetrics(path: string): RoundMetrics[] {
  const text = readFileSync(path, 'utf8')
  expect(text.endsWith('\n'), `${path} ends with a newline`).toBe(true)
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as RoundMetrics)
}

const OWNER: CheckpointOwner = {
  specHash: 'a'.repeat(64),
  peerId: '12D3KooWExample',
  peerIndex: 2,
}

async function checkpointBytes(): Promise<Uint8Array> {
  const weights = [Float32Array.of(1, -2, 3.5), Float32Array.of(0.25)]
  const state = { round: 7, modelHash: await hashWeights(weights), weights }
  return Buffer.concat(encodeCheckpoint(state, OWNER))
}

/** Returns the id of a process that has exited, so no process runs under it. */
async function exitedPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' })
  await once(child, 'exit')
  return child.pid as number
}

describe('checkpoint file', () => {
  it('round-trips round, hash and weights', async () => {
    const bytes = await checkpointBytes()
    const state = await decodeCheckpoint(bytes, OWNER, 'test.bin')
    expect(state.round).toBe(7)
    expect(state.weights).toEqual([Float32Array.of(1, -2, 3.5), Float32Array.of(0.25)])
    expect(state.modelHash).toBe(await hashWeights(state.weights))
  })

  it('rejects damaged and foreign files', async () => {
    const bytes = await checkpointBytes()
    const flipped = (offset: number) => {
      const copy = Uint8Array.from(bytes)
      copy[offset] = (copy[offset] as number) ^ 0xff
      return copy
    }
    const cases: Array<[string, Uint8Array, CheckpointOwner, RegExp]> = [
      ['empty', new Uint8Array(0), OWNER, /has 0 bytes/],
      ['wrong magic', flipped(0), OWNER, /not a dlearn checkpoint/],
      ['wrong version', flipped(4), OWNER, /format version/],
      ['garbled header', flipped(14), OWNER, /header does not parse/],
      ['truncated', bytes.subarray(0, bytes.byteLength - 1), OWNER, /header describes/],
      ['flipped weight', flipped(bytes.byteLength - 2), OWNER, /weights hash to/],
      ['other spec', bytes, { ...OWNER, specHash: 'b'.repeat(64) }, /saved for swarm spec a+,/],
      ['other peer', bytes, { ...OWNER, peerId: '12D3KooWOther' }, /saved by peer 12D3KooWEx/],
      ['other shard', bytes, { ...OWNER, peerIndex: 3 }, /--peer-index 2, got 3/],
    ]
    for (const [name, input, owner, message] of cases) {
      const decoding = decodeCheckpoint(input, owner, 'test.bin')
      await expect(decoding, name).rejects.toThrow(CheckpointError)
      await expect(decodeCheckpoint(input, owner, 'test.bin'), name).rejects.toThrow(message)
    }
  })

  it('is saved with mode 0600 and no temporary file left', async () => {
    const folder = makeFolder()
    const weights = [Float32Array.of(1, 2)]
    const state = { round: 3, modelHash: await hashWeights(weights), weights }
    await saveCheckpoint(folder, state, OWNER)
    await saveCheckpoint(folder, { ...state, round: 4 }, OWNER)
    expect(readdirSync(folder)).toEqual([CHECKPOINT_FILE])
    expect(statSync(join(folder, CHECKPOINT_FILE)).mode & 0o777).toBe(0o600)
    expect((await loadCheckpoint(folder, OWNER))?.round).toBe(4)
    expect(await loadCheckpoint(makeFolder(), OWNER)).toBeUndefined()
  })
})

describe('peer identity', () => {
  it('keeps the peer id across opens', async () => {
    const folder = join(makeFolder(), 'state')
    const first = await openIdentity(folder)
    expect(first.created).toBe(true)
    expect(statSync(join(folder, KEY_FILE)).mode & 0o777).toBe(0o600)
    first.release()
    expect(existsSync(join(folder, LOCK_FILE))).toBe(false)
    const second = await openIdentity(folder)
    second.release()
    expect(second.created).toBe(false)
    expect(second.peerId).toBe(first.peerId)
  })

  it('locks the folder against a second peer', async () => {
    const folder = makeFolder()
    const locked = await openIdentity(folder)
    try {
      await expect(openIdentity(folder)).rejects.toThrow(IdentityError)
    } finally {
      locked.release()
    }
    // The parent of this process runs, so its lock holds.
    writeFileSync(join(folder, LOCK_FILE), `${process.ppid}\n`)
    await expect(openIdentity(folder)).rejects.toThrow(`in use by process ${process.ppid}`)
    // A lock left by kill -9 is taken over.
    writeFileSync(join(folder, LOCK_FILE), `${await exitedPid()}\n`)
    const takenOver = await openIdentity(folder)
    expect(readFileSync(join(folder, LOCK_FILE), 'utf8')).toBe(`${process.pid}\n`)
    takenOver.release()
  })

  it('rejects a corrupt key file', async () => {
    const folder = makeFolder()
    writeFileSync(join(folder, KEY_FILE), 'not a key', { mode: 0o600 })
    await expect(openIdentity(folder)).rejects.toThrow(/Invalid private key in .*peer\.key/)
    expect(existsSync(join(folder, LOCK_FILE))).toBe(false)
  })
})

describe('metrics file', () => {
  it('ends a cut line before appending', () => {
    const path = join(makeFolder(), 'peer.jsonl')
    writeFileSync(path, '{"round":0}\n{"round":1,"acc')
    const writer = new MetricsWriter(path)
    writer.append({ round: 2 } as RoundMetrics)
    writer.close()
    const lines = readFileSync(path, 'utf8').split('\n')
    expect(lines).toEqual(['{"round":0}', '{"round":1,"acc', '{"round":2}', ''])
  })
})

describe('npm run peer --state-dir', () => {
  it('exits 2 on a corrupt checkpoint', async () => {
    const folder = makeFolder()
    const identity = await openIdentity(folder)
    identity.release()
    writeFileSync(join(folder, CHECKPOINT_FILE), 'DLCK garbage')
    writeFileSync(join(folder, `.${CHECKPOINT_FILE}.1.x.tmp`), 'left by a crash')
    const peer = startPeer(['--state-dir', folder, '--train-samples', '100'])
    const { code, output } = await peer.exited
    expect(code).toBe(2)
    expect(output).toMatch(/Invalid checkpoint .*checkpoint\.bin.*--join/)
    expect(readdirSync(folder).sort()).toEqual([CHECKPOINT_FILE, KEY_FILE])
  })

  it('resumes alone from its checkpoint', async () => {
    const folder = makeFolder()
    const args = [
      '--train-samples',
      '1000',
      '--test-samples',
      '200',
      '--backend',
      'wasm',
      '--no-verify-data',
      '--state-dir',
      join(folder, 'state'),
      '--metrics',
      join(folder, 'peer.jsonl'),
    ]
    const first = await startPeer([...args, '--rounds', '1']).exited
    expect(first.code).toBe(0)
    const second = await startPeer([...args, '--rounds', '2']).exited
    expect(second.code).toBe(0)
    expect(second.output).toMatch(/resuming from the checkpoint of round 1/)
    const lines = readMetrics(join(folder, 'peer.jsonl'))
    expect(lines.map((m) => m.round)).toEqual([0, 1])
    expect(lines[1]?.peerId).toBe(lines[0]?.peerId)
  })

  it('rejoins after kill -9 with the same peer id', async () => {
    const startedAt = performance.now()
    const folder = makeFolder()
    const metricsPath = (peerIndex: number) => join(folder, `peer-${peerIndex}.jsonl`)
    const rounds = 6
    const common = [
      '--swarm',
      'restart',
      '--peers',
      '4',
      '--min-peers',
      '4',
      '--train-samples',
      '2000',
      '--test-samples',
      '500',
      '--deadline',
      String(DEADLINE_SECONDS),
      '--rounds',
      String(rounds),
      '--backend',
      'wasm',
      '--no-verify-data',
      '--listen',
      '/ip4/127.0.0.1/tcp/0',
    ]
    const survivors: PeerProcess[] = []
    const addresses: string[] = []
    for (const peerIndex of [0, 1, 2]) {
      const bootstrap = addresses.flatMap((address) => ['--bootstrap', address])
      const args = [
        ...common,
        '--peer-index',
        String(peerIndex),
        '--metrics',
        metricsPath(peerIndex),
      ]
      const peer = startPeer([...args, ...bootstrap])
      survivors.push(peer)
      addresses.push((await peer.waitFor(/listening on (\S+)/))[1] as string)
    }
    const victimArgs = [
      ...common,
      '--peer-index',
      '3',
      '--metrics',
      metricsPath(3),
      '--state-dir',
      join(folder, 'state-3'),
      ...addresses.flatMap((address) => ['--bootstrap', address]),
    ]
    const victim = startPeer(victimArgs)
    const victimId = (await victim.waitFor(/peer (\S+) listening on/))[1]
    await victim.waitFor(/peer 3 round 2: /)
    victim.child.kill('SIGKILL')
    const killedAt = performance.now()
    const killed = await victim.exited
    expect(killed.code).toBeNull()
    const firstLife = readMetrics(metricsPath(3))

    const restarted = startPeer(victimArgs)
    const rejoinedAt = restarted
      .waitFor(/downloaded the model of round \d+ from/)
      .then(() => performance.now())
    expect((await restarted.waitFor(/peer (\S+) listening on/))[1]).toBe(victimId)
    const results = await Promise.all([...survivors, restarted].map((peer) => peer.exited))
    for (const { code } of results) expect(code).toBe(0)
    expect(results[3]?.output).toMatch(/loaded the checkpoint taken before round/)
    expect(results[3]?.output).toMatch(/joins at round \d+/)
    const rejoinSeconds = ((await rejoinedAt) - killedAt) / 1000

    // The swarm was in the round after the victim's last line when it died.
    const killedInRound = (firstLife.at(-1)?.round ?? -1) + 1
    expect(killedInRound).toBeGreaterThanOrEqual(3)
    const survivorLines = [0, 1, 2].map((peerIndex) => readMetrics(metricsPath(peerIndex)))
    for (const lines of survivorLines) {
      expect(lines.map((m) => m.round)).toEqual([...Array(rounds).keys()])
      for (const m of lines) expect(m.waitMs).toBeLessThan(DEADLINE_SECONDS * 1000 + WAIT_MARGIN_MS)
      expect(lines.some((m) => m.contributors === 3)).toBe(true)
      // The crash costs at most one deadline: later rounds no longer wait for the dead peer,
      // and none waits once its restarted process announced the round it rejoins at.
      expect(lines.filter((m) => m.deadlineHit).length).toBeLessThanOrEqual(1)
    }
    const hashAt = (round: number) => survivorLines[0]?.find((m) => m.round === round)?.modelHash
    for (const lines of survivorLines.slice(1)) {
      for (const m of lines) expect(m.modelHash, `round ${m.round}`).toBe(hashAt(m.round))
    }

    const victimLines = readMetrics(metricsPath(3))
    expect(victimLines.slice(0, firstLife.length)).toEqual(firstLife)
    const secondLife = victimLines.slice(firstLife.length)
    const joinRound = secondLife[0]?.round ?? Number.NaN
    // Back with the swarm's model within two rounds of the one it died in.
    expect(joinRound).toBeLessThanOrEqual(killedInRound + 2)
    for (const m of victimLines) expect(m.peerId).toBe(victimId)
    for (const m of secondLife) expect(m.modelHash, `round ${m.round}`).toBe(hashAt(m.round))
    expect(secondLife.at(-1)?.round).toBe(rounds - 1)
    expect(existsSync(join(folder, 'state-3', LOCK_FILE))).toBe(false)

    const longestWait = Math.max(...survivorLines.flat().map((m) => m.waitMs))
    console.info(
      `restart: killed in round ${killedInRound}, survivors' rounds closed by the deadline ${survivorLines.flat().filter((m) => m.deadlineHit).length}, model downloaded ${rejoinSeconds.toFixed(1)} s after the kill, first round back ${joinRound}, longest survivor wait ${longestWait} ms (bound ${DEADLINE_SECONDS * 1000 + WAIT_MARGIN_MS} ms), test ${((performance.now() - startedAt) / 1000).toFixed(1)} s`,
    )
  })

  it('is redialled after a restart with a new key', async () => {
    const common = [
      '--swarm',
      'redial',
      '--peers',
      '3',
      '--min-peers',
      '3',
      '--train-samples',
      '600',
      '--test-samples',
      '100',
      '--rounds',
      '50',
      '--deadline-floor',
      '1',
      '--backend',
      'wasm',
      '--no-verify-data',
    ]
    const victimArgs = (port: number) => [
      ...common,
      '--peer-index',
      '2',
      '--listen',
      `/ip4/127.0.0.1/tcp/${port}`,
    ]
    const victim = startPeer(victimArgs(0))
    const [, victimId, victimAddress] = await victim.waitFor(/peer (\S+) listening on (\S+)/)
    const port = Number(/\/tcp\/(\d+)\//.exec(victimAddress as string)?.[1])
    // The others know the victim only by the address they bootstrapped from.
    const others = [0, 1].map((peerIndex) =>
      startPeer([
        ...common,
        '--peer-index',
        String(peerIndex),
        '--listen',
        '/ip4/127.0.0.1/tcp/0',
        '--bootstrap',
        victimAddress as string,
      ]),
    )
    await victim.waitFor(/peer 2 round 0: /)
    victim.child.kill('SIGKILL')
    await victim.exited

    const restarted = startPeer(victimArgs(port))
    const [, newId] = await restarted.waitFor(/peer (\S+) listening on/)
    const listeningAt = performance.now()
    expect(newId).not.toBe(victimId)
    const reached = new RegExp(`reached /ip4/127.0.0.1/tcp/${port}\\S* again, now peer ${newId}`)
    await Promise.all(others.map((other) => other.waitFor(reached)))
    const seconds = (performance.now() - listeningAt) / 1000
    console.info(`redial: both peers reached the new key ${seconds.toFixed(1)} s after it listened`)
    // The lost address is dialled every 2 s at most, so the bound leaves room for a busy machine.
    expect(seconds).toBeLessThan(10)
  })
})
