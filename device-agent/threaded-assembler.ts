/**
 * The receiving side of the agent's storage thread (storage-worker.ts): the
 * thread that reads the socket only authenticates and hands symbols over, so
 * it never waits for a disk or a decoder and the socket buffer never fills
 * because of the agent itself.
 *
 * A ThreadedAssembler is a SegmentAssembler whose add() copies the symbol
 * into a batch and returns at once; batches go to the storage thread (at 64
 * records, or at the end of the current turn of the event loop), and what
 * settles there (a segment committed, a store error) comes back through
 * onSettled. What may wait for the storage thread is bounded in bytes
 * (MAX_IN_FLIGHT): beyond it, symbols are shed (`storage-behind`), which the
 * carousel makes up for like any loss, rather than left to pile up in memory.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Worker } from 'node:worker_threads';
import { StoreError } from '../protocol/errors.js';
import type { Manifest, SegmentInfo } from '../protocol/manifest.js';
import { startModuleWorker } from '../runtime/worker-thread.js';
import type { AddResult, SegmentAssembler, Settlement } from './assembler.js';
import { SPILL_RECORD_HEADER } from './spill-assembler.js';
import { RECORD_HEADER, type StorageAck, type StorageReply, type StorageRequest } from './storage-messages.js';

/** Records per batch handed to the storage thread. */
const BATCH_RECORDS = 64;
/** The longest a symbol waits in a part-full batch, ms. */
const BATCH_MS = 5;
/**
 * Bytes of batches that may wait for the storage thread, per model: about
 * 80 ms at 100 Mbit/s, several times what spilling them takes; symbols of a
 * segment that has what its decode needs do not wait at all, so a decode does
 * not make them pile up.
 */
export const MAX_IN_FLIGHT = 1 << 20;

/** How long stop() waits for the storage thread to close its files. */
const SHUTDOWN_MS = 5000;
/**
 * The storage thread's heap: it holds little JavaScript, so a small young
 * generation (as the agent's own --max-semi-space-size=1) keeps its
 * collections frequent and its memory low.
 */
const STORAGE_THREAD_LIMITS = { maxYoungGenerationSizeMb: 1 };

/** One storage thread (per model): starts it, routes its answers, stops it. */
export class StorageThread {
  #worker: Worker;
  #assemblers = new Map<number, ThreadedAssembler>();
  #next = 0;
  #shut: (() => void) | undefined;

  constructor() {
    this.#worker = startModuleWorker(import.meta.url, 'storage-worker', STORAGE_THREAD_LIMITS);
    this.#worker.on('message', (reply: StorageReply) => {
      if (reply.op === 'shut') return this.#shut?.();
      this.#assemblers.get(reply.transfer)?.settle(reply);
    });
    this.#worker.on('error', (err) => {
      // A bug, not bad input (that is handled inside): nothing to resume from here.
      throw err;
    });
  }

  /** An assembler for a transfer whose files live in `dir`. */
  open(dir: string, manifest: Manifest): ThreadedAssembler {
    const id = this.#next++;
    const assembler = new ThreadedAssembler(this, id, dir, manifest);
    this.#assemblers.set(id, assembler);
    this.post({ op: 'open', transfer: id, dir, manifest });
    return assembler;
  }

  post(request: StorageRequest, transfer: ArrayBuffer[] = []): void {
    this.#worker.postMessage(request, transfer);
  }

  forget(id: number): void {
    this.#assemblers.delete(id);
  }

  /** Closes every transfer's files (what is stored stays for a restart) and ends the thread. */
  async stop(): Promise<void> {
    const shut = new Promise<void>((resolve) => {
      this.#shut = resolve;
      setTimeout(resolve, SHUTDOWN_MS).unref();
    });
    this.post({ op: 'shutdown' });
    await shut;
    await this.#worker.terminate();
  }
}

export class ThreadedAssembler implements SegmentAssembler {
  readonly completed = new Set<number>();
  readonly imagePath: string;
  /** Symbols found on disk from before a restart (the storage thread checks them again). */
  readonly resumedSymbols: number;
  onSettled?: (s: Settlement) => void;
  #thread: StorageThread;
  #id: number;
  #record: number;
  /** Per segment, which ESIs were handed over (an ESI refused by the store is taken again). */
  #seen: Uint8Array[];
  #counts: number[];
  /**
   * Per segment, how many symbols its next decode needs (K, then what a failed
   * decode asks for): beyond that, symbols of a segment waiting for its decode
   * would only pile up in front of the storage thread.
   */
  #needed: number[];
  #batch: Uint8Array;
  /** The batch's headers are written through this view (one per buffer, not one per symbol). */
  #view: DataView;
  /** Batch buffers the storage thread handed back, for reuse. */
  #spare: Uint8Array[] = [];
  #batched = 0;
  #inFlight = 0;
  #scheduled = false;
  #closed = false;
  #dir: string;

