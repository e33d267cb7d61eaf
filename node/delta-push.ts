import type { PeerId } from '@libp2p/interface'
import { DELTA_PUSH_PROTOCOL } from '../protocols/index.ts'
import type { Host } from './host.ts'
import { log } from './log.ts'

/** Seconds a push may take before the stream is aborted. */
const PUSH_TIMEOUT_MS = 30_000

/**
 * Accepts delta messages pushed over `/dlearn/delta/1.0.0`. The sender is the connection's
 * remote peer, authenticated by the noise handshake. A stream longer than `maxBytes` is aborted
 * unread.
 */
export async function handleDeltaPushes(
  host: Host,
  maxBytes: number,
  receive: (bytes: Uint8Array, from: PeerId) => void,
): Promise<void> {
  await host.handle(DELTA_PUSH_PROTOCOL, async ({ stream, connection }) => {
    const chunks: Uint8Array[] = []
    let length = 0
    try {
      for await (const chunk of stream.source) {
        length += chunk.byteLength
        if (length > maxBytes) {
          stream.abort(new Error(`pushed delta exceeds ${maxBytes} bytes`))
          log.info(
            'rejected a pushed delta over %d bytes from %s',
            maxBytes,
            connection.remotePeer.toString(),
          )
          return
        }
        chunks.push(chunk.subarray())
      }
      await stream.close()
    } catch (error) {
      log.trace(
        'delta push from %s failed: %s',
        connection.remotePeer.toString(),
        (error as Error).message,
      )
      return
    }
    const bytes = new Uint8Array(length)
    let offset = 0
    for (const chunk of chunks) {
      bytes.set(chunk, offset)
      offset += chunk.byteLength
    }
    receive(bytes, connection.remotePeer)
  })
}

/** Sends one delta message to one peer over a new stream. */
export async function pushDelta(host: Host, to: PeerId, bytes: Uint8Array): Promise<void> {
  const stream = await host.dialProtocol(to, DELTA_PUSH_PROTOCOL, {
    signal: AbortSignal.timeout(PUSH_TIMEOUT_MS),
  })
  await stream.sink([bytes])
}
