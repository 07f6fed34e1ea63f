/**
 * A fleet of in-process agents behind independent loss, all listening to one
 * real Carousel. The figure of merit is
 *
 *     symbols sent until the last agent completed  ÷  Kt / (1 − p_max)
 *
 * where Kt = Σ segments' K and p_max the largest loss any agent has (target
 * ≤ 1.03; reported, never enforced).
 *
 *   npx tsx bench/simulation.ts                      # 1000 agents, 8 MiB, 1 MiB and the default (3 MiB) segments
 *   npx tsx bench/simulation.ts --smoke              # 50 agents, 1 MiB image: CI, < 20 s
 *   npx tsx bench/simulation.ts --agents 1000 --image-mib 8 --segment-mib 1,4 --max-loss 0.3 --seed 1
 *   npx tsx bench/simulation.ts --agents 8 --image-mib 16 --min-loss 0.1 --max-loss 0.1  # every agent at 10%
 *   npx tsx bench/simulation.ts --auth-copies 2,3,4  # variant: uncoded chunks, N AUTH copies each (CarouselInit.authCopies)
 *   npx tsx bench/simulation.ts --manifest-every 100,25  # variant: CarouselInit.manifestEvery
 *   npx tsx bench/simulation.ts --early-manifest 50      # variant: CarouselInit.earlyEvery (default 10)
 *   npx tsx bench/simulation.ts --interleave 2           # variant: CarouselInit.interleave, segments in interleaved pairs
 *
 * Method. Agents share nothing but the carousel, so they are simulated one
 * after another (in worker threads, agents split between them) against the
 * same deterministic datagram sequence: each worker builds the same signed
 * release (deterministic key, image and timestamp) and one real Carousel, and
 * parses each datagram it emits once into (type, segment, ESI, leaf). Agent a
 * has loss p_a = maxLoss·a/(agents − 1) (evenly spaced, 0 and maxLoss included)
 * and its own seeded stream: one draw per datagram, independent of the others.
 * The same seed gives the same figure.
 *
 * An agent is the receiver's own bookkeeping on those descriptors: the
 * genuine ManifestReassembly, EarlyBacklog and TransferLedger
 * (device-agent/receiver/), which decide what waits, what is evicted and
 * which AUTH group is rebuilt when, and a genuine MemoryAssembler that decodes
 * with RaptorQ; the output is compared with the image. What it leaves out is
 * the cryptography around them (signature, Merkle paths, symbol digests),
 * which cannot fail on genuine datagrams. A sample of agents (the slowest
 * ones included) is then replayed through the whole Receiver: completion
 * datagram, symbols accepted and AUTH chunks verified must agree exactly.
 *
 * Analysis (analyticExpectation). `binomial`: the floor for any feedback-free
 * schedule: a segment of K symbols needs N ~ NegBin(K, 1 − p) sends, mean
 * K/(1 − p), σ = √(K·p)/(1 − p); the last of 1000 agents × S segments lands
 * z ≈ 2–2.7 σ above the mean, so ratio − 1 ≈ z·√(p/K): 1.049 at K = 869
 * (1 MiB segments), 1.024 at K = 2315 (the 3 MiB default on an 8 MiB image),
 * 1.017 at K = 3473 (4 MiB). `protocol`: a model of the
 * uncoded schedule: symbols before the manifest are dropped, and a chunk's
 * symbols are useless when every AUTH copy of it was lost, which cuts the
 * useful fraction to (1 − p)(1 − p^copies) and makes losses come in chunks
 * (normal approximation). Measured figures and their history:
 * bench/results/README.md.
 */
import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { Carousel, MANIFEST_EVERY, type CarouselInit } from '../carousel/carousel.js';
import { IPV6_UDP_HEADERS } from '../carousel/publisher.js';
import { MemoryAssembler, type SegmentAssembler } from '../device-agent/assembler.js';
import { EarlyBacklog } from '../device-agent/receiver/early-backlog.js';
import { ManifestReassembly } from '../device-agent/receiver/manifest-reassembly.js';
import { Receiver } from '../device-agent/receiver/receiver.js';
import { TransferLedger, type LedgerHost } from '../device-agent/receiver/transfer-ledger.js';
import { ChunkLayout } from '../protocol/auth.js';
import * as ed25519 from '../protocol/ed25519.js';
import { hex } from '../protocol/hex.js';
import { keyId, type PublicKey } from '../protocol/keys.js';
import { DEFAULT_LIMITS, DEFAULT_SEGMENT_SIZE } from '../protocol/limits.js';
import type { Manifest } from '../protocol/manifest.js';
import { decodePacket, PacketType, type ManifestFragment } from '../protocol/packet.js';
import { symbolOf } from '../protocol/symbol-set.js';
import { buildRelease, type Release } from '../server/release.js';
import { makeImage } from '../test/helpers/fixtures.js';

const MiB = 1024 * 1024;
/** Fixed so that every worker signs the very same manifest. */
const CREATED = 1_760_000_000;
const MODEL = 'sim';