  constructor(thread: StorageThread, id: number, dir: string, manifest: Manifest) {
    this.#thread = thread;
    this.#dir = dir;
    this.#id = id;
    this.#record = RECORD_HEADER + manifest.symbolSize;
    this.#batch = new Uint8Array(BATCH_RECORDS * this.#record);
    this.#view = new DataView(this.#batch.buffer);
    this.imagePath = join(dir, 'image.part');
    this.#seen = manifest.segments.map((s) => new Uint8Array(s.published));
    // The resume state, as the storage thread will find it: segments done, symbols spilled.
    const done = readSmall(join(dir, 'done'), manifest.segments.length);
    let resumed = 0;
    this.#counts = manifest.segments.map((s) => {
      if (done?.[s.index] === 1) {
        this.completed.add(s.index);
        return 0;
      }
      const n = spilledRecords(join(dir, `${s.index}.sym`), SPILL_RECORD_HEADER + manifest.symbolSize);
      resumed += n;
      return n;
    });
    this.resumedSymbols = resumed;
    this.#needed = manifest.segments.map((s) => s.sourceSymbols);
  }

  received(segment: number): number {
    return this.#counts[segment] ?? 0;
  }

  add(segment: SegmentInfo, esi: number, symbol: Uint8Array): AddResult {
    const seen = this.#seen[segment.index];
    if (this.#closed || !seen || this.completed.has(segment.index) || seen[esi]) return { kind: 'duplicate' };
    if (this.#counts[segment.index]! >= this.#needed[segment.index]!) return { kind: 'enough' };
    if (this.#inFlight + this.#batch.byteLength > MAX_IN_FLIGHT) return { kind: 'shed' };
    const at = this.#batched * this.#record;
    this.#view.setUint32(at, segment.index);
    this.#view.setUint32(at + 4, esi);
    this.#batch.set(symbol, at + RECORD_HEADER);
    this.#batched++;
    seen[esi] = 1;
    const received = ++this.#counts[segment.index]!;
    if (this.#batched === BATCH_RECORDS) this.#post();
    else if (!this.#scheduled) {
      // The datagrams of the next few milliseconds join the batch; then it goes, full or not.
      this.#scheduled = true;
      setTimeout(() => {
        this.#scheduled = false;
        this.#post();
      }, BATCH_MS);
    }
    return { kind: 'stored', received };
  }

  #post(): void {
    if (this.#batched === 0 || this.#closed) return;
    const bytes = this.#batched * this.#record;
    const records = this.#batch;
    // Counted by the buffer, not what it holds: a batch that left part-full still takes all of it.
    this.#inFlight += records.byteLength;
    this.#thread.post({ op: 'symbols', transfer: this.#id, records: records.subarray(0, bytes), count: this.#batched }, [records.buffer as ArrayBuffer]);
    this.#batch = this.#spare.pop() ?? new Uint8Array(BATCH_RECORDS * this.#record);
    this.#view = new DataView(this.#batch.buffer);
    this.#batched = 0;
  }

  /** An answer from the storage thread. */
  settle(ack: StorageAck): void {
    if (ack.records) this.#inFlight -= ack.records.buffer.byteLength;
    // Every buffer comes back for reuse: at most MAX_IN_FLIGHT of them exist, and none is left to the collector.
    if (ack.records && !this.#closed) this.#spare.push(new Uint8Array(ack.records.buffer));
    for (let i = 0; i < ack.refused.length; i += 2) {
      const seen = this.#seen[ack.refused[i]!];
      const esi = ack.refused[i + 1]!;
      if (seen?.[esi]) {
        seen[esi] = 0;
        this.#counts[ack.refused[i]!]!--;
      }
    }
    if (this.#closed) return;
    if (ack.counts) {
      // What the storage thread found on disk is the truth; the estimate made at open goes.
      ack.counts.forEach((n, i) => {
        if (n >= 0) this.#counts[i] = n;
      });
    }
    for (let i = 0; i < ack.retry.length; i += 2) this.#needed[ack.retry[i]!] = ack.retry[i + 1]!;
    const report = (s: Settlement): void => this.onSettled?.(s);
    if (ack.storeError) {
      const { message, path, code } = ack.storeError;
      report({ kind: 'store-error', error: new StoreError(message, { path, code }), refused: ack.refused.length / 2 });
    }
    if (ack.storeOk) report({ kind: 'store-ok' });
    if (ack.traps > 0) report({ kind: 'trap', count: ack.traps });
    for (const index of ack.mismatched) {
      // Started over there; its symbols are taken again here.
      this.#seen[index]!.fill(0);
      this.#counts[index] = 0;
      report({ kind: 'mismatch', segment: index });
    }
    for (const index of ack.committed) {
      this.completed.add(index);
      report({ kind: 'committed', segment: index });
    }
  }

  /** Decoded segments are committed by the storage thread. */
  commit(): void {}

  reset(segment: SegmentInfo): void {
    this.#seen[segment.index]?.fill(0);
    this.#counts[segment.index] = 0;
  }

  /** The storage thread recovers from its own traps. */
  recoverFromTrap(): void {}

  /** Hands over what is batched and closes the transfer's files there, once; what is stored stays for a restart. */
  close(): void {
    if (this.#closed) return;
    this.#post();
    this.#closed = true;
    this.#thread.post({ op: 'close', transfer: this.#id });
    this.#thread.forget(this.#id);
  }

  /** Closes, then removes the transfer's directory (after its image moved on, or when abandoned). */
  destroy(): void {
    this.#post();
    this.#closed = true;
    this.#thread.post({ op: 'destroy', transfer: this.#id, dir: this.#dir });
    this.#thread.forget(this.#id);
  }
}

/** A small file's bytes if it has exactly `length` of them. */
function readSmall(path: string, length: number): Uint8Array | undefined {
  try {
    const bytes = readFileSync(path);
    return bytes.length === length ? bytes : undefined;
  } catch {
    return undefined;
  }
}

function spilledRecords(path: string, record: number): number {
  if (!existsSync(path)) return 0;
  try {
    return Math.floor(statSync(path).size / record);
  } catch {
    return 0;
  }
}
