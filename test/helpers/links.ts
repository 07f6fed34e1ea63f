/**
 * Several links in the lab (scripts/lab.sh), each a Linux bridge in a
 * namespace of its own, and hosts with one interface per link they sit on
 * (eth0, eth1, … in the order given): for relay trees across links, and for a
 * publisher that sends on a bridge itself (spawnOnBridge) and follows its
 * multicast database.
 *
 *   [pub] eth0 ── A ── eth0 [relay1] eth1 ── B ── eth0 [relay2] eth1 ── C ── eth0 [agent]
 *
 * Every fwcast datagram entering a bridge (UDP to the fwcast port) is counted
 * once by an nftables rule at the bridge's prerouting hook, whichever port it
 * goes out of: the bytes the link carried.
 */
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { ip, NFT, nft } from '../../scripts/lab/netlab.js';

export interface LinkInit {
  /** MLD snooping on the bridge (default off: the bridge floods multicast like a hub). */
  snooping?: boolean;
  /** The bridge is the link's MLD querier (default off). */
  querier?: boolean;
}

let labCounter = 0;

export class LinkLab {
  readonly #prefix: string;
  readonly #links: string[];
  readonly #hosts: Record<string, string[]>;
  #children = new Set<ChildProcess>();
  #port: number;

  private constructor(prefix: string, links: string[], hosts: Record<string, string[]>, port: number) {
    this.#prefix = prefix;
    this.#links = links;
    this.#hosts = hosts;
    this.#port = port;
  }

  /**
   * `links`: each link's bridge settings; `hosts`: for each host, the links its
   * eth0, eth1, … sit on. `port`: the UDP port whose datagrams are counted.
   */
  static create(links: Record<string, LinkInit>, hosts: Record<string, string[]>, port = 4242): LinkLab {
    if (process.env.FWCAST_LAB !== '1' || !NFT.startsWith('/')) {
      throw new Error('network tests run inside the lab: use `npm test` (or `bash scripts/lab.sh npx ava FILE`)');
    }
    const lab = new LinkLab(`fl${process.pid}x${labCounter++}`, Object.keys(links), hosts, port);
    try {
      lab.#setup(links);
    } catch (err) {
      lab.destroy();
      throw err;
    }
    return lab;
  }

  /** The namespace of a host, or of a link's bridge. */
  ns(name: string): string {
    if (!(name in this.#hosts) && !this.#links.includes(name)) throw new Error(`no host or link ${name} in this lab`);
    return `${this.#prefix}-${name}`;
  }

  /** A host's address on `link` (fd00:fc:N::M, N the link's index + 1). */
  address(host: string, link: string): string {
    const n = this.#links.indexOf(link) + 1;
    const m = Object.keys(this.#hosts).indexOf(host) + 1;
    if (n < 1 || m < 1 || !this.#hosts[host]!.includes(link)) throw new Error(`${host} is not on link ${link}`);
    return `fd00:fc:${n}::${m}`;
  }

  #setup(links: Record<string, LinkInit>): void {
    for (const [n, [link, init]] of Object.entries(links).entries()) {
      const ns = this.ns(link);
      ip('netns', 'add', ns);
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      ip('-n', ns, 'link', 'add', 'br0', 'type', 'bridge', 'mcast_snooping', init.snooping ? '1' : '0', 'mcast_querier', init.querier ? '1' : '0', 'mcast_mld_version', '2');
      ip('-n', ns, 'addr', 'add', `fd00:fc:${n + 1}::ff/64`, 'dev', 'br0', 'nodad');
      ip('-n', ns, 'link', 'set', 'br0', 'up');
      nft(ns, [
        'add table bridge lab',
        'add chain bridge lab count { type filter hook prerouting priority -200; }',
        `add rule bridge lab count ether type ip6 udp dport ${this.#port} counter`,
        'add table inet lab',
        'add chain inet lab out { type filter hook output priority 0; }',
        `add rule inet lab out meta l4proto udp udp dport ${this.#port} counter`,
        '',
      ].join('\n'));
    }
    for (const [m, [host, on]] of Object.entries(this.#hosts).entries()) {
      const ns = this.ns(host);
      ip('netns', 'add', ns);
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      on.forEach((link, i) => {
        const port = `v${this.#prefix.slice(2)}${m}${i}`.slice(-15);
        ip('link', 'add', port, 'netns', this.ns(link), 'type', 'veth', 'peer', 'name', `eth${i}`, 'netns', ns);
        ip('-n', this.ns(link), 'link', 'set', port, 'master', 'br0', 'up');
        ip('-n', ns, 'addr', 'add', `${this.address(host, link)}/64`, 'dev', `eth${i}`, 'nodad');
        ip('-n', ns, 'link', 'set', `eth${i}`, 'up');
      });
    }
  }

  /** Bytes and packets of fwcast datagrams (IPv6 packets, link headers aside) that entered link's bridge so far. */
  linkCount(link: string): { packets: number; bytes: number } {
    return this.#counter(link, 'bridge', 'count');
  }

  /** Bytes and packets of fwcast datagrams sent from the link's bridge host itself (a publisher spawned with spawnOnBridge). */
  bridgeHostSent(link: string): { packets: number; bytes: number } {
    return this.#counter(link, 'inet', 'out');
  }

  #counter(link: string, family: string, chain: string): { packets: number; bytes: number } {
    const text = execFileSync('ip', ['netns', 'exec', this.ns(link), NFT, 'list', 'chain', family, 'lab', chain], { encoding: 'utf8' });
    const m = /counter packets (\d+) bytes (\d+)/.exec(text);
    if (!m) throw new Error(`no counter in ${family} lab ${chain} of link ${link}:\n${text}`);
    return { packets: Number(m[1]), bytes: Number(m[2]) };
  }

  /** Groups in the link bridge's multicast database (what its snooping learned). */
  mdbGroups(link: string): string[] {
    const out = execFileSync('ip', ['netns', 'exec', this.ns(link), 'bridge', '-j', 'mdb', 'show', 'dev', 'br0'], { encoding: 'utf8' }).trim();
    if (!out) return [];
    return (JSON.parse(out) as Array<{ mdb?: Array<{ grp: string }> }>).flatMap((d) => (d.mdb ?? []).map((e) => e.grp));
  }

  /** Runs a command in a host's namespace; killed on destroy(). */
  spawn(host: string, command: string, args: string[], options: SpawnOptions = {}): ChildProcess {
    if (!(host in this.#hosts)) throw new Error(`no host ${host} in this lab`);
    return this.#spawn(this.ns(host), command, args, options);
  }

  /** Runs a command on a link's bridge host (its interface to the link is br0); killed on destroy(). */
  spawnOnBridge(link: string, command: string, args: string[], options: SpawnOptions = {}): ChildProcess {
    if (!this.#links.includes(link)) throw new Error(`no link ${link} in this lab`);
    return this.#spawn(this.ns(link), command, args, options);
  }

  #spawn(ns: string, command: string, args: string[], options: SpawnOptions): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', ns, command, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...options });
    this.#children.add(child);
    child.on('exit', () => this.#children.delete(child));
    return child;
  }

  destroy(): void {
    for (const child of this.#children) child.kill('SIGKILL');
    for (const name of [...Object.keys(this.#hosts), ...this.#links]) {
      try {
        ip('netns', 'del', this.ns(name));
      } catch {
        // Already gone, or never made.
      }
    }
  }
}
