/**
 * Where authenticated symbols go until their segment decodes. The receiver
 * decides what is authentic; an assembler only stores and decodes.
 *
 *  - MemoryAssembler keeps a RaptorQ decoder per segment in WASM memory: fast,
 *    but holds about one image's worth of symbols. For tests and small images.
 *  - SpillAssembler (spill-assembler.ts) appends symbols to files and decodes
 *    one segment at a time: memory stays flat whatever the image size, and
 *    what was received survives a restart.
 */
import type { StoreError } from '../protocol/errors.js';
import { RaptorqCodec, SegmentDecoder } from '../protocol/fec.js';
import type { SegmentInfo } from '../protocol/manifest.js';

export type AddResult =
  | { kind: 'duplicate' }
  /** `retryAt`: a decode was tried and failed; the next try is at that many symbols. */
  | { kind: 'stored'; received: number; retryAt?: number }
  /**
   * The segment decoded; its bytes still have to pass the segment digest, and
   * may be reused by the next add(). `sha256` is their digest when the
   * assembler already has it (hashed while the source symbols arrived).
   */
  | { kind: 'decoded'; bytes: Uint8Array; sha256?: Uint8Array }
  /** Not taken: the storage behind this assembler is busy; the carousel brings the symbol again. */
  | { kind: 'shed' }
  /** Not taken: the segment has what its decode, under way elsewhere, needs. */
  | { kind: 'enough' };

/**
 * What an assembler that decodes elsewhere (threaded-assembler.ts) reports
 * later, between datagrams: a segment decoded, matched its signed digest and
 * is durable; a segment decoded to the wrong bytes (started over); codec
 * traps; the store failing, or working again after failing.
 */
export type Settlement =
  | { kind: 'committed'; segment: number }
  | { kind: 'mismatch'; segment: number }
  | { kind: 'trap'; count: number }
  | { kind: 'store-error'; error: StoreError; refused: number }
  | { kind: 'store-ok' };

export interface SegmentAssembler {
  /** Segments already decoded and committed (after a restart). */
  readonly completed: ReadonlySet<number>;
  /** Distinct symbols held for an unfinished segment. */
  received(segment: number): number;
  /** Takes one authenticated symbol, copying what it keeps: the caller reuses `symbol`'s bytes. May throw if the codec traps. */
  add(segment: SegmentInfo, esi: number, symbol: Uint8Array): AddResult;
  /** Keeps a decoded segment whose digest matched. */
  commit(segment: SegmentInfo, bytes: Uint8Array): void;
  /** Forgets a segment's symbols (its decode did not match its digest). */
  reset(segment: SegmentInfo): void;
  /**
   * After a codec trap: recycle the assembler's own codec and forget whatever
   * lived in its old WASM instance. Other assemblers' codecs are untouched.
   */
  recoverFromTrap(): void;
  /** Releases memory and handles; what is persisted stays for a restart. */
  close(): void;
  /**
   * Set by the receiver on an assembler that settles segments later (one
   * whose add() never returns `decoded`): called between datagrams.
   */
  onSettled?: (s: Settlement) => void;
}

export class MemoryAssembler implements SegmentAssembler {
  readonly completed = new Set<number>();
  #decoders = new Map<number, SegmentDecoder>();

  /** `codec`: the model's own (default: a new one), never one that something else may recycle. */
  constructor(private readonly symbolSize: number, private readonly codec = new RaptorqCodec()) {}

  received(segment: number): number {
    return this.#decoders.get(segment)?.received ?? 0;
  }

  add(segment: SegmentInfo, esi: number, symbol: Uint8Array): AddResult {
    let decoder = this.#decoders.get(segment.index);
    if (!decoder) {
      decoder = new SegmentDecoder(segment.oti.transferLength, this.symbolSize, this.codec);
      this.#decoders.set(segment.index, decoder);
    }
    const before = decoder.received;
    const bytes = decoder.push(esi, symbol);
    if (decoder.received === before) return { kind: 'duplicate' };
    if (!bytes) return { kind: 'stored', received: decoder.received };
    this.#decoders.delete(segment.index);
    return { kind: 'decoded', bytes };
  }

  commit(segment: SegmentInfo): void {
    this.completed.add(segment.index);
  }

  reset(segment: SegmentInfo): void {
    this.#decoders.get(segment.index)?.free();
    this.#decoders.delete(segment.index);
  }

  recoverFromTrap(): void {
    // The decoders lived in the dead instance; their symbols are gone.
    this.codec.recycle();
    this.#decoders.clear();
  }

  close(): void {
    for (const d of this.#decoders.values()) d.free();
    this.#decoders.clear();
  }
}
