import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { accuracyAxisMin } from '../../scripts/lib/convergence-spec.ts'
import { PNG_WIDTH, renderConvergence } from '../../scripts/lib/plot.ts'
import { RunFolderError, type SkippedLine } from '../../scripts/lib/run-folder.ts'
import { writeFileAtomic } from '../../scripts/lib/write-atomic.ts'

const REPO_ROOT = resolve(import.meta.dirname, '../..')
const NODE = join(REPO_ROOT, 'node_modules/.bin/node')
const CLI = join(REPO_ROOT, 'scripts/plot-convergence.ts')
const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]

// Accuracy of each peer per round. Parallel and centralised reach 0.97 and serial stops at 0.96.
const ACCURACIES: Record<string, number[][]> = {
  parallel: [
    [0.9, 0.95, 0.97, 0.98],
    [0.91, 0.96, 0.965, 0.975],
  ],
  serial: [
    [0.88, 0.93, 0.95, 0.96],
    [0.89, 0.92, 0.955, 0.962],
  ],
  centralised: [
    [0.92, 0.96, 0.975],
    [0.93, 0.97, 0.98],
  ],
}
const SECONDS_PER_ROUND: Record<string, number> = { parallel: 2, serial: 5, centralised: 3 }

function writeRun(runDir: string, modes: string[], summary: object | undefined) {
  if (summary !== undefined) writeFileSync(join(runDir, 'summary.json'), JSON.stringify(summary))
  for (const mode of modes) {
    mkdirSync(join(runDir, mode))
    for (const [peerIndex, accuracies] of (ACCURACIES[mode] ?? []).entries()) {
      const lines = accuracies.map((accuracy, round) =>
        JSON.stringify({
          mode,
          peerIndex,
          peerId: `12D3KooWPeer${peerIndex}`,
          round,
          elapsedSeconds: (SECONDS_PER_ROUND[mode] ?? 1) * (round + 1) + 0.1 * peerIndex,
          accuracy,
          loss: 1 - accuracy,
        }),
      )
      writeFileSync(join(runDir, mode, `peer-${peerIndex}.jsonl`), `${lines.join('\n')}\n`)
    }
  }
}

const SUMMARY = { target: 0.97, peers: 2, model: 'mlp', backend: 'wasm', partition: 'iid', seed: 1 }

function runCli(...args: string[]) {
  return spawnSync(NODE, [CLI, ...args], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 60_000 })
}

let runDir: string

beforeEach(() => {
  runDir = mkdtempSync(join(tmpdir(), 'dlearn-plot-'))
})

afterEach(() => {
  rmSync(runDir, { recursive: true, force: true })
})

describe('accuracyAxisMin', () => {
  it('rounds the minimum down to 5 %', () => {
    expect(accuracyAxisMin([0.93, 0.99], 0.97)).toBe(0.9)
  })

  it('stays below a target under all data', () => {
    expect(accuracyAxisMin([0.985, 0.99], 0.97)).toBe(0.95)
  })

  it('follows low accuracies down', () => {
    expect(accuracyAxisMin([0.1, 0.9], 0.97)).toBe(0.05)
  })

  it('absorbs floating-point error', () => {
    expect(accuracyAxisMin([0.21], 0.97)).toBe(0.2)
  })

  it('stops at zero', () => {
    expect(accuracyAxisMin([0.005], 0.97)).toBe(0)
  })
})

describe('writeFileAtomic', () => {
  it('replaces an existing file', () => {
    const path = join(runDir, 'plot.svg')
    writeFileSync(path, 'old')

    writeFileAtomic(path, 'new')

    expect(readFileSync(path, 'utf8')).toBe('new')
    expect(readdirSync(runDir)).toEqual(['plot.svg'])
  })

  it('removes the temporary file on failure', () => {
    // Renaming a file over a folder fails, after the temporary file is written.
    mkdirSync(join(runDir, 'plot.svg'))

    expect(() => writeFileAtomic(join(runDir, 'plot.svg'), 'new')).toThrow()
    expect(readdirSync(runDir)).toEqual(['plot.svg'])
  })
})

