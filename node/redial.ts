import { setTimeout as sleep } from 'node:timers/promises'
import type { PeerId } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import type { Host } from './host.ts'
import { log } from './log.ts'

/** First pause before a lost peer's addresses are dialled again; it doubles up to the maximum. */
const FIRST_PAUSE_MS = 250
const MAX_PAUSE_MS = 1000
/**
 * Milliseconds one dial may take. While a link is down the kernel resends the connection
 * request after 1 s, 3 s and 7 s, so a short attempt followed by a fresh one gets through
 * sooner after the link returns.
 */
const ATTEMPT_TIMEOUT_MS = 2000

export interface RedialInit {
  /** Milliseconds after a disconnect when the host stops dialling the lost peer's addresses. */
  giveUpMs: number
  /** True for a peer that left on purpose, whose addresses are not dialled again. */
  hasLeft: (peerId: string) => boolean
  /** Stops every redial; abort it before stopping the host. */
  signal: AbortSignal
}

/**
 * Dials the listen addresses of every peer whose connection closed, without its peer id, until a
 * connection forms or `giveUpMs` passes. A peer restarted on the same address is reached again
 * whether it kept its key or came back with a new one, even when it has no address to dial.
 */
export function redialLostPeers(host: Host, init: RedialInit): void {
  host.addEventListener('peer:disconnect', (event) => {
    const peerId = event.detail
    if (init.signal.aborted || init.hasLeft(peerId.toString())) return
    void redial(host, peerId, init)
  })
}

async function redial(host: Host, lost: PeerId, init: RedialInit): Promise<void> {
  let addresses: Multiaddr[]
  try {
    const known = await host.peerStore.get(lost)
    addresses = known.addresses.map(({ multiaddr: address }) => address)
  } catch {
    return
  }
  if (addresses.length === 0) return
  const giveUpAt = Date.now() + init.giveUpMs
  let pause = FIRST_PAUSE_MS
  while (Date.now() < giveUpAt) {
    try {
      await sleep(pause, undefined, { signal: init.signal })
    } catch {
      return
    }
    // A peer that kept its key may have dialled this host itself.
    if (host.getConnections(lost).length > 0) return
    for (const address of addresses) {
      try {
        const connection = await host.dial(address, {
          signal: AbortSignal.any([init.signal, AbortSignal.timeout(ATTEMPT_TIMEOUT_MS)]),
        })
        log.info(
          'reached %s again, now peer %s',
          address.toString(),
          connection.remotePeer.toString(),
        )
        return
      } catch (error) {
        if (init.signal.aborted) return
        log.trace('redial of %s failed: %s', address.toString(), (error as Error).message)
      }
    }
    pause = Math.min(2 * pause, MAX_PAUSE_MS)
  }
  log.info('gave up dialling %s, last seen as %s', addresses.join(' '), lost.toString())
}
