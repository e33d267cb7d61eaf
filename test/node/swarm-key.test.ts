import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import {
  chmodSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import type { Message } from '@libp2p/interface'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { InvalidSwarmKeyError } from '../../node/errors.ts'
import { createHost, describeDialFailure, type Host, type HostInit } from '../../node/host.ts'
import {
  formatSwarmKey,
  parseSwarmKey,
  readSwarmKeyFile,
  SWARM_KEY_BYTES,
} from '../../node/swarm-key.ts'

const CLI = resolve(import.meta.dirname, '../../node/cli.ts')
const GENERATOR = resolve(import.meta.dirname, '../../scripts/swarm-key.ts')
const TOPIC = '/dlearn/test/swarm-key'
/**
 * Limit of the dials expected to fail. Peers with different keys can both wait for bytes that
 * never come, which ends only at the dial timeout, 10 s by default.
 */
const FAILING_DIAL_MS = 3000

const hosts: Host[] = []
const folders: string[] = []

afterEach(async () => {
  vi.restoreAllMocks()
  await Promise.all(hosts.splice(0).map((host) => host.stop()))
  for (const folder of folders.splice(0)) rmSync(folder, { recursive: true, force: true })
})

function newKeyFile(): Uint8Array {
  return new TextEncoder().encode(formatSwarmKey(randomBytes(SWARM_KEY_BYTES)))
}

function newFolder(): string {
  const folder = mkdtempSync(join(tmpdir(), 'dlearn-swarm-key-'))
  folders.push(folder)
  return folder
}

async function startHost(init: HostInit = {}): Promise<Host> {
  const host = await createHost({ listen: ['/ip4/127.0.0.1/tcp/0'], ...init })
  hosts.push(host)
  return host
}

function addressOf(host: Host): string {
  const address = host.getMultiaddrs()[0]
  if (address === undefined) throw new Error(`host ${host.peerId} has no listen address`)
  return address.toString()
}

/** Dials `to` from `from` and returns the error, or undefined when the dial succeeded. */
async function dialError(from: Host, to: Host): Promise<unknown> {
  try {
    await from.dial(to.getMultiaddrs(), { signal: AbortSignal.timeout(FAILING_DIAL_MS) })
    return undefined
  } catch (error) {
    return error
  }
}

/** Resolves once the topic subscribers that `host` tracks include `peer`. */
async function waitForSubscriber(host: Host, peer: Host): Promise<void> {
  const pubsub = host.services.pubsub
  const subscribed = () => pubsub.getSubscribers(TOPIC).some((id) => id.equals(peer.peerId))
  while (!subscribed()) await once(pubsub, 'subscription-change')
}

/**
 * Publishes `data` from `from` until gossipsub reports `to` among the recipients. Gossipsub
 * skips a subscriber whose outbound stream is still opening, and it emits no event when that
 * stream opens, so the publish is repeated every 50 ms. A copy sent to no peer can still
 * arrive later through gossip, so `to` may receive `data` more than once.
 */
async function publishUntilReceived(from: Host, to: Host, data: Uint8Array): Promise<void> {
  for (;;) {
    const { recipients } = await from.services.pubsub.publish(TOPIC, data)
    if (recipients.some((id) => id.equals(to.peerId))) return
    await delay(50)
  }
}

/** Collects the data of every message that arrives at `host` on the topic. */
function collectMessages(host: Host): Uint8Array[] {
  const received: Uint8Array[] = []
  host.services.pubsub.addEventListener('message', (event: CustomEvent<Message>) => {
    if (event.detail.topic === TOPIC) received.push(event.detail.data)
  })
  return received
}

describe('private swarm hosts', () => {
  it('share messages only with the same key', async () => {
    const swarmKey = newKeyFile()
    const first = await startHost({ swarmKey })
    const second = await startHost({ swarmKey })
    const otherKey = await startHost({ swarmKey: newKeyFile() })
    const noKey = await startHost()
    for (const host of [first, second, otherKey, noKey]) host.services.pubsub.subscribe(TOPIC)

    const failedDials: Array<[string, Host, Host, boolean]> = [
      ['other key to key', otherKey, first, true],
      ['key to other key', first, otherKey, true],
      ['no key to key', noKey, first, false],
      ['key to no key', first, noKey, true],
    ]
    const errors = await Promise.all(failedDials.map(([, from, to]) => dialError(from, to)))
    for (const [index, [name, , to, dialerHasKey]] of failedDials.entries()) {
      const error = errors[index]
      expect(error, name).toBeInstanceOf(Error)
      if (dialerHasKey) {
        const line = describeDialFailure(addressOf(to), error, true)
        expect(line, name).toContain(addressOf(to))
        expect(line, name).toMatch(/pre-shared key likely differs/)
      }
    }

    // The hosts that received the rejected connections still accept a peer with their key.
    await second.dial(first.getMultiaddrs())
    await waitForSubscriber(first, second)
    const atSecond = collectMessages(second)
    const atOtherKey = collectMessages(otherKey)
    const atNoKey = collectMessages(noKey)
    const arrived = once(second.services.pubsub, 'message')
    const data = new TextEncoder().encode('delta for the private swarm')
    await publishUntilReceived(first, second, data)
    await arrived

    expect(atSecond.length).toBeGreaterThan(0)
    for (const received of atSecond) expect(received).toEqual(data)
    expect(atOtherKey).toEqual([])
    expect(atNoKey).toEqual([])
    const connectedToFirst = first.getConnections().map((c) => c.remotePeer.toString())
    expect(connectedToFirst).toEqual([second.peerId.toString()])
    expect(otherKey.getConnections()).toEqual([])
    expect(noKey.getConnections()).toEqual([])
  })

  it('explain a failed bootstrap dial', async () => {
    const lines: string[] = []
    const logged = new Promise<void>((resolveLogged) => {
      vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
        lines.push(chunk.toString())
        if (chunk.toString().includes('dial to')) resolveLogged()
        return true
      })
    })
    // A dialer with a key fails against a listener without one within pnet's 1 s nonce
    // exchange. Two different keys can take until the 10 s dial timeout.
    const listener = await startHost()
    const listenerAddress = `${addressOf(listener)}`
    const swarmKey = newKeyFile()
    const dialer = await startHost({ swarmKey, bootstrap: [listenerAddress] })
    await logged

    const line = lines.find((text) => text.includes('dial to')) ?? ''
    expect(line).toContain(listenerAddress)
    expect(line).toMatch(/pre-shared key likely differs/)
    const hex = new TextDecoder().decode(swarmKey).split('\n')[2] ?? ''
    expect(hex).toHaveLength(64)
    expect(line).not.toContain(hex)
    expect(dialer.getConnections()).toEqual([])
  })

  it('reject a malformed key at creation', async () => {
    const malformed = new TextEncoder().encode('/key/swarm/psk/1.0.0/\n/base16/\nabcd\n')
    await expect(createHost({ swarmKey: malformed })).rejects.toThrow(InvalidSwarmKeyError)
  })
})

