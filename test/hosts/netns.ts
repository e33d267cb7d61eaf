import {
  type ChildProcess,
  execFile,
  execFileSync,
  type SpawnOptions,
  spawn,
} from 'node:child_process'
import { promisify } from 'node:util'

const execFileAsync = promisify(execFile)

/**
 * First three octets of every host network's /24. Each network has its own switch namespace, so
 * two networks with the same addresses never reach each other.
 */
const SUBNET = '10.213.0'
/** Host i gets SUBNET.(FIRST_HOST_OCTET + i). */
const FIRST_HOST_OCTET = 2
/** Maximum hosts per network, so that the last address stays below the broadcast address. */
const MAX_HOSTS = 250
const BRIDGE = 'br0'
/** Name of the veth end inside each host namespace. */
const HOST_INTERFACE = 'eth0'

/** One simulated machine: a network namespace with one interface on the switch. */
export interface Host {
  index: number
  namespace: string
  /** IPv4 address of the host's interface, without prefix length. */
  address: string
}

/** Runs `ip ARGS` and throws with ip's own error text when it fails. */
function ip(args: string[]): string {
  try {
    return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  } catch (error) {
    const stderr = String((error as { stderr?: unknown }).stderr ?? '').trim()
    throw new Error(`ip ${args.join(' ')} failed: ${stderr || (error as Error).message}`)
  }
}

/** Namespaces made by this process and not yet deleted, for the exit handler. */
const liveNamespaces = new Set<string>()
let exitHandlerInstalled = false
/** Networks made by this process, so two of them get different names. */
let networkCount = 0

function addNamespace(namespace: string): void {
  ip(['netns', 'add', namespace])
  liveNamespaces.add(namespace)
}

function deleteNamespace(namespace: string): void {
  if (!liveNamespaces.has(namespace)) return
  try {
    ip(['netns', 'delete', namespace])
  } catch (error) {
    // A failed delete is reported but not thrown, so it cannot hide the test's own outcome and
    // the remaining namespaces are still deleted.
    process.stderr.write(`${(error as Error).message}\n`)
  }
  liveNamespaces.delete(namespace)
}

function deleteAllNamespaces(): void {
  for (const namespace of [...liveNamespaces]) deleteNamespace(namespace)
}

/**
 * Returns why this machine cannot build host networks, or undefined when it can. Needs root,
 * the `ip` command of iproute2, and a kernel that lets this process make network namespaces
 * with veth pairs and bridges (a container without CAP_SYS_ADMIN and CAP_NET_ADMIN cannot).
 */
export function netnsUnavailableReason(): string | undefined {
  if (process.platform !== 'linux') return `network namespaces need Linux, not ${process.platform}`
  if (process.getuid?.() !== 0) return 'network namespaces need root; run the tests as root'
  try {
    ip(['-V'])
  } catch {
    return 'the ip command of iproute2 is not installed (apt-get install iproute2)'
  }
  const probe = `dlearn-${process.pid}-probe`
  try {
    addNamespace(probe)
    ip(['-n', probe, 'link', 'add', BRIDGE, 'type', 'bridge'])
    ip(['-n', probe, 'link', 'add', 'probe0', 'type', 'veth', 'peer', 'name', 'probe1'])
    return undefined
  } catch (error) {
    return `cannot build a network namespace with a bridge and a veth pair: ${(error as Error).message}`
  } finally {
    deleteNamespace(probe)
  }
}

/**
 * Network namespaces that stand in for machines on one LAN. A switch namespace contains a bridge,
 * and each host namespace joins it through a veth pair, with an address in 10.213.0.0/24 and
 * loopback up. Every command runs inside namespaces this object made, so the root namespace's
 * interfaces, addresses and routes stay untouched. Names contain the process id, so concurrent
 * test processes never collide.
 */
export class HostNetwork {
  readonly hosts: readonly Host[]
  readonly switchNamespace: string
  private readonly children = new Set<ChildProcess>()

  private constructor(switchNamespace: string, hosts: Host[]) {
    this.switchNamespace = switchNamespace
    this.hosts = hosts
  }

