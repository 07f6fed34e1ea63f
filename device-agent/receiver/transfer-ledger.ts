/**
 * The receiver's bookkeeping for one release, on (segment, ESI, leaf): which
 * AUTH chunks are verified, which symbols wait for theirs (bounded), which
 * segments are done, and which coded AUTH group to rebuild and when. Symbol
 * dispatch: a symbol is dropped, held until its chunk is verified, or handed
 * to the host with its chunk's digests.
 *
 * No crypto, no I/O, no clock: the host (the Receiver) checks digests and
 * Merkle paths, rebuilds chunks with Reed–Solomon and decodes; symbols (`S`),
 * parity pieces (`P`) and digest lists (`D`) are opaque here. The fleet
 * simulation (bench/simulation.ts) drives this very class with descriptors in
 * place of bytes, so what it measures is what the agent does.
 */
import type { ChunkGroup, ChunkLayout } from '../../protocol/auth.js';
import { AuthGroupRepair } from './auth-group-repair.js';
import type { LedgerDropReason } from './drop-reasons.js';

/** Symbols held back until their AUTH chunk arrives, all chunks together (about 1.2 MB at the default size). */
export const MAX_PENDING = 1024;

export interface LedgerHost<S, P, D> {
  /** A symbol whose chunk is verified: check it against the chunk's digests, then decode (and call segmentDone). */
  deliver(segment: number, esi: number, symbol: S, digests: D): void;
  /** A symbol about to be held until its chunk is verified: what to hold (e.g. a copy that outlives the caller's buffer). */
  keep(symbol: S): S;
  /** A held symbol is no longer held (delivered, dropped or evicted): what keep() took may be reused. */
  letGo(symbol: S): void;
  /** A chunk became verified, from its AUTH datagram or rebuilt. */
  chunkVerified(leaf: number): void;
  /** Checks an unchecked parity piece against the signed root: its code bytes, or undefined if it is forged. */
  checkPiece(piece: P): D | undefined;
  /** Whether two unchecked copies of a piece are the same. */
  samePiece(a: P, b: P): boolean;
  /**
   * The digests of the group's `missing` chunks (in that order) from
   * `pieces`: index i < group.size is chunk first + i, group.size + j parity
   * piece j. There are always at least group.size of them.
   */
  recover(group: ChunkGroup, pieces: ReadonlyMap<number, D>, missing: readonly number[]): D[];
  drop(reason: LedgerDropReason, count: number): void;
}

interface Held<S> {
  segment: number;
  esi: number;
  symbol: S;
}

export class TransferLedger<S, P, D> {
  readonly layout: ChunkLayout;
  #host: LedgerHost<S, P, D>;
  #published: readonly number[];
  #done: Uint8Array;
  #remaining: number;
  #verified: Uint8Array;
  /** Verified digests by chunk leaf, until their segment is done. */
  #digests = new Map<number, D>();
  /** Symbols waiting for their chunk, by leaf, in arrival order; MAX_PENDING in all. */
  #pending = new Map<number, Held<S>[]>();
  #pendingCount = 0;
  #repair: AuthGroupRepair<P, D> | undefined;

  /** `published[s]` is segment s's published symbol count; `completed` the segments already done (a resumed transfer). */
  constructor(layout: ChunkLayout, published: readonly number[], host: LedgerHost<S, P, D>, completed: Iterable<number> = []) {
    this.layout = layout;
    this.#host = host;
    this.#published = published;
    this.#done = new Uint8Array(published.length);
    this.#remaining = published.length;
    for (const s of completed) {
      if (s < published.length && !this.#done[s]) {
        this.#done[s] = 1;
        this.#remaining--;
      }
    }
    this.#verified = new Uint8Array(layout.chunkLeaves);
    this.#repair = layout.parityPerChunk > 0 ? new AuthGroupRepair() : undefined;
  }

  get segments(): number {
    return this.#done.length;
  }

  /** Segments not yet done. */
  get remaining(): number {
    return this.#remaining;
  }

  isDone(segment: number): boolean {
    return this.#done[segment] === 1;
  }

