/**
 * RaptorQ (RFC 6330) over the `raptorq` crate's WASM build.
 *
 * fwcast splits an image into segments; each segment is an independent
 * RaptorQ object made of exactly one source block with one sub-block
 * (Z = 1, N = 1), so its OTI is fully given by its length and the symbol size.
 *
 * Two things sit at this boundary:
 *  - The npm build numbers repair symbols from K' (the padded block size)
 *    instead of K, which RFC 6330 §5.3.1 mandates (ISI = ESI + K' − K). The
 *    crate fixed this in 2.0. Encoder output is renumbered to RFC ESIs here,
 *    and RFC ESIs are mapped back before they reach the decoder.
 *  - The WASM module traps on malformed input, so the decoder is only ever
 *    handed packets assembled here from validated (ESI, symbol) pairs.
 *
 * Encoders and decoders live in a RaptorqCodec's WASM instance
 * (raptorq-wasm.ts). recycle() replaces that instance, after a trap (whose
 * unwinding leaks the instance's memory, and an instance dies after a few
 * thousand) or to give memory back: only that codec's encoders and decoders
 * go stale. Whatever may trap (a receiver's decoders) gets a codec of its
 * own; `defaultCodec`, shared, is for code that never recycles (the
 * publisher, tests, benchmarks).
 */
import { K_PRIME } from './kprime-table.js';
import { MAX_SOURCE_SYMBOLS, SYMBOL_ALIGNMENT } from './limits.js';
import type { Oti } from './oti.js';
import { MAX_ESI, PAYLOAD_ID_SIZE, readPayloadId, writePayloadId } from './payload-id.js';
import { RaptorqWasm, type DecoderHandle, type EncoderHandle } from './raptorq-wasm.js';

export { RaptorqTrapError } from './raptorq-wasm.js';

/** Thrown by encoders and decoders whose codec was recycled since they were made. */
export class StaleCodecError extends Error {
  override name = 'StaleCodecError';
}

/** One WASM instance for encoders and decoders, replaceable on its own. */
export class RaptorqCodec {
  #wasm: RaptorqWasm | undefined;

  /** The current instance, made on first use (a codec that never codes costs nothing). */
  get wasm(): RaptorqWasm {
    return (this.#wasm ??= new RaptorqWasm());
  }

  /** Whether `wasm` is still this codec's instance. */
  isCurrent(wasm: RaptorqWasm): boolean {
    return this.#wasm === wasm;
  }

  /**
   * Drops the instance; the next encoder or decoder gets a fresh one. Those
   * made before throw StaleCodecError, and their free() does nothing: their
   * memory goes with the old instance.
   */
  recycle(): void {
    this.#wasm = undefined;
  }
}

/** The shared codec, for code that never recycles it. */
export const defaultCodec = new RaptorqCodec();

/** K' for a block of K source symbols: the smallest K' ≥ K in RFC 6330 Table 2. */
export function paddedBlockSize(k: number): number {
  if (!Number.isInteger(k) || k < 1 || k > MAX_SOURCE_SYMBOLS) {
    throw new RangeError(`K must be an integer in 1..${MAX_SOURCE_SYMBOLS}, got ${k}`);
  }
  let lo = 0;
  let hi = K_PRIME.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (K_PRIME[mid]! >= k) hi = mid;
    else lo = mid + 1;
  }
  return K_PRIME[lo]!;
}

export function sourceSymbolCount(length: number, symbolSize: number): number {
  return Math.ceil(length / symbolSize);
}

/** The OTI of one fwcast segment: a single source block, single sub-block. */
export function segmentOti(length: number, symbolSize: number): Oti {
  return { transferLength: length, symbolSize, sourceBlocks: 1, subBlocks: 1, alignment: SYMBOL_ALIGNMENT };
}

export interface EncodingSymbol {
  /** RFC 6330 encoding symbol ID: < K source, ≥ K repair. */
  esi: number;
  data: Uint8Array;
}

/** Encodes one segment. Call free() when done: WASM memory is not garbage-collected. */
export class SegmentEncoder {
  readonly k: number;
  readonly kPrime: number;
  #codec: RaptorqCodec;
  #wasm: RaptorqWasm;
  #encoder: EncoderHandle | undefined;

  constructor(data: Uint8Array, readonly symbolSize: number, codec = defaultCodec) {
    if (symbolSize % SYMBOL_ALIGNMENT !== 0) throw new RangeError(`symbol size must be a multiple of ${SYMBOL_ALIGNMENT}`);
    this.k = sourceSymbolCount(data.length, symbolSize);
    this.kPrime = paddedBlockSize(this.k);
    this.#codec = codec;
    this.#wasm = codec.wasm;
    this.#encoder = this.#wasm.encoderNew(data, symbolSize);
  }

