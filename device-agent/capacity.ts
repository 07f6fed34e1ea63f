/**
 * The agent's capacity on the machine it runs on (`fwcast-agent capacity`):
 * a synthetic release, signed with a throwaway key, is fed to the real Agent
 * (the product's receive path, store and installer, in a temporary store) as
 * fast as it takes datagrams, through the in-memory transport, with loss
 * applied by leaving datagrams out. It measures:
 *
 *  - CPU per datagram (authenticate + store): the CPU time of the datagrams
 *    fed while every segment is between 10% and 70% of its source symbols,
 *    when nothing decodes yet (the carousel interleaves all segments);
 *  - CPU per MiB decoded: the CPU time from there until every segment has
 *    matched its signed digest, less those datagrams' own cost, per MiB (a
 *    storage thread decodes while the agent sets new symbols aside: the feed
 *    waits for that decode, so the datagrams counted are those it needed);
 *  - the rate it sustains: datagrams received and wire bits (lost ones
 *    included) per second of wall time, from the first datagram to the
 *    release received.
 *
 *  - the longest stall: the longest the agent took over one batch of
 *    datagrams (a segment decoding, a write, the CPU quota), warm-up
 *    included, since a device's first release meets cold code. A socket
 *    drops what arrives during a stall beyond what its buffer holds.
 *
 * CPU time is the whole process's (process.cpuUsage: every thread), so work
 * moved to worker threads is counted too. The recommended publisher rate is
 * the lower of half the sustained rate (the in-memory transport skips the
 * kernel's receive path, a system call and a copy per datagram) and a third
 * of the rate whose receive buffer, as the agent sizes it for that rate
 * (transport/receive-buffer.ts) and as net.core.rmem_max allows, holds what
 * arrives during the longest stall: a longest stall is the tail of a noisy
 * measurement, and a real agent meets a longer one.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { Carousel } from '../carousel/carousel.js';
import * as ed25519 from '../protocol/ed25519.js';
import { keyId, type PublicKey } from '../protocol/keys.js';
import type { LogEvent, Logger } from '../protocol/log.js';
import { buildRelease, type Release } from '../protocol/release.js';
import { MemoryHub, MemoryTransport } from '../transport/memory.js';
import { MAX_RECEIVE_BUFFER, MIN_RECEIVE_BUFFER, RECEIVE_STALL_BUDGET_MS, receiveBufferCap } from '../transport/receive-buffer.js';
import { Agent } from './agent.js';
import { FileInstaller } from './installers/file-installer.js';
import { Store } from './store.js';

export interface CapacityOptions {
  /** Wall time to spend measuring (at least one transfer runs). */
  seconds: number;
  /** Segment size of the synthetic release, bytes. */
  segmentSize: number;
  /** Fraction of datagrams lost, 0 ≤ loss < 1. */
  loss: number;
  /** Segments in the synthetic image (default 4). */
  segments?: number;
  /** Where the temporary stores go (default the system's temporary directory): put it on the device's store's disk. */
  dir?: string;
  /** Measure the agent with its storage thread (AgentInit.storageThread). */
  storageThread?: boolean;
}

export interface CapacityResult {
  loss: number;
  imageBytes: number;
  segmentSize: number;
  /** Transfers measured (after a first, warm-up one that is not). */
  transfers: number;
  /** CPUs this process may use: the cgroup's quota, else the machine's. */
  cpus: number;
  /** Mean UDP payload of a datagram on the wire, bytes. */
  datagramBytes: number;
  /** Datagrams on the wire per transfer (lost ones included), and received. */
  wireDatagrams: number;
  receivedDatagrams: number;
  cpuPerDatagramUs: number;
  cpuPerMiBDecodedMs: number;
  /** CPU seconds per wall second while receiving: above `cpus` cannot be. */
  cpuUtilisation: number;
  receivedDatagramsPerSecond: number;
  wireBitsPerSecond: number;
  /** The longest the agent did not take datagrams, ms. */
  longestStallMs: number;
  /** The fastest wire rate whose receive buffer (sized by the agent for it, capped by net.core.rmem_max) holds the longest stall. */
  stallBitsPerSecond: number;
  /** The lower of half the sustained rate and a third of the stall-bound one: what a publisher may send to a fleet of such boards at this loss. */
  recommendedRate: number;
  /** What the agent dropped while measured, by reason (expected: repeats after a segment or the release completed). */
  dropped: Record<string, number>;
  /** Seconds spent building the synthetic release (not measured). */
  buildSeconds: number;
}

