/**
 * Unit tests of device-agent/receiver/manifest-reassembly.ts with fast-check:
 * poisoning fragments (any offsets, lengths and bytes under the genuine
 * release id and total length, all from the genuine sender's address) never
 * yield a wrong manifest, never keep a genuine copy heard after them from
 * completing, and never take the memory past its bounds.
 */
import test from 'ava';
import fc from 'fast-check';
import {
  BUCKET_SLACK, ManifestReassembly, MAX_BUCKETS, MAX_BYTES, VERSIONS, type ReassemblyStep,
} from '../device-agent/receiver/manifest-reassembly.js';
import { hex } from '../protocol/hex.js';
import { releaseIdOf } from '../protocol/manifest.js';
import type { ManifestFragment } from '../protocol/packet.js';

const MAX_MANIFEST = 256 * 1024;
const FROM = 'fd00:fc::1';

interface Genuine {
  signed: Uint8Array;
  releaseId: Uint8Array;
  id: string;
  copy: ManifestFragment[];
}

/** A manifest (any bytes: only its hash matters here) cut as a carousel cuts it. */
function genuine(bytes: Uint8Array, cut: number): Genuine {
  const releaseId = releaseIdOf(bytes);
  const copy: ManifestFragment[] = [];
  for (let offset = 0; offset < bytes.length; offset += cut) {
    copy.push({ type: 1, releaseId, totalLength: bytes.length, offset, bytes: bytes.subarray(offset, offset + cut) });
  }
  return { signed: bytes, releaseId, id: hex(releaseId), copy };
}

const genuineArb = fc.record({
  bytes: fc.uint8Array({ minLength: 1, maxLength: 3000 }),
  cut: fc.integer({ min: 100, max: 1200 }),
}).map(({ bytes, cut }) => genuine(bytes, cut));

/** Poison for a genuine manifest: fragments under its id and length, often at its own offsets and lengths. */
function poisonArb(g: Genuine): fc.Arbitrary<ManifestFragment[]> {
  const total = g.signed.length;
  const one = fc.oneof(
    // One byte anywhere (the demonstrated attack).
    fc.record({ offset: fc.nat({ max: total - 1 }), byte: fc.integer({ min: 0, max: 255 }) }).map(({ offset, byte }) => ({ offset, bytes: Uint8Array.of(byte) })),
    // A genuine fragment's place and length, other bytes.
    fc.record({ i: fc.nat({ max: g.copy.length - 1 }), seed: fc.integer() }).map(({ i, seed }) => {
      const f = g.copy[i]!;
      const bytes = f.bytes.slice();
      bytes[Math.abs(seed) % bytes.length]! ^= 1 + (Math.abs(seed >> 8) % 255);
      return { offset: f.offset, bytes };
    }),
    // Any span.
    fc.record({ offset: fc.nat({ max: total - 1 }), length: fc.integer({ min: 1, max: 2000 }), fill: fc.integer({ min: 0, max: 255 }) })
      .map(({ offset, length, fill }) => ({ offset, bytes: new Uint8Array(Math.min(length, total - offset)).fill(fill) })),
  );
  return fc.array(one, { maxLength: 200 }).map((list) => list.map(({ offset, bytes }) => ({ type: 1, releaseId: g.releaseId, totalLength: total, offset, bytes })));
}

function checkBounds(r: ManifestReassembly): boolean {
  return r.bytes <= MAX_BYTES && r.buckets <= MAX_BUCKETS;
}

test('poison heard before a genuine copy, in any order: the copy completes at its last fragment, with the genuine bytes', (t) => {
  fc.assert(fc.property(
    genuineArb.chain((g) => fc.tuple(fc.constant(g), poisonArb(g), fc.shuffledSubarray(g.copy, { minLength: g.copy.length }))),
    ([g, poison, copy]) => {
      const r = new ManifestReassembly(MAX_MANIFEST);
      const steps: ReassemblyStep[] = [];
      for (const f of poison) {
        steps.push(r.add(f, g.id, FROM));
        if (!checkBounds(r)) return false;
      }
      // Poison may not complete anything (it might happen to contain the genuine copy: then that is right).
      for (const s of steps) if (s.kind === 'complete' && Buffer.compare(s.signed, g.signed) !== 0) return false;
      if (steps.some((s) => s.kind === 'complete')) return true;
      const results = copy.map((f) => r.add(f, g.id, FROM));
      const done = results.findIndex((s) => s.kind === 'complete');
      return done === copy.length - 1 && Buffer.compare((results[done] as { signed: Uint8Array }).signed, g.signed) === 0 && checkBounds(r);
    },
  ), { numRuns: 300 });
  t.pass();
});

