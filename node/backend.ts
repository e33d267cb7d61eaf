import * as tf from '@tensorflow/tfjs'
import { BackendUnavailableError, UsageError } from './errors.ts'
import { log } from './log.ts'
import { registerWasmKernels } from './wasm-kernels.ts'

export const BACKEND_NAMES = ['auto', 'tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'] as const
export type BackendChoice = (typeof BACKEND_NAMES)[number]
export type BackendName = Exclude<BackendChoice, 'auto'>

const AUTO_ORDER: BackendName[] = ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu']

const INSTALL_HINTS: Record<BackendName, string> = {
  'tensorflow-gpu':
    'npm install @tensorflow/tfjs-node-gpu@4.22.0 (needs CUDA 11.2 and cuDNN 8.1 libraries and network access to download libtensorflow)',
  tensorflow:
    'npm install @tensorflow/tfjs-node@4.22.0 (needs network access to download libtensorflow)',
  wasm: 'npm ci (restores @tensorflow/tfjs-backend-wasm)',
  cpu: 'npm ci (restores @tensorflow/tfjs)',
}

export function parseBackendChoice(text: string): BackendChoice {
  if ((BACKEND_NAMES as readonly string[]).includes(text)) return text as BackendChoice
  throw new UsageError(`Expected --backend to be one of ${BACKEND_NAMES.join(', ')}, got '${text}'`)
}

function describeLoadError(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') return 'not installed'
    return error.message.split('\n')[0] ?? error.message
  }
  return String(error)
}

/** Loads one backend and makes it the active one; throws with the reason it could not load. */
async function loadBackend(name: BackendName): Promise<void> {
  switch (name) {
    case 'tensorflow-gpu':
      await import('@tensorflow/tfjs-node-gpu' as string)
      break
    case 'tensorflow':
      await import('@tensorflow/tfjs-node' as string)
      break
    case 'wasm':
      await import('@tensorflow/tfjs-backend-wasm')
      break
    case 'cpu':
      break
  }
  // tfjs-node and tfjs-node-gpu both register their backend as 'tensorflow'.
  const tfName = name === 'tensorflow-gpu' ? 'tensorflow' : name
  if (!(await tf.setBackend(tfName))) throw new Error(`tf.setBackend('${tfName}') failed`)
  await tf.ready()
  if (name === 'wasm') registerWasmKernels()
}

/**
 * Activates the requested backend. `auto` tries tensorflow-gpu, tensorflow, wasm and cpu in
 * that order and logs why each skipped one could not load. Returns the backend in use.
 */
export async function selectBackend(choice: BackendChoice): Promise<BackendName> {
  if (choice !== 'auto') {
    try {
      await loadBackend(choice)
    } catch (error) {
      throw new BackendUnavailableError(
        `Backend '${choice}' could not load: ${describeLoadError(error)}. To install it: ${INSTALL_HINTS[choice]}`,
      )
    }
    log.info('backend %s', choice)
    return choice
  }
  for (const name of AUTO_ORDER) {
    try {
      await loadBackend(name)
      log.info('backend %s (auto)', name)
      return name
    } catch (error) {
      log.info('backend %s skipped: %s', name, describeLoadError(error))
    }
  }
  throw new BackendUnavailableError(
    `No TensorFlow.js backend could load. To install one: ${INSTALL_HINTS.wasm}`,
  )
}