export interface SimulationOptions {
  agents: number;
  imageBytes: number;
  /** Largest loss; agents are spread evenly over [minLoss, maxLoss]. */
  maxLoss: number;
  /** Smallest loss (default 0); equal to maxLoss, every agent has the same loss. */
  minLoss?: number;
  seed: number;
  /** Largest segment, bytes (default: the publisher's, DEFAULT_SEGMENT_SIZE). */
  segmentSize?: number;
  /** Worker threads (default: min(2, available cores)); 0 runs in this thread. */
  workers?: number;
  /** Agents replayed through the genuine Receiver (default 8; the slowest are always among them). */
  check?: number;
  /** Variant: CarouselInit.manifestEvery (default: the carousel's). */
  manifestEvery?: number;
  /** Variant: uncoded AUTH chunks with CarouselInit.authCopies copies each (default: coded chunks). */
  authCopies?: number;
  /** Variant: CarouselInit.earlyEvery, datagrams per fragment between the first manifest copies. */
  earlyManifestEvery?: number;
  /** Variant: CarouselInit.interleave, segments interleaved in groups of this many. */
  interleave?: number;
}

export interface AnalyticExpectation {
  /** Per segment at p_max: K/(1 − p) symbols sent on average, σ = √(K·p)/(1 − p) (negative binomial). */
  perSegment: { k: number; mean: number; sigma: number; relativeSigma: number };
  /**
   * Ideal protocol (every received symbol useful from the first datagram on,
   * RaptorQ overhead 0/1/2 symbols with probability 0.99/0.0099/0.0001): exact
   * distribution of the maximum over all agents and segments.
   */
  binomial: { symbolsSent: number; ratio: number; p05: number; p95: number };
  /**
   * The uncoded schedule (variant `--auth-copies`; with coded chunks, the
   * default, a reference for 3 copies): symbols before the manifest are
   * dropped, a chunk's symbols are lost when all its AUTH copies are
   * (probability p^copies), normal approximation of the useful-symbol count.
   */
  protocol: { symbolsSent: number; ratio: number; p05: number; p95: number; authCopies: number; usefulFractionAtPmax: number };
  /** The protocol model's expected ratio for other AUTH copy counts (datagram ratio: + copies/c, 1/K, 1/manifestEvery). */
  byAuthCopies: Array<{ copies: number; ratio: number; ratioAllDatagrams: number }>;
}

export interface CrossCheck {
  agent: number;
  loss: number;
  simulatedDatagram: number;
  receiverDatagram: number;
  simulatedAccepted: number;
  receiverAccepted: number;
  simulatedAuth: number;
  receiverAuth: number;
  agrees: boolean;
}

export interface SlowAgent {
  agent: number;
  loss: number;
  symbolsSent: number;
  received: number;
  /** Symbols received before the manifest was complete (dropped as unknown release). */
  beforeManifest: number;
  /** Symbols received whose chunk had no AUTH copy received (still pending, evicted or over the per-leaf bound). */
  unauthenticated: number;
  /** Symbols that reached a decoder (distinct); minus Kt = RaptorQ overhead. */
  accepted: number;
  /** Symbols that arrived for segments already decoded (the slowest segment sets the pace). */
  segmentDone: number;
  duplicates: number;
}

export interface SimulationResult {
  agents: number;
  imageBytes: number;
  segmentSize: number;
  segments: number;
  kTotal: number;
  maxLoss: number;
  seed: number;
  /** Symbol datagrams the carousel emitted until the last agent completed. */
  symbolsSent: number;
  /** All datagrams (symbols, AUTH, manifest fragments) until then. */
  datagramsSent: number;
  /**
   * IPv6 bytes on the wire until then (each datagram + 48 bytes of IPv6 and
   * UDP headers), by kind, against the ideal: Kt/(1 − p_max) symbols of T
   * bytes, each with only its 48 header bytes.
   */
  wire: { bytes: number; symbol: number; auth: number; manifest: number; ideal: number; ratio: number };
  /** Kt / (1 − p_max). */
  ideal: number;
  ratio: number;
  ratioAllDatagrams: number;
  target: number;
  pass: boolean;
  seconds: number;
  analyticExpectation: AnalyticExpectation;
  /** Decodes at ≥ K symbols that failed and waited for more (RaptorQ overhead), of all segment decodes. */
  decodeFailures: { failed: number; decodes: number };
  /** The slowest agents, with where their received symbols went. */
  slowest: SlowAgent[];
  /** Mean and max completion over agents, symbols sent ÷ their own K/(1 − p_a). */
  perAgentRatio: { mean: number; max: number };
  crossCheck: { checked: number; agree: boolean; agents: CrossCheck[] };
  schedule: {
    /** AUTH chunks erasure-coded (the default) as "g:r", or "copies" (uncoded, authCopies per chunk). */
    chunkCoding: string; authCopies: number; manifestEvery: number; earlyManifestEvery?: number; interleave: number;
    chunkSymbols: number; manifestFragments: number;
  };
  workers: number;
}

// ---------------------------------------------------------------------------
// Deterministic inputs

