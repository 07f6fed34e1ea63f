/**
 * RFC 6330 conformance of fwcast's RaptorQ symbols, checked against an
 * independent implementation: Librecast's lcrq (Debian liblcrq-dev), driven
 * through the small C helper in test/lcrq/lcrq-decode.c, which is built here
 * with gcc into test/lcrq/build/ (gitignored).
 *
 * What this proves:
 *  - lcrq decodes fwcast's symbols (with most repair symbols standing in for
 *    dropped source symbols) back to the exact input, so our repair symbols are
 *    the RFC ones *under the ESIs we put on them* (source 0..K-1, repair from K,
 *    i.e. ISI = ESI + K' − K, §5.3.1);
 *  - our SegmentDecoder decodes lcrq's source and repair symbols;
 *  - lcrq's repair symbols are byte-identical to ours for the same ESI;
 *  - K' (RFC 6330 Table 2) agrees with lcrq for every K fwcast allows.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { MAX_SOURCE_SYMBOLS } from '../protocol/limits.js';
import { SegmentDecoder, SegmentEncoder, paddedBlockSize, type EncodingSymbol } from '../protocol/fec.js';
import { makeImage, shuffle } from './helpers/fixtures.js';

const INSTALL = 'apt-get install -y gcc liblcrq-dev';
const SOURCE = fileURLToPath(new URL('./lcrq/lcrq-decode.c', import.meta.url));
const BUILD_DIR = fileURLToPath(new URL('./lcrq/build/', import.meta.url));
const HELPER = `${BUILD_DIR}lcrq-decode`;

test.before(() => {
  mkdirSync(BUILD_DIR, { recursive: true });
  const cc = spawnSync('gcc', ['-O2', '-Wall', '-o', HELPER, SOURCE, '-llcrq'], { encoding: 'utf8' });
  if (cc.error) throw new Error(`cannot run gcc (${cc.error.message}); install it with: ${INSTALL}`);
  if (cc.status !== 0) {
    throw new Error(`building the lcrq helper failed (is liblcrq-dev installed? ${INSTALL}):\n${cc.stderr}`);
  }
});

// ---- helpers -------------------------------------------------------------

/** `count` distinct indices from 0..n-1, chosen with a fixed seed. */
function pick(n: number, count: number, seed: number): Set<number> {
  return new Set(shuffle([...Array(n).keys()], seed).slice(0, count));
}

interface Run {
  status: number | null;
  stdout: Buffer;
  stderr: string;
}

