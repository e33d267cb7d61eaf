// Command line entry point: npm run swarm-key -- FILE writes a new libp2p swarm key file.
import { parseArgs } from 'node:util'
import { writeSwarmKeyFile } from '../node/swarm-key.ts'

/** Exit code for invalid arguments and for a file that exists without --force. */
export const EXIT_USAGE = 2

export const USAGE = `Usage: npm run swarm-key -- [--force] FILE
       node scripts/swarm-key.ts [--force] FILE

Writes a new random 32-byte pre-shared key to FILE in the libp2p swarm key format, readable
by its owner only (mode 0600). Copy the file to every peer of the swarm and start each with
--swarm-key FILE: peers with another key, or with none, cannot connect to them.

Arguments:
  FILE           path of the key file; its folder must exist

Options:
  --force        replace FILE if it exists; peers that still use the old key can no longer connect
  -h, --help     print this help and exit
`

function fail(message: string): number {
  process.stderr.write(`error: ${message}\nRun with --help for usage.\n`)
  return EXIT_USAGE
}

/** Runs the command with the given arguments (without node and the script) and returns its exit code. */
export function main(args: string[]): number {
  let parsed: ReturnType<typeof parseOptions>
  try {
    parsed = parseOptions(args)
  } catch (error) {
    // parseArgs throws a TypeError with a code such as ERR_PARSE_ARGS_UNKNOWN_OPTION.
    if ((error as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS_')) {
      return fail((error as Error).message)
    }
    throw error
  }
  if (parsed.values.help) {
    process.stdout.write(USAGE)
    return 0
  }
  const [path, ...extra] = parsed.positionals
  if (path === undefined) return fail('missing FILE; pass the path of the key file to write')
  if (extra.length > 0) {
    return fail(
      `expected one FILE, got ${parsed.positionals.length}: ${parsed.positionals.join(' ')}`,
    )
  }

  try {
    writeSwarmKeyFile(path, { force: parsed.values.force })
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'EEXIST') {
      return fail(
        `'${path}' already exists. Pass --force to replace it; peers that still use the old key can no longer connect`,
      )
    }
    if (code === 'ENOENT') return fail(`the folder of '${path}' does not exist`)
    throw error
  }
  process.stdout.write(
    `wrote a new swarm key to ${path} (mode 0600); copy it to every peer and start each with --swarm-key ${path}\n`,
  )
  return 0
}

function parseOptions(args: string[]) {
  return parseArgs({
    args,
    options: {
      force: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    allowPositionals: true,
    strict: true,
  })
}

if (import.meta.main) {
  try {
    process.exitCode = main(process.argv.slice(2))
  } catch (error) {
    process.stderr.write(`error: ${(error as Error).message}\n`)
    process.exitCode = 1
  }
}
