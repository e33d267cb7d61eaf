import { randomUUID } from 'node:crypto'
import { open, readdir, rename, rm } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'

/** Ending of the temporary files that writeFileDurable creates next to their target. */
const TEMPORARY_SUFFIX = '.tmp'

/**
 * Writes `chunks` to a temporary file in the folder of `path`, created with `mode`, flushes it
 * to disk, renames it over `path` and flushes the folder. Because rename within one POSIX file
 * system is atomic, `path` contains its old content or the whole new content at every moment,
 * even after kill -9 or a power loss. The temporary file is removed when writing fails, and one
 * left by a process that died mid-write is removed by removeTemporaryFiles.
 */
export async function writeFileDurable(
  path: string,
  chunks: Uint8Array[],
  mode = 0o644,
): Promise<void> {
  const folder = dirname(path)
  const temporary = join(
    folder,
    `.${basename(path)}.${process.pid}.${randomUUID()}${TEMPORARY_SUFFIX}`,
  )
  try {
    const file = await open(temporary, 'wx', mode)
    try {
      for (const chunk of chunks) {
        let offset = 0
        while (offset < chunk.byteLength) {
          const { bytesWritten } = await file.write(chunk, offset)
          offset += bytesWritten
        }
      }
      await file.sync()
    } finally {
      await file.close()
    }
    await rename(temporary, path)
  } catch (error) {
    await rm(temporary, { force: true })
    throw error
  }
  await syncFolder(folder)
}

/** Flushes a folder's entries, so a rename in it survives a power loss. */
async function syncFolder(folder: string): Promise<void> {
  // NOTE: flushing a folder is a POSIX step. It is skipped on Windows, where this is untested.
  if (process.platform === 'win32') return
  const handle = await open(folder, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

/**
 * Removes the temporary files that writeFileDurable left in `folder` when its process died.
 * Call it only while no other process writes to the folder.
 */
export async function removeTemporaryFiles(folder: string): Promise<string[]> {
  const removed: string[] = []
  for (const name of await readdir(folder)) {
    if (!name.startsWith('.') || !name.endsWith(TEMPORARY_SUFFIX)) continue
    await rm(join(folder, name), { force: true })
    removed.push(name)
  }
  return removed
}