/** mulberry32 over a mixed seed: one independent stream per (seed, agent). */
export function lossStream(seed: number, agent: number): () => number {
  let s = mix32(mix32(seed >>> 0) ^ mix32((agent + 0x9e3779b9) >>> 0));
  return () => {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function mix32(x: number): number {
  x = Math.imul(x ^ (x >>> 16), 0x7feb352d);
  x = Math.imul(x ^ (x >>> 15), 0x846ca68b);
  return (x ^ (x >>> 16)) >>> 0;
}

export function lossOf(agent: number, agents: number, minLoss: number, maxLoss: number): number {
  return agents <= 1 ? maxLoss : minLoss + ((maxLoss - minLoss) * agent) / (agents - 1);
}

interface FleetSpec {
  imageBytes: number;
  segmentSize: number;
  seed: number;
  manifestEvery?: number;
  authCopies?: number;
  earlyManifestEvery?: number;
  interleave?: number;
}

interface Fleet {
  release: Release;
  key: PublicKey;
  /** A fresh datagram source: the real Carousel with the spec's options. */
  source: () => () => Uint8Array;
  /** AUTH datagrams per chunk when uncoded (the analytic model's parameter; 3 stands for coded chunks). */
  authCopies: number;
  manifestEvery: number;
  interleave: number;
}

async function makeFleet(spec: FleetSpec): Promise<Fleet> {
  await ed25519.ready();
  const seed = new Uint8Array(createHash('sha256').update(`fwcast simulation key ${spec.seed}`).digest());
  const publicKey = ed25519.publicKeyFromSeed(seed);
  const image = makeImage(spec.imageBytes, spec.seed);
  // Copies of AUTH datagrams only make sense for uncoded chunks; otherwise the release has the publisher's default coding.
  const release = buildRelease({ image, seed, model: MODEL, version: '1.0.0', seq: 1, created: CREATED, segmentSize: spec.segmentSize, ...(spec.authCopies !== undefined ? { chunkCoding: false } : {}) });
  const init: CarouselInit = {
    manifest: release.manifest, signed: release.signed, releaseId: release.releaseId, image, symbolSet: release.symbolSet!,
    ...(spec.manifestEvery !== undefined ? { manifestEvery: spec.manifestEvery } : {}),
    ...(spec.authCopies !== undefined ? { authCopies: spec.authCopies } : {}),
    ...(spec.earlyManifestEvery !== undefined ? { earlyEvery: spec.earlyManifestEvery } : {}),
    ...(spec.interleave !== undefined ? { interleave: spec.interleave } : {}),
  };
  return {
    release, key: { publicKey, kid: keyId(publicKey) },
    source: () => {
      const c = new Carousel(init);
      return () => c.next();
    },
    authCopies: spec.authCopies ?? 3,
    manifestEvery: spec.manifestEvery ?? MANIFEST_EVERY,
    interleave: spec.interleave ?? release.manifest.segments.length,
  };
}

// ---------------------------------------------------------------------------
// The shared schedule: every datagram parsed once

const KIND_MANIFEST = 1;
const KIND_SYMBOL = 2;
const KIND_AUTH = 3;

class Schedule {
  kind = new Uint8Array(0);
  segment = new Int32Array(0);
  /** ESI for symbols, fragment number for manifest fragments. */
  esi = new Int32Array(0);
  leaf = new Int32Array(0);
  /** Symbol datagrams among datagrams 0..i. */
  symbols = new Int32Array(0);
  /** Datagram sizes (UDP payload). */
  size = new Int32Array(0);
  length = 0;
  /** Manifest fragments by fragment number (every copy is the same bytes). */
  fragmentList: ManifestFragment[] = [];
  #next: () => Uint8Array;
  #fragmentOf = new Map<number, number>();
  #leafOf: (segment: number, esi: number) => number;

  constructor(release: Release, next: () => Uint8Array) {
    this.#next = next;
    this.#leafOf = (s, e) => release.symbolSet!.layout.leafOf(s, e);
  }

  get fragments(): number {
    return this.#fragmentOf.size;
  }

  ensure(n: number): void {
    if (n <= this.length) return;
    if (n > this.kind.length) {
      const size = Math.max(n, 2 * this.kind.length, 4096);
      const grow = <T extends Uint8Array | Int32Array>(a: T, make: (k: number) => T): T => {
        const b = make(size);
        b.set(a);
        return b;
      };
      this.kind = grow(this.kind, (k) => new Uint8Array(k));
      this.segment = grow(this.segment, (k) => new Int32Array(k));
      this.esi = grow(this.esi, (k) => new Int32Array(k));
      this.leaf = grow(this.leaf, (k) => new Int32Array(k));
      this.symbols = grow(this.symbols, (k) => new Int32Array(k));
      this.size = grow(this.size, (k) => new Int32Array(k));
    }
    for (let i = this.length; i < n; i++) {
      const datagram = this.#next();
      const p = decodePacket(datagram);
      this.size[i] = datagram.length;
      const before = i > 0 ? this.symbols[i - 1]! : 0;
      this.symbols[i] = before;
      if (p.type === PacketType.Symbol) {
        this.kind[i] = KIND_SYMBOL;
        this.segment[i] = p.segment;
        this.esi[i] = p.esi;
        this.leaf[i] = this.#leafOf(p.segment, p.esi);
        this.symbols[i] = before + 1;
      } else if (p.type === PacketType.Auth) {
        this.kind[i] = KIND_AUTH;
        this.leaf[i] = p.leaf;
        this.segment[i] = -1;
      } else if (p.type === PacketType.Manifest) {
        this.kind[i] = KIND_MANIFEST;
        let f = this.#fragmentOf.get(p.offset);
        if (f === undefined) {
          this.#fragmentOf.set(p.offset, (f = this.#fragmentOf.size));
          this.fragmentList.push({ ...p, bytes: p.bytes.slice() });
        }
        this.esi[i] = f;
      }
    }
    this.length = n;
  }
}

// ---------------------------------------------------------------------------
// One agent: the receiver's own bookkeeping on descriptors, real RaptorQ decoding

interface AgentOutcome {
  agent: number;
  loss: number;
  /** Index of the datagram whose processing completed the release. */
  datagram: number;
  symbolsSent: number;
  received: number;
  beforeManifest: number;
  unauthenticated: number;
  accepted: number;
  segmentDone: number;
  duplicates: number;
  authVerified: number;
  decodes: number;
  decodeFailures: number;
}

/**
 * One agent behind loss `loss`: datagram i of the schedule goes through the
 * genuine ManifestReassembly, EarlyBacklog and TransferLedger, as in
 * Receiver.push, with the checks that cannot fail on genuine datagrams
 * (signature, Merkle paths, digests) left out; decoded segments must equal
 * the image.
 */
function runAgent(fleet: Fleet, schedule: Schedule, agent: number, loss: number, seed: number): AgentOutcome {
  const m: Manifest = fleet.release.manifest;
  const set = fleet.release.symbolSet!;
  const image = fleet.release.image;
  const draw = lossStream(seed, agent);
  const id = hex(fleet.release.releaseId);
  const o: AgentOutcome = {
    agent, loss, datagram: -1, symbolsSent: 0, received: 0, beforeManifest: 0, unauthenticated: 0, accepted: 0, segmentDone: 0, duplicates: 0, authVerified: 0, decodes: 0, decodeFailures: 0,
  };
  const reassembly = new ManifestReassembly(DEFAULT_LIMITS.maxManifestSize);
  const early = new EarlyBacklog<number>((i) => schedule.size[i]!);
  const assembler: SegmentAssembler = new MemoryAssembler(m.symbolSize);
  const acceptedIn = new Int32Array(m.segments.length);
  let ledger: TransferLedger<undefined, number, true> | undefined;
  const host: LedgerHost<undefined, number, true> = {
    deliver(segment, esi) {
      const seg = m.segments[segment]!;
      const r = assembler.add(seg, esi, symbolOf(set, segment, esi));
      if (r.kind === 'duplicate') {
        o.duplicates++;
        return;
      }
      o.accepted++;
      acceptedIn[segment]!++;
      if (r.kind !== 'decoded') return;
      if (Buffer.compare(r.bytes, image.subarray(seg.offset, seg.offset + seg.oti.transferLength)) !== 0) throw new Error(`agent ${agent}: segment ${segment} decoded to the wrong bytes`);
      o.decodes++;
      // More than K symbols: the decode at K failed and waited for more (RaptorQ overhead).
      if (acceptedIn[segment]! > seg.sourceSymbols) o.decodeFailures++;
      assembler.commit(seg, r.bytes);
      ledger!.segmentDone(segment);
    },
    keep: (symbol) => symbol,
    letGo: () => {},
    chunkVerified() {
      o.authVerified++;
    },
    checkPiece: () => true,
    samePiece: () => true,
    recover: (_group, _pieces, missing) => missing.map(() => true),
    drop(reason, count) {
      if (reason === 'segment-complete') o.segmentDone += count;
    },
  };
  const layout = new ChunkLayout(m.segments, m.auth.chunkSymbols, m.auth.coding);
  const published = m.segments.map((s) => s.published);
  /** A symbol or AUTH datagram of the accepted release (Receiver: #onSymbol, #onAuth, #onParity). */
  const dispatch = (l: TransferLedger<undefined, number, true>, i: number): void => {
    const leaf = schedule.leaf[i]!;
    if (schedule.kind[i] === KIND_SYMBOL) l.symbol(schedule.segment[i]!, schedule.esi[i]!, undefined);
    else if (leaf < layout.chunkLeaves) {
      if (!l.chunkWanted(leaf)) l.chunk(leaf, true);
    } else if (!l.parityWanted(leaf)) l.parity(leaf, leaf);
  };

  try {
    for (let i = 0; ledger === undefined || ledger.remaining > 0; i++) {
      if (i >= schedule.length) schedule.ensure(Math.max(2 * schedule.length, 4096));
      if (draw() < loss) continue;
      const kind = schedule.kind[i]!;
      if (kind === KIND_SYMBOL) o.received++;
      if (kind === KIND_MANIFEST) {
        if (ledger) continue;
        const step = reassembly.add(schedule.fragmentList[schedule.esi[i]!]!, id, '');
        if (step.kind !== 'complete') continue;
        ledger = new TransferLedger(layout, published, host);
        for (const e of early.take(id)) dispatch(ledger, e);
      } else if (!ledger) {
        if (kind === KIND_SYMBOL) o.beforeManifest++;
        early.keep(id, i);
        continue;
      } else {
        dispatch(ledger, i);
      }
      if (ledger.remaining === 0) o.datagram = i;
    }
  } finally {
    assembler.close();
  }
  o.symbolsSent = schedule.symbols[o.datagram]!;
  o.unauthenticated = o.received - o.beforeManifest - o.accepted - o.segmentDone - o.duplicates;
  return o;
}

// ---------------------------------------------------------------------------
// Workers

interface WorkerJob {
  spec: FleetSpec;
  agents: number;
  minLoss: number;
  maxLoss: number;
  seed: number;
  indices: number[];
}

async function runJob(job: WorkerJob, fleet?: Fleet): Promise<{ outcomes: AgentOutcome[]; releaseId: string }> {
  const f = fleet ?? await makeFleet(job.spec);
  const schedule = new Schedule(f.release, f.source());
  const outcomes = job.indices.map((a) => runAgent(f, schedule, a, lossOf(a, job.agents, job.minLoss, job.maxLoss), job.seed));
  return { outcomes, releaseId: Buffer.from(f.release.releaseId).toString('hex') };
}

function spawnJob(job: WorkerJob): Promise<{ outcomes: AgentOutcome[]; releaseId: string }> {
  // Workers do not inherit tsx's loader: register it before importing this module.
  const boot = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then(({ register }) => { register(); return import(${JSON.stringify(import.meta.url)}); })`;
  return new Promise((resolve, reject) => {
    const w = new Worker(boot, { eval: true, workerData: { fwcastSimulation: job }, execArgv: [] });
    w.once('message', resolve);
    w.once('error', reject);
    w.once('exit', (code) => { if (code !== 0) reject(new Error(`simulation worker exited with ${code}`)); });
  });
}

if (!isMainThread && (workerData as { fwcastSimulation?: WorkerJob } | undefined)?.fwcastSimulation) {
  const result = await runJob((workerData as { fwcastSimulation: WorkerJob }).fwcastSimulation);
  parentPort!.postMessage(result);
}

// ---------------------------------------------------------------------------
// The genuine receive path, for a sample of agents

function replayWithReceiver(fleet: Fleet, agent: number, loss: number, seed: number, limit: number): { datagram: number; accepted: number; auth: number } {
  const receiver = new Receiver({ model: MODEL, trusted: [fleet.key] });
  const next = fleet.source();
  const draw = lossStream(seed, agent);
  try {
    for (let i = 0; i < limit; i++) {
      const datagram = next();
      if (draw() < loss) continue;
      const events = receiver.push(datagram, CREATED + 60);
      if (events.some((e) => e.kind === 'rejected')) throw new Error(`agent ${agent}: receiver rejected the release`);
      if (events.some((e) => e.kind === 'complete')) return { datagram: i, accepted: receiver.stats.symbolsAccepted, auth: receiver.stats.authChunksVerified };
    }
    return { datagram: -1, accepted: receiver.stats.symbolsAccepted, auth: receiver.stats.authChunksVerified };
  } finally {
    receiver.close();
  }
}

// ---------------------------------------------------------------------------
// Analysis

const RAPTORQ_OVERHEAD = [0.99, 0.0099, 0.0001];

/** P(N ≤ n), n = 0..nMax, N the sends until Bin(N, 1 − p) reaches K (negative binomial). */
function negBinCdf(k: number, p: number, nMax: number): Float64Array {
  const cdf = new Float64Array(nMax + 1);
  if (p <= 0) {
    for (let n = k; n <= nMax; n++) cdf[n] = 1;
    return cdf;
  }
  const lp = Math.log(p);
  let logf = k * Math.log1p(-p);
  let acc = 0;
  for (let n = k; n <= nMax; n++) {
    acc += Math.exp(logf);
    cdf[n] = Math.min(1, acc);
    logf += Math.log(n) - Math.log(n - k + 1) + lp;
  }
  return cdf;
}

function erfc(x: number): number {
  // Numerical Recipes erfcc: relative error < 1.2e-7.
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r = t * Math.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807
    + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
  return x >= 0 ? r : 2 - r;
}
const phi = (x: number): number => 0.5 * erfc(-x / Math.SQRT2);

/** Mean and quantiles (in symbols sent) of the max over agents, from Σ log CDF on a grid of `step` symbols. */
function maxStats(logCdfSum: Float64Array, step: number): { mean: number; p05: number; p95: number } {
  let mean = 0;
  let p05 = NaN;
  let p95 = NaN;
  for (let i = 0; i < logCdfSum.length; i++) {
    const all = Math.exp(logCdfSum[i]!);
    mean += (1 - all) * step;
    if (Number.isNaN(p05) && all >= 0.05) p05 = i * step;
    if (Number.isNaN(p95) && all >= 0.95) p95 = i * step;
  }
  return { mean, p05, p95 };
}

/**
 * Both models on the carousel's actual order: on a grid of total symbols sent
 * (step S), how many symbols of each segment have been sent, and how many had
 * been sent when each manifest copy went out. An agent is done when every
 * segment is; the fleet when every agent is.
 */
function analyse(m: Manifest, agents: number, minLoss: number, maxLoss: number, schedule: Schedule, authCopies: number, manifestEvery: number, ideal: number): AnalyticExpectation {
  const S = m.segments.length;
  const ks = m.segments.map((s) => s.sourceSymbols);
  const kTotal = ks.reduce((x, y) => x + y, 0);
  const kMax = Math.max(...ks);
  const q = 1 - maxLoss;
  const sigma = Math.sqrt(kMax * maxLoss) / q;
  const c = m.auth.chunkSymbols;

  // Per-segment sends on the grid, up to three rounds (published = 3K by default).
  const step = S;
  const horizon = 3 * kTotal;
  for (let n = Math.max(4096, schedule.length); schedule.length === 0 || schedule.symbols[schedule.length - 1]! < horizon; n *= 2) schedule.ensure(n);
  const points = Math.floor(horizon / step) + 1;
  const sent = m.segments.map(() => new Int32Array(points));
  const fragments = Math.max(1, schedule.fragments);
  const manifestSent: Int32Array[] = [];
  const count = new Int32Array(S);
  for (let i = 0, g = 0; i < schedule.length && g < points; i++) {
    if (schedule.kind[i] === KIND_SYMBOL) count[schedule.segment[i]!]!++;
    else if (schedule.kind[i] === KIND_MANIFEST && schedule.esi[i] === fragments - 1 && manifestSent.length < 40) manifestSent.push(count.slice());
    while (g < points && schedule.symbols[i]! >= g * step) {
      for (let s = 0; s < S; s++) sent[s]![g] = count[s]!;
      g++;
    }
  }
  const nMax = Math.max(...ks) * 3 + 3;

  const binomial = new Float64Array(points);
  for (let a = 0; a < agents; a++) {
    const p = lossOf(a, agents, minLoss, maxLoss);
    const cdfByK = new Map<number, Float64Array>();
    for (const k of new Set(ks)) {
      const parts = RAPTORQ_OVERHEAD.map((w, e) => ({ w, cdf: negBinCdf(k + e, p, nMax) }));
      const mix = new Float64Array(nMax + 1);
      for (let n = 0; n <= nMax; n++) for (const { w, cdf } of parts) mix[n]! += w * cdf[n]!;
      cdfByK.set(k, mix);
    }
    for (let g = 0; g < points; g++) {
      let f = 1;
      for (let s = 0; s < S; s++) f *= cdfByK.get(ks[s]!)![sent[s]![g]!]!;
      binomial[g]! += f > 0 ? Math.log(f) : -1e300;
    }
  }
  const b = maxStats(binomial, step);

  /** P(agent with loss p has completed by grid point g), with `perChunk` AUTH copies per chunk. */
  const protocolCdf = (p: number, g: number, perChunk: number): number => {
    const d = 1 - p ** perChunk;
    const mean = (1 - p) * d;
    const varPer = d * (1 - p) * p + d * (1 - d) * c * (1 - p) ** 2;
    let f = 0;
    for (let j = 0; j < manifestSent.length; j++) {
      const w = (1 - p ** (j + 1)) ** fragments - (j > 0 ? (1 - p ** j) ** fragments : 0);
      if (w < 1e-15) continue;
      let h = 1;
      for (let s = 0; s < S && h > 0; s++) {
        const sends = sent[s]![g]! - manifestSent[j]![s]!;
        const need = ks[s]! + 0.0101;
        if (p === 0) h *= sends >= ks[s]! ? 1 : 0;
        else h *= sends <= 0 ? 0 : phi((sends * mean - need + 0.5) / Math.sqrt(Math.max(1e-12, sends * varPer)));
      }
      f += w * h;
    }
    return f;
  };
  const protocolFor = (perChunk: number): { mean: number; p05: number; p95: number } => {
    // Below g0 the slowest agent alone makes completion all but impossible.
    let g0 = 0;
    while (g0 < points && protocolCdf(maxLoss, g0, perChunk) < 1e-30) g0++;
    const logCdf = new Float64Array(points).fill(-1e300, 0, g0);
    for (let a = 0; a < agents; a++) {
      const p = lossOf(a, agents, minLoss, maxLoss);
      for (let g = g0; g < points; g++) {
        const f = protocolCdf(p, g, perChunk);
        if (f >= 1 - 1e-15) break;
        logCdf[g]! += f > 0 ? Math.log(f) : -1e300;
      }
    }
    return maxStats(logCdf, step);
  };
  const pr = protocolFor(authCopies);
  // Datagrams per symbol: AUTH copies per chunk, one more per segment and round, the manifest.
  const k0 = kTotal / S;
  const byAuthCopies = [2, 3, 4, 5, 6].map((n) => {
    const r = n === authCopies ? pr : protocolFor(n);
    const ratio = r.mean / ideal;
    return { copies: n, ratio, ratioAllDatagrams: ratio * (1 + n / c + 1 / k0 + 1 / manifestEvery) };
  });
  return {
    perSegment: { k: kMax, mean: kMax / q, sigma, relativeSigma: sigma / (kMax / q) },
    binomial: { symbolsSent: b.mean, ratio: b.mean / ideal, p05: b.p05 / ideal, p95: b.p95 / ideal },
    protocol: { symbolsSent: pr.mean, ratio: pr.mean / ideal, p05: pr.p05 / ideal, p95: pr.p95 / ideal, authCopies, usefulFractionAtPmax: 1 - maxLoss ** authCopies },
    byAuthCopies,
  };
}

// ---------------------------------------------------------------------------

export async function simulateFleet(opts: SimulationOptions): Promise<SimulationResult> {
  const t0 = performance.now();
  const segmentSize = opts.segmentSize ?? DEFAULT_SEGMENT_SIZE;
  const minLoss = opts.minLoss ?? 0;
  if (!(minLoss >= 0 && minLoss <= opts.maxLoss && opts.maxLoss < 1)) throw new RangeError(`losses must satisfy 0 ≤ minLoss ≤ maxLoss < 1, got ${minLoss} and ${opts.maxLoss}`);
  const spec: FleetSpec = {
    imageBytes: opts.imageBytes, segmentSize, seed: opts.seed,
    ...(opts.manifestEvery !== undefined ? { manifestEvery: opts.manifestEvery } : {}),
    ...(opts.authCopies !== undefined ? { authCopies: opts.authCopies } : {}),
    ...(opts.earlyManifestEvery !== undefined ? { earlyManifestEvery: opts.earlyManifestEvery } : {}),
    ...(opts.interleave !== undefined ? { interleave: opts.interleave } : {}),
  };
  const fleet = await makeFleet(spec);
  const m = fleet.release.manifest;
  const workers = Math.min(opts.workers ?? Math.min(2, availableParallelism()), opts.agents);
  const all = Array.from({ length: opts.agents }, (_, a) => a);
  let outcomes: AgentOutcome[];
  if (workers <= 1) {
    outcomes = (await runJob({ spec, agents: opts.agents, minLoss, maxLoss: opts.maxLoss, seed: opts.seed, indices: all }, fleet)).outcomes;
  } else {
    const jobs = Array.from({ length: workers }, (_, w) => all.filter((a) => a % workers === w));
    const done = await Promise.all(jobs.map((indices) => spawnJob({ spec, agents: opts.agents, minLoss, maxLoss: opts.maxLoss, seed: opts.seed, indices })));
    const id = Buffer.from(fleet.release.releaseId).toString('hex');
    if (done.some((d) => d.releaseId !== id)) throw new Error('workers built a different release');
    outcomes = done.flatMap((d) => d.outcomes).sort((x, y) => x.agent - y.agent);
  }

  const schedule = new Schedule(fleet.release, fleet.source());
  const last = outcomes.reduce((x, y) => (y.datagram > x.datagram ? y : x));
  schedule.ensure(last.datagram + 1);
  const kTotal = m.segments.reduce((n, s) => n + s.sourceSymbols, 0);
  const pMax = Math.max(...outcomes.map((o) => o.loss));
  const ideal = kTotal / (1 - pMax);
  const symbolsSent = schedule.symbols[last.datagram]!;
  const datagramsSent = last.datagram + 1;
  const wire = { bytes: 0, symbol: 0, auth: 0, manifest: 0, ideal: ideal * (m.symbolSize + IPV6_UDP_HEADERS), ratio: 0 };
  for (let i = 0; i < datagramsSent; i++) {
    const bytes = schedule.size[i]! + IPV6_UDP_HEADERS;
    wire.bytes += bytes;
    if (schedule.kind[i] === KIND_SYMBOL) wire.symbol += bytes;
    else if (schedule.kind[i] === KIND_AUTH) wire.auth += bytes;
    else wire.manifest += bytes;
  }
  wire.ratio = wire.bytes / wire.ideal;

  // Cross-check: the slowest agents and an even spread, through the genuine Receiver.
  const byTime = [...outcomes].sort((x, y) => y.datagram - x.datagram);
  const wanted = opts.check ?? 8;
  const sample = new Set<number>(byTime.slice(0, Math.min(wanted, Math.max(1, Math.ceil(wanted / 2)))).map((o) => o.agent));
  for (let j = 0; sample.size < Math.min(wanted, opts.agents); j++) sample.add(Math.round((j * (opts.agents - 1)) / Math.max(1, wanted - 1)) % opts.agents);
  const checks: CrossCheck[] = [...sample].sort((x, y) => x - y).map((a) => {
    const o = outcomes[a]!;
    const r = replayWithReceiver(fleet, a, o.loss, opts.seed, last.datagram + 1);
    return {
      agent: a, loss: o.loss, simulatedDatagram: o.datagram, receiverDatagram: r.datagram, simulatedAccepted: o.accepted, receiverAccepted: r.accepted,
      simulatedAuth: o.authVerified, receiverAuth: r.auth,
      agrees: r.datagram === o.datagram && r.accepted === o.accepted && r.auth === o.authVerified,
    };
  });

  const analyticExpectation = analyse(m, opts.agents, minLoss, pMax, schedule, fleet.authCopies, fleet.manifestEvery, ideal);
  const perAgent = outcomes.filter((o) => o.loss < 1).map((o) => o.symbolsSent / (kTotal / (1 - o.loss)));
  const seconds = (performance.now() - t0) / 1000;
  const ratio = symbolsSent / ideal;
  return {
    agents: opts.agents,
    imageBytes: opts.imageBytes,
    segmentSize: m.segmentSize,
    segments: m.segments.length,
    kTotal,
    maxLoss: pMax,
    seed: opts.seed,
    symbolsSent,
    datagramsSent,
    ideal,
    ratio,
    ratioAllDatagrams: datagramsSent / ideal,
    wire,
    target: 1.03,
    pass: ratio <= 1.03,
    seconds,
    analyticExpectation,
    decodeFailures: { failed: outcomes.reduce((n, o) => n + o.decodeFailures, 0), decodes: outcomes.reduce((n, o) => n + o.decodes, 0) },
    slowest: byTime.slice(0, 5).map((o) => ({
      agent: o.agent, loss: o.loss, symbolsSent: o.symbolsSent, received: o.received, beforeManifest: o.beforeManifest,
      unauthenticated: o.unauthenticated, accepted: o.accepted, segmentDone: o.segmentDone, duplicates: o.duplicates,
    })),
    perAgentRatio: { mean: perAgent.reduce((x, y) => x + y, 0) / perAgent.length, max: Math.max(...perAgent) },
    crossCheck: { checked: checks.length, agree: checks.every((c) => c.agrees), agents: checks },
    schedule: {
      chunkCoding: m.auth.coding ? `${m.auth.coding.groupChunks}:${m.auth.coding.parityPerChunk}` : 'copies',
      authCopies: fleet.authCopies, manifestEvery: fleet.manifestEvery, interleave: Math.min(fleet.interleave, m.segments.length),
      ...(opts.earlyManifestEvery !== undefined ? { earlyManifestEvery: opts.earlyManifestEvery } : {}),
      chunkSymbols: m.auth.chunkSymbols, manifestFragments: schedule.fragments,
    },
    workers: Math.max(1, workers),
  };
}

/** For CI: 50 agents, 1 MiB image in 256 KiB segments, every agent cross-checked. */
export const SMOKE: SimulationOptions = { agents: 50, imageBytes: MiB, maxLoss: 0.3, seed: 1, segmentSize: 256 * 1024, check: 50 };
/** The benchmark: 1000 agents, 8 MiB image, loss 0…30 %. */
export const FULL: SimulationOptions = { agents: 1000, imageBytes: 8 * MiB, maxLoss: 0.3, seed: 1 };

function row(r: SimulationResult): string {
  const a = r.analyticExpectation;
  const f = (x: number, d = 4): string => x.toFixed(d);
  return [
    `${(r.segmentSize / MiB).toFixed(2).padStart(6)} MiB`, String(r.segments).padStart(4), String(Math.ceil(r.kTotal / r.segments)).padStart(5), String(r.kTotal).padStart(6),
    String(r.symbolsSent).padStart(7), f(r.ideal, 0).padStart(7), f(r.ratio).padStart(7), f(r.ratioAllDatagrams).padStart(7),
    f(a.binomial.ratio).padStart(7), f(a.protocol.ratio).padStart(7), (r.pass ? 'pass' : 'FAIL').padStart(5),
    `${r.crossCheck.agree ? 'ok' : 'DIFF'} ${r.crossCheck.checked}`.padStart(7), f(r.seconds, 1).padStart(6),
    `${r.schedule.interleave}/${r.schedule.chunkCoding === 'copies' ? r.schedule.authCopies : r.schedule.chunkCoding}/${r.schedule.manifestEvery}${r.schedule.earlyManifestEvery !== undefined ? `/${r.schedule.earlyManifestEvery}` : ''}`.padStart(11),
  ].join(' ');
}

if (isMainThread && import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      smoke: { type: 'boolean', default: false },
      agents: { type: 'string' },
      'image-mib': { type: 'string' },
      'segment-mib': { type: 'string' },
      'max-loss': { type: 'string' },
      'min-loss': { type: 'string' },
      seed: { type: 'string' },
      workers: { type: 'string' },
      check: { type: 'string' },
      'auth-copies': { type: 'string' },
      'manifest-every': { type: 'string' },
      'early-manifest': { type: 'string' },
      interleave: { type: 'string' },
    },
  });
  const base = values.smoke ? SMOKE : FULL;
  const list = (s: string | undefined): number[] | undefined => s?.split(',').map(Number);
  const segmentsMiB = list(values['segment-mib']) ?? (values.smoke ? [0.25] : [1, DEFAULT_SEGMENT_SIZE / MiB]);
  const copies: Array<number | undefined> = list(values['auth-copies']) ?? [undefined];
  const every: Array<number | undefined> = list(values['manifest-every']) ?? [undefined];
  const results: SimulationResult[] = [];
  console.log('   segment  seg     K     Kt    sent   ideal   ratio  ratio+  E[bin] E[prot]  1.03   check      s il/auth/man(/early)');
  console.log('  (ratio = symbols sent ÷ Kt/(1 − p_max); ratio+ = all datagrams ÷ the same; E[bin], E[prot]: analytic expectations)');
  for (const seg of segmentsMiB) {
    for (const authCopies of copies) {
      for (const manifestEvery of every) {
        const r = await simulateFleet({
          ...base,
          ...(values.agents ? { agents: Number(values.agents) } : {}),
          ...(values['image-mib'] ? { imageBytes: Math.round(Number(values['image-mib']) * MiB) } : {}),
          ...(values['max-loss'] ? { maxLoss: Number(values['max-loss']) } : {}),
          ...(values['min-loss'] ? { minLoss: Number(values['min-loss']) } : {}),
          ...(values.seed ? { seed: Number(values.seed) } : {}),
          ...(values.workers ? { workers: Number(values.workers) } : {}),
          ...(values.check ? { check: Number(values.check) } : {}),
          segmentSize: Math.round(seg * MiB),
          ...(authCopies !== undefined ? { authCopies } : {}),
          ...(manifestEvery !== undefined ? { manifestEvery } : {}),
          ...(values['early-manifest'] ? { earlyManifestEvery: Number(values['early-manifest']) } : {}),
          ...(values.interleave ? { interleave: Number(values.interleave) } : {}),
        });
        results.push(r);
        console.log(row(r));
        const sweep = r.analyticExpectation.byAuthCopies.map((x) => `${x.copies}: ${x.ratio.toFixed(3)} (${x.ratioAllDatagrams.toFixed(3)})`).join(', ');
        console.log(`             model, AUTH copies per chunk → ratio (all datagrams): ${sweep}`);
      }
    }
  }
  console.log(JSON.stringify(results, null, 2));
  if (!results.every((r) => r.crossCheck.agree)) {
    console.error('cross-check failed: the simulated agents and the genuine Receiver disagree');
    process.exitCode = 1;
  }
}
