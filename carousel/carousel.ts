/**
 * The carousel for one release: an endless, deterministic sequence of
 * datagrams. No sockets, no clocks: the publisher asks for `next()` as fast as
 * its rate allows.
 *
 * Each segment's published symbol set (ESIs 0 .. published − 1) is encoded
 * once. Round r sends, for every segment, K symbols starting at ESI r·K (mod
 * published): round 0 is the source symbols, later rounds fresh repair symbols
 * until the set wraps. All segments are interleaved symbol by symbol: a
 * burst of loss hits many segments a little, and a receiver short of a few
 * symbols in every segment gets them all early in the next round (segments
 * sent in groups would make a lossy receiver wait for the last group's repair
 * symbols a whole round longer).
 *
 * The AUTH datagram of a chunk goes out just before the chunk's first symbol
 * (or the first one sent this round). With coded chunks (the default), a
 * group's parity pieces are spread over its first SPREAD_CHUNKS chunks, so a
 * receiver that lost a chunk's own AUTH datagram can rebuild it early in the
 * group rather than near its end, when its held-back symbols would already
 * have been evicted. Groups never straddle a round (protocol/auth.ts), so a
 * receiver that completes with round 0 has paid for the parity of the chunks
 * it heard only. Uncoded, a chunk's AUTH datagram is repeated at
 * `authCopies` − 1 more points of the chunk.
 *
 * All manifest fragments go out at the start of each round and after every
 * `manifestEvery` datagrams per fragment (0.4% of the traffic by default).
 * The first `earlyManifests` copies go out `earlyEvery` datagrams per fragment
 * apart: a fleet waiting for a release hears its first datagrams together,
 * and a device that lost the first copy would otherwise hear the symbols of
 * the next 250 datagrams with nothing to check them against, more than it
 * can keep.
 *
 * The root chain (protocol/root.ts), if given, goes out just before every copy
 * of the manifest (which is then judged under the newest root), as ROOT
 * datagrams cut the same way: a device that joins late
 * has the newest root within one manifest interval, release or no release of
 * a new key.
 *
 * HALT datagrams (protocol/halt.ts), if given, go out with every copy of
 * the manifest too: a device that heard the release hears its halt as soon.
 *
 * How each choice was measured (bench/simulation.ts drives this class with
 * the options below): bench/results/README.md.
 */
import { DEFAULT_DATAGRAM_SIZE } from '../protocol/limits.js';
import type { Manifest } from '../protocol/manifest.js';
import { createHash } from 'node:crypto';
import { encodeAuthPacket, encodeManifestFragment, encodeRootFragment, MANIFEST_OVERHEAD, RELEASE_ID_SIZE, SYMBOL_OVERHEAD, writeSymbolPacket } from '../protocol/packet.js';
import type { ChunkLayout } from '../protocol/auth.js';
import { buildSymbolSet, symbolOf, type SymbolSet } from '../protocol/symbol-set.js';

export interface CarouselInit {
  manifest: Manifest;
  signed: Uint8Array;
  releaseId: Uint8Array;
  image: Uint8Array;
  /** The encoded symbols, if already at hand (e.g. just signed); otherwise encoded here. */
  symbolSet?: SymbolSet;
  /** UDP payload size for manifest fragments (default 1232). */
  datagramSize?: number;
  /** Datagrams between two copies of a one-fragment manifest (default MANIFEST_EVERY); scaled by the fragment count. */
  manifestEvery?: number;
  /** Manifest copies sent densely when the carousel starts (default EARLY_MANIFESTS). */
  earlyManifests?: number;
  /** Datagrams between those early copies, per fragment (default EARLY_EVERY). */
  earlyEvery?: number;
  /** Uncoded chunks only: AUTH datagrams per chunk and pass, evenly spaced in the chunk (default 3). */
  authCopies?: number;
  /** Segments interleaved symbol by symbol in groups of this many, group after group (default: all at once). */
  interleave?: number;
  /** The root chain (encodeRootChain) sent with every manifest copy. */
  rootChain?: Uint8Array;
  /** HALT datagrams (encodeHaltPacket) sent with every manifest copy. */
  halts?: readonly Uint8Array[];
}

/** Datagrams per fragment between two manifest copies. */
export const MANIFEST_EVERY = 250;
/** Manifest copies sent densely when the carousel starts, and their spacing (datagrams per fragment). */
export const EARLY_MANIFESTS = 10;
export const EARLY_EVERY = 10;

/** Chunks of a group (of a run: see #authBefore) over which its parity pieces are spread. */
const SPREAD_CHUNKS = 3;

export class ReleaseMismatchError extends Error {
  override name = 'ReleaseMismatchError';
}

