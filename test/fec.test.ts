/**
 * Unit tests of protocol/fec.ts alone (the raptorq WASM wrapper). Conformance
 * against an independent RFC 6330 implementation is in fec-lcrq.test.ts.
 */
import test from 'ava';
import { MAX_SOURCE_SYMBOLS } from '../protocol/limits.js';
import {
  RaptorqCodec,
  RaptorqTrapError,
  SegmentDecoder,
  SegmentEncoder,
  StaleCodecError,
  paddedBlockSize,
  segmentOti,
  sourceSymbolCount,
  type EncodingSymbol,
} from '../protocol/fec.js';
import { RaptorqWasm, type DecoderHandle } from '../protocol/raptorq-wasm.js';
import { makeImage, shuffle } from './helpers/fixtures.js';

/**
 * Counts calls into the WASM decoder (the binding's decoderDecode) while
 * `body` runs. Test bodies here are synchronous, so no other test interleaves.
 */
function countingWasmDecodes<R>(body: (calls: () => number) => R): R {
  const proto = RaptorqWasm.prototype;
  const original = proto.decoderDecode;
  let calls = 0;
  proto.decoderDecode = function (this: RaptorqWasm, decoder: DecoderHandle, packet: Uint8Array) {
    calls++;
    return original.call(this, decoder, packet);
  };
  try {
    return body(() => calls);
  } finally {
    proto.decoderDecode = original;
  }
}

const equalBytes = (a: Uint8Array, b: Uint8Array): boolean => Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;

const T = 1208;
const F = 300_001; // K = 249 (not a multiple of T), K' = 257
const DATA = makeImage(F, 0xfec0001);

function encode(count: (k: number) => number, data = DATA, symbolSize = T): { k: number; kPrime: number; symbols: EncodingSymbol[] } {
  const encoder = new SegmentEncoder(data, symbolSize);
  try {
    return { k: encoder.k, kPrime: encoder.kPrime, symbols: encoder.symbols(count(encoder.k)) };
  } finally {
    encoder.free();
  }
}

test('encoder numbers symbols with RFC ESIs: source 0..K-1, then repair from K', (t) => {
  const { k, kPrime, symbols } = encode((k) => k + 20);
  t.is(k, 249);
  t.is(kPrime, 257);
  t.is(k, sourceSymbolCount(F, T));
  t.deepEqual(symbols.map((s) => s.esi), [...Array(k + 20).keys()]);
  t.true(symbols.every((s) => s.data.length === T));
  // Systematic: the source symbols are the data, the last one zero-padded.
  for (let esi = 0; esi < k - 1; esi++) t.true(equalBytes(symbols[esi]!.data, DATA.subarray(esi * T, (esi + 1) * T)));
  const tail = F - (k - 1) * T;
  t.true(equalBytes(symbols[k - 1]!.data.subarray(0, tail), DATA.subarray((k - 1) * T)));
  t.true(symbols[k - 1]!.data.subarray(tail).every((b) => b === 0));
  t.deepEqual(segmentOti(F, T), { transferLength: F, symbolSize: T, sourceBlocks: 1, subBlocks: 1, alignment: 8 });
});

test('round trip with no loss decodes on the K-th source symbol', (t) => {
  const { k, symbols } = encode((k) => k);
  const decoder = new SegmentDecoder(F, T);
  t.is(decoder.k, k);
  let out: Uint8Array | undefined;
  for (const [i, s] of shuffle(symbols, 11).entries()) {
    out = decoder.push(s.esi, s.data);
    if (i < k - 1) t.is(out?.length, undefined, `decoded early at symbol ${i + 1}`);
  }
  t.truthy(out);
  t.true(decoder.done);
  t.is(out!.length, F);
  t.true(equalBytes(out!, DATA));
});

test('round trip with 30% of the source lost, using repair symbols', (t) => {
  const { k, symbols } = encode((k) => 2 * k);
  const lost = new Set(shuffle([...Array(k).keys()], 21).slice(0, Math.round(k * 0.3)));
  t.is(lost.size, 75);
  const arriving = shuffle(
    symbols.filter((s) => !lost.has(s.esi)),
    22,
  );
  const decoder = new SegmentDecoder(F, T);
  let out: Uint8Array | undefined;
  let used = 0;
  for (const s of arriving) {
    used++;
    out = decoder.push(s.esi, s.data);
    if (out) break;
  }
  decoder.free();
  t.truthy(out, 'did not decode');
  t.true(equalBytes(out!, DATA));
  t.true(used >= k && used <= k + 2, `needed ${used} symbols for K = ${k}`);
});

