import { closeSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs'
import { mkdir, readFile, stat } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { IdentityError } from './errors.ts'
import { log } from './log.ts'
import { writeFileDurable } from './write-atomic.ts'

/** Private key of the peer in a state folder, in the libp2p protobuf encoding. */
export const KEY_FILE = 'peer.key'
/** Lock file of a state folder, containing the process id of the peer that locked it. */
export const LOCK_FILE = 'lock'

/** State folders locked by this process, by absolute path. */
const heldFolders = new Set<string>()

/** The libp2p identity kept in a state folder, held by this process until release(). */
export interface Identity {
  privateKey: PrivateKey
  /** The peer id derived from the key, as a string. */
  peerId: string
  /** True when this call generated the key because the folder had none. */
  created: boolean
  /** Removes the lock file, which also happens on process exit. */
  release(): void
}

/**
 * Locks the state folder `stateDir`, creating it when missing, then loads its Ed25519 private
 * key or generates one. The key file is written atomically with mode 0600, so the peer keeps
 * its peer id across restarts. Throws IdentityError when another running process has locked
 * the folder or when the key file does not decode.
 */
export async function openIdentity(stateDir: string): Promise<Identity> {
  try {
    await mkdir(stateDir, { recursive: true, mode: 0o700 })
  } catch (error) {
    throw new IdentityError(
      `Cannot use --state-dir ${stateDir}: ${(error as Error).message}. Give a folder path, new or existing, that this user can write`,
    )
  }
  const release = lockFolder(stateDir)
  try {
    const { privateKey, created } = await loadOrCreateKey(join(stateDir, KEY_FILE))
    return { privateKey, peerId: peerIdFromPrivateKey(privateKey).toString(), created, release }
  } catch (error) {
    release()
    throw error
  }
}

async function loadOrCreateKey(
  path: string,
): Promise<{ privateKey: PrivateKey; created: boolean }> {
  let bytes: Uint8Array
  try {
    bytes = await readFile(path)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new IdentityError(`Cannot read the private key ${path}: ${(error as Error).message}`)
    }
    const privateKey = await generateKeyPair('Ed25519')
    await writeFileDurable(path, [privateKeyToProtobuf(privateKey)], 0o600)
    return { privateKey: asHostKey(privateKey), created: true }
  }
  const { mode } = await stat(path)
  if ((mode & 0o077) !== 0) {
    log.info(
      'warning: the private key %s can be read by other users (mode %s). Run chmod 600 on it',
      path,
      (mode & 0o777).toString(8),
    )
  }
  try {
    return { privateKey: asHostKey(privateKeyFromProtobuf(bytes)), created: false }
  } catch (error) {
    throw new IdentityError(
      `Invalid private key in ${path}: ${(error as Error).message}. Restore the file from a backup, or remove it to start as a new peer with a new peer id`,
    )
  }
}

/**
 * Types a key from @libp2p/crypto as the PrivateKey of @libp2p/interface 2, which libp2p 2
 * takes.
 * NOTE: @libp2p/crypto 5.1.23 declares its keys with @libp2p/interface 3 types, whose
 * Uint8ArrayList type differs from the one in interface 2. The objects are the same at run
 * time, because libp2p 2 creates its own keys with this same @libp2p/crypto build.
 */
function asHostKey(key: ReturnType<typeof privateKeyFromProtobuf>): PrivateKey {
  return key as unknown as PrivateKey
}

/**
 * Creates the lock file of `folder` with this process id and returns the function that removes
 * it. A lock left by a process that no longer runs, as after kill -9, is taken over.
 */
function lockFolder(folder: string): () => void {
  const path = join(folder, LOCK_FILE)
  const key = resolve(folder)
  if (heldFolders.has(key)) {
    throw new IdentityError(`State folder ${folder} is already in use by this process`)
  }
  for (let attempt = 0; attempt < 2; attempt++) {
    let fd: number
    try {
      fd = openSync(path, 'wx', 0o600)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
      const holder = readHolder(path)
      if (holder === undefined) continue
      if (isRunning(holder)) {
        throw new IdentityError(
          `State folder ${folder} is in use by process ${holder}. Stop that peer, choose another --state-dir, or remove ${path} if no peer runs there`,
        )
      }
      log.info('taking over the lock of %s from process %s, which no longer runs', folder, holder)
      rmSync(path, { force: true })
      continue
    }
    try {
      writeSync(fd, `${process.pid}\n`)
    } finally {
      closeSync(fd)
    }
    heldFolders.add(key)
    let released = false
    const release = () => {
      if (released) return
      released = true
      heldFolders.delete(key)
      process.off('exit', release)
      rmSync(path, { force: true })
    }
    process.on('exit', release)
    return release
  }
  throw new IdentityError(
    `Another process took the lock of ${folder} at the same time. Start one peer per state folder`,
  )
}

/** Returns the process id in a lock file, NaN when it is empty or garbled, undefined when it is gone. */
function readHolder(path: string): number | undefined {
  try {
    return Number.parseInt(readFileSync(path, 'utf8'), 10)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
}

/**
 * True when a process with this id runs, for any user. The own process id counts as not
 * running, because in a container a restarted peer often gets the id of the one that died.
 */
function isRunning(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return false
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    // EPERM: the process exists but belongs to another user.
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}
