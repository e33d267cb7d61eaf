import { loadMnist } from '../data/index.ts'
import { type BackendName, selectBackend } from './backend.ts'
import { setQuiet } from './log.ts'
import type { RoundMetrics } from './metrics.ts'
import { parsePeerOptions, peerHelp } from './options.ts'
import {
  createPeer,
  type PeerProcessContext,
  preparePeer,
  runPeer,
  runPeerProcess,
} from './peer-process.ts'

function describeRound(metrics: RoundMetrics): string {
  const accuracy = (metrics.accuracy * 100).toFixed(2)
  return `peer ${metrics.peerIndex} round ${metrics.round}: accuracy ${accuracy}% loss ${metrics.loss.toFixed(4)} contributors ${metrics.contributors} train ${metrics.trainMs} ms wait ${metrics.waitMs} ms model ${metrics.modelHash.slice(0, 12)}`
}

async function main(argv: string[], context: PeerProcessContext): Promise<number> {
  const options = parsePeerOptions(argv)
  if (options === undefined) {
    process.stdout.write(`${peerHelp()}\n`)
    return 0
  }
  setQuiet(options.quiet)
  const state = await preparePeer(options)
  try {
    const mnist = loadMnist({ dataDir: options.dataDir, verifyDigests: options.verifyData })
    const backend: BackendName = await selectBackend(options.backend)
    const peer = await createPeer(options, { state, mnist, backend }, (metrics) => {
      if (!options.quiet) process.stdout.write(`${describeRound(metrics)}\n`)
    })
    context.handleSignals()
    try {
      await runPeer(peer, options, context.signal)
      return 0
    } finally {
      await peer.stop()
    }
  } finally {
    state?.release()
  }
}

runPeerProcess((context) => main(process.argv.slice(2), context))
