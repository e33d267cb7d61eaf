// Makes gossipsub honour the IDONTWANT messages it receives when it forwards.

/** The members of @chainsafe/libp2p-gossipsub 14.1's GossipSub class that this file wraps. */
interface ForwardingInternals {
  /** Message ids that each peer said it does not want, by peer id. */
  idontwants: Map<string, Map<string, number>>
  forwardMessage(
    msgIdStr: string,
    rawMsg: unknown,
    propagationSource?: string,
    excludePeers?: Set<string>,
  ): void
}

function hasForwardingInternals(service: object): service is ForwardingInternals {
  const candidate = service as Partial<ForwardingInternals>
  return candidate.idontwants instanceof Map && typeof candidate.forwardMessage === 'function'
}

/**
 * Makes `service`, a GossipSub instance, skip every peer that sent an IDONTWANT for a message
 * when it forwards that message. Gossipsub 14.1 records received IDONTWANTs but forwards each
 * message to all its mesh peers regardless, so every peer got a large delta from most of its
 * mesh. Returns `service` unchanged when it lacks the members this relies on.
 */
export function honourIdontwant<Service extends object>(service: Service): Service {
  // NOTE: this reaches into gossipsub's private members; a release that renames them makes
  // this a no-op (a test counts the copies a peer receives).
  if (!hasForwardingInternals(service)) return service
  const forward = service.forwardMessage.bind(service)
  service.forwardMessage = (msgIdStr, rawMsg, propagationSource, excludePeers) => {
    let skipped = excludePeers
    for (const [peer, unwanted] of service.idontwants) {
      if (!unwanted.has(msgIdStr)) continue
      if (skipped === excludePeers) skipped = new Set(excludePeers)
      skipped?.add(peer)
    }
    forward(msgIdStr, rawMsg, propagationSource, skipped)
  }
  return service
}

/** Wraps a gossipsub factory so that each service it makes honours IDONTWANTs. */
export function honouringIdontwant<Args extends unknown[], Service extends object>(
  factory: (...args: Args) => Service,
): (...args: Args) => Service {
  return (...args) => honourIdontwant(factory(...args))
}
