/**
 * A receiving socket's kernel buffer: how large it should be for the rate a
 * receiver expects, and how many datagrams the kernel threw away because it
 * was full (Linux: /proc/self/net/udp6, the "drops" column of the process's
 * own sockets).
 *
 * The buffer is what carries a receiver through a stall (a segment decoding,
 * a slow disk, the scheduler): it must hold what arrives meanwhile, or the
 * kernel drops datagrams the network delivered, and FEC pays for loss the
 * receiver made itself.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/** How long a receiver may stop reading without losing anything: what the buffer is sized to carry. */
export const RECEIVE_STALL_BUDGET_MS = 250;
/** The least asked for: the kernel's default (208 KiB) is gone in 17 ms at 100 Mbit/s. */
export const MIN_RECEIVE_BUFFER = 1 << 20;
/** The most asked for: beyond this a stall is a bug to fix, not to buffer. */
export const MAX_RECEIVE_BUFFER = 64 << 20;

/** The receive buffer to ask for (bytes, SO_RCVBUF) at `bitsPerSecond`: what arrives in the stall budget. */
export function receiveBufferFor(bitsPerSecond: number): number {
  if (!(bitsPerSecond > 0) || !Number.isFinite(bitsPerSecond)) throw new RangeError(`expected rate must be a positive number of bits per second, got ${bitsPerSecond}`);
  const bytes = Math.ceil((bitsPerSecond / 8) * (RECEIVE_STALL_BUDGET_MS / 1000));
  return Math.min(MAX_RECEIVE_BUFFER, Math.max(MIN_RECEIVE_BUFFER, bytes));
}

/**
 * The buffer size as set, from what getsockopt(SO_RCVBUF) reports: Linux
 * doubles the set value (the other half is its bookkeeping), so it reports
 * twice what was granted.
 */
export function grantedFromReported(reported: number, platform: NodeJS.Platform = process.platform): number {
  return platform === 'linux' ? Math.floor(reported / 2) : reported;
}

/** The kernel's cap on SO_RCVBUF (net.core.rmem_max), if this system tells. */
export function receiveBufferCap(): number | undefined {
  try {
    const n = Number(readFileSync('/proc/sys/net/core/rmem_max', 'utf8').trim());
    return Number.isSafeInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/** 16 bytes of an IPv6 address in text form (a zone after `%` is ignored); undefined if it is not one. */
export function ipv6Bytes(text: string): Uint8Array | undefined {
  const address = text.split('%')[0]!;
  const halves = address.split('::');
  if (halves.length > 2) return undefined;
  const words = (part: string): number[] | undefined => {
    if (part === '') return [];
    const out = part.split(':').map((w) => (/^[0-9a-f]{1,4}$/i.test(w) ? parseInt(w, 16) : NaN));
    return out.some(Number.isNaN) ? undefined : out;
  };
  const head = words(halves[0]!);
  const tail = halves.length === 2 ? words(halves[1]!) : [];
  if (!head || !tail) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const all = [...head, ...new Array<number>(halves.length === 2 ? missing : 0).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  all.forEach((w, i) => {
    bytes[2 * i] = w >> 8;
    bytes[2 * i + 1] = w & 0xff;
  });
  return bytes;
}

/** An address and port as /proc/net/udp6 writes them: four 32-bit words in host (little-endian) order, then the port. */
function procAddress(address: Uint8Array, port: number): string {
  let out = '';
  for (let i = 0; i < 16; i += 4) {
    for (let j = 3; j >= 0; j--) out += address[i + j]!.toString(16).padStart(2, '0');
  }
  return `${out}:${port.toString(16).padStart(4, '0')}`.toUpperCase();
}

/** Inodes of the sockets a process has open. */
function socketInodes(pid: number | 'self'): Set<string> {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // closed meanwhile (readdir's own fd among them)
    }
    const m = /^socket:\[(\d+)\]$/.exec(target);
    if (m) inodes.add(m[1]!);
  }
  return inodes;
}

/**
 * Datagrams the kernel dropped on this process's UDP sockets bound to
 * `group` and `port` (their receive buffers were full), summed over them;
 * undefined where the system does not tell (not Linux, no /proc) or the
 * process has no such socket. Cheap enough for a stats line: one read of
 * /proc/self/net/udp6 and of the process's descriptors. `pid` reads another
 * process's instead (tests and benchmarks watching an agent; needs the
 * right to read its /proc/PID/fd).
 */
export function receiveBufferDrops(group: string, port: number, pid: number | 'self' = 'self'): number | undefined {
  const bytes = ipv6Bytes(group);
  if (!bytes) return undefined;
  let table: string;
  let inodes: Set<string>;
  try {
    table = readFileSync(`/proc/${pid}/net/udp6`, 'utf8');
    inodes = socketInodes(pid);
  } catch {
    return undefined;
  }
  const local = procAddress(bytes, port);
  let drops: number | undefined;
  // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ref pointer drops
  for (const line of table.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 13 || f[1] !== local || !inodes.has(f[9]!)) continue;
    drops = (drops ?? 0) + Number(f[12]);
  }
  return drops;
}
