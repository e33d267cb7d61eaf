import { logger } from '@libp2p/logger'

/**
 * Component loggers under the `dlearn:` namespace, enabled with the DEBUG environment variable
 * (for example `DEBUG=dlearn:*`). `info` lines go to stderr unless the process runs quietly.
 */
const debugLog = logger('dlearn:peer')

let quiet = false

export function setQuiet(value: boolean): void {
  quiet = value
}

function format(template: string, values: unknown[]): string {
  let index = 0
  return template.replace(/%[sdoj]/g, () => {
    const value = values[index++]
    return typeof value === 'string' ? value : String(value)
  })
}

export const log = {
  info(template: string, ...values: unknown[]): void {
    debugLog(template, ...values)
    if (!quiet) process.stderr.write(`${format(template, values)}\n`)
  },
  /** Writes to stderr even when the process runs quietly, as `error` does. */
  warn(template: string, ...values: unknown[]): void {
    debugLog(template, ...values)
    process.stderr.write(`warning: ${format(template, values)}\n`)
  },
  error(template: string, ...values: unknown[]): void {
    debugLog.error(template, ...values)
    process.stderr.write(`error: ${format(template, values)}\n`)
  },
  trace: debugLog.trace,
}
