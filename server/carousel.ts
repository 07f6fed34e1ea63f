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
 * symbols in every segment gets them all early in the next round. (Sending
 * segments in groups would let receivers decode during the round, but a
 * lossy receiver would then wait for the end of the next round for the last
 * group's repair symbols: measured 1.98× instead of 1.58× the ideal at 10%.)
 *
 * The AUTH datagram of a chunk goes out just before the chunk's first symbol
 * (or the first one sent this round). With coded chunks (the default), the
 * chunk's share of its group's parity pieces follows, r of them evenly spaced
 * through the chunk: a receiver that lost the chunk's own AUTH datagram
 * rebuilds it from any g pieces of the group and verifies the symbols it held
 * back. Uncoded, the chunk's AUTH datagram itself is repeated there. (Three
 * plain copies, all lost for 2.7% of chunks at 30% loss, left 1000 simulated
 * agents at 1.38× the ideal; coded, a chunk is lost with its group only.)
 * All manifest fragments go out at the start of each round and after every
 * `manifestEvery` datagrams per fragment (0.4% of the traffic by default);
 * the carousel's first EARLY_MANIFESTS copies go out EARLY_EVERY datagrams
 * per fragment apart. A fleet waiting for a release hears its first datagrams
 * together, and a device that loses the first copy would otherwise hear the
 * symbols of the next 250 datagrams with nothing to check them against:
 * among 1000 simulated agents at up to 30% loss, the unluckiest lost two
 * copies and with them more symbols than it can keep (690), and set the pace
 * for everyone.
 */
import { DEFAULT_DATAGRAM_SIZE } from '../protocol/limits.js';
import type { Manifest } from '../protocol/manifest.js';
import { encodeAuthPacket, encodeManifestFragment, MANIFEST_OVERHEAD, SYMBOL_OVERHEAD, writeSymbolPacket } from '../protocol/packet.js';
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
  /** Datagrams between two copies of a one-fragment manifest (default 250); scaled by the fragment count. */
  manifestEvery?: number;
}

/** Manifest copies sent densely when the carousel starts, and their spacing (datagrams per fragment). */
export const EARLY_MANIFESTS = 10;
export const EARLY_EVERY = 10;

export class ReleaseMismatchError extends Error {
  override name = 'ReleaseMismatchError';
}

export class Carousel {
  readonly manifest: Manifest;
  readonly releaseId: Uint8Array;
  readonly manifestFragments: Uint8Array[];
  /** Datagrams in one round (approximate: AUTH copies vary slightly by round). */
  readonly roundLength: number;
  #set: SymbolSet;
  #auth: Uint8Array[];
  #layout: ChunkLayout;
  /** Offsets in a chunk where an AUTH datagram goes out: 0, then r evenly spaced (r = 2 uncoded). */
  #authPoints: number[];
  #manifestEvery: number;
  #order: Array<[segment: number, position: number]>;
  #queue: Uint8Array[] = [];
  #round = 0;
  #cursor = 0;
  #sinceManifest = 0;
  #manifestCopies = 0;
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
    this.#manifestEvery = (init.manifestEvery ?? 250) * this.manifestFragments.length;
    this.#earlyEvery = Math.min(EARLY_EVERY * this.manifestFragments.length, this.#manifestEvery);

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
    const extra = set.layout.parityPerChunk || 2;
    this.#authPoints = Array.from({ length: extra + 1 }, (_, k) => Math.floor((k * m.auth.chunkSymbols) / (extra + 1)));

    const maxK = Math.max(...m.segments.map((s) => s.sourceSymbols));
    this.#order = [];
    for (let position = 0; position < maxK; position++) {
      for (const seg of m.segments) if (position < seg.sourceSymbols) this.#order.push([seg.index, position]);
    }
    this.#sinceManifest = this.#manifestEvery;
    const n = this.#order.length;
    this.roundLength = Math.ceil(n * (1 + this.#authPoints.length / m.auth.chunkSymbols)) + 2 * m.segments.length + Math.ceil(n / this.#manifestEvery + 1) * this.manifestFragments.length;
  }

  /** Completed rounds. */
  get round(): number {
    return this.#round;
  }

  /** Datagrams handed out so far. */
  get sent(): number {
    return this.#sent;
  }

  next(): Uint8Array {
    if (this.#queue.length === 0) this.#refill();
    this.#sent++;
    return this.#queue.shift()!;
  }

  /** The AUTH datagram that goes just before (segment, ESI), if any. */
  #authBefore(segment: number, esi: number, roundStart: boolean): Uint8Array | undefined {
    const layout = this.#layout;
    const leaf = layout.leafOf(segment, esi);
    const point = this.#authPoints.indexOf(esi % layout.chunkSymbols);
    if (point === 0 || roundStart) return this.#auth[leaf];
    if (point < 0) return undefined;
    if (layout.parityPerChunk === 0) return this.#auth[leaf];
    const group = layout.group(leaf);
    return this.#auth[layout.parityLeaf(group.first, (leaf - group.first) * layout.parityPerChunk + point - 1)];
  }

  #refill(): void {
    if (this.#sinceManifest >= (this.#manifestCopies < EARLY_MANIFESTS ? this.#earlyEvery : this.#manifestEvery)) {
      this.#sinceManifest = 0;
      this.#manifestCopies++;
      this.#queue.push(...this.manifestFragments);
    }
    const [segment, position] = this.#order[this.#cursor]!;
    const seg = this.manifest.segments[segment]!;
    const esi = (this.#round * seg.sourceSymbols + position) % seg.published;
    const auth = this.#authBefore(segment, esi, position === 0);
    if (auth) this.#queue.push(auth);
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
