/**
 * Unit tests of device-agent/receiver/transfer-ledger.ts on descriptors, as
 * the fleet simulation drives it: no keys, no bytes. The Receiver's tests
 * (receiver.test.ts) check the same rules through the cryptography.
 */
import test from 'ava';
import { ChunkLayout, type ChunkGroup } from '../protocol/auth.js';
import { MAX_PENDING, TransferLedger, type LedgerHost } from '../device-agent/receiver/transfer-ledger.js';
import type { LedgerDropReason } from '../device-agent/receiver/drop-reasons.js';

/** Symbols are their ESI, pieces their parity index (negative: forged), digests the chunk leaf. */
class Recorder implements LedgerHost<number, number, number> {
  delivered: Array<[segment: number, esi: number, digests: number]> = [];
  verified: number[] = [];
  checked: number[] = [];
  recovered: Array<{ group: ChunkGroup; pieces: number[]; missing: readonly number[] }> = [];
  dropped: Partial<Record<LedgerDropReason, number>> = {};
  ledger?: TransferLedger<number, number, number>;
  /** Segment → deliveries after which it is decoded. */
  decodeAfter = new Map<number, number>();

  deliver(segment: number, esi: number, _symbol: number, digests: number): void {
    this.delivered.push([segment, esi, digests]);
    const left = this.decodeAfter.get(segment);
    if (left === undefined) return;
    if (left <= 1) this.ledger!.segmentDone(segment);
    this.decodeAfter.set(segment, left - 1);
  }
  kept: number[] = [];
  letGoOf: number[] = [];
  keep(symbol: number): number {
    this.kept.push(symbol);
    return symbol;
  }
  letGo(symbol: number): void {
    this.letGoOf.push(symbol);
  }
  chunkVerified(leaf: number): void {
    this.verified.push(leaf);
  }
  checkPiece(piece: number): number | undefined {
    this.checked.push(piece);
    return piece >= 0 ? piece : undefined;
  }
  samePiece(a: number, b: number): boolean {
    return a === b;
  }
  recover(group: ChunkGroup, pieces: ReadonlyMap<number, number>, missing: readonly number[]): number[] {
    this.recovered.push({ group, pieces: [...pieces.keys()].sort((x, y) => x - y), missing });
    return missing.map((leaf) => leaf);
  }
  drop(reason: LedgerDropReason, count: number): void {
    this.dropped[reason] = (this.dropped[reason] ?? 0) + count;
  }
}

function ledgerOf(segments: Array<{ sourceSymbols: number; published: number }>, chunkSymbols: number, coding?: { groupChunks: number; parityPerChunk: number }, completed: number[] = []) {
  const host = new Recorder();
  const layout = new ChunkLayout(segments, chunkSymbols, coding);
  const ledger = new TransferLedger(layout, segments.map((s) => s.published), host, completed);
  host.ledger = ledger;
  return { host, layout, ledger };
}

test('symbols wait for their chunk and reach the host in arrival order once it is verified; later ones go straight through', (t) => {
  const { host, layout, ledger } = ledgerOf([{ sourceSymbols: 8, published: 24 }], 4);
  for (const esi of [2, 0, 3]) ledger.symbol(0, esi, esi);
  t.deepEqual(host.delivered, []);
  t.is(ledger.chunkWanted(layout.leafOf(0, 0)), undefined);
  ledger.chunk(layout.leafOf(0, 0), 100);
  t.deepEqual(host.delivered, [[0, 2, 100], [0, 0, 100], [0, 3, 100]]);
  ledger.symbol(0, 1, 1);
  t.deepEqual(host.delivered.at(-1), [0, 1, 100]);
  t.is(ledger.chunkWanted(layout.leafOf(0, 0)), 'auth-repeat');
  t.deepEqual(host.verified, [0]);
});

test('a decoded segment drops its later symbols and AUTH as segment-complete, and counts down remaining', (t) => {
  const { host, layout, ledger } = ledgerOf([{ sourceSymbols: 4, published: 12 }, { sourceSymbols: 4, published: 12 }], 4);
  t.is(ledger.remaining, 2);
  host.decodeAfter.set(0, 2);
  for (const esi of [0, 1, 2]) ledger.symbol(0, esi, esi);
  ledger.chunk(layout.leafOf(0, 0), 7);
  t.deepEqual(host.delivered, [[0, 0, 7], [0, 1, 7]], 'the third waiting symbol came after the segment was done');
  t.is(host.dropped['segment-complete'], 1);
  ledger.symbol(0, 5, 5);
  t.is(host.dropped['segment-complete'], 2);
  t.is(ledger.chunkWanted(layout.leafOf(0, 4)), 'segment-complete');
  t.true(ledger.isDone(0));
  t.is(ledger.remaining, 1);
  t.is(ledgerOf([{ sourceSymbols: 4, published: 12 }, { sourceSymbols: 4, published: 12 }], 4, undefined, [1]).ledger.remaining, 1, 'a resumed transfer starts with its completed segments done');
});

