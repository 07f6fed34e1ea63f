/**
 * The agent's storage thread: everything slow about a transfer happens here,
 * away from the thread that reads the socket. Authenticated symbols arrive in
 * batches (threaded-assembler.ts); this thread appends them to their spill
 * files, decodes each segment once it has enough (RaptorQ in its own WASM
 * instance), checks it against its signed SHA-256, writes it into the image
 * and makes it durable (spill-assembler.ts does the files), and answers each
 * batch with what settled.
 *
 * Messages in:  open { transfer, dir, manifest } · symbols { transfer, records, count }
 *               · close { transfer } · destroy { transfer, dir } · shutdown
 * Messages out: ack { transfer, records?, committed, mismatched, traps, refused, storeError?, storeOk? }
 *               · shut (after shutdown: every transfer closed)
 * A record is segment (u32 BE), ESI (u32 BE), then the symbol (T bytes).
 */
import { createHash } from 'node:crypto';
import { rmSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { StoreError } from '../protocol/errors.js';
import { RaptorqCodec } from '../protocol/fec.js';
import type { Manifest, SegmentInfo } from '../protocol/manifest.js';
import type { AddResult } from './assembler.js';
import { SpillAssembler } from './spill-assembler.js';
import { RECORD_HEADER, type StorageAck, type StorageReply, type StorageRequest } from './storage-messages.js';

interface Open {
  dir: string;
  manifest: Manifest;
  spill?: SpillAssembler;
  /** The last write failed: the next that succeeds is reported as storeOk. */
  failing: boolean;
}

const transfers = new Map<number, Open>();
/** One codec for every transfer of this thread; its grown memory goes back when none is open. */
const codec = new RaptorqCodec();

function ack(transfer: number): StorageAck {
  return { op: 'ack', transfer, committed: [], mismatched: [], traps: 0, refused: [], retry: [] };
}

function storeFailed(t: Open, out: StorageAck, err: unknown): void {
  if (!(err instanceof StoreError)) throw err;
  t.failing = true;
  out.storeError ??= { message: err.message, path: String(err.facts.path), code: String(err.facts.code) };
}

function storeWorked(t: Open, out: StorageAck): void {
  if (!t.failing) return;
  t.failing = false;
  out.storeOk = true;
}

/** The transfer's spill assembler, opened now if it could not be before (a full disk at open). */
function spillOf(t: Open, out: StorageAck): SpillAssembler | undefined {
  if (t.spill) return t.spill;
  try {
    t.spill = new SpillAssembler(t.dir, t.manifest, codec);
    return t.spill;
  } catch (err) {
    storeFailed(t, out, err);
    return undefined;
  }
}

function onSymbols(id: number, records: Uint8Array, count: number): StorageAck {
  const out = ack(id);
  const t = transfers.get(id);
  if (!t) return out;
  const T = t.manifest.symbolSize;
  const view = new DataView(records.buffer, records.byteOffset, records.byteLength);
  const spill = spillOf(t, out);
  for (let i = 0; i < count; i++) {
    const at = i * (RECORD_HEADER + T);
    const index = view.getUint32(at);
    const esi = view.getUint32(at + 4);
    const seg = t.manifest.segments[index]!;
    if (!spill) {
      out.refused.push(index, esi);
      continue;
    }
    let result;
    try {
      result = spill.add(seg, esi, records.subarray(at + RECORD_HEADER, at + RECORD_HEADER + T));
    } catch (err) {
      if (err instanceof StoreError) {
        storeFailed(t, out, err);
        out.refused.push(index, esi);
      } else {
        // A trap inside the WASM codec: a fresh instance; the symbols are still on disk.
        out.traps++;
        spill.recoverFromTrap();
      }
      continue;
    }
    settle(t, spill, seg, result, out);
  }
  return out;
}

/** After add() or tryDecode(): a decoded segment is checked against its signed digest and committed. */
function settle(t: Open, spill: SpillAssembler, seg: SegmentInfo, result: AddResult, out: StorageAck): void {
  if (result.kind === 'stored' && result.retryAt !== undefined) out.retry.push(seg.index, result.retryAt);
  if (result.kind !== 'decoded') return;
  const digest = result.sha256 ?? createHash('sha256').update(result.bytes).digest();
  if (Buffer.compare(digest, seg.sha256) !== 0) {
    // Cannot happen with authenticated symbols unless the publisher is broken; start the segment over.
    spill.reset(seg);
    out.mismatched.push(seg.index);
    return;
  }
  try {
    spill.commit(seg, result.bytes);
    out.committed.push(seg.index);
    storeWorked(t, out);
  } catch (err) {
    // The segment stays to decode again: its symbols are still in the spill file.
    storeFailed(t, out, err);
  }
}

/** Opens a transfer: what is on disk, and the segments that can decode from it already (after a restart). */
function onOpen(id: number, dir: string, manifest: Manifest): StorageAck {
  const t: Open = { dir, manifest, failing: false };
  transfers.set(id, t);
  const out = ack(id);
  const spill = spillOf(t, out);
  if (!spill) return out;
  for (const seg of manifest.segments) {
    let result;
    try {
      result = spill.tryDecode(seg);
    } catch (err) {
      if (err instanceof StoreError) storeFailed(t, out, err);
      else {
        out.traps++;
        spill.recoverFromTrap();
      }
      continue;
    }
    if (result) settle(t, spill, seg, result, out);
  }
  out.counts = manifest.segments.map((s) => (spill.completed.has(s.index) ? -1 : spill.received(s.index)));
  return out;
}

/** What reached memory reaches the disk at least four times a second, whatever the rate. */
function flushAll(): void {
  for (const [id, t] of transfers) {
    if (!t.spill) continue;
    const out = ack(id);
    try {
      if (t.spill.flush() > 0) storeWorked(t, out);
    } catch (err) {
      storeFailed(t, out, err);
    }
    if (out.storeError || out.storeOk) parentPort!.postMessage(out);
  }
}

function closeTransfer(id: number): void {
  const t = transfers.get(id);
  transfers.delete(id);
  t?.spill?.close();
  if (transfers.size === 0) codec.recycle();
}

const flusher = setInterval(flushAll, 250);

parentPort!.on('message', (req: StorageRequest) => {
  switch (req.op) {
    case 'open':
      // Opened at once, so that a full disk shows now, and segments complete on disk decode now.
      parentPort!.postMessage(onOpen(req.transfer, req.dir, req.manifest));
      break;
    case 'symbols': {
      const out = onSymbols(req.transfer, req.records, req.count);
      out.records = req.records;
      parentPort!.postMessage(out, [req.records.buffer as ArrayBuffer]);
      break;
    }
    case 'close':
      closeTransfer(req.transfer);
      break;
    case 'destroy':
      closeTransfer(req.transfer);
      rmSync(req.dir, { recursive: true, force: true });
      break;
    case 'shutdown':
      clearInterval(flusher);
      for (const id of [...transfers.keys()]) closeTransfer(id);
      parentPort!.postMessage({ op: 'shut' } satisfies StorageReply);
      break;
  }
});
