/**
 * Who listens to which multicast group, as a Linux publisher host can see it.
 * Multicast is pull: receivers join with MLD, and a publisher that follows
 * those joins can carousel a channel only while someone listens
 * (carousel/listener-gate.ts).
 *
 * Node has no raw sockets, so this does not snoop MLD reports itself. It reads
 * what the kernel already learned from them:
 * - `mdb`: the multicast database of a Linux bridge with MLD snooping, e.g. a
 *   gateway whose bridge holds the devices' LAN ports. With a querier on the
 *   link (`mcast_querier 1` here, or a router), hosts re-report every query
 *   interval, so an entry lives while its listener does and goes about two
 *   last-member intervals after a leave. Read with `bridge -j mdb show`.
 * - `local`: the groups this host (network namespace) itself joined, from
 *   /proc/net/igmp6: listeners on the publisher host, e.g. a relay agent or
 *   a gateway's own clients.
 * Both are polled: one short read a second is cheap next to a carousel.
 */
import { execFile, execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { ConfigError } from '../protocol/errors.js';

const run = promisify(execFile);

export type ListenerSourceKind = 'mdb' | 'local';
export const LISTENER_SOURCES: readonly ListenerSourceKind[] = ['mdb', 'local'];

/** Where listeners are read from; `groups()` is the set of groups with at least one listener now. */
export interface ListenerSource {
  readonly kind: ListenerSourceKind;
  readonly description: string;
  /** Groups (canonical form: canonicalGroup()) that have a listener now. */
  groups(): Promise<Set<string>>;
}

/** One spelling per IPv6 address (RFC 5952, as URL parsing gives it), so groups compare as strings. */
export function canonicalGroup(address: string): string {
  let host: string;
  try {
    host = new URL(`http://[${address}]/`).hostname;
  } catch {
    throw new ConfigError(`"${address}" is not an IPv6 address`);
  }
  return host.slice(1, -1);
}

interface MdbEntry { port?: string; grp?: string }

/**
 * The groups in `bridge -j mdb show` output that have a member port (the
 * bridge itself counts: its host's own joins). Link-local scope groups
 * (ff02::, solicited-node and the like) are kept: callers match their own.
 */
export function parseMdb(json: string): Set<string> {
  const out = new Set<string>();
  const data = JSON.parse(json) as Array<{ mdb?: MdbEntry[] }>;
  for (const dev of data) {
    for (const e of dev.mdb ?? []) {
      if (typeof e.grp === 'string' && e.grp.includes(':') && typeof e.port === 'string') out.add(canonicalGroup(e.grp));
    }
  }
  return out;
}

/** The groups joined on `iface` (every interface if undefined) in /proc/net/igmp6 text. */
export function parseIgmp6(text: string, iface?: string): Set<string> {
  const out = new Set<string>();
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4 || !/^[0-9a-f]{32}$/i.test(f[2]!)) continue;
    if (iface !== undefined && f[1] !== iface) continue;
    if (Number(f[3]) < 1) continue;
    out.add(canonicalGroup(f[2]!.match(/.{4}/g)!.join(':')));
  }
  return out;
}

/** What `ip -j -d link show dev IFACE` says about a bridge's multicast settings, or why it is not one. */
export interface BridgeSettings { snooping: boolean; querier: boolean; mldVersion: number | undefined }

export function bridgeSettings(iface: string): BridgeSettings {
  let out: string;
  try {
    out = execFileSync('ip', ['-j', '-d', 'link', 'show', 'dev', iface], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    throw new ConfigError(`cannot read interface ${iface} with \`ip -d link show\`: ${(err as Error).message.split('\n')[0]}`);
  }
  const info = (JSON.parse(out) as Array<{ linkinfo?: { info_kind?: string; info_data?: Record<string, unknown> } }>)[0]?.linkinfo;
  if (info?.info_kind !== 'bridge') {
    throw new ConfigError(`${iface} is not a Linux bridge: listeners from "mdb" need the publisher to send on a bridge with MLD snooping (or use "local")`);
  }
  const d = info.info_data ?? {};
  return { snooping: d.mcast_snooping === 1, querier: d.mcast_querier === 1, mldVersion: typeof d.mcast_mld_version === 'number' ? d.mcast_mld_version : undefined };
}

export class BridgeMdbListeners implements ListenerSource {
  readonly kind = 'mdb';
  readonly description: string;
  readonly #bridge: string;

  constructor(bridge: string) {
    this.#bridge = bridge;
    this.description = `multicast database of bridge ${bridge}`;
  }

  async groups(): Promise<Set<string>> {
    const { stdout } = await run('bridge', ['-j', 'mdb', 'show', 'dev', this.#bridge], { encoding: 'utf8', timeout: 5000 });
    // An empty database prints nothing at all on some iproute2 versions.
    return stdout.trim() === '' ? new Set() : parseMdb(stdout);
  }
}

export class LocalJoins implements ListenerSource {
  readonly kind = 'local';
  readonly description: string;
  readonly #iface: string | undefined;

  constructor(iface?: string) {
    this.#iface = iface;
    this.description = `this host's joins${iface ? ` on ${iface}` : ''} (/proc/net/igmp6)`;
  }

  async groups(): Promise<Set<string>> {
    return parseIgmp6(await readFile('/proc/net/igmp6', 'utf8'), this.#iface);
  }
}

/**
 * The source `kind` for a publisher sending on `iface`. Refuses (ConfigError)
 * a bridge source on an interface that is not a snooping bridge: its database
 * would stay empty and nothing would ever be sent. Returns warnings for
 * settings that work badly (no querier: hosts never re-report, so a listener
 * that joined before the publisher started is missed, and entries expire).
 */
export function openListenerSource(kind: ListenerSourceKind, iface: string | undefined): { source: ListenerSource; warnings: string[] } {
  if (kind === 'local') return { source: new LocalJoins(iface), warnings: [] };
  if (!iface) throw new ConfigError('listeners from "mdb" need the bridge to send on (--iface)');
  const s = bridgeSettings(iface);
  if (!s.snooping) throw new ConfigError(`bridge ${iface} has MLD snooping off, so its multicast database stays empty: ip link set ${iface} type bridge mcast_snooping 1 mcast_querier 1`);
  const warnings: string[] = [];
  if (!s.querier) warnings.push(`bridge ${iface} is not an MLD querier: unless a router on the link queries, listeners that joined earlier are not seen and entries expire (ip link set ${iface} type bridge mcast_querier 1)`);
  return { source: new BridgeMdbListeners(iface), warnings };
}
