/**
 * A SegmentAssembler that keeps memory flat and survives restarts: every
 * authenticated symbol is appended to its segment's spill file, and a segment
 * is decoded (in WASM, one at a time) once it holds K symbols, again at K + 2,
 * K + 4, … in the rare case K do not suffice. Decoded segments go straight to
 * their place in the image file.
 *
 *   DIR/image.part     the image, written segment by segment
 *   DIR/done           one byte per segment: 1 once its bytes are durable
 *   DIR/<n>.sym        segment n's symbols: records of ESI (u32 BE) + T bytes
 *   DIR/model          the model, so stale transfers can be found and removed
 *
 * Order of writes on completion, for up to 8 decoded segments at a time: image
 * bytes, fdatasync; done bytes, fdatasync; then the spill files are removed. A
 * kill at any point leaves either the spill file (the segment is decoded
 * again) or a durable segment. A torn last record is cut off on reopening.
 * A segment whose K source symbols all arrived is copied, not decoded.
 * Spill files are read back through one small buffer; copied segments are put
 * together in one buffer reused for every segment, and decoded ones are
 * handed on from the codec's memory: a fresh segment-sized buffer per segment
 * piles up as garbage between collections (~9 MiB of peak RSS on a 16 MiB
 * image, ~6 MiB on 256 MiB at 10% loss with 1 MiB segments).
 * Symbols are appended in batches; the agent flushes them every 250 ms, so a
 * kill loses at most that much reception.
 * A failed write (disk full, I/O error) throws a StoreError and loses nothing
 * already accepted: a batch that could not be written stays in memory (its
 * size is bounded), and while it is full the segment's new symbols are
 * refused, as if the network had lost them. Writes are positional, so a
 * retry after a short write puts every record where it belongs; decoded bytes
 * that could not be written leave their segment to be decoded again.
 * Files are opened with O_NOFOLLOW: a symlink planted in the transfer
 * directory makes the transfer fail instead of writing through it.
 * While a segment's source symbols arrive in ESI order (the carousel's first
 * round without loss), they are hashed as they come, so a copied segment's
 * SHA-256 is ready when its last symbol arrives. Without this, every segment
 * of an interleaved carousel completes in the same last moments and all of
 * them are hashed at once: 8 agents sharing 2 cores finished 0.08 s later
 * (bench/wire-efficiency.ts, 16 MiB at 100 Mbit/s: 1.20× instead of 1.14×
 * the ideal with the digest check skipped).
 */