test('round trip from repair symbols only, including far-out ESIs', (t) => {
  const small = makeImage(5000, 31); // K = 5 at T = 1208 → K' = 10
  const encoder = new SegmentEncoder(small, T);
  const repairs = encoder.symbols(5 + 4000).slice(5);
  encoder.free();
  const decoder = new SegmentDecoder(small.length, T);
  let out: Uint8Array | undefined;
  for (const s of shuffle(repairs, 32).slice(0, 8)) out ??= decoder.push(s.esi, s.data);
  decoder.free();
  t.truthy(out);
  t.true(equalBytes(out!, small));
});

test('duplicate symbols are ignored and never reach WASM', (t) => {
  const { k, symbols } = encode((k) => k);
  countingWasmDecodes((calls) => {
    const decoder = new SegmentDecoder(F, T);
    // K-1 distinct source symbols, each delivered twice: only K-1 distinct
    // symbols, which cannot decode, so duplicates must not have been counted.
    for (const s of symbols.slice(0, k - 1)) {
      t.is(decoder.push(s.esi, s.data)?.length, undefined);
      t.is(decoder.push(s.esi, s.data)?.length, undefined);
    }
    t.is(decoder.received, k - 1);
    t.false(decoder.done);
    // A duplicate ESI with different bytes is ignored too (first copy wins).
    t.is(decoder.push(0, new Uint8Array(T))?.length, undefined);
    t.is(decoder.received, k - 1);
    t.is(calls(), k - 1, 'a duplicate reached the WASM decoder');

    const out = decoder.push(symbols[k - 1]!.esi, symbols[k - 1]!.data);
    t.truthy(out);
    t.true(equalBytes(out!, DATA));
    t.is(decoder.received, k);
    // After decoding, further pushes return the result without touching WASM.
    t.is(decoder.push(3, symbols[3]!.data), out);
    t.is(calls(), k);
  });
});

test('wrong symbol length and bad ESIs are rejected with RangeError before reaching WASM', (t) => {
  const { k, symbols } = encode((k) => k);
  countingWasmDecodes((calls) => {
    const decoder = new SegmentDecoder(F, T);
    const good = symbols[0]!.data;
    t.throws(() => decoder.push(0, good.subarray(0, T - 1)), { instanceOf: RangeError, message: /1207 bytes, expected 1208/ });
    t.throws(() => decoder.push(0, new Uint8Array(T + 8)), { instanceOf: RangeError });
    t.throws(() => decoder.push(0, new Uint8Array(0)), { instanceOf: RangeError });
    for (const esi of [-1, 1.5, Number.NaN, 0x1000000]) {
      t.throws(() => decoder.push(esi, good), { instanceOf: RangeError, message: /ESI/ }, `ESI ${esi}`);
    }
    t.is(calls(), 0, 'a rejected symbol reached the WASM decoder');
    t.is(decoder.received, 0);

    // The decoder is still usable, and the rejected ESI 0 was not marked as seen.
    let out: Uint8Array | undefined;
    for (const s of symbols) out = decoder.push(s.esi, s.data);
    t.is(calls(), k, 'the spy did not see the real decode calls');
    t.truthy(out);
    t.true(equalBytes(out!, DATA));
  });
});

test('encoder rejects a symbol size that is not a multiple of Al and a count below K', (t) => {
  t.throws(() => new SegmentEncoder(DATA, 1204), { instanceOf: RangeError, message: /multiple of 8/ });
  const encoder = new SegmentEncoder(DATA, T);
  t.throws(() => encoder.symbols(encoder.k - 1), { instanceOf: RangeError });
  t.throws(() => encoder.symbols(0x1000001), { instanceOf: RangeError });
  encoder.free();
});

test('paddedBlockSize matches RFC 6330 Table 2', (t) => {
  const known: Array<[k: number, kPrime: number]> = [
    [1, 10],
    [10, 10],
    [11, 12],
    [12, 12],
    [13, 18],
    [19, 20],
    [21, 26],
    [49, 49],
    [50, 55],
    [101, 101],
    [102, 114],
    [249, 257],
    [868, 870],
    [869, 870],
    [870, 870],
    [871, 891],
    [1000, 1002],
    [4096, 4112],
    [8111, 8111],
    [8112, 8194],
    [8192, 8194],
  ];
  for (const [k, kPrime] of known) t.is(paddedBlockSize(k), kPrime, `K = ${k}`);
  for (const bad of [0, -1, 1.5, Number.NaN, MAX_SOURCE_SYMBOLS + 1]) {
    t.throws(() => paddedBlockSize(bad), { instanceOf: RangeError }, `K = ${bad}`);
  }
});

