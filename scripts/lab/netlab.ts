/**
 * Test hosts for multicast tests, demos and benchmarks: network namespaces
 * joined by veth pairs to one bridge, created inside the private lab that
 * scripts/lab.sh sets up (so they vanish with it and reach nothing outside).
 *
 *   [host a] eth0 ── va ┐
 *   [host b] eth0 ── vb ┼─ br0 [bridge namespace]   loss: nftables on each port
 *   [host c] eth0 ── vc ┘                           rate: tbf on each port
 *
 * The kernel has no netem here, so loss is `numgen random` in an nftables
 * bridge filter and rate limiting is tbf.
 */
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';

// scripts/lab.sh found nftables' nft by its system path and checked it is the
// real one (under npm, node_modules/.bin/nft is an unrelated package).
export const NFT = process.env.FWCAST_LAB_NFT ?? '';

let labCounter = 0;

export function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8' });
}

/** Runs an nftables script inside a namespace. */
export function nft(ns: string, script: string): string {
  return execFileSync('ip', ['netns', 'exec', ns, NFT, '-f', '-'], { input: script, encoding: 'utf8' });
}

export class NetLab {
  readonly bridge: string;
  readonly hosts: string[];
  readonly #prefix: string;
  #children = new Set<ChildProcess>();

  private constructor(prefix: string, hosts: string[]) {
    this.#prefix = prefix;
    this.bridge = `${prefix}br`;
    this.hosts = hosts;
  }

  /** Creates one namespace per host name, all on one bridge. */
  static create(hosts: string[]): NetLab {
    if (process.env.FWCAST_LAB !== '1') {
      throw new Error('network tests run inside the lab: use `npm test` (or `bash scripts/lab.sh npx ava FILE`)');
    }
    if (!NFT.startsWith('/')) throw new Error('FWCAST_LAB_NFT is not set: start the lab with scripts/lab.sh, which checks nftables');
    const lab = new NetLab(`fw${process.pid}x${labCounter++}`, hosts);
    lab.#setup();
    return lab;
  }

  ns(host: string): string {
    if (!this.hosts.includes(host)) throw new Error(`no host ${host} in this lab`);
    return `${this.#prefix}-${host}`;
  }

  #port(host: string): string {
    return `v${this.#prefix.slice(2)}${this.hosts.indexOf(host)}`.slice(0, 15);
  }

  #setup(): void {
    ip('netns', 'add', this.bridge);
    ip('-n', this.bridge, 'link', 'add', 'br0', 'type', 'bridge', 'mcast_snooping', '0');
    ip('-n', this.bridge, 'link', 'set', 'br0', 'up');
    nft(this.bridge, 'add table bridge lab\nadd chain bridge lab loss { type filter hook forward priority 0; }\n');
    this.hosts.forEach((host, i) => {
      const ns = this.ns(host);
      const port = this.#port(host);
      ip('netns', 'add', ns);
      ip('link', 'add', port, 'netns', this.bridge, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
      ip('-n', this.bridge, 'link', 'set', port, 'master', 'br0', 'up');
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      ip('-n', ns, 'addr', 'add', `fd00:fc::${i + 1}/64`, 'dev', 'eth0', 'nodad');
      ip('-n', ns, 'link', 'set', 'eth0', 'up');
    });
  }

  /** Drops `percent` of the packets the bridge forwards to `host`, at random. */
  setLoss(host: string, percent: number): void {
    const n = Math.round(percent * 100);
    nft(this.bridge, `add rule bridge lab loss oifname "${this.#port(host)}" numgen random mod 10000 < ${n} counter drop\n`);
  }

  /** Packets dropped so far by the loss rules, per bridge port. */
  dropped(): Record<string, number> {
    const out: Record<string, number> = {};
    const text = execFileSync('ip', ['netns', 'exec', this.bridge, NFT, 'list', 'chain', 'bridge', 'lab', 'loss'], { encoding: 'utf8' });
    for (const host of this.hosts) {
      const m = new RegExp(`oifname "${this.#port(host)}".*counter packets (\\d+)`).exec(text);
      if (m) out[host] = Number(m[1]);
    }
    return out;
  }

  /** Limits the rate the bridge sends towards `host` (tbf), e.g. "100mbit". */
  setRate(host: string, rate: string): void {
    ip('netns', 'exec', this.bridge, 'tc', 'qdisc', 'add', 'dev', this.#port(host), 'root', 'tbf', 'rate', rate, 'burst', '64kb', 'latency', '50ms');
  }

  /** Runs a command inside a host's namespace; it is killed on destroy(). */
  spawn(host: string, command: string, args: string[], options: SpawnOptions = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.ns(host), command, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...options });
    this.#children.add(child);
    child.on('exit', () => this.#children.delete(child));
    return child;
  }

  destroy(): void {
    for (const child of this.#children) child.kill('SIGKILL');
    for (const host of this.hosts) {
      try {
        ip('netns', 'del', this.ns(host));
      } catch {
        // Already gone.
      }
    }
    try {
      ip('netns', 'del', this.bridge);
    } catch {
      // Already gone.
    }
  }
}
