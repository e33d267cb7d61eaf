import type { ChildProcess } from 'node:child_process'

/** Every peer process the launcher started and that has not exited yet. */
const live = new Set<ChildProcess>()

export function trackChild(child: ChildProcess): void {
  live.add(child)
  child.once('exit', () => live.delete(child))
}

export function liveChildren(): ChildProcess[] {
  return [...live]
}

/** Sends SIGKILL to every live peer. Synchronous, so it also works in an 'exit' handler. */
export function killAllChildren(): void {
  for (const child of live) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
}

/** Asks every live peer to stop (SIGTERM), then kills what is left after `graceMs`. */
export async function stopAllChildren(graceMs = 3000): Promise<void> {
  const children = liveChildren()
  const exited = children.map(
    (child) =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) resolve()
        else child.once('exit', () => resolve())
      }),
  )
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
  }
  const timer = setTimeout(killAllChildren, graceMs)
  await Promise.all(exited)
  clearTimeout(timer)
}
