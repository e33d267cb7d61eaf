import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { type LauncherEvent, runSwarm } from '../../scripts/lib/launcher.ts'
import { readModeMetrics } from '../../scripts/lib/run-folder.ts'

const LAUNCHER = resolve(import.meta.dirname, '../../scripts/spawn-local-swarm.ts')
/** Tiny shards and the wasm backend, so that 16 peer processes fit on 2 cores. */
const TINY = [
  '--train-samples',
  '320',
  '--test-samples',
  '100',
  '--no-verify-data',
  '--backend',
  'wasm',
]

type PortMoved = Extract<LauncherEvent, { type: 'port-moved' }>

function tcpPort(address: string): number {
  const match = /\/tcp\/(\d+)/.exec(address)
  expect(match, address).not.toBeNull()
  return Number(match?.[1])
}

/** Listens on [::]:port, which also takes 127.0.0.1:port, and does so before returning. */
function holdPort(port: number): Server {
  const server = createServer()
  // Without a host, Node binds synchronously. With one, it resolves the host first.
  server.listen(port)
  expect(server.address(), `port ${port} bound synchronously`).not.toBeNull()
  return server
}

const servers: Server[] = []
const folders: string[] = []

/** Makes a run folder that afterEach removes. */
function makeFolder(prefix: string): string {
  const folder = mkdtempSync(join(tmpdir(), prefix))
  folders.push(folder)
  return folder
}

afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => new Promise((done) => server.close(done))))
  for (const folder of folders.splice(0)) rmSync(folder, { recursive: true, force: true })
})

describe('launcher at scale', () => {
  it('starts 16 peers on distinct addresses', async () => {
    const out = makeFolder('dlearn-sixteen-')
    let addresses: string[][] = []
    await runSwarm({
      peers: 16,
      modes: ['parallel'],
      centralised: false,
      rounds: 1,
      target: 0.999,
      partition: 'iid',
      model: 'mlp',
      seed: 5,
      out,
      peerArgs: TINY,
      progress: false,
      onEvent: (event) => {
        if (event.type === 'peers-started') addresses = event.addresses
      },
    })
    expect(addresses).toHaveLength(16)
    for (const [index, list] of addresses.entries()) {
      expect(list.length, `peer ${index} addresses`).toBeGreaterThan(0)
    }
    const all = addresses.flat()
    expect(new Set(all).size).toBe(all.length)
    expect(new Set(addresses.map((list) => tcpPort(list[0] as string))).size).toBe(16)

    const rows = readModeMetrics(out, 'parallel')
    const firstRound = rows.filter((row) => row.round === 0)
    expect(firstRound.map((row) => row.peerIndex).sort((a, b) => a - b)).toEqual([
      ...Array(16).keys(),
    ])
    for (const row of firstRound) {
      expect(row.contributors, `peer ${row.peerIndex} contributors`).toBe(16)
    }
    expect(new Set(firstRound.map((row) => row.modelHash)).size).toBe(1)
  })

  it('moves a peer off a taken port', async () => {
    // Ports below Linux's default ephemeral range (32768-60999) avoid the port-0 listeners and
    // outgoing connections of other tests. A random base makes two runs at once rarely collide.
    const basePort = 20_000 + Math.floor(Math.random() * 10_000)
    servers.push(holdPort(basePort + 1))
    const out = makeFolder('dlearn-ports-')
    const moves: PortMoved[] = []
    let addresses: string[][] = []

    const summary = await runSwarm({
      peers: 3,
      modes: ['parallel'],
      centralised: false,
      rounds: 2,
      target: 0.999,
      partition: 'iid',
      model: 'mlp',
      seed: 2,
      out,
      basePort,
      peerArgs: TINY,
      progress: false,
      onEvent: (event) => {
        if (event.type === 'peers-started') addresses = event.addresses
        if (event.type !== 'port-moved') return
        moves.push(event)
        // Take the fallback port after the launcher probed it and before the peer binds it,
        // so the peer fails with EADDRINUSE and the launcher starts it again.
        if (event.when === 'probe') servers.push(holdPort(event.port))
      },
    })

    expect(moves).toEqual([
      {
        type: 'port-moved',
        mode: 'parallel',
        peerIndex: 1,
        requestedPort: basePort + 1,
        port: basePort + 3,
        when: 'probe',
      },
      {
        type: 'port-moved',
        mode: 'parallel',
        peerIndex: 1,
        requestedPort: basePort + 3,
        port: basePort + 4,
        when: 'bind',
      },
    ])
    expect(addresses.map((list) => list.map(tcpPort))).toEqual([
      [basePort],
      [basePort + 4],
      [basePort + 2],
    ])
    expect(summary.parallel?.rounds).toBe(2)
    const rows = readModeMetrics(out, 'parallel')
    expect(rows).toHaveLength(6)
    for (const row of rows) expect(row.contributors, `peer ${row.peerIndex}`).toBe(3)
  })

  it('rejects a bad --base-port with exit code 2', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--base-port', '80'], /--base-port.*from 1024 to 65532, got '80'/],
      [['--base-port', '65533'], /got '65533'.*4 listen ports need P\+3 <= 65535/],
      [['--peers', '2', '--join-late', '1', '--base-port', '65534'], /to 65533, got '65534'/],
      [['--base-port', 'http'], /--base-port.*got 'http'.*leave out --base-port/],
    ]
    for (const [args, message] of cases) {
      const child = spawn(process.execPath, [LAUNCHER, ...args], {
        stdio: ['ignore', 'pipe', 'pipe'],
      })
      let stderr = ''
      child.stderr.on('data', (chunk: Buffer) => {
        stderr += chunk.toString()
      })
      const [code] = await once(child, 'exit')
      expect(code, args.join(' ')).toBe(2)
      expect(stderr, args.join(' ')).toMatch(message)
    }
    const library = runSwarm({
      peers: 4,
      modes: ['parallel'],
      rounds: 1,
      target: 0.9,
      partition: 'iid',
      model: 'mlp',
      seed: 1,
      out: makeFolder('dlearn-base-port-'),
      basePort: 65533,
      progress: false,
    })
    await expect(library).rejects.toThrow('Expected basePort to be an integer from 1024 to 65532')
  })
})