test('bounds: twice a chunk may wait per chunk, MAX_PENDING in all, and the oldest chunk\'s symbols are evicted first', (t) => {
  const c = 64;
  const chunks = Math.ceil((MAX_PENDING + c) / c) + 1;
  const { host, layout, ledger } = ledgerOf([{ sourceSymbols: chunks * c, published: 3 * chunks * c }], c);
  for (let i = 0; i < 2 * c + 5; i++) ledger.symbol(0, 0, 0);
  t.is(host.dropped['pending-full'], 5, 'at most 2·C candidates wait for one chunk');
  // Fill up to the bound with other chunks, then one more symbol evicts the oldest chunk (2·C symbols).
  let esi = c;
  for (let held = 2 * c; held < MAX_PENDING; held++) ledger.symbol(0, esi++, esi);
  t.is(host.dropped['pending-evicted'] ?? 0, 0);
  ledger.symbol(0, esi++, esi);
  t.is(host.dropped['pending-evicted'], 2 * c);
  ledger.chunk(layout.leafOf(0, 0), 1);
  t.deepEqual(host.delivered, [], 'the evicted symbols are gone');
  ledger.chunk(layout.leafOf(0, c), 2);
  t.is(host.delivered.length, c, 'the next chunk\'s symbols were kept');
});

test('every symbol held back is let go exactly once: delivered, dropped as segment-complete or evicted (its bytes may then be reused)', (t) => {
  const c = 64;
  const chunks = Math.ceil(MAX_PENDING / c) + 2;
  const { host, layout, ledger } = ledgerOf([{ sourceSymbols: chunks * c, published: 3 * chunks * c }, { sourceSymbols: 4, published: 12 }], c);
  host.decodeAfter.set(1, 1);
  // Segment 0: more than MAX_PENDING wait, so its oldest chunk is evicted.
  for (let esi = 0; esi <= MAX_PENDING; esi++) ledger.symbol(0, esi, esi);
  // Segment 1: two wait; the first completes the segment, the second is then dropped as segment-complete.
  ledger.symbol(1, 0, -1);
  ledger.symbol(1, 1, -2);
  ledger.chunk(layout.leafOf(1, 0), 9);
  for (let leaf = layout.leafOf(0, 0); leaf <= layout.leafOf(0, MAX_PENDING); leaf++) ledger.chunk(leaf, 1);
  t.true((host.dropped['pending-evicted'] ?? 0) > 0 && (host.dropped['segment-complete'] ?? 0) === 1);
  t.deepEqual([...host.letGoOf].sort((a, b) => a - b), [...host.kept].sort((a, b) => a - b));
});

test('coded groups: parity pieces alone check nothing; a waiting symbol of a missing chunk triggers the rebuild with just enough checked pieces', (t) => {
  // One segment, one round of 4 chunks of 4 symbols: one group of 4, 2 parity pieces per chunk.
  const { host, layout, ledger } = ledgerOf([{ sourceSymbols: 16, published: 48 }], 4, { groupChunks: 12, parityPerChunk: 2 });
  const group = layout.group(0);
  t.deepEqual(group, { first: 0, size: 4 });
  ledger.chunk(0, 0);
  ledger.chunk(1, 1);
  const parityLeaf = (j: number): number => layout.parityLeaf(group.first, j);
  t.is(ledger.parityWanted(parityLeaf(0)), undefined);
  ledger.parity(parityLeaf(0), -1); // a forged copy of piece 0, heard first
  ledger.parity(parityLeaf(0), 0);
  ledger.parity(parityLeaf(0), 0);
  t.is(host.dropped['auth-repeat'], 1, 'the same piece twice');
  ledger.parity(parityLeaf(3), 3);
  ledger.parity(parityLeaf(5), 5);
  t.deepEqual(host.checked, [], 'nothing waits for the missing chunks: nothing is checked');
  ledger.symbol(0, 9, 9); // chunk 2 is missing and now a symbol of it waits
  t.deepEqual(host.checked, [-1, 0, 3], 'checked in the order heard, the forged copy first, until 2 were genuine');
  t.is(host.dropped['bad-auth'], 1);
  t.deepEqual(host.recovered, [{ group, pieces: [0, 1, 4, 7], missing: [2, 3] }]);
  t.deepEqual(host.verified, [0, 1, 2, 3]);
  t.deepEqual(host.delivered, [[0, 9, 2]], 'the waiting symbol went on with the rebuilt chunk');
  t.is(ledger.parityWanted(parityLeaf(5)), 'auth-repeat', 'pieces of a group whose chunks are all known are repeats');
});
