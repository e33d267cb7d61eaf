import type { RoundMetrics } from './metrics.ts'
import type { PeerResult } from './peer.ts'

/**
 * Messages between the launcher and a peer it started, over the child-process IPC channel.
 * The peer starts training only after `start`, and in serial mode computes only between a
 * `turn-grant` and its own `turn-done`.
 */
export type PeerToLauncher =
  | { type: 'listening'; peerId: string; addresses: string[] }
  | { type: 'ready' }
  | { type: 'turn-request'; kind: 'train' | 'evaluate'; round: number }
  | { type: 'turn-done' }
  | { type: 'round'; metrics: RoundMetrics }
  | { type: 'done'; result: PeerResult }
  | {
      type: 'failed'
      message: string
      /**
       * Set to 'EADDRINUSE' when the peer could not listen because another socket is bound to
       * the port.
       */
      code?: 'EADDRINUSE'
    }

export type LauncherToPeer =
  | { type: 'dial'; addresses: string[] }
  | { type: 'start'; startedAt: number }
  | { type: 'turn-grant' }
