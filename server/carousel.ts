/**
 * The carousel for one release: an endless, deterministic sequence of
 * datagrams. No sockets, no clocks: the publisher asks for `next()` as fast as
 * its rate allows.
 *
 * Each segment is encoded once into its published symbol set (ESIs
 * 0 .. published − 1). Round r sends, for every segment, K symbols starting at
 * ESI r·K (mod published): round 0 is the source symbols, later rounds fresh
 * repair symbols until the set wraps. Segments are interleaved symbol by symbol
 * so that a burst of loss hits many segments a little rather than one a lot.
 * All manifest fragments go out at the start and after every `manifestEvery`
 * symbol datagrams, so a receiver that joins late learns the release quickly.
 */
import { SegmentEncoder } from '../protocol/fec.js';
import { DEFAULT_DATAGRAM_SIZE } from '../protocol/limits.js';
import type { Manifest } from '../protocol/manifest.js';
import { encodeManifestFragment, encodeSymbolPacket, MANIFEST_OVERHEAD } from '../protocol/packet.js';

export interface CarouselInit {
  manifest: Manifest;
  signed: Uint8Array;
  releaseId: Uint8Array;
  image: Uint8Array;
  /** UDP payload size for manifest fragments (default 1232). */
  datagramSize?: number;
  /** Symbol datagrams between two copies of the manifest (default 100). */
  manifestEvery?: number;
}

export class Carousel {
  readonly manifest: Manifest;
  readonly releaseId: Uint8Array;
  readonly manifestFragments: Uint8Array[];
  /** Datagrams in one round, manifests included. */
  readonly roundLength: number;
  #symbols: Uint8Array[][];
  #manifestEvery: number;
  #order: Array<[segment: number, position: number]>;
  #round = 0;
  #cursor = 0;
  #sinceManifest = 0;
  #pendingManifest = 0;
  #sent = 0;

  constructor(init: CarouselInit) {
    this.manifest = init.manifest;
    this.releaseId = init.releaseId;
    this.#manifestEvery = init.manifestEvery ?? 100;
    const fragment = (init.datagramSize ?? DEFAULT_DATAGRAM_SIZE) - MANIFEST_OVERHEAD;
    this.manifestFragments = [];
    for (let offset = 0; offset < init.signed.length; offset += fragment) {
      this.manifestFragments.push(encodeManifestFragment({
        releaseId: init.releaseId,
        totalLength: init.signed.length,
        offset,
        bytes: init.signed.subarray(offset, offset + fragment),
      }));
    }
    this.#symbols = init.manifest.segments.map((seg) => {
      const encoder = new SegmentEncoder(init.image.subarray(seg.offset, seg.offset + seg.oti.transferLength), init.manifest.symbolSize);
      try {
        return encoder.symbols(seg.published).map(({ esi, data }) =>
          encodeSymbolPacket({ releaseId: init.releaseId, segment: seg.index, esi, symbol: data }));
      } finally {
        encoder.free();
      }
    });
    const maxK = Math.max(...init.manifest.segments.map((s) => s.sourceSymbols));
    this.#order = [];
    for (let position = 0; position < maxK; position++) {
      for (const seg of init.manifest.segments) if (position < seg.sourceSymbols) this.#order.push([seg.index, position]);
    }
    this.#pendingManifest = this.manifestFragments.length;
    this.roundLength = this.#order.length + Math.ceil(this.#order.length / this.#manifestEvery) * this.manifestFragments.length;
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
    this.#sent++;
    if (this.#pendingManifest > 0) {
      return this.manifestFragments[this.manifestFragments.length - this.#pendingManifest--]!;
    }
    const [segment, position] = this.#order[this.#cursor]!;
    const seg = this.manifest.segments[segment]!;
    const esi = (this.#round * seg.sourceSymbols + position) % seg.published;
    if (++this.#cursor === this.#order.length) {
      this.#cursor = 0;
      this.#round++;
      this.#sinceManifest = this.#manifestEvery;
    }
    if (++this.#sinceManifest >= this.#manifestEvery) {
      this.#sinceManifest = 0;
      this.#pendingManifest = this.manifestFragments.length;
    }
    return this.#symbols[segment]![esi]!;
  }
}