test('poison interleaved with genuine copies, any order: never a wrong manifest, bounded memory, and the next clean copy completes', (t) => {
  fc.assert(fc.property(
    genuineArb.chain((g) => fc.tuple(
      fc.constant(g),
      // Genuine copies, some fragments lost, mixed with poison in any order.
      fc.shuffledSubarray([...g.copy, ...g.copy.map((f) => ({ ...f }))]).chain((heard) => poisonArb(g).chain((poison) => fc.shuffledSubarray([...heard, ...poison], { minLength: heard.length + poison.length }))),
    )),
    ([g, mixed]) => {
      const r = new ManifestReassembly(MAX_MANIFEST);
      for (const f of mixed) {
        const s = r.add(f, g.id, FROM);
        if (!checkBounds(r)) return false;
        if (s.kind === 'complete') return Buffer.compare(s.signed, g.signed) === 0;
      }
      const results = g.copy.map((f) => r.add(f, g.id, FROM));
      return results.some((s) => s.kind === 'complete' && Buffer.compare(s.signed, g.signed) === 0);
    },
  ), { numRuns: 300 });
  t.pass();
});

test('a bucket holds at most VERSIONS fragments per offset and 2 × total + slack bytes, however much poison', (t) => {
  const g = genuine(new Uint8Array(4000).map((_, i) => i * 7), 1000);
  const r = new ManifestReassembly(MAX_MANIFEST);
  for (let i = 0; i < 20_000; i++) {
    const offset = (i * 7919) % 4000;
    r.add({ type: 1, releaseId: g.releaseId, totalLength: 4000, offset, bytes: Uint8Array.of(i & 0xff, i >> 8).subarray(0, Math.min(2, 4000 - offset)) }, g.id, FROM);
    if (r.bytes > 2 * 4000 + BUCKET_SLACK) return t.fail(`bucket at ${r.bytes} bytes`);
  }
  t.is(r.buckets, 1);
  // Poison at a genuine offset: at most VERSIONS kept, and the genuine copy still completes after it.
  for (let i = 0; i < 100; i++) r.add({ ...g.copy[0]!, bytes: new Uint8Array(1000).fill(i) }, g.id, FROM);
  t.true(VERSIONS >= 2);
  const done = g.copy.map((f) => r.add(f, g.id, FROM));
  t.like(done[done.length - 1], { kind: 'complete' });
});

test('junk under thousands of release ids from the genuine sender (one MQTT broker): a genuine copy completes, memory stays bounded', (t) => {
  fc.assert(fc.property(
    genuineArb,
    fc.array(fc.record({ id: fc.uint8Array({ minLength: 8, maxLength: 8 }), length: fc.integer({ min: 1, max: 200_000 }) }), { minLength: 100, maxLength: 2000 }),
    fc.nat(),
    (g, junk, at) => {
      const r = new ManifestReassembly(MAX_MANIFEST);
      const add = (f: ManifestFragment): ReassemblyStep => r.add(f, hex(f.releaseId), FROM);
      // Part of a genuine copy heard before the junk (what a round's first copy leaves behind).
      const before = g.copy.slice(0, at % (g.copy.length + 1));
      for (const f of before) add(f);
      for (const j of junk) {
        add({ type: 1, releaseId: j.id, totalLength: j.length, offset: 0, bytes: new Uint8Array(Math.min(j.length, 1200)) });
        if (!checkBounds(r)) return false;
      }
      const results = g.copy.map(add);
      return results.some((s) => s.kind === 'complete' && Buffer.compare(s.signed, g.signed) === 0);
    },
  ), { numRuns: 50 });
  t.pass();
});

test('a genuine manifest heard through several senders assembles once; a mismatching complete tiling is counted as manifest-mismatch', (t) => {
  const g = genuine(new Uint8Array(2500).map((_, i) => i), 1000);
  const r = new ManifestReassembly(MAX_MANIFEST);
  const wrong = { ...g.copy[1]!, bytes: new Uint8Array(1000) };
  t.like(r.add(g.copy[0]!, g.id, 'a'), { kind: 'incomplete' });
  t.like(r.add(wrong, g.id, 'b'), { kind: 'incomplete' });
  t.like(r.add(g.copy[2]!, g.id, 'a'), { kind: 'dropped', reason: 'manifest-mismatch' });
  t.like(r.add(g.copy[1]!, g.id, 'a'), { kind: 'complete' });
  t.is(r.buckets, 0);
  t.like(r.add({ ...g.copy[0]!, totalLength: MAX_MANIFEST + 1 }, g.id, 'a'), { kind: 'dropped', reason: 'limit-exceeded' });
});
