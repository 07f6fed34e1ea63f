/**
 * The messages between the agent's receiving thread (threaded-assembler.ts)
 * and its storage thread (storage-worker.ts). A record is segment (u32 BE),
 * ESI (u32 BE), then the symbol (T bytes).
 */
import type { Manifest } from '../protocol/manifest.js';

/** Bytes before each symbol in a record. */
export const RECORD_HEADER = 8;

export type StorageRequest =
  | { op: 'open'; transfer: number; dir: string; manifest: Manifest }
  | { op: 'symbols'; transfer: number; records: Uint8Array; count: number }
  | { op: 'close'; transfer: number }
  | { op: 'destroy'; transfer: number; dir: string }
  | { op: 'shutdown' };

export interface StorageAck {
  op: 'ack';
  transfer: number;
  /** The buffer of the batch this answers (none for what the flush timer found), handed back for reuse. */
  records?: Uint8Array;
  committed: number[];
  mismatched: number[];
  traps: number;
  /** Records not stored (segment, ESI pairs): the receiving side may take them again. */
  refused: number[];
  /** Segments whose decode failed (segment, symbols needed for the next try pairs). */
  retry: number[];
  /** In the answer to open: the symbols on disk per segment (-1: segment done), as the spill files hold them. */
  counts?: number[];
  storeError?: { message: string; path: string; code: string };
  /** The store works again after failing. */
  storeOk?: boolean;
}

export type StorageReply = StorageAck | { op: 'shut' };
