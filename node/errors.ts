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

/** A delta that is too large for the configured gossipsub message size limit. */
export class MessageTooLargeError extends Error {
  static override name = 'MessageTooLargeError'

  constructor(message: string) {
    super(message)
    this.name = 'MessageTooLargeError'
  }
}