  /**
   * Builds a switch and `hostCount` hosts. On failure it deletes what it made before it throws.
   * An exit handler deletes every namespace still present when the process exits, unless the
   * process is killed with SIGKILL.
   */
  static create(hostCount: number): HostNetwork {
    if (!Number.isInteger(hostCount) || hostCount < 1 || hostCount > MAX_HOSTS) {
      throw new RangeError(
        `Expected hostCount to be an integer from 1 to ${MAX_HOSTS}, got ${hostCount}`,
      )
    }
    if (!exitHandlerInstalled) {
      process.on('exit', deleteAllNamespaces)
      exitHandlerInstalled = true
    }
    const prefix = `dlearn-${process.pid}-${networkCount++}`
    const switchNamespace = `${prefix}-switch`
    const hosts: Host[] = Array.from({ length: hostCount }, (_, index) => ({
      index,
      namespace: `${prefix}-host${index}`,
      address: `${SUBNET}.${FIRST_HOST_OCTET + index}`,
    }))
    const network = new HostNetwork(switchNamespace, hosts)
    try {
      network.build()
    } catch (error) {
      network.destroy()
      throw error
    }
    return network
  }

  private build(): void {
    const sw = this.switchNamespace
    addNamespace(sw)
    ip(['-n', sw, 'link', 'add', BRIDGE, 'type', 'bridge'])
    ip(['-n', sw, 'link', 'set', BRIDGE, 'up'])
    for (const host of this.hosts) {
      addNamespace(host.namespace)
      // Both veth ends are made inside namespaces of this network: the switch end in the switch,
      // the other end moved into the host at creation.
      const port = this.switchPort(host.index)
      ip([
        '-n',
        sw,
        'link',
        'add',
        port,
        'type',
        'veth',
        'peer',
        'name',
        HOST_INTERFACE,
        'netns',
        host.namespace,
      ])
      ip(['-n', sw, 'link', 'set', port, 'master', BRIDGE])
      ip(['-n', sw, 'link', 'set', port, 'up'])
      ip(['-n', host.namespace, 'link', 'set', 'lo', 'up'])
      ip(['-n', host.namespace, 'address', 'add', `${host.address}/24`, 'dev', HOST_INTERFACE])
      ip(['-n', host.namespace, 'link', 'set', HOST_INTERFACE, 'up'])
    }
  }

  /** Name of host `index`'s veth end in the switch namespace. */
  private switchPort(index: number): string {
    return `port${index}`
  }

  private host(index: number): Host {
    const host = this.hosts[index]
    if (host === undefined) {
      throw new RangeError(`Expected a host index from 0 to ${this.hosts.length - 1}, got ${index}`)
    }
    return host
  }

  /**
   * Cuts host `index` off the switch by setting its switch-side veth down. Its interface loses
   * carrier, and packets in either direction are dropped. Open TCP connections are not reset.
   * They resume at their next retransmission after the restore, and because TCP backs off
   * during the cut that can be seconds later (6.8 s after a 20 s cut, measured once on Linux
   * 6.18).
   */
  cutLink(index: number): void {
    this.host(index)
    ip(['-n', this.switchNamespace, 'link', 'set', this.switchPort(index), 'down'])
  }

  /** Reconnects host `index` to the switch by setting its switch-side veth up again. */
  restoreLink(index: number): void {
    this.host(index)
    ip(['-n', this.switchNamespace, 'link', 'set', this.switchPort(index), 'up'])
  }

  /**
   * Starts `command` inside host `index`'s namespace. `ip netns exec` replaces itself with the
   * command, so the child's pid is the command's, and signals sent to the child reach it.
   * `destroy` kills every child still running.
   */
  spawn(index: number, command: string, args: string[], options: SpawnOptions = {}): ChildProcess {
    const child = spawn(
      'ip',
      ['netns', 'exec', this.host(index).namespace, command, ...args],
      options,
    )
    this.children.add(child)
    child.once('exit', () => this.children.delete(child))
    return child
  }

  /** Runs `command` to its end inside host `index`'s namespace and returns its output. */
  async exec(
    index: number,
    command: string,
    args: string[],
  ): Promise<{ stdout: string; stderr: string }> {
    return execFileAsync('ip', ['netns', 'exec', this.host(index).namespace, command, ...args], {
      encoding: 'utf8',
    })
  }

  /** Kills every child of `spawn` that is still running, with SIGKILL. */
  killChildren(): void {
    for (const child of this.children) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    }
    this.children.clear()
  }

  /**
   * Kills the children still running with SIGKILL and deletes every namespace of this network.
   * Safe to call more than once. Deleting the switch namespace removes the veth pairs with it.
   */
  destroy(): void {
    this.killChildren()
    for (const host of this.hosts) deleteNamespace(host.namespace)
    deleteNamespace(this.switchNamespace)
  }
}
