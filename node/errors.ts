/** An option or option value that the user must change; the CLI exits with code 2 on it. */
export class UsageError extends Error {
  static override name = 'UsageError'

  constructor(message: string) {
    super(message)
    this.name = 'UsageError'
  }
}

/** A backend that was requested by name but cannot be loaded on this machine. */
export class BackendUnavailableError extends Error {
  static override name = 'BackendUnavailableError'

  constructor(message: string) {
    super(message)
    this.name = 'BackendUnavailableError'
  }
}

/** A swarm key file that is missing, unreadable or not in the libp2p swarm key format. */
export class InvalidSwarmKeyError extends Error {
  static override name = 'InvalidSwarmKeyError'

  constructor(message: string) {
    super(message)
    this.name = 'InvalidSwarmKeyError'
  }
}

/** Failure of one donor to provide the model, as listed in a StateSyncError. */
export interface StateSyncFailure {
  /** The donor's peer id as a string. */
  peerId: string
  /**
   * `wrong-spec` and `busy` come from the donor's header. `shape-mismatch` and
   * `hash-mismatch` mean the model does not match the expected shapes or its advertised hash.
   * `timed-out` means no frame arrived in time, `closed` that the stream ended or was reset
   * early, `invalid-response` that a frame did not decode, `dial-failed` that no stream opened.
   */
  reason:
    | 'wrong-spec'
    | 'busy'
    | 'shape-mismatch'
    | 'hash-mismatch'
    | 'timed-out'
    | 'closed'
    | 'invalid-response'
    | 'dial-failed'
  message: string
}

/** A state sync that failed on every donor it tried; `failures` lists one entry per donor. */
export class StateSyncError extends Error {
  static override name = 'StateSyncError'

  readonly failures: StateSyncFailure[]

  constructor(message: string, failures: StateSyncFailure[]) {
    const details = failures.map((failure) => `${failure.peerId}: ${failure.message}`)
    super(details.length === 0 ? message : `${message} (${details.join('; ')})`)
    this.name = 'StateSyncError'
    this.failures = failures
  }
}

/** A state folder whose private key cannot be read, or that another running peer has locked. */
export class IdentityError extends Error {
  static override name = 'IdentityError'

  constructor(message: string) {
    super(message)
    this.name = 'IdentityError'
  }
}

/** A checkpoint that is truncated, corrupt, or saved by another peer or for another swarm spec. */
export class CheckpointError extends Error {
  static override name = 'CheckpointError'

  constructor(message: string) {
    super(message)
    this.name = 'CheckpointError'
  }
}