/** The part of the sustained rate a publisher should use: the rest is for the kernel's receive path, the installer, the device. */
export const RATE_HEADROOM = 0.5;
/**
 * The part of the stall-bound rate a publisher should use. Under a quarter
 * core's CPU quota the longest stall of the same self-test ranged 590–908 ms
 * over ten runs, and the agent then stalled up to 1.35 s on the same segment
 * decode (the socket's queue, read from /proc, full for that long): up to
 * 2.3 times the self-test's figure.
 */
export const STALL_HEADROOM = 1 / 3;
const MODEL = 'capacity-self-test';
const CHANNEL = { name: `fw/${MODEL}`, group: 'ff15::ca9', port: 4242 };
/** Datagrams delivered between two yields to the event loop (timers, worker messages). */
const BATCH = 64;

/** CPUs this process may use: a cgroup v2 cpu.max or v1 CFS quota if one is set, else the machine's. */
export function availableCpus(): number {
  const machine = availableParallelism();
  let own: string;
  try {
    own = readFileSync('/proc/self/cgroup', 'utf8');
  } catch {
    return machine;
  }
  const read = (path: string): string | undefined => {
    try {
      return readFileSync(path, 'utf8').trim();
    } catch {
      return undefined;
    }
  };
  for (const line of own.split('\n')) {
    const [, controllers, path] = line.split(':');
    if (controllers === undefined || path === undefined) continue;
    if (controllers === '') {
      const max = read(join('/sys/fs/cgroup', path, 'cpu.max'))?.split(' ');
      if (max && max[0] !== 'max') return Math.min(machine, Number(max[0]) / Number(max[1]));
    } else if (controllers.split(',').includes('cpu')) {
      const base = ['/sys/fs/cgroup/cpu', '/sys/fs/cgroup/cpu,cpuacct'].find((b) => read(join(b, 'cpu.cfs_period_us')) !== undefined);
      if (!base) continue;
      const quota = Number(read(join(base, path, 'cpu.cfs_quota_us')));
      const period = Number(read(join(base, path, 'cpu.cfs_period_us')));
      if (quota > 0 && period > 0) return Math.min(machine, quota / period);
    }
  }
  return machine;
}

/**
 * The fastest rate R at which a stall of `stall` seconds fits in the receive
 * buffer the agent asks for at R (what arrives in the stall budget, between
 * the floor and the cap; receive-buffer.ts) and the kernel grants (at most
 * `rmemMax`). Within the budget the buffer grows with R and only the
 * kernel's cap binds; beyond it, the buffer the floor gives does.
 */
export function rateHoldingStall(stall: number, rmemMax: number | undefined): number {
  const cap = Math.min(rmemMax ?? MAX_RECEIVE_BUFFER, MAX_RECEIVE_BUFFER);
  const s = Math.max(stall, 1e-3);
  return (8 * (s <= RECEIVE_STALL_BUDGET_MS / 1000 ? cap : Math.min(cap, MIN_RECEIVE_BUFFER))) / s;
}

/** A publisher rate, rounded down to two significant digits (bits per second). */
function roundDown(bitsPerSecond: number): number {
  if (!(bitsPerSecond > 0)) return 0;
  const unit = 10 ** (Math.floor(Math.log10(bitsPerSecond)) - 1);
  return Math.floor(bitsPerSecond / unit) * unit;
}

/** The datagrams a fleet member hears: the carousel's, with `loss` of them left out (seeded: every run hears the same). */
class LossyWire {
  readonly #carousel: Carousel;
  readonly #heard: Uint8Array[] = [];
  /** Wire datagrams before each heard one (its own included), and their bytes. */
  readonly #wireCount: number[] = [];
  readonly #wireBytes: number[] = [];
  #sent = 0;
  #bytes = 0;
  #x = 0x9e3779b9;

  constructor(release: Release, readonly loss: number) {
    this.#carousel = new Carousel(release);
  }

  #random(): number {
    this.#x ^= this.#x << 13;
    this.#x ^= this.#x >>> 17;
    this.#x ^= this.#x << 5;
    return (this.#x >>> 0) / 2 ** 32;
  }