describe('parseSwarmKey', () => {
  it('reads back a formatted key', () => {
    const key = randomBytes(SWARM_KEY_BYTES)
    const file = new TextEncoder().encode(formatSwarmKey(key))
    expect(Buffer.from(parseSwarmKey(file))).toEqual(key)
  })

  it('accepts CRLF and upper-case digits', () => {
    const key = randomBytes(SWARM_KEY_BYTES)
    const hex = key.toString('hex').toUpperCase()
    const file = new TextEncoder().encode(`/key/swarm/psk/1.0.0/\r\n/base16/\r\n${hex}\r\n`)
    expect(Buffer.from(parseSwarmKey(file))).toEqual(key)
  })

  it('rejects malformed files without leaking the key', () => {
    const hex = 'ab'.repeat(SWARM_KEY_BYTES)
    const cases: Array<[string, Uint8Array, RegExp]> = [
      ['empty', new Uint8Array(0), /first line/],
      ['no header', text(`/base16/\n${hex}\n`), /first line/],
      ['base64', text(`/key/swarm/psk/1.0.0/\n/base64/\n${hex}\n`), /second line.*\/base16\//],
      ['short key', text(`/key/swarm/psk/1.0.0/\n/base16/\n${hex.slice(1)}\n`), /64 hex.*63/],
      ['no key', text('/key/swarm/psk/1.0.0/\n/base16/\n'), /64 hex.*found 0/],
      ['not hex', text(`/key/swarm/psk/1.0.0/\n/base16/\n${hex.slice(1)}g\n`), /not a hex/],
      ['extra line', text(`/key/swarm/psk/1.0.0/\n/base16/\n${hex}\nmore\n`), /more than three/],
      ['not UTF-8', Uint8Array.from([0xff, 0xfe, 0x00]), /UTF-8/],
    ]
    for (const [name, file, message] of cases) {
      let error: unknown
      try {
        parseSwarmKey(file)
      } catch (caught) {
        error = caught
      }
      expect(error, name).toBeInstanceOf(InvalidSwarmKeyError)
      expect((error as Error).message, name).toMatch(message)
      expect((error as Error).message, name).not.toContain(hex.slice(1, 20))
    }
  })
})

function text(value: string): Uint8Array {
  return new TextEncoder().encode(value)
}

async function run(
  script: string,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString()
  })
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString()
  })
  const [code] = await once(child, 'exit')
  return { code: code as number, stdout, stderr }
}

