/**
 * Property/fuzz tests of deltas (protocol/delta.ts, device-agent/delta-apply.ts)
 * and of the manifest's delta list (key 12). A delta's bytes are
 * authenticated before they are applied, but the format is parsed defensively
 * all the same: the contract is a value or a typed FwcastError, never another
 * exception, and nothing written past the sizes the manifest gives.
 */
import test from 'ava';
import fc from 'fast-check';
import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { brotliCompressSync } from 'node:zlib';
import { decodeCbor, encodeCbor } from '../protocol/cbor.js';
import { decodeDeltaHeader, DeltaOpParser, encodeDeltaHeader } from '../protocol/delta.js';
import * as ed25519 from '../protocol/ed25519.js';
import { FwcastError } from '../protocol/errors.js';
import { decodeManifest, encodeManifest } from '../protocol/manifest.js';
import { buildRelease } from '../protocol/release.js';
import { applyDelta } from '../device-agent/delta-apply.js';
import { diffImages } from '../server/delta-build.js';
import { makeImage } from './helpers/fixtures.js';
import { fixedKey, mutate, run, typed, type Mutation } from './helpers/fuzz.js';

test.before(() => ed25519.ready());

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ op: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ op: fc.constant('u32' as const), at: fc.nat(), value: fc.nat() }),
  fc.record({ op: fc.constant('truncate' as const), to: fc.nat() }),
  fc.record({ op: fc.constant('extend' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
  fc.record({ op: fc.constant('delete' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 16 }) }),
  fc.record({ op: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
);

/** Op streams: arbitrary bytes, and sequences of plausible ops with hostile numbers. */
const varint = (n: number): number[] => {
  const out: number[] = [];
  let v = n;
  while (v >= 0x80) { out.push((v % 0x80) | 0x80); v = Math.floor(v / 0x80); }
  out.push(v);
  return out;
};
const opBytes = fc.oneof(
  fc.record({ offset: fc.oneof(fc.nat(200), fc.nat()), length: fc.oneof(fc.nat(64), fc.nat()) }).map(({ offset, length }) => [0x01, ...varint(offset), ...varint(length)]),
  fc.uint8Array({ maxLength: 40 }).map((b) => [0x02, ...varint(b.length), ...b]),
  fc.constant([0x00]),
  fc.integer({ min: 0, max: 255 }).map((b) => [b]),
);
/** A well-formed stream for a 150-byte base and a 100-byte image: copies and literals of the given lengths, the last cut to fit. */
const validStream = fc.array(fc.record({ copy: fc.boolean(), length: fc.integer({ min: 1, max: 40 }), offset: fc.nat(149) }), { minLength: 1, maxLength: 12 }).map((parts) => {
  const out: number[] = [];
  let written = 0;
  for (const p of [...parts, { copy: false, length: 100, offset: 0 }]) {
    const length = Math.min(p.length, 100 - written);
    if (length === 0) break;
    if (p.copy) out.push(0x01, ...varint(Math.min(p.offset, 150 - length)), ...varint(length));
    else out.push(0x02, ...varint(length), ...new Array<number>(length).fill(7));
    written += length;
  }
  return Uint8Array.from([...out, 0x00]);
});
const opStream = fc.oneof(
  fc.uint8Array({ maxLength: 200 }),
  fc.array(opBytes, { maxLength: 20 }).map((ops) => Uint8Array.from(ops.flat())),
  validStream,
  fc.tuple(validStream, mutation).map(([s, m]) => mutate(s, m)),
);

test('DeltaOpParser: arbitrary op streams, cut anywhere, give ops inside the sizes or InvalidDeltaError', (t) => {
  const header = { baseSize: 150, newSize: 100 };
  let complete = 0;
  fc.assert(fc.property(opStream, fc.nat(), (stream, cutAt) => {
    const p = new DeltaOpParser(header);
    const cut = stream.length ? cutAt % stream.length : 0;
    const r = typed(() => {
      const ops = [...p.push(stream.subarray(0, cut)), ...p.push(stream.subarray(cut))];
      p.finish();
      return ops;
    });
    if (!r.ok) {
      if (r.error.reason !== 'invalid-delta') throw new Error(`reason ${r.error.reason}`);
      return;
    }
    complete++;
    let written = 0;
    for (const op of r.value) {
      if (op.kind === 'copy') {
        if (op.length === 0 || op.offset + op.length > header.baseSize) throw new Error(`copy ${op.offset}+${op.length} outside the base`);
        written += op.length;
      } else written += op.bytes.length;
    }
    if (written !== header.newSize) throw new Error(`a complete delta wrote ${written} of ${header.newSize} bytes`);
  }), run(5000));
  t.log(`${complete} complete deltas`);
  t.true(complete > 500, 'well-formed streams are accepted whole, however they are cut');
});

test('decodeDeltaHeader: arbitrary and mutated headers give sizes or InvalidDeltaError', (t) => {
  const genuine = encodeDeltaHeader({ baseSize: 1000, newSize: 2000 });
  fc.assert(fc.property(fc.oneof(fc.uint8Array({ maxLength: 40 }), mutation.map((m) => mutate(genuine, m))), (b) => {
    const r = typed(() => decodeDeltaHeader(b));
    if (r.ok && !(Number.isSafeInteger(r.value.baseSize) && r.value.newSize > 0)) throw new Error('impossible sizes accepted');
  }), run(3000));
  t.pass();
});

test('applyDelta: mutated deltas and hostile op streams rebuild some image of the new size or fail with a FwcastError', async (t) => {
  const base = makeImage(20_000, 21);
  const next = Uint8Array.from([...base.subarray(0, 8000), ...makeImage(300, 22), ...base.subarray(8300)]);
  const genuine = diffImages(base, next);
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-fuzz-delta-'));
  writeFileSync(join(dir, 'base'), base);
  const header = encodeDeltaHeader({ baseSize: base.length, newSize: next.length });
  const hostile = fc.oneof(
    fc.array(mutation, { minLength: 1, maxLength: 3 }).map((ms) => ms.reduce((d, m) => mutate(d, m), genuine)),
    opStream.map((s) => Uint8Array.from([...header, ...brotliCompressSync(s)])),
  );
  let rebuilt = 0;
  await fc.assert(fc.asyncProperty(hostile, async (delta) => {
    writeFileSync(join(dir, 'delta'), delta);
    try {
      await applyDelta({ basePath: join(dir, 'base'), deltaPath: join(dir, 'delta'), outPath: join(dir, 'new'), baseSize: base.length, newSize: next.length });
    } catch (err) {
      if (err instanceof FwcastError && err.reason === 'invalid-delta') return;
      throw err;
    }
    rebuilt++;
    // Whatever it rebuilt is exactly the new size: the agent then checks its signed digest.
    if (statSync(join(dir, 'new')).size !== next.length) throw new Error('an applied delta wrote past or short of the new size');
  }), run(300));
  t.log(`${rebuilt} of 300 hostile deltas rebuilt an image of the right size`);
  t.true(rebuilt > 0, 'well-formed hostile op streams are applied');
});

test('decodeManifest: the delta list (key 12) replaced by hostile CBOR gives a manifest or a FwcastError', (t) => {
  const key = fixedKey(5);
  const release = buildRelease({ image: makeImage(4000, 23), model: 'rpi4', version: '2', seq: 2, created: 1_800_000_000, seed: key.seed });
  const m = release.manifest;
  const entry = { baseReleaseId: new Uint8Array(8).fill(1), baseSha256: new Uint8Array(32).fill(2), size: m.imageSize, sha256: m.imageSha256, symbolSize: m.symbolSize, segmentSize: m.segmentSize, repairPercent: m.repairPercent, segments: m.segments, auth: m.auth };
  const map = decodeCbor(encodeManifest({ ...m, deltas: [entry] }), 'manifest') as Map<number, unknown>;
  const list = map.get(12) as Array<Map<number, unknown>>;
  const value: fc.Arbitrary<unknown> = fc.oneof(fc.integer(), fc.constant(-16), fc.uint8Array({ maxLength: 40 }), fc.string({ maxLength: 8 }), fc.constant(null), fc.array(fc.integer(), { maxLength: 3 }), fc.constant(new Map()));
  let accepted = 0;
  fc.assert(fc.property(fc.oneof(
    value.map((v) => ({ whole: v })),
    fc.record({ field: fc.integer({ min: 0, max: 6 }), v: value, dup: fc.boolean() }),
  ), (edit) => {
    const copy = new Map(map);
    if ('whole' in edit) copy.set(12, edit.whole);
    else {
      const e = new Map(list[0]!);
      if (edit.field === 0) e.clear();
      else e.set(edit.field, edit.v);
      copy.set(12, edit.dup ? [e, e] : [e]);
    }
    const r = typed(() => decodeManifest(encodeCbor(copy)));
    if (r.ok) {
      accepted++;
      for (const d of r.value.deltas ?? []) if (d.baseReleaseId.length !== 8 || d.size <= 0) throw new Error('an impossible delta entry was accepted');
    }
  }), run(2000));
  t.log(`accepted ${accepted}`);
  t.pass();
});