function runHelper(args: string[], input?: Buffer): Run {
  const r = spawnSync(HELPER, args, { input, maxBuffer: 1 << 28 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}

function mustRun(args: string[], input?: Buffer): Buffer {
  const r = runHelper(args, input);
  if (r.status !== 0) throw new Error(`lcrq-decode ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

function header(length: number, symbolSize: number, count: number): Buffer {
  const h = Buffer.alloc(14);
  h.writeBigUInt64LE(BigInt(length), 0);
  h.writeUInt16LE(symbolSize, 8);
  h.writeUInt32LE(count, 10);
  return h;
}

/** Has lcrq decode the given (ESI, symbol) pairs; returns the raw run. */
function lcrqDecode(length: number, symbolSize: number, symbols: readonly EncodingSymbol[]): Run {
  const parts = [header(length, symbolSize, symbols.length)];
  for (const s of symbols) {
    const esi = Buffer.alloc(4);
    esi.writeUInt32LE(s.esi);
    parts.push(esi, Buffer.from(s.data.buffer, s.data.byteOffset, s.data.byteLength));
  }
  return runHelper(['decode'], Buffer.concat(parts));
}

/** Has lcrq encode `data` and return the symbols with the given ESIs. */
function lcrqEncode(data: Uint8Array, symbolSize: number, esis: readonly number[]): EncodingSymbol[] {
  const list = Buffer.alloc(4 * esis.length);
  esis.forEach((esi, i) => list.writeUInt32LE(esi, 4 * i));
  const out = mustRun(['encode'], Buffer.concat([header(data.length, symbolSize, esis.length), data, list]));
  if (out.length !== esis.length * symbolSize) throw new Error(`lcrq returned ${out.length} bytes`);
  return esis.map((esi, i) => ({ esi, data: new Uint8Array(out.subarray(i * symbolSize, (i + 1) * symbolSize)) }));
}

interface LcrqParams {
  F: number;
  T: number;
  K: number;
  KP: number;
  Z: number;
  N: number;
  Al: number;
}

function lcrqParams(length: number, symbolSize: number): LcrqParams {
  return JSON.parse(mustRun(['params', String(length), String(symbolSize)]).toString()) as LcrqParams;
}

/**
 * Encodes with fwcast, drops `dropFraction` of the source symbols (fixed seed),
 * and keeps just enough repair symbols (ESI ≥ K) for K + `overhead` in total.
 */
function oursWithLoss(data: Uint8Array, symbolSize: number, dropFraction: number, overhead: number, seed: number) {
  const encoder = new SegmentEncoder(data, symbolSize);
  try {
    const { k, kPrime } = encoder;
    const dropped = pick(k, Math.round(k * dropFraction), seed);
    const all = encoder.symbols(k + dropped.size + overhead);
    const kept = all.filter((s) => s.esi >= k || !dropped.has(s.esi));
    return { k, kPrime, all, dropped, kept: shuffle(kept, seed + 1) };
  } finally {
    encoder.free();
  }
}

function decodeOurs(length: number, symbolSize: number, symbols: readonly EncodingSymbol[]) {
  const decoder = new SegmentDecoder(length, symbolSize);
  try {
    let out: Uint8Array | undefined;
    let used = 0;
    for (const s of symbols) {
      used++;
      out = decoder.push(s.esi, s.data);
      if (out) break;
    }
    return { out, used };
  } finally {
    decoder.free();
  }
}

const equalBytes = (a: Uint8Array, b: Uint8Array): boolean => Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;

// ---- the 1 MiB segment -------------------------------------------------

const T = 1208;
const F = (1 << 20) - 1234; // not a multiple of T: 1047342 = 867·1208 + 6
const SEGMENT = makeImage(F, 0x5eed_0001);

test('lcrq derives the same K and K′ as fwcast for the 1 MiB segment, with one block and one sub-block', (t) => {
  const p = lcrqParams(F, T);
  t.deepEqual(
    { K: p.K, KP: p.KP, Z: p.Z, N: p.N },
    { K: 868, KP: paddedBlockSize(868), Z: 1, N: 1 },
  );
  t.is(paddedBlockSize(868), 870);
  // lcrq hard-codes Al = 4; fwcast signals Al = 8. With N = 1 Al plays no part
  // in encoding (it only shapes sub-symbols), and T = 1208 is a multiple of both.
  t.is(p.Al, 4);
  t.is(T % 8, 0);
});

test('lcrq decodes fwcast symbols with 30% of the source dropped, using repair ESIs ≥ K', (t) => {
  const { k, kPrime, all, dropped, kept } = oursWithLoss(SEGMENT, T, 0.3, 2, 1);
  t.is(k, 868);
  t.is(kPrime, 870);
  t.is(dropped.size, 260);
  t.is(kept.length, k + 2);
  t.is(kept.filter((s) => s.esi >= k).length, 262);

  const run = lcrqDecode(F, T, kept);
  t.is(run.status, 0, run.stderr);
  t.is(run.stdout.length, F);
  t.true(equalBytes(run.stdout, SEGMENT), 'lcrq output differs from the input');

  // Our ESIs are RFC ESIs: 0..K-1 then K, K+1, … with no gap at K..K'-1.
  t.deepEqual(all.map((s) => s.esi), [...Array(all.length).keys()]);
});

test('control: the same symbols under the raptorq crate’s K′-based repair numbering do not decode in lcrq', (t) => {
  // What fec.ts would emit without its K′ − K correction: the crate labels the
  // repair symbol with RFC ESI K + i as K′ + i. This shows the test above can
  // tell the two numberings apart. (lcrq 0.0.1 does not notice: rq_decode
  // succeeds and silently returns wrong bytes for the dropped symbols.)
  const { k, kPrime, kept } = oursWithLoss(SEGMENT, T, 0.3, 2, 1);
  t.is(kPrime - k, 2);
  const misnumbered = kept.map((s) => (s.esi < k ? s : { esi: s.esi + (kPrime - k), data: s.data }));
  const run = lcrqDecode(F, T, misnumbered);
  t.log(`lcrq exit status ${run.status}${run.stderr ? `: ${run.stderr.trim()}` : ''}`);
  t.false(run.status === 0 && equalBytes(run.stdout, SEGMENT), 'lcrq decoded mis-numbered symbols');
});

test('fwcast repair symbols are byte-identical to lcrq’s for the same ESIs (and source symbols are the data)', (t) => {
  const encoder = new SegmentEncoder(SEGMENT, T);
  const ours = encoder.symbols(868 + 40);
  encoder.free();
  const esis = [0, 1, 433, 866, 867, 868, 869, 870, 871, 900, 907];
  const theirs = lcrqEncode(SEGMENT, T, esis);
  for (const s of theirs) {
    t.true(equalBytes(s.data, ours[s.esi]!.data), `ESI ${s.esi} differs`);
    t.is(ours[s.esi]!.esi, s.esi);
  }
  // Last source symbol: 6 data bytes then zero padding.
  const last = theirs.find((s) => s.esi === 867)!;
  t.true(equalBytes(last.data.subarray(0, 6), SEGMENT.subarray(867 * T)));
  t.true(last.data.subarray(6).every((b) => b === 0));
});

test('SegmentDecoder decodes lcrq’s symbols: 70% of the source plus lcrq repair symbols', (t) => {
  const k = 868;
  const dropped = pick(k, Math.round(k * 0.3), 7);
  const sourceEsis = [...Array(k).keys()].filter((esi) => !dropped.has(esi));
  // Repair ESIs from K on, plus a few far out in the 24-bit space.
  const repairEsis = [...Array(dropped.size - 3).keys()].map((i) => k + i).concat([5000, 65_536, 1_000_000, 0xfffff0]);
  const symbols = shuffle(lcrqEncode(SEGMENT, T, [...sourceEsis, ...repairEsis]), 8);
  t.is(symbols.length, k + 1);

  const { out, used } = decodeOurs(F, T, symbols);
  t.truthy(out, 'SegmentDecoder did not decode lcrq symbols');
  t.true(equalBytes(out!, SEGMENT));
  t.true(used >= k && used <= k + 1, `used ${used} symbols`);
});

test('SegmentDecoder decodes lcrq repair symbols alone (no source symbols at all)', (t) => {
  const k = 868;
  const repairEsis = [...Array(k + 2).keys()].map((i) => k + 3 * i);
  const { out } = decodeOurs(F, T, lcrqEncode(SEGMENT, T, repairEsis));
  t.truthy(out);
  t.true(equalBytes(out!, SEGMENT));
});

// ---- small segments around K′ boundaries ---------------------------------

// K' − K is what fwcast corrects for: 0 when K is itself a Table 2 entry,
// largest just above one (K = 102 → K' = 114, K = 871 → K' = 891).
const SMALL_T = 64;
for (const k of [1, 10, 11, 101, 102, 113, 871]) {
  test(`K = ${k} (K′ = ${paddedBlockSize(k)}): both directions with lcrq`, (t) => {
    const length = (k - 1) * SMALL_T + 17;
    const data = makeImage(length, 1000 + k);
    const p = lcrqParams(length, SMALL_T);
    t.deepEqual({ K: p.K, KP: p.KP, Z: p.Z, N: p.N }, { K: k, KP: paddedBlockSize(k), Z: 1, N: 1 });

    // fwcast → lcrq: drop 30% of the source (at least one), K + 1 symbols in all.
    const drop = Math.max(1, Math.round(k * 0.3)) / k;
    const ours = oursWithLoss(data, SMALL_T, drop, 1, 2000 + k);
    t.true(ours.kept.some((s) => s.esi >= k));
    const run = lcrqDecode(length, SMALL_T, ours.kept);
    t.is(run.status, 0, run.stderr);
    t.true(equalBytes(run.stdout, data), 'lcrq output differs from the input');

    // byte-identical repair symbols
    const esis = [k, k + 1, k + 5];
    const theirs = lcrqEncode(data, SMALL_T, esis);
    const mine = new SegmentEncoder(data, SMALL_T);
    const mineSymbols = mine.symbols(k + 6);
    mine.free();
    for (const s of theirs) t.true(equalBytes(s.data, mineSymbols[s.esi]!.data), `ESI ${s.esi} differs`);

    // lcrq → fwcast: drop the first 30% (at least one) of the source.
    const cut = Math.max(1, Math.round(k * 0.3));
    const mix = lcrqEncode(data, SMALL_T, [
      ...[...Array(k - cut).keys()].map((i) => cut + i),
      ...[...Array(cut + 2).keys()].map((i) => k + i),
    ]);
    const { out } = decodeOurs(length, SMALL_T, shuffle(mix, 3000 + k));
    t.truthy(out);
    t.true(equalBytes(out!, data));
  });
}

test(`K′ (RFC 6330 Table 2) agrees with lcrq for every K in 1..${MAX_SOURCE_SYMBOLS}`, (t) => {
  const theirs = mustRun(['kprime', String(MAX_SOURCE_SYMBOLS)]).toString().trim().split('\n').map(Number);
  t.is(theirs.length, MAX_SOURCE_SYMBOLS);
  const mismatches = theirs.flatMap((kp, i) => (kp === paddedBlockSize(i + 1) ? [] : [`K=${i + 1}: lcrq ${kp}`]));
  t.deepEqual(mismatches, []);
});