describe('renderConvergence', () => {
  it('writes a PNG of the expected width', async () => {
    writeRun(runDir, ['parallel', 'serial', 'centralised'], SUMMARY)

    const { pngPath } = await renderConvergence(runDir)

    expect(pngPath).toBe(join(runDir, 'convergence.png'))
    const png = readFileSync(pngPath)
    expect([...png.subarray(0, 8)]).toEqual(PNG_SIGNATURE)
    expect(png.subarray(12, 16).toString('ascii')).toBe('IHDR')
    expect(png.readUInt32BE(16)).toBe(PNG_WIDTH)
    expect(png.readUInt32BE(20)).toBeGreaterThan(0)
  })

  it('writes an SVG naming every mode', async () => {
    writeRun(runDir, ['parallel', 'serial', 'centralised'], SUMMARY)

    const { svgPath } = await renderConvergence(runDir)

    expect(svgPath).toBe(join(runDir, 'convergence.svg'))
    const svg = readFileSync(svgPath, 'utf8')
    expect(svg.startsWith('<svg')).toBe(true)
    for (const mode of ['parallel', 'serial', 'centralised']) expect(svg).toContain(mode)
    expect(svg).not.toContain('NaN')
    expect(svg).toContain('A. Test accuracy over time')
    expect(svg).toContain('B. Test accuracy over rounds')
    expect(svg).toContain('C. Time to 97.0% test accuracy')
    expect(svg).toContain('MNIST convergence: 2 peers, mlp model, iid partition, wasm backend')
  })

  it('labels a mode that missed the target', async () => {
    writeRun(runDir, ['parallel', 'serial'], SUMMARY)

    const svg = readFileSync((await renderConvergence(runDir)).svgPath, 'utf8')

    expect(svg).toContain('not reached')
    expect(svg).toContain('final 96.0%')
    // Parallel reaches 0.97 in its fourth round (round 3), when its slower peer reports at 8.1 s.
    expect(svg).toContain('8.1 s')
    expect(svg).toContain('4 rounds')
  })

  it('leaves absent modes out', async () => {
    writeRun(runDir, ['parallel'], SUMMARY)

    const svg = readFileSync((await renderConvergence(runDir)).svgPath, 'utf8')

    expect(svg).toContain('parallel')
    expect(svg).not.toContain('serial')
    expect(svg).not.toContain('centralised')
    expect(svg).not.toContain('NaN')
  })

  it('leaves no temporary files', async () => {
    writeRun(runDir, ['parallel'], SUMMARY)

    await renderConvergence(runDir)

    expect(readdirSync(runDir).sort()).toEqual([
      'convergence.png',
      'convergence.svg',
      'parallel',
      'summary.json',
    ])
  })

  it('skips a half-written line', async () => {
    writeRun(runDir, ['parallel'], SUMMARY)
    writeFileSync(join(runDir, 'parallel', 'peer-1.jsonl'), '{"round":', { flag: 'a' })
    const skipped: SkippedLine[] = []

    await renderConvergence(runDir, { onSkip: (line) => skipped.push(line) })

    expect(skipped).toHaveLength(1)
    expect(skipped[0]?.line).toBe(5)
  })

  it('takes the target from options', async () => {
    writeRun(runDir, ['parallel'], undefined)

    const svg = readFileSync((await renderConvergence(runDir, { target: 0.95 })).svgPath, 'utf8')

    expect(svg).toContain('C. Time to 95.0% test accuracy')
    expect(svg).toContain('MNIST convergence')
  })

  it('rejects a run without a target', async () => {
    writeRun(runDir, ['parallel'], undefined)

    await expect(renderConvergence(runDir)).rejects.toThrow(RunFolderError)
    await expect(renderConvergence(runDir)).rejects.toThrow(/--target/)
  })

  it('rejects a target outside (0, 1]', async () => {
    writeRun(runDir, ['parallel'], { target: 97 })

    await expect(renderConvergence(runDir)).rejects.toThrow(/invalid target accuracy 97/)
  })

  it('rejects a folder without metrics', async () => {
    writeFileSync(join(runDir, 'summary.json'), JSON.stringify(SUMMARY))
    mkdirSync(join(runDir, 'parallel'))

    await expect(renderConvergence(runDir)).rejects.toThrow(RunFolderError)
    await expect(renderConvergence(runDir)).rejects.toThrow(/no metrics found/)
  })

  it('rejects a missing folder', async () => {
    const missing = join(runDir, 'missing')

    await expect(renderConvergence(missing)).rejects.toThrow(RunFolderError)
    await expect(renderConvergence(missing)).rejects.toThrow(missing)
  })
})

describe('plot-convergence CLI', () => {
  it('prints both paths on success', () => {
    writeRun(runDir, ['parallel', 'serial'], SUMMARY)

    const result = runCli(runDir)

    expect(result.stderr).toBe('')
    expect(result.status).toBe(0)
    expect(result.stdout).toBe(
      `${join(runDir, 'convergence.svg')}\n${join(runDir, 'convergence.png')}\n`,
    )
  })

  it('prints usage for --help', () => {
    const result = runCli('--help')

    expect(result.status).toBe(0)
    expect(result.stdout).toContain('Usage: npm run plot -- RUN_DIR')
  })

  it('exits 2 for a missing folder', () => {
    const missing = join(runDir, 'no-such-run')

    const result = runCli(missing)

    expect(result.status).toBe(2)
    expect(result.stderr).toContain(missing)
    expect(result.stderr).toContain('not found')
  })

  it('exits 2 for an unknown option', () => {
    const result = runCli(runDir, '--bogus')

    expect(result.status).toBe(2)
    expect(result.stderr).toContain('--bogus')
    expect(result.stderr).toContain('--help')
  })

  it('exits 2 without RUN_DIR', () => {
    const result = runCli()

    expect(result.status).toBe(2)
    expect(result.stderr).toContain('missing RUN_DIR')
  })

  it('exits 2 for a folder without metrics', () => {
    const result = runCli(runDir)

    expect(result.status).toBe(2)
    expect(result.stderr).toContain('no metrics found')
    expect(result.stderr).toContain(runDir)
  })

  it('exits 2 for an invalid --target', () => {
    writeRun(runDir, ['parallel'], SUMMARY)

    const result = runCli(runDir, '--target', '97')

    expect(result.status).toBe(2)
    expect(result.stderr).toContain('invalid --target "97"')
  })

  it('warns about a half-written line', () => {
    writeRun(runDir, ['parallel'], SUMMARY)
    const file = join(runDir, 'parallel', 'peer-0.jsonl')
    writeFileSync(file, '{"round":', { flag: 'a' })

    const result = runCli(runDir)

    expect(result.status).toBe(0)
    expect(result.stderr).toContain(`skipped ${file} line 5`)
  })
})