import { createHash, type Hash } from 'node:crypto';
import { closeSync, constants, existsSync, fdatasyncSync, fstatSync, ftruncateSync, mkdirSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { RaptorqCodec, SegmentDecoder } from '../protocol/fec.js';
import { StoreError } from '../protocol/errors.js';
import type { Manifest, SegmentInfo } from '../protocol/manifest.js';
import type { AddResult, SegmentAssembler } from './assembler.js';

/** Bytes before each symbol in a spill file: its ESI. */
export const SPILL_RECORD_HEADER = 4;
const ESI_BYTES = SPILL_RECORD_HEADER;
const ONE = Uint8Array.of(1);
/** Open spill files kept at once; others are reopened on demand. */
const MAX_OPEN = 32;
/** Records are written in batches, one write per batch; all batches together stay under this. */
const BATCH_BUDGET = 512 << 10;
const MAX_BATCH = 32;
/** Decoded segments made durable together (two fsyncs per batch, not per segment). */
const COMMIT_BATCH = 8;
/** Records read from a spill file at a time when decoding. */
const READ_RECORDS = 64;
/** Read-write, created if missing, never through a symlink. */
const OPEN_RW = constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW;

/** Writes all of `bytes` at `position` (writeSync may write less than asked). */
function writeAllAt(fd: number, bytes: Uint8Array, length: number, position: number): void {
  for (let done = 0; done < length; ) done += writeSync(fd, bytes, done, length - done, position + done);
}

/** Runs a file operation, turning a failure into a StoreError that names the file. */
function onStore<T>(path: string, doing: string, op: () => T): T {
  try {
    return op();
  } catch (err) {
    throw StoreError.wrap(err, path, doing);
  }
}

interface SegmentState {
  /** Records in the file plus those waiting in `batch`. */
  count: number;
  seen: Uint8Array;
  nextAttempt: number;
  batch?: Uint8Array;
  batched: number;
  /** SHA-256 of source symbols 0 .. hashed − 1, while they have come in order; dropped at the first gap. */
  hash?: Hash;
  hashed: number;
}

export class SpillAssembler implements SegmentAssembler {
  readonly completed = new Set<number>();
  readonly imagePath: string;
  #dir: string;
  #manifest: Manifest;
  #record: number;
  #image: number;
  #done: number;
  #state = new Map<number, SegmentState>();
  #open = new Map<number, number>();
  #batchRecords: number;
  #uncommitted: number[] = [];
  #readBuffer: Uint8Array;
  /** Where segments are copied together from their source symbols. */
  #copyBuffer: Uint8Array | undefined;
  #codec: RaptorqCodec;
  #closed = false;
  /** Decoded segments are written but their durability failed: flush() tries again. */
  #durabilityFailed = false;

  /** `codec`: the model's own (default: a new one), never one that something else may recycle. */
  constructor(dir: string, manifest: Manifest, codec = new RaptorqCodec()) {
    this.#codec = codec;
    this.#dir = dir;
    this.#manifest = manifest;
    this.#record = ESI_BYTES + manifest.symbolSize;
    this.#batchRecords = Math.max(1, Math.min(MAX_BATCH, Math.floor(BATCH_BUDGET / (manifest.segments.length * this.#record))));
    this.#readBuffer = new Uint8Array(READ_RECORDS * this.#record);
    this.imagePath = join(dir, 'image.part');
    const opened: number[] = [];
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const model = openSync(join(dir, 'model'), OPEN_RW | constants.O_TRUNC, 0o600);
      try {
        writeAllAt(model, Buffer.from(manifest.model), Buffer.byteLength(manifest.model), 0);
      } finally {
        closeSync(model);
      }
      this.#image = openSync(this.imagePath, OPEN_RW, 0o600);
      opened.push(this.#image);
      // Sparse: the blocks are taken as segments are written, so a full disk shows there, not here.
      if (fstatSync(this.#image).size !== manifest.imageSize) ftruncateSync(this.#image, manifest.imageSize);
      this.#done = openSync(join(dir, 'done'), OPEN_RW, 0o600);
      opened.push(this.#done);
      const n = manifest.segments.length;
      const done = new Uint8Array(n);
      if (fstatSync(this.#done).size === n) readSync(this.#done, done, 0, n, 0);
      else ftruncateSync(this.#done, n);
      for (const seg of manifest.segments) {
        if (done[seg.index] === 1) {
          this.completed.add(seg.index);
          rmSync(this.#spillPath(seg.index), { force: true });
        } else {
          this.#state.set(seg.index, this.#recover(seg));
        }
      }
    } catch (err) {
      for (const fd of opened) closeSync(fd);
      throw StoreError.wrap(err, dir, 'prepare the transfer directory');
    }
  }

  /** Symbols already on disk from before a restart. */
  get resumedSymbols(): number {
    let n = 0;
    for (const s of this.#state.values()) n += s.count;
    return n;
  }

  #spillPath(index: number): string {
    return join(this.#dir, `${index}.sym`);
  }

  /** Rebuilds a segment's state from its spill file, cutting off a torn last record. */
  #recover(seg: SegmentInfo): SegmentState {
    const path = this.#spillPath(seg.index);
    if (!existsSync(path)) return this.#freshState(seg);
    // Symbols on disk were not hashed in this process: the segment is hashed whole when it completes.
    const state = this.#freshState(seg, false);
    const fd = openSync(path, constants.O_RDWR | constants.O_NOFOLLOW);
    try {
      const records = Math.floor(fstatSync(fd).size / this.#record);
      const esi = new Uint8Array(ESI_BYTES);
      let kept = 0;
      for (let i = 0; i < records; i++) {
        readSync(fd, esi, 0, ESI_BYTES, i * this.#record);
        const value = new DataView(esi.buffer).getUint32(0);
        if (value >= seg.published || state.seen[value]) break;
        state.seen[value] = 1;
        kept++;
      }
      ftruncateSync(fd, kept * this.#record);
      state.count = kept;
    } finally {
      closeSync(fd);
    }
    return state;
  }

  #fd(index: number): number {
    let fd = this.#open.get(index);
    if (fd !== undefined) {
      this.#open.delete(index);
      this.#open.set(index, fd);
      return fd;
    }
    if (this.#open.size >= MAX_OPEN) {
      const [oldest, oldFd] = this.#open.entries().next().value!;
      closeSync(oldFd);
      this.#open.delete(oldest);
    }
    fd = openSync(this.#spillPath(index), OPEN_RW, 0o600);
    this.#open.set(index, fd);
    return fd;
  }

  #freshState(seg: SegmentInfo, hashing = true): SegmentState {
    return { count: 0, seen: new Uint8Array(seg.published), nextAttempt: seg.sourceSymbols, batched: 0, ...(hashing ? { hash: createHash('sha256') } : {}), hashed: 0 };
  }

  received(segment: number): number {
    return this.#state.get(segment)?.count ?? 0;
  }

  add(segment: SegmentInfo, esi: number, symbol: Uint8Array): AddResult {
    const state = this.#state.get(segment.index);
    if (!state || state.seen[esi]) return { kind: 'duplicate' };
    // A full batch that could not be written yet: try again; if it still fails, this symbol is refused (StoreError).
    if (state.batched === this.#batchRecords) this.#flush(segment.index, state);
    state.batch ??= new Uint8Array(this.#batchRecords * this.#record);
    const at = state.batched * this.#record;
    new DataView(state.batch.buffer).setUint32(at, esi);
    state.batch.set(symbol, at + ESI_BYTES);
    state.batched++;
    state.seen[esi] = 1;
    state.count++;
    if (state.hash && esi < segment.sourceSymbols) {
      if (esi === state.hashed) {
        const room = segment.oti.transferLength - esi * this.#manifest.symbolSize;
        state.hash.update(room < symbol.length ? symbol.subarray(0, room) : symbol);
        state.hashed++;
      } else {
        state.hash = undefined;
      }
    }
    if (state.batched === this.#batchRecords) {
      try {
        this.#flush(segment.index, state);
      } catch {
        // The symbol is kept in the batch; the next add() or flush() tries again and reports.
      }
    }
    if (state.count < state.nextAttempt) return { kind: 'stored', received: state.count };
    return this.#attempt(segment, state);
  }

  /**
   * Decodes a segment now if it holds enough symbols: after a restart, a
   * segment may have all it needs on disk, and no new symbol will come to
   * start its decode.
   */
  tryDecode(segment: SegmentInfo): AddResult | undefined {
    const state = this.#state.get(segment.index);
    if (!state || state.count < state.nextAttempt) return undefined;
    return this.#attempt(segment, state);
  }

  #attempt(segment: SegmentInfo, state: SegmentState): AddResult {
    this.#flush(segment.index, state);
    const bytes = this.#decode(segment, state.count);
    if (bytes) {
      if (!state.hash || state.hashed !== segment.sourceSymbols) return { kind: 'decoded', bytes };
      const sha256 = state.hash.digest();
      // A digest is taken once; if the commit fails, the next decode hashes the bytes whole.
      state.hash = undefined;
      return { kind: 'decoded', bytes, sha256 };
    }
    state.nextAttempt = state.count + 2;
    return { kind: 'stored', received: state.count, retryAt: state.nextAttempt };
  }

  /**
   * Writes every segment's waiting records (the agent calls this four times a
   * second) and retries what failed before. Returns how many records were
   * written; throws the first StoreError after trying every segment.
   */
  flush(): number {
    if (this.#closed) return 0;
    let first: unknown;
    let written = 0;
    if (this.#durabilityFailed) {
      try {
        this.#makeDurable();
      } catch (err) {
        first = err;
      }
    }
    for (const [index, state] of this.#state) {
      try {
        written += this.#flush(index, state);
      } catch (err) {
        first ??= err;
      }
    }
    if (first !== undefined) throw first;
    return written;
  }

  /** Writes the waiting records of a segment to its spill file; on failure they stay waiting. */
  #flush(index: number, state: SegmentState): number {
    if (!state.batch || state.batched === 0) return 0;
    const n = state.batched;
    const path = this.#spillPath(index);
    onStore(path, 'write', () => writeAllAt(this.#fd(index), state.batch!, n * this.#record, (state.count - n) * this.#record));
    state.batched = 0;
    return n;
  }

  /**
   * The segment's bytes from its first `count` records, or undefined if they
   * do not decode yet. Copied segments share one buffer, decoded ones live in
   * the codec's memory: either way the bytes are only valid until the next
   * add() (the receiver hashes and commits them at once).
   */
  #decode(segment: SegmentInfo, count: number): Uint8Array | undefined {
    const state = this.#state.get(segment.index)!;
    const k = segment.sourceSymbols;
    let sources = 0;
    for (let esi = 0; esi < k; esi++) sources += state.seen[esi]!;
    const T = this.#manifest.symbolSize;
    if (sources === k) {
      // Every source symbol is here: the segment is just their concatenation (RFC 6330 is systematic).
      if (!this.#copyBuffer || this.#copyBuffer.length < k * T) this.#copyBuffer = new Uint8Array(k * T);
      const out = this.#copyBuffer;
      this.#eachRecord(segment.index, count, (esi, symbol) => {
        if (esi < k) out.set(symbol, esi * T);
        return false;
      });
      return out.subarray(0, segment.oti.transferLength);
    }
    // Decoded in place: the bytes stay in the codec's memory until the next decode, which
    // is after the receiver hashed and committed them; a segment-sized copy would add to the peak.
    const decoder = new SegmentDecoder(segment.oti.transferLength, T, this.#codec, 'in-place');
    try {
      let bytes: Uint8Array | undefined;
      this.#eachRecord(segment.index, count, (esi, symbol) => (bytes = decoder.push(esi, symbol)) !== undefined);
      return bytes;
    } finally {
      decoder.free();
    }
  }

  /** Calls `visit` on the first `count` records of a spill file, in order, until it returns true. */
  #eachRecord(index: number, count: number, visit: (esi: number, symbol: Uint8Array) => boolean): void {
    const fd = onStore(this.#spillPath(index), 'open', () => this.#fd(index));
    const buffer = this.#readBuffer;
    const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    for (let first = 0; first < count; first += READ_RECORDS) {
      const n = Math.min(READ_RECORDS, count - first);
      onStore(this.#spillPath(index), 'read', () => readSync(fd, buffer, 0, n * this.#record, first * this.#record));
      for (let i = 0; i < n; i++) {
        const at = i * this.#record;
        if (visit(view.getUint32(at), buffer.subarray(at + ESI_BYTES, at + this.#record))) return;
      }
    }
  }

  /** Throws a StoreError, with the segment still to decode, if its bytes cannot be written. */
  commit(segment: SegmentInfo, bytes: Uint8Array): void {
    onStore(this.imagePath, 'write', () => writeAllAt(this.#image, bytes, bytes.length, segment.offset));
    this.completed.add(segment.index);
    this.#state.delete(segment.index);
    this.#uncommitted.push(segment.index);
    if (this.#uncommitted.length >= COMMIT_BATCH || this.completed.size === this.#manifest.segments.length) {
      try {
        this.#makeDurable();
      } catch {
        // The bytes are written; making them durable is retried by flush(), which reports the error.
        this.#durabilityFailed = true;
      }
    }
  }

  /**
   * Makes decoded segments durable, several at a time: image data first, then
   * their done bytes, then their spill files go. A kill in between costs at
   * most a decode again, never a segment marked done without its data.
   */
  #makeDurable(): void {
    if (this.#uncommitted.length === 0) return;
    onStore(this.imagePath, 'sync', () => fdatasyncSync(this.#image));
    const donePath = join(this.#dir, 'done');
    onStore(donePath, 'write', () => {
      for (const index of this.#uncommitted) writeAllAt(this.#done, ONE, 1, index);
      fdatasyncSync(this.#done);
    });
    for (const index of this.#uncommitted) this.#forget(index);
    this.#uncommitted = [];
    this.#durabilityFailed = false;
  }

  reset(segment: SegmentInfo): void {
    this.#forget(segment.index);
    this.#state.set(segment.index, this.#freshState(segment));
  }

  #forget(index: number): void {
    const fd = this.#open.get(index);
    if (fd !== undefined) closeSync(fd);
    this.#open.delete(index);
    this.#state.delete(index);
    rmSync(this.#spillPath(index), { force: true });
  }

  recoverFromTrap(): void {
    // Decoders live only during one decode attempt; every symbol is still on disk.
    this.#codec.recycle();
  }

  /**
   * Persists what it can and closes every file, once: a second call does
   * nothing (a descriptor closed twice may by then belong to someone else).
   * Never throws: what could not be written is received again.
   */
  close(): void {
    if (this.#closed) return;
    try {
      this.#makeDurable();
      this.flush();
    } catch {
      // Disk full or failing: the symbols and segments not on disk come again from the carousel.
    }
    this.#closed = true;
    for (const fd of this.#open.values()) closeSync(fd);
    this.#open.clear();
    closeSync(this.#image);
    closeSync(this.#done);
  }

  /** Removes the whole transfer directory (after the image moved on, or when abandoned). */
  destroy(): void {
    this.close();
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