describe('npm run swarm-key', () => {
  it('writes a key file with mode 0600', async () => {
    const path = join(newFolder(), 'swarm.key')
    const { code, stdout } = await run(GENERATOR, [path])
    expect(code).toBe(0)
    expect(stdout).toContain(path)
    expect(parseSwarmKey(readFileSync(path))).toHaveLength(SWARM_KEY_BYTES)
    expect(statSync(path).mode & 0o777).toBe(0o600)
  })

  it('rejects an existing file unless --force', async () => {
    const folder = newFolder()
    const path = join(folder, 'swarm.key')
    expect((await run(GENERATOR, [path])).code).toBe(0)
    const original = readFileSync(path)

    const again = await run(GENERATOR, [path])
    expect(again.code).toBe(2)
    expect(again.stderr).toContain(path)
    expect(again.stderr).toContain('--force')
    expect(readFileSync(path)).toEqual(original)

    const forced = await run(GENERATOR, ['--force', path])
    expect(forced.code).toBe(0)
    expect(readFileSync(path)).not.toEqual(original)
    expect(parseSwarmKey(readFileSync(path))).toHaveLength(SWARM_KEY_BYTES)
    expect(statSync(path).mode & 0o777).toBe(0o600)
    expect(readdirSync(folder)).toEqual(['swarm.key'])
  })

  it('prints help and exits 2 on bad usage', async () => {
    const help = await run(GENERATOR, ['--help'])
    expect(help.code).toBe(0)
    expect(help.stdout).toMatch(/Usage: npm run swarm-key -- \[--force\] FILE/)
    const folder = newFolder()
    const cases: Array<[string[], RegExp]> = [
      [[], /missing FILE/],
      [[join(folder, 'a.key'), join(folder, 'b.key')], /expected one FILE, got 2/],
      [['--verbose', join(folder, 'a.key')], /--verbose/],
      [[join(folder, 'missing', 'a.key')], /folder.*does not exist/],
    ]
    for (const [args, message] of cases) {
      const { code, stderr } = await run(GENERATOR, args)
      expect(code, args.join(' ')).toBe(2)
      expect(stderr, args.join(' ')).toMatch(message)
    }
    expect(readdirSync(folder)).toEqual([])
  })
})

describe('npm run peer --swarm-key', () => {
  it('exits 2 naming a missing key file', async () => {
    const path = join(newFolder(), 'missing.key')
    const { code, stderr } = await run(CLI, ['--swarm-key', path])
    expect(code).toBe(2)
    expect(stderr).toContain(`'${path}' not found`)
    expect(stderr).toContain(`npm run swarm-key -- ${path}`)
  })

  it('exits 2 naming a malformed key file', async () => {
    const path = join(newFolder(), 'malformed.key')
    const secret = 'cd'.repeat(SWARM_KEY_BYTES - 1)
    writeFileSync(path, `/key/swarm/psk/1.0.0/\n/base16/\n${secret}\n`)
    const { code, stderr } = await run(CLI, ['--swarm-key', path])
    expect(code).toBe(2)
    expect(stderr).toContain(`Invalid swarm key file '${path}'`)
    expect(stderr).toContain('npm run swarm-key')
    expect(stderr).not.toContain(secret)
  })

  it('warns about a readable key file', () => {
    const path = join(newFolder(), 'open.key')
    writeFileSync(path, formatSwarmKey(randomBytes(SWARM_KEY_BYTES)))
    // An explicit chmod, because the umask may strip bits from the mode that writeFileSync gets.
    chmodSync(path, 0o644)
    const written: string[] = []
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => {
      written.push(String(chunk))
      return true
    })
    try {
      expect(readSwarmKeyFile(path)).toHaveLength(readFileSync(path).length)
    } finally {
      spy.mockRestore()
    }
    expect(written.join('')).toContain(`'${path}' has mode 0644`)
    expect(written.join('')).toContain(`chmod 600 '${path}'`)
  })
})
