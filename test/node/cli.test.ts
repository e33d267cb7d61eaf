import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { BACKEND_NAMES } from '../../node/backend.ts'

const CLI = resolve(import.meta.dirname, '../../node/cli.ts')

async function runPeer(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
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

/** Peers started by startPeer; a failed test must not leave them running. */
const started: ChildProcess[] = []

afterEach(() => {
  for (const child of started.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
})

/** Starts a peer by hand and resolves with its first listen address once it prints it. */
function startPeer(args: string[]) {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  started.push(child)
  let output = ''
  const address = new Promise<string>((resolveAddress) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString()
      const match = /listening on (\S+)/.exec(output)
      if (match?.[1] !== undefined) resolveAddress(match[1])
    }
    child.stdout.on('data', onData)
    child.stderr.on('data', onData)
  })
  const exited = once(child, 'exit').then(([code]) => ({ code: code as number, output }))
  return { address, exited }
}

describe('npm run peer', () => {
  it('joins peers started by hand with --bootstrap', async () => {
    const common = [
      '--peers',
      '3',
      '--rounds',
      '1',
      '--train-samples',
      '1500',
      '--test-samples',
      '500',
      '--backend',
      'wasm',
    ]
    const first = startPeer([...common, '--peer-index', '0'])
    const firstAddress = await first.address
    const second = startPeer([...common, '--peer-index', '1', '--bootstrap', firstAddress])
    await second.address
    // The third peer gets only the first's address and learns the second's from its peer list.
    const third = startPeer([...common, '--peer-index', '2', '--bootstrap', firstAddress])
    const results = await Promise.all([first.exited, second.exited, third.exited])
    const hashes = results.map(
      ({ output }) => /finished after 1 round\(s\): .*model ([0-9a-f]{64})/.exec(output)?.[1],
    )
    for (const { code } of results) expect(code).toBe(0)
    for (const { output } of results) expect(output).toMatch(/contributors 3 /)
    expect(hashes[0]).toMatch(/^[0-9a-f]{64}$/)
    expect(hashes[1]).toBe(hashes[0])
    expect(hashes[2]).toBe(hashes[0])
  })

  it('documents every option with its default', async () => {
    const { code, stdout } = await runPeer(['--help'])
    expect(code).toBe(0)
    const optionLines = stdout.split('\n').filter((line) => line.startsWith('  --'))
    expect(optionLines.length).toBeGreaterThanOrEqual(25)
    for (const line of optionLines) {
      if (line.includes('--help')) continue
      expect(line).toMatch(/\(default: .+\)$/)
    }
  })

  it('rejects bad values with exit code 2', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--peers', '0'], /peers.*from 1/],
      [['--peers', '4', '--peer-index', '4'], /--peer-index.*0 to 3/],
      [['--learning-rate', 'fast'], /--learning-rate.*number.*'fast'/],
      [['--partition', 'random'], /random.*iid/],
      [['--backend', 'gpu'], /--backend.*tensorflow-gpu.*'gpu'/],
      [['--listen', 'localhost:4001'], /--listen 'localhost:4001'.*multiaddr/],
      [['--bootstrap', '/ip4/127.0.0.1/tcp/4001'], /--bootstrap.*\/p2p\//],
      [['--target', '97'], /--target.*fraction/],
      [['--verbose'], /verbose/],
    ]
    for (const [args, message] of cases) {
      const { code, stderr } = await runPeer(args)
      expect(code, args.join(' ')).toBe(2)
      expect(stderr, args.join(' ')).toMatch(message)
    }
  })

  it('exits 2 with an install hint for a missing backend', async () => {
    const { code, stderr } = await runPeer([
      '--backend',
      'tensorflow-gpu',
      '--train-samples',
      '100',
    ])
    expect(code).toBe(2)
    expect(stderr).toMatch(/tensorflow-gpu.*not installed.*npm install @tensorflow\/tfjs-node-gpu/)
  })

  it('logs each backend auto skips and records the one it trains on', async () => {
    const folder = mkdtempSync(join(tmpdir(), 'dlearn-auto-'))
    try {
      const metrics = join(folder, 'peer-0.jsonl')
      const { code, stderr } = await runPeer([
        '--backend',
        'auto',
        '--peers',
        '1',
        '--rounds',
        '1',
        '--train-samples',
        '200',
        '--test-samples',
        '100',
        '--no-verify-data',
        '--metrics',
        metrics,
      ])
      expect(code, stderr).toBe(0)
      const chosen = /backend (\S+) \(auto\)/.exec(stderr)?.[1]
      expect(BACKEND_NAMES).toContain(chosen)
      // Every backend tried before the chosen one is named with the reason it could not load.
      const order = ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu']
      for (const skipped of order.slice(0, order.indexOf(chosen as string))) {
        expect(stderr).toMatch(new RegExp(`backend ${skipped} skipped: \\S`))
      }
      const [line] = readFileSync(metrics, 'utf8').trim().split('\n')
      expect(JSON.parse(line as string).backend).toBe(chosen)
    } finally {
      rmSync(folder, { recursive: true, force: true })
    }
  })

  it('exits 2 naming a missing data folder', async () => {
    const { code, stderr } = await runPeer(['--data-dir', '/nonexistent/mnist'])
    expect(code).toBe(2)
    expect(stderr).toMatch(/\/nonexistent\/mnist/)
  })
})