  /** The first `count` encoding symbols: the K source symbols, then repair symbols K, K+1, … */
  symbols(count: number): EncodingSymbol[] {
    if (this.#encoder === undefined) throw new Error('SegmentEncoder used after free()');
    if (!this.#codec.isCurrent(this.#wasm)) throw new StaleCodecError('SegmentEncoder outlived its WASM instance');
    if (count < this.k || count > MAX_ESI + 1) throw new RangeError(`symbol count must be in ${this.k}..${MAX_ESI + 1}`);
    const packets = this.#wasm.encoderEncode(this.#encoder, count - this.k);
    const shift = this.kPrime - this.k;
    return packets.map((packet) => {
      const { esi } = readPayloadId(packet, 0);
      return { esi: esi < this.k ? esi : esi - shift, data: packet.subarray(PAYLOAD_ID_SIZE) };
    });
  }

  free(): void {
    if (this.#encoder !== undefined && this.#codec.isCurrent(this.#wasm)) this.#wasm.encoderFree(this.#encoder);
    this.#encoder = undefined;
  }
}

/**
 * Decodes one segment from any K (or slightly more) distinct encoding symbols.
 * Validates every symbol before it reaches the WASM decoder; duplicates are ignored.
 */
export class SegmentDecoder {
  readonly k: number;
  readonly kPrime: number;
  #codec: RaptorqCodec;
  #wasm: RaptorqWasm;
  #decoder: DecoderHandle | undefined;
  #seen = new Set<number>();
  #packet: Uint8Array;
  #result: Uint8Array | undefined;
  #inPlace: boolean;

  /**
   * `output`: where push() puts the decoded bytes. By default a new buffer.
   * 'in-place': left in the codec's WASM memory, a view valid until the next
   * encoder or decoder of this codec is made or used: no copy at all, so a
   * caller decoding segment after segment leaves no segment-sized buffer per
   * decode for the garbage collector.
   */
  constructor(readonly length: number, readonly symbolSize: number, codec = defaultCodec, output?: 'in-place') {
    this.#inPlace = output === 'in-place';
    this.k = sourceSymbolCount(length, symbolSize);
    this.kPrime = paddedBlockSize(this.k);
    this.#codec = codec;
    this.#wasm = codec.wasm;
    this.#decoder = this.#wasm.decoderNew(length, symbolSize);
    this.#packet = new Uint8Array(PAYLOAD_ID_SIZE + symbolSize);
  }

  get received(): number {
    return this.#seen.size;
  }

  get done(): boolean {
    return this.#result !== undefined;
  }

  /** Adds a symbol; returns the segment's bytes once it decodes. */
  push(esi: number, symbol: Uint8Array): Uint8Array | undefined {
    if (this.#result) return this.#result;
    if (this.#decoder === undefined) throw new Error('SegmentDecoder used after free()');
    if (!this.#codec.isCurrent(this.#wasm)) throw new StaleCodecError('SegmentDecoder outlived its WASM instance');
    if (symbol.length !== this.symbolSize) throw new RangeError(`symbol is ${symbol.length} bytes, expected ${this.symbolSize}`);
    if (!Number.isInteger(esi) || esi < 0 || esi > MAX_ESI) throw new RangeError(`ESI ${esi} out of range`);
    if (this.#seen.has(esi)) return undefined;
    this.#seen.add(esi);
    const crateEsi = esi < this.k ? esi : esi + (this.kPrime - this.k);
    if (crateEsi > MAX_ESI) return undefined;
    writePayloadId(this.#packet, 0, { sbn: 0, esi: crateEsi });
    this.#packet.set(symbol, PAYLOAD_ID_SIZE);
    const out = this.#wasm.decoderDecode(this.#decoder, this.#packet, this.#inPlace);
    if (out) {
      this.#result = out;
      this.free();
    }
    return out;
  }

  free(): void {
    if (this.#decoder !== undefined && this.#codec.isCurrent(this.#wasm)) this.#wasm.decoderFree(this.#decoder);
    this.#decoder = undefined;
  }
}

/**
 * Runs the codec over `rounds` synthetic segments of `length` bytes, encoded
 * and then decoded with a tenth of the source symbols replaced by repair
 * symbols. A fresh WASM instance runs its first few MiB in V8's baseline tier,
 * at about half speed, until its hot functions are recompiled (measured: 39,
 * 36, 21, 17 ms, then 14 ms per 1 MiB segment). This moves that cost to a
 * chosen moment: a long-lived worker pays it before the first real job, and a
 * benchmark measures the steady state. It makes no single cold run faster.
 */
export function warmUpCodec(rounds = 4, length = 1 << 20, symbolSize = 1208): void {
  const data = new Uint8Array(length);
  for (let i = 0; i < length; i++) data[i] = (i * 2654435761) >>> 24;
  for (let r = 0; r < rounds; r++) {
    const encoder = new SegmentEncoder(data, symbolSize);
    const k = encoder.k;
    let symbols: EncodingSymbol[];
    try {
      symbols = encoder.symbols(k + Math.ceil(k / 10) + 2);
    } finally {
      encoder.free();
    }
    const decoder = new SegmentDecoder(length, symbolSize);
    try {
      let out: Uint8Array | undefined;
      for (const { esi, data: symbol } of symbols) {
        if (esi < k && esi % 10 === r) continue;
        if ((out = decoder.push(esi, symbol))) break;
      }
      if (!out) throw new Error('codec warm-up did not decode');
    } finally {
      decoder.free();
    }
  }
}
