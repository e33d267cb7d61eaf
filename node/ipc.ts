import type { RoundMetrics } from './metrics.ts'
import type { PeerResult } from './peer.ts'

/**
 * Messages between the launcher and a peer process it started, over the child-process IPC
 * channel. One process hosts one peer (node/cli.ts) or several (node/peer-host.ts), so every
 * message names its peer by `peerIndex`, the peer's shard index. A peer starts training only
 * after its `start`, and in serial mode computes only between a `turn-grant` and its own
 * `turn-done`.
 */
export type PeerToLauncher =
  | { type: 'listening'; peerIndex: number; peerId: string; addresses: string[] }
  | { type: 'ready'; peerIndex: number }
  | { type: 'turn-request'; peerIndex: number; kind: 'train' | 'evaluate'; round: number }
  | { type: 'turn-done'; peerIndex: number }
  | { type: 'round'; peerIndex: number; metrics: RoundMetrics }
  | { type: 'done'; peerIndex: number; result: PeerResult }
  | {
      type: 'failed'
      /**
       * The peer that failed. Absent when the process failed before it knew its peers, as on
       * an invalid option. The process then exits without starting any peer.
       */
      peerIndex?: number
      message: string
      /**
       * Set to 'EADDRINUSE' when the peer could not listen because another socket is bound to
       * the port.
       */
      code?: 'EADDRINUSE'
    }

export type LauncherToPeer =
  | { type: 'dial'; peerIndex: number; addresses: string[] }
  | { type: 'start'; peerIndex: number; startedAt: number }
  | { type: 'turn-grant'; peerIndex: number }

/**
 * Argument of node/peer-host.ts that separates the options of one hosted peer from those of the
 * next: `node node/peer-host.ts OPTIONS_A --next-peer OPTIONS_B`.
 */
export const NEXT_PEER = '--next-peer'