  /** The i-th datagram heard; generated once, then replayed for every transfer. */
  heard(i: number): Uint8Array {
    while (this.#heard.length <= i) {
      const d = this.#carousel.next();
      this.#sent++;
      this.#bytes += d.length;
      if (this.#random() < this.loss) continue;
      this.#heard.push(d);
      this.#wireCount.push(this.#sent);
      this.#wireBytes.push(this.#bytes);
    }
    return this.#heard[i]!;
  }

  /** Datagrams and bytes on the wire up to the i-th heard one. */
  wireUpTo(i: number): { datagrams: number; bytes: number } {
    return { datagrams: this.#wireCount[i]!, bytes: this.#wireBytes[i]! };
  }
}

interface TransferSample {
  received: number;
  longestStallMs: number;
  wire: { datagrams: number; bytes: number };
  wallMs: number;
  cpuMs: number;
  storeDatagrams: number;
  storeCpuMs: number;
  decodeCpuMs: number;
  decodeDatagrams: number;
  dropped: Record<string, number>;
}

const cpuMs = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

/** One transfer of the release into a fresh agent with a fresh store. */
async function runTransfer(release: Release, wire: LossyWire, trusted: PublicKey, dir: string, storageThread: boolean): Promise<TransferSample> {
  const work = mkdtempSync(join(dir, 'fwcast-capacity-'));
  let received = false;
  let settled: ((outcome: string) => void) | undefined;
  const finished = new Promise<string>((resolve) => (settled = resolve));
  const log: Logger = {
    event(event: LogEvent) {
      if (event === 'release.received') received = true;
      if (event === 'release.installed' || event === 'release.not-installed' || event === 'release.install-failed' || event === 'store.failed') settled?.(event);
    },
    child: () => log,
  };
  const hub = new MemoryHub();
  const agent = new Agent({
    models: [{ model: MODEL, channel: CHANNEL, installer: new FileInstaller(join(work, 'installed.img')) }],
    trusted: [trusted], store: new Store(join(work, 'store')), transport: new MemoryTransport(hub), log, storageThread,
  });
  try {
    await agent.start();
    const totalK = release.manifest.segments.reduce((n, s) => n + s.sourceSymbols, 0);
    const warm = Math.ceil(0.1 * totalK);
    const stored = Math.ceil(0.7 * totalK);
    // Far more than any loss up to 90% needs: a transfer that does not end is a fault, not a slow board.
    const limit = Math.ceil((4 * totalK) / Math.max(0.1, 1 - wire.loss)) + 10_000;
    let i = 0;
    let c0 = 0;
    let c1 = 0;
    let c2 = 0;
    let start = 0;
    const startCpu = cpuMs();
    const startWall = performance.now();
    let longestStallMs = 0;
    let batchStart = startWall;
    let lastShed = 0;
    let lastSetAside = 0;
    while (!received) {
      if (i >= limit) throw new Error(`the agent did not complete a ${release.manifest.imageSize}-byte release in ${limit} datagrams (${JSON.stringify(agent.stats()[MODEL])}; ${JSON.stringify(agent.progress())})`);
      for (const end = i + BATCH; i < end && !received; i++) {
        if (i === warm) { c0 = cpuMs(); start = i; }
        if (i === stored) {
          c1 = cpuMs();
          const done = agent.progress()[0]?.segmentsDone ?? 0;
          if (done > 0) throw new Error(`${done} segments decoded before 70% of the symbols arrived: the CPU per datagram would include decoding`);
        }
        hub.deliver(CHANNEL, wire.heard(i), 'capacity');
      }
      await yieldToLoop();
      const now = performance.now();
      longestStallMs = Math.max(longestStallMs, now - batchStart);
      // A storage thread that sheds is behind: "as fast as the agent takes them" waits for it.
      const dropped = agent.stats()[MODEL]!.dropped;
      const shed = dropped['storage-behind'] ?? 0;
      if (shed > lastShed) await new Promise((r) => setTimeout(r, 2));
      lastShed = shed;
      // So is one that sets symbols aside while a segment decodes: wait for the decode, so
      // that the decode window holds the datagrams the release needed, not the ones set aside.
      const setAside = dropped['segment-decoding'] ?? 0;
      if (setAside > lastSetAside) {
        const done = agent.progress()[0]?.segmentsDone ?? 0;
        const until = performance.now() + 10_000;
        while (!received && (agent.progress()[0]?.segmentsDone ?? 0) === done && performance.now() < until) await new Promise((r) => setTimeout(r, 1));
      }
      lastSetAside = setAside;
      batchStart = performance.now();
    }
    c2 = cpuMs();
    const wallMs = performance.now() - startWall;
    const total = c2 - startCpu;
    const outcome = await finished;
    if (outcome !== 'release.installed') throw new Error(`the self-test release was not installed: ${outcome}`);
    const stats = agent.stats()[MODEL]!;
    const storeDatagrams = stored - start;
    return {
      received: i, longestStallMs, wire: wire.wireUpTo(i - 1), wallMs, cpuMs: total,
      storeDatagrams, storeCpuMs: c1 - c0, decodeDatagrams: i - stored, decodeCpuMs: c2 - c1,
      dropped: Object.fromEntries(Object.entries(stats.dropped).map(([k, v]) => [k, v ?? 0])),
    };
  } finally {
    await agent.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

function trustedKey(seed: Uint8Array): PublicKey {
  const publicKey = ed25519.publicKeyFromSeed(seed);
  return { publicKey, kid: keyId(publicKey) };
}

/** Measures the agent on this machine; see the top of this file. */
export async function measureCapacity(opts: CapacityOptions): Promise<CapacityResult> {
  if (!(opts.loss >= 0 && opts.loss < 1)) throw new RangeError(`loss must be at least 0 and below 1, got ${opts.loss}`);
  if (!(opts.seconds > 0)) throw new RangeError(`seconds must be positive, got ${opts.seconds}`);
  await ed25519.ready();
  const seed = new Uint8Array(randomBytes(32));
  const segments = opts.segments ?? 4;
  const built = performance.now();
  const release = buildRelease({
    image: new Uint8Array(randomBytes(segments * opts.segmentSize)), seed, model: MODEL, version: 'self-test', seq: 1, segmentSize: opts.segmentSize,
  });
  const buildSeconds = (performance.now() - built) / 1000;
  const wire = new LossyWire(release, opts.loss);
  const trusted = trustedKey(seed);
  const dir = opts.dir ?? tmpdir();
  // A first transfer pays for compiling and warming up the code: only its stalls count.
  const cold = await runTransfer(release, wire, trusted, dir, opts.storageThread ?? false);
  const measured: TransferSample[] = [];
  const deadline = performance.now() + opts.seconds * 1000;
  do measured.push(await runTransfer(release, wire, trusted, dir, opts.storageThread ?? false));
  while (performance.now() < deadline);
  const sum = (f: (s: TransferSample) => number): number => measured.reduce((n, s) => n + f(s), 0);
  const cpuPerDatagramMs = sum((s) => s.storeCpuMs) / sum((s) => s.storeDatagrams);
  const imageMiB = release.manifest.imageSize / 2 ** 20;
  const decodeMs = Math.max(0, sum((s) => s.decodeCpuMs - s.decodeDatagrams * cpuPerDatagramMs));
  const wallSeconds = sum((s) => s.wallMs) / 1000;
  const dropped: Record<string, number> = {};
  for (const s of measured) for (const [k, v] of Object.entries(s.dropped)) dropped[k] = (dropped[k] ?? 0) + v;
  const wireBitsPerSecond = (sum((s) => s.wire.bytes) * 8) / wallSeconds;
  const last = measured[measured.length - 1]!;
  const longestStallMs = Math.max(cold.longestStallMs, ...measured.map((s) => s.longestStallMs));
  const stallBitsPerSecond = rateHoldingStall(longestStallMs / 1000, receiveBufferCap());
  return {
    loss: opts.loss,
    imageBytes: release.manifest.imageSize,
    segmentSize: release.manifest.segmentSize,
    transfers: measured.length,
    cpus: availableCpus(),
    datagramBytes: last.wire.bytes / last.wire.datagrams,
    wireDatagrams: last.wire.datagrams,
    receivedDatagrams: last.received,
    cpuPerDatagramUs: cpuPerDatagramMs * 1000,
    cpuPerMiBDecodedMs: decodeMs / (imageMiB * measured.length),
    cpuUtilisation: sum((s) => s.cpuMs) / 1000 / wallSeconds,
    receivedDatagramsPerSecond: sum((s) => s.received) / wallSeconds,
    wireBitsPerSecond,
    longestStallMs,
    stallBitsPerSecond,
    recommendedRate: roundDown(Math.min(RATE_HEADROOM * wireBitsPerSecond, STALL_HEADROOM * stallBitsPerSecond)),
    dropped,
    buildSeconds,
  };
}
