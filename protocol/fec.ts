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
 * Loading the codec's own .wasm file is the one read this module does; it is
 * code, not data, and happens once per process.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as raptorq from 'raptorq/raptorq.js';
import { K_PRIME } from './kprime-table.js';
import { MAX_SOURCE_SYMBOLS, SYMBOL_ALIGNMENT } from './limits.js';
import type { Oti } from './oti.js';
import { MAX_ESI, PAYLOAD_ID_SIZE, readPayloadId, writePayloadId } from './payload-id.js';

export type Raptorq = typeof raptorq;
let wasmBytes: Uint8Array | undefined;
let generation = 0;

export function loadRaptorq(): Raptorq {
  if (!wasmBytes) {
    const require = createRequire(import.meta.url);
    wasmBytes = new Uint8Array(readFileSync(require.resolve('raptorq/raptorq_bg.wasm')));
    raptorq.initSync(wasmBytes);
    generation++;
  }
  return raptorq;
}

/** Instance generation: encoders and decoders are only valid within the one they were made in. */
export function raptorqGeneration(): number {
  loadRaptorq();
  return generation;
}

/**
 * Replaces the WASM instance with a fresh one (after a trap, whose unwinding
 * leaks the old instance's memory, or to give memory back after a big
 * transfer). Every encoder and decoder made before becomes unusable.
 */
export function recycleRaptorq(): void {
  loadRaptorq();
  raptorq.initSync(wasmBytes!);
  generation++;
}

/** Thrown by encoders and decoders whose WASM instance was recycled. */
export class StaleCodecError extends Error {
  override name = 'StaleCodecError';
}

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
  #encoder: raptorq.Encoder | undefined;
  #generation: number;

  constructor(data: Uint8Array, readonly symbolSize: number) {
    if (symbolSize % SYMBOL_ALIGNMENT !== 0) throw new RangeError(`symbol size must be a multiple of ${SYMBOL_ALIGNMENT}`);
    this.k = sourceSymbolCount(data.length, symbolSize);
    this.kPrime = paddedBlockSize(this.k);
    this.#encoder = loadRaptorq().Encoder.with_defaults(data, symbolSize);
    this.#generation = generation;
  }

  /** The first `count` encoding symbols: the K source symbols, then repair symbols K, K+1, … */
  symbols(count: number): EncodingSymbol[] {
    if (!this.#encoder) throw new Error('SegmentEncoder used after free()');
    if (this.#generation !== generation) throw new StaleCodecError('SegmentEncoder outlived its WASM instance');
    if (count < this.k || count > MAX_ESI + 1) throw new RangeError(`symbol count must be in ${this.k}..${MAX_ESI + 1}`);
    const packets = this.#encoder.encode(count - this.k);
    const shift = this.kPrime - this.k;
    return packets.map((packet) => {
      const { esi } = readPayloadId(packet, 0);
      return { esi: esi < this.k ? esi : esi - shift, data: packet.subarray(PAYLOAD_ID_SIZE) };
    });
  }

  free(): void {
    if (this.#generation === generation) this.#encoder?.free();
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
  #decoder: raptorq.Decoder | undefined;
  #seen = new Set<number>();
  #packet: Uint8Array;
  #result: Uint8Array | undefined;
  #generation: number;

  constructor(readonly length: number, readonly symbolSize: number) {
    this.k = sourceSymbolCount(length, symbolSize);
    this.kPrime = paddedBlockSize(this.k);
    this.#decoder = loadRaptorq().Decoder.with_defaults(BigInt(length), symbolSize);
    this.#generation = generation;
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
    if (!this.#decoder) throw new Error('SegmentDecoder used after free()');
    if (this.#generation !== generation) throw new StaleCodecError('SegmentDecoder outlived its WASM instance');
    if (symbol.length !== this.symbolSize) throw new RangeError(`symbol is ${symbol.length} bytes, expected ${this.symbolSize}`);
    if (!Number.isInteger(esi) || esi < 0 || esi > MAX_ESI) throw new RangeError(`ESI ${esi} out of range`);
    if (this.#seen.has(esi)) return undefined;
    this.#seen.add(esi);
    const crateEsi = esi < this.k ? esi : esi + (this.kPrime - this.k);
    if (crateEsi > MAX_ESI) return undefined;
    writePayloadId(this.#packet, 0, { sbn: 0, esi: crateEsi });
    this.#packet.set(symbol, PAYLOAD_ID_SIZE);
    const out = this.#decoder.decode(this.#packet);
    if (out) {
      this.#result = out;
      this.free();
    }
    return out;
  }

  free(): void {
    if (this.#generation === generation) this.#decoder?.free();
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
