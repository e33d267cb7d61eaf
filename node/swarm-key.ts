import { randomBytes } from 'node:crypto'
import {
  closeSync,
  fchmodSync,
  fsyncSync,
  linkSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { InvalidSwarmKeyError } from './errors.ts'
import { log } from './log.ts'

/**
 * A libp2p swarm key file (version 1, as @libp2p/pnet documents it) has three lines: this
 * header, the encoding of the key, and the key itself.
 */
export const SWARM_KEY_HEADER = '/key/swarm/psk/1.0.0/'
/** The only key encoding accepted here: the key as hexadecimal text. */
export const SWARM_KEY_ENCODING = '/base16/'
/** Length of the pre-shared key in bytes, the key size of XSalsa20. */
export const SWARM_KEY_BYTES = 32
/** Largest key file read; a valid one is under 100 bytes. */
const MAX_SWARM_KEY_FILE_BYTES = 1024

/** Formats a pre-shared key as the text of a swarm key file. */
export function formatSwarmKey(key: Uint8Array): string {
  if (key.byteLength !== SWARM_KEY_BYTES) {
    throw new InvalidSwarmKeyError(
      `Expected a key of ${SWARM_KEY_BYTES} bytes, got ${key.byteLength}`,
    )
  }
  const hex = Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('hex')
  return `${SWARM_KEY_HEADER}\n${SWARM_KEY_ENCODING}\n${hex}\n`
}

/**
 * Parses the bytes of a swarm key file and returns the 32-byte key. Lines may end in LF or
 * CRLF and in trailing spaces, and the hexadecimal digits may be upper or lower case. Throws
 * InvalidSwarmKeyError, whose message never contains the key.
 */
export function parseSwarmKey(file: Uint8Array): Uint8Array {
  let text: string
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(file)
  } catch {
    throw new InvalidSwarmKeyError('the file is not UTF-8 text')
  }

  const lines = text.split('\n').map((line) => line.replace(/[ \t\r]+$/, ''))
  while (lines.length > 0 && lines.at(-1)?.trim() === '') lines.pop()

  if (lines[0] !== SWARM_KEY_HEADER) {
    throw new InvalidSwarmKeyError(`the first line must be ${SWARM_KEY_HEADER}`)
  }
  if (lines[1] !== SWARM_KEY_ENCODING) {
    throw new InvalidSwarmKeyError(
      `the second line must be ${SWARM_KEY_ENCODING}, the only key encoding supported`,
    )
  }

  const hex = lines[2] ?? ''
  const expectedDigits = 2 * SWARM_KEY_BYTES
  if (hex.length !== expectedDigits) {
    throw new InvalidSwarmKeyError(
      `the third line must be ${expectedDigits} hexadecimal digits, found ${hex.length} characters`,
    )
  }
  if (!/^[0-9a-fA-F]+$/.test(hex)) {
    throw new InvalidSwarmKeyError(
      'the third line contains a character that is not a hexadecimal digit',
    )
  }
  if (lines.length > 3) {
    throw new InvalidSwarmKeyError('the file has more than three lines')
  }

  return Uint8Array.from(Buffer.from(hex, 'hex'))
}

/** Command that creates a key file at `path`, for the hints of error messages. */
function createCommand(path: string, force: boolean): string {
  return `npm run swarm-key -- ${force ? '--force ' : ''}${path}`
}

/**
 * Reads and validates a swarm key file and returns its bytes. Throws InvalidSwarmKeyError
 * naming the path and the command that creates a key file.
 */
export function readSwarmKeyFile(path: string): Uint8Array {
  let file: Uint8Array
  try {
    const stats = statSync(path)
    if (!stats.isFile()) {
      throw new InvalidSwarmKeyError(
        `Swarm key file '${path}' is not a regular file. Pass the path of a key file, created with: npm run swarm-key -- FILE`,
      )
    }
    if (stats.size > MAX_SWARM_KEY_FILE_BYTES) {
      throw new InvalidSwarmKeyError(
        `Swarm key file '${path}' has ${stats.size} bytes, too many for a swarm key file (a valid one has under 100)`,
      )
    }
    file = readFileSync(path)
    if ((stats.mode & 0o077) !== 0) {
      const mode = (stats.mode & 0o777).toString(8).padStart(4, '0')
      log.warn(
        "swarm key file '%s' has mode %s, so other users of this machine can read the key. Restrict it with: chmod 600 '%s'",
        path,
        mode,
        path,
      )
    }
  } catch (error) {
    if (error instanceof InvalidSwarmKeyError) throw error
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new InvalidSwarmKeyError(
        `Swarm key file '${path}' not found. Create one with: ${createCommand(path, false)}, then copy it to every peer of the swarm`,
      )
    }
    throw new InvalidSwarmKeyError(
      `Failed to read swarm key file '${path}': ${(error as Error).message}`,
    )
  }

  try {
    parseSwarmKey(file)
  } catch (error) {
    const digits = 2 * SWARM_KEY_BYTES
    const expected = `Expected three lines: ${SWARM_KEY_HEADER}, ${SWARM_KEY_ENCODING} and ${digits} hexadecimal digits`
    const fix = `Use the key file of the swarm, or create a new key with: ${createCommand(path, true)}`
    throw new InvalidSwarmKeyError(
      `Invalid swarm key file '${path}': ${(error as Error).message}. ${expected}. ${fix}`,
    )
  }
  return file
}

export interface WriteSwarmKeyOptions {
  /** Replace an existing file. @default false */
  force?: boolean
}

/**
 * Writes a new random swarm key file with mode 0600. The key goes to a temporary file in the
 * same folder first, which is then moved into place, so `path` never contains a partial key.
 * Without `force`, the move is a hard link, which fails with EEXIST when `path` exists, even
 * when another process created it after this call began.
 */
export function writeSwarmKeyFile(path: string, options: WriteSwarmKeyOptions = {}): void {
  const temporary = join(
    dirname(path),
    `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`,
  )
  const descriptor = openSync(temporary, 'wx', 0o600)
  let renamed = false
  try {
    try {
      // The mode given to open is reduced by the umask, so it is set again here.
      fchmodSync(descriptor, 0o600)
      writeSync(descriptor, formatSwarmKey(randomBytes(SWARM_KEY_BYTES)))
      fsyncSync(descriptor)
    } finally {
      closeSync(descriptor)
    }
    if (options.force === true) {
      renameSync(temporary, path)
      renamed = true
    } else {
      // NOTE: file systems without hard links (FAT, some network shares) fail here, with EPERM
      // or ENOTSUP. Only --force, which renames, works on them.
      linkSync(temporary, path)
    }
  } finally {
    if (!renamed) rmSync(temporary, { force: true })
  }
}