test('free() makes later use throw a clear error, and is idempotent', (t) => {
  const encoder = new SegmentEncoder(DATA, T);
  const [first] = encoder.symbols(encoder.k);
  encoder.free();
  t.notThrows(() => encoder.free());
  t.throws(() => encoder.symbols(encoder.k), { instanceOf: Error, message: 'SegmentEncoder used after free()' });

  const decoder = new SegmentDecoder(F, T);
  t.is(decoder.push(first!.esi, first!.data), undefined);
  decoder.free();
  t.notThrows(() => decoder.free());
  t.throws(() => decoder.push(1, first!.data), { instanceOf: Error, message: 'SegmentDecoder used after free()' });
});

test('a trap in one codec instance costs only its own encoders and decoders', (t) => {
  const { k, symbols } = encode((k) => k + 10);
  const victim = new RaptorqCodec();
  const bystander = new RaptorqCodec();
  const survivor = new SegmentDecoder(F, T, bystander);
  const half = Math.floor(k / 2);
  for (const s of symbols.slice(0, half)) t.is(survivor.push(s.esi, s.data), undefined);
  const staleDecoder = new SegmentDecoder(F, T, victim);
  for (const s of symbols.slice(0, half)) staleDecoder.push(s.esi, s.data);
  const staleEncoder = new SegmentEncoder(DATA, T, victim);

  // A real trap: a packet shorter than its 4-byte payload ID, straight into the victim's raw binding.
  const wasm = victim.wasm;
  const raw = wasm.decoderNew(F, T);
  const trap = t.throws(() => wasm.decoderDecode(raw, new Uint8Array(2)), { instanceOf: RaptorqTrapError });
  t.regex(trap!.message, /index out of bounds/, 'the Rust panic message, not only "unreachable"');
  victim.recycle();

  t.throws(() => staleDecoder.push(symbols[half]!.esi, symbols[half]!.data), { instanceOf: StaleCodecError });
  t.throws(() => staleEncoder.symbols(k), { instanceOf: StaleCodecError });
  t.notThrows(() => staleDecoder.free());
  t.notThrows(() => staleEncoder.free());

  // The other instance's decoder goes on from where it was.
  t.is(survivor.received, half);
  let out: Uint8Array | undefined;
  for (const s of symbols.slice(half)) if ((out = survivor.push(s.esi, s.data))) break;
  t.truthy(out, 'the bystander decoder completed');
  t.true(equalBytes(out!, DATA));

  // The recycled codec works again, in a fresh instance.
  t.not(victim.wasm, wasm);
  const fresh = new SegmentDecoder(F, T, victim);
  let again: Uint8Array | undefined;
  for (const s of symbols) again ??= fresh.push(s.esi, s.data);
  t.true(again !== undefined && equalBytes(again, DATA));
});

/** A WASM module with a function import `module.name` (type () → ()) and nothing else. */
function moduleImporting(module: string, name: string): Uint8Array {
  const str = (text: string) => [text.length, ...Buffer.from(text)];
  const section = (id: number, body: number[]) => [id, body.length, ...body];
  return Uint8Array.from([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, [1, 0x60, 0, 0]),
    ...section(2, [1, ...str(module), ...str(name), 0x00, 0]),
  ]);
}

test('a raptorq.wasm that does not match the binding is a clear error when instantiated', (t) => {
  const WebAssembly = (globalThis as unknown as { WebAssembly: { Module: new (bytes: Uint8Array) => object } }).WebAssembly;
  const unknownImport = new WebAssembly.Module(moduleImporting('wbg', '__wbg_frobnicate_0123456789abcdef'));
  t.throws(() => new RaptorqWasm(unknownImport), { message: /imports wbg\.__wbg_frobnicate_0123456789abcdef, which protocol\/raptorq-wasm\.ts does not provide/ });
  const nothing = new WebAssembly.Module(moduleImporting('wbg', '__wbindgen_throw'));
  t.throws(() => new RaptorqWasm(nothing), { message: /exports no memory/ });
});

test('in-place decoding hands out a view of the codec\'s memory and takes it back at the next call: no copy, and no leak', (t) => {
  const codec = new RaptorqCodec();
  const data = makeImage(200_000, 31);
  const encoder = new SegmentEncoder(data, 1208, codec);
  const symbols = encoder.symbols(encoder.k + 20);
  encoder.free();
  const decodeOnce = (): Uint8Array => {
    const decoder = new SegmentDecoder(data.length, 1208, codec, 'in-place');
    let out: Uint8Array | undefined;
    for (const s of symbols.slice(5)) if ((out = decoder.push(s.esi, s.data))) break;
    decoder.free();
    return out!;
  };
  const first = decodeOnce();
  t.true(equalBytes(first, data), 'the view holds the decoded bytes, also after the decoder was freed');
  const grown = codec.wasm.memoryBytes;
  for (let i = 0; i < 20; i++) t.true(equalBytes(decodeOnce(), data));
  t.is(codec.wasm.memoryBytes, grown, 'each lent result was freed by the next decode: memory did not grow');
});