  /** A symbol whose segment, ESI and size the host has checked against the manifest. */
  symbol(segment: number, esi: number, symbol: S): void {
    if (this.#done[segment]) return this.#host.drop('segment-complete', 1);
    const leaf = this.layout.leafOf(segment, esi);
    if (this.#verified[leaf]) return this.#host.deliver(segment, esi, symbol, this.#digests.get(leaf)!);
    let waiting = this.#pending.get(leaf);
    if (!waiting) this.#pending.set(leaf, (waiting = []));
    // Several candidates per ESI may wait (a forger cannot crowd out the genuine one),
    // but never more than twice the chunk.
    if (waiting.length >= 2 * this.layout.chunkSymbols) return this.#host.drop('pending-full', 1);
    if (this.#pendingCount >= MAX_PENDING) {
      const [oldest, list] = this.#pending.entries().next().value!;
      this.#pending.delete(oldest);
      this.#pendingCount -= list.length;
      for (const w of list) this.#host.letGo(w.symbol);
      this.#host.drop('pending-evicted', list.length);
      if (oldest === leaf) this.#pending.set(leaf, (waiting = []));
    }
    waiting.push({ segment, esi, symbol: this.#host.keep(symbol) });
    this.#pendingCount++;
    // A symbol of a chunk whose own AUTH datagram was lost: rebuild the chunk now if its group allows.
    if (this.#repair) this.#maybeRebuild(this.layout.group(leaf).first);
  }

  /** Whether a chunk's AUTH datagram is still of use, before the host spends a Merkle check on it. */
  chunkWanted(leaf: number): 'auth-repeat' | 'segment-complete' | undefined {
    if (this.#verified[leaf]) return 'auth-repeat';
    if (this.#done[this.layout.chunk(leaf).segment]) return 'segment-complete';
    return undefined;
  }

  /** A chunk's digests, verified by the host. */
  chunk(leaf: number, digests: D): void {
    this.#chunkVerified(leaf, digests);
    // A verified chunk is a piece of its group too: with parity pieces held, it may complete a rebuild.
    if (this.#repair && !this.#done[this.layout.chunk(leaf).segment]) this.#maybeRebuild(this.layout.group(leaf).first);
  }

  /** Whether a parity piece (leaf ≥ chunkLeaves) is still of use, before the host parses it. */
  parityWanted(leaf: number): 'auth-repeat' | 'segment-complete' | undefined {
    const ref = this.layout.parity(leaf);
    if (this.#done[this.layout.chunk(ref.first).segment]) return 'segment-complete';
    if (!this.#repair!.has(ref.first) && this.#knownChunks(ref.first, ref.size) === ref.size) return 'auth-repeat';
    return undefined;
  }

  /** An unchecked parity piece whose header the host has checked against its leaf. */
  parity(leaf: number, piece: P): void {
    const ref = this.layout.parity(leaf);
    const refused = this.#repair!.hold(ref.first, ref.index, piece, (a, b) => this.#host.samePiece(a, b));
    if (refused) return this.#host.drop(refused, 1);
    this.#maybeRebuild(ref.first);
  }

  /** The host decoded and kept a segment: its digests and group pieces are no longer needed. */
  segmentDone(segment: number): void {
    if (this.#done[segment]) return;
    this.#done[segment] = 1;
    this.#remaining--;
    const last = this.layout.leafOf(segment, this.#published[segment]! - 1);
    for (let leaf = this.layout.leafOf(segment, 0); leaf <= last; leaf++) {
      this.#digests.delete(leaf);
      this.#repair?.forget(leaf);
    }
  }

  #chunkVerified(leaf: number, digests: D): void {
    this.#digests.set(leaf, digests);
    this.#verified[leaf] = 1;
    this.#host.chunkVerified(leaf);
    const waiting = this.#pending.get(leaf);
    if (!waiting) return;
    this.#pending.delete(leaf);
    this.#pendingCount -= waiting.length;
    for (const w of waiting) {
      // An earlier symbol of this chunk may have completed the segment.
      if (this.#done[w.segment]) this.#host.drop('segment-complete', 1);
      else this.#host.deliver(w.segment, w.esi, w.symbol, digests);
      this.#host.letGo(w.symbol);
    }
  }

  #knownChunks(first: number, size: number): number {
    let known = 0;
    for (let leaf = first; leaf < first + size; leaf++) known += this.#verified[leaf]!;
    return known;
  }

  /**
   * Rebuilds the group's missing chunks once symbols of one of them wait and
   * its pieces add up to its size (counting unchecked ones). Rebuilding only
   * for waiting symbols keeps a receiver that hears every chunk from checking
   * anything, whenever the pieces come.
   */
  #maybeRebuild(first: number): void {
    const repair = this.#repair!;
    if (!repair.has(first)) return;
    const group = this.layout.group(first);
    const known = this.#knownChunks(first, group.size);
    if (known === group.size) return repair.forget(first);
    if (!repair.couldSupply(first, group.size - known)) return;
    let waiting = false;
    for (let leaf = first; leaf < first + group.size && !waiting; leaf++) waiting = this.#pending.has(leaf);
    if (!waiting) return;
    const parity = repair.verified(first, group.size - known, (p) => this.#host.checkPiece(p), () => this.#host.drop('bad-auth', 1));
    if (!parity) return;
    const pieces = new Map<number, D>();
    const missing: number[] = [];
    for (let i = 0; i < group.size; i++) {
      if (this.#verified[first + i]) pieces.set(i, this.#digests.get(first + i)!);
      else missing.push(first + i);
    }
    for (const [j, data] of parity) pieces.set(group.size + j, data);
    const recovered = this.#host.recover(group, pieces, missing);
    repair.forget(first);
    missing.forEach((leaf, k) => this.#chunkVerified(leaf, recovered[k]!));
  }
}