export class Carousel {
  readonly manifest: Manifest;
  readonly releaseId: Uint8Array;
  readonly manifestFragments: Uint8Array[];
  #rootFragments: Uint8Array[];
  /** HALT datagrams, sent before each manifest copy. */
  readonly halts: readonly Uint8Array[];
  /** Datagrams in one round (approximate: AUTH copies vary slightly by round). */
  readonly roundLength: number;
  /** The longest datagram this carousel sends (UDP payload bytes): what the transport must carry. */
  readonly largestDatagram: number;
  #set: SymbolSet;
  #fragment: number;
  #auth: Uint8Array[];
  #layout: ChunkLayout;
  /** Uncoded: offsets in a chunk where its AUTH datagram goes out again. */
  #copyPoints: number[];
  #manifestEvery: number;
  #order: Array<[segment: number, position: number]>;
  #queue: Uint8Array[] = [];
  /** The round being queued (it runs ahead of what was handed out by the datagrams waiting in #queue). */
  #round = 0;
  /** Rounds whose every datagram has been handed out. */
  #completed = 0;
  #cursor = 0;
  #sinceManifest = 0;
  #manifestCopies = 0;
  #earlyManifests: number;
  #earlyEvery: number;
  #sent = 0;

  constructor(init: CarouselInit) {
    const m = init.manifest;
    this.manifest = m;
    this.releaseId = init.releaseId;
    const fragment = (init.datagramSize ?? DEFAULT_DATAGRAM_SIZE) - MANIFEST_OVERHEAD;
    this.manifestFragments = [];
    for (let offset = 0; offset < init.signed.length; offset += fragment) {
      this.manifestFragments.push(encodeManifestFragment({
        releaseId: init.releaseId, totalLength: init.signed.length, offset, bytes: init.signed.subarray(offset, offset + fragment),
      }));
    }
    this.#fragment = fragment;
    this.#rootFragments = init.rootChain ? this.#rootFragmentsOf(init.rootChain, fragment) : [];
    this.halts = init.halts ?? [];
    this.#manifestEvery = (init.manifestEvery ?? MANIFEST_EVERY) * this.manifestFragments.length;
    this.#earlyManifests = init.earlyManifests ?? EARLY_MANIFESTS;
    this.#earlyEvery = Math.min((init.earlyEvery ?? EARLY_EVERY) * this.manifestFragments.length, this.#manifestEvery);

    const set = init.symbolSet ?? buildSymbolSet(init.image, {
      symbolSize: m.symbolSize,
      segments: m.segments.map((s) => ({ offset: s.offset, length: s.oti.transferLength, published: s.published })),
      digestLength: m.auth.digestLength,
      chunkSymbols: m.auth.chunkSymbols,
      ...(m.auth.coding ? { coding: m.auth.coding } : {}),
    });
    if (Buffer.compare(set.tree.root, m.auth.root) !== 0) {
      throw new ReleaseMismatchError('the image does not produce the symbols the manifest signs (authentication root differs)');
    }
    this.#set = set;
    this.#auth = set.bodies.map((body, leaf) => encodeAuthPacket({ releaseId: init.releaseId, leaf, path: set.tree.proof(leaf), body }));
    this.#layout = set.layout;
    this.largestDatagram = [...this.manifestFragments, ...this.#rootFragments, ...this.halts, ...this.#auth].reduce((n, d) => Math.max(n, d.length), SYMBOL_OVERHEAD + m.symbolSize);
    const copies = init.authCopies ?? 3;
    if (!(Number.isInteger(copies) && copies >= 1)) throw new RangeError(`authCopies must be a positive integer, got ${copies}`);
    this.#copyPoints = Array.from({ length: copies - 1 }, (_, j) => Math.floor(((j + 1) * m.auth.chunkSymbols) / copies));

    const interleave = init.interleave ?? m.segments.length;
    if (!(Number.isInteger(interleave) && interleave >= 1)) throw new RangeError(`interleave must be a positive integer, got ${interleave}`);
    this.#order = [];
    for (let from = 0; from < m.segments.length; from += interleave) {
      const group = m.segments.slice(from, from + interleave);
      const maxK = Math.max(...group.map((s) => s.sourceSymbols));
      for (let position = 0; position < maxK; position++) {
        for (const seg of group) if (position < seg.sourceSymbols) this.#order.push([seg.index, position]);
      }
    }
    this.#sinceManifest = this.#manifestEvery;
    const n = this.#order.length;
    this.roundLength = Math.ceil(n * (1 + (1 + (set.layout.parityPerChunk || copies - 1)) / m.auth.chunkSymbols)) + 2 * m.segments.length + Math.ceil(n / this.#manifestEvery + 1) * this.manifestFragments.length;
  }

  /** ROOT datagrams of the root chain, sent before each manifest copy (none without a root). */
  get rootFragments(): readonly Uint8Array[] {
    return this.#rootFragments;
  }

  #rootFragmentsOf(chain: Uint8Array, fragment: number): Uint8Array[] {
    const chainId = createHash('sha256').update(chain).digest().subarray(0, RELEASE_ID_SIZE);
    const out: Uint8Array[] = [];
    for (let offset = 0; offset < chain.length; offset += fragment) {
      out.push(encodeRootFragment({ releaseId: chainId, totalLength: chain.length, offset, bytes: chain.subarray(offset, offset + fragment) }));
    }
    return out;
  }

  /**
   * Carries another root chain from the next manifest copy on (a newer root
   * pushed to serve), or none. Its fragments never exceed `largestDatagram`,
   * which the publisher checked against the transport.
   */
  setRootChain(chain: Uint8Array | undefined): void {
    this.#rootFragments = chain ? this.#rootFragmentsOf(chain, Math.min(this.#fragment, this.largestDatagram - MANIFEST_OVERHEAD)) : [];
  }

  /** Completed rounds: every datagram of them has been handed out by next(). */
  get round(): number {
    return this.#completed;
  }

  /** Datagrams handed out so far. */
  get sent(): number {
    return this.#sent;
  }

  next(): Uint8Array {
    if (this.#queue.length === 0) this.#refill();
    this.#sent++;
    const datagram = this.#queue.shift()!;
    // A round's last symbol is the last datagram queued before the round turns.
    if (this.#queue.length === 0) this.#completed = this.#round;
    return datagram;
  }

  /**
   * The AUTH datagrams that go just before the symbol sent at `position` of
   * this round in `segment`. A segment's symbols go out as one endless walk
   * over its published ESIs, step t = round·K + position at ESI t mod
   * published, so everything here is a function of t.
   */
  #authBefore(segment: number, position: number): Uint8Array[] {
    const layout = this.#layout;
    const { sourceSymbols: k, published } = this.manifest.segments[segment]!;
    const t = this.#round * k + position;
    const esi = t % published;
    const leaf = layout.leafOf(segment, esi);
    const chunk = layout.chunk(leaf);
    const offset = esi - chunk.firstEsi;
    const out = offset === 0 || position === 0 ? [this.#auth[leaf]!] : [];
    if (layout.parityPerChunk === 0) {
      if (this.#copyPoints.includes(offset)) out.push(this.#auth[leaf]!);
      return out;
    }
    // A run: the chunks of one group whose first symbols go out in the same
    // round: the whole group, unless the published count is not a multiple of
    // K and the carousel's rounds drift from the layout's. A run's parity
    // pieces are spread over its first SPREAD_CHUNKS chunks.
    const C = layout.chunkSymbols;
    const group = layout.group(leaf);
    const chunkStart = t - offset;
    const round = Math.floor(chunkStart / k);
    let runFirst = leaf;
    while (runFirst > group.first && Math.floor((chunkStart - (leaf - runFirst + 1) * C) / k) === round) runFirst--;
    const runStart = chunkStart - (leaf - runFirst) * C;
    let chunks = leaf - runFirst + 1;
    while (runFirst + chunks < group.first + group.size && Math.floor((runStart + chunks * C) / k) === round) chunks++;
    const spreadChunks = Math.min(SPREAD_CHUNKS, chunks);
    if (leaf - runFirst >= spreadChunks) return out;
    let span = 0;
    for (let i = 0; i < spreadChunks; i++) span += layout.chunk(runFirst + i).count;
    const at = (leaf - runFirst) * C + offset;
    const r = layout.parityPerChunk;
    const pieces = chunks * r;
    const firstPiece = (runFirst - group.first) * r;
    for (let j = 0; j < pieces; j++) {
      if (Math.floor(((j + 1) * span) / (pieces + 1)) === at) out.push(this.#auth[layout.parityLeaf(group.first, firstPiece + j)]!);
    }
    return out;
  }

  #refill(): void {
    if (this.#sinceManifest >= (this.#manifestCopies < this.#earlyManifests ? this.#earlyEvery : this.#manifestEvery)) {
      this.#sinceManifest = 0;
      this.#manifestCopies++;
      this.#queue.push(...this.#rootFragments, ...this.halts, ...this.manifestFragments);
    }
    const [segment, position] = this.#order[this.#cursor]!;
    const seg = this.manifest.segments[segment]!;
    const esi = (this.#round * seg.sourceSymbols + position) % seg.published;
    this.#queue.push(...this.#authBefore(segment, position));
    // Built per send, not kept: the symbols are held once, in the symbol set.
    const datagram = new Uint8Array(SYMBOL_OVERHEAD + this.manifest.symbolSize);
    writeSymbolPacket(datagram, { releaseId: this.releaseId, segment, esi, symbol: symbolOf(this.#set, segment, esi) });
    this.#queue.push(datagram);
    this.#sinceManifest += this.#queue.length;
    if (++this.#cursor === this.#order.length) {
      this.#cursor = 0;
      this.#round++;
      this.#sinceManifest = this.#manifestEvery;
    }
  }
}
