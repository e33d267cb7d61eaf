import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { resolve } from 'node:path'
import { describe, expect, it } from 'vitest'

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

describe('npm run peer', () => {
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

  it('exits 2 naming a missing data folder', async () => {
    const { code, stderr } = await runPeer(['--data-dir', '/nonexistent/mnist'])
    expect(code).toBe(2)
    expect(stderr).toMatch(/\/nonexistent\/mnist/)
  })
})
