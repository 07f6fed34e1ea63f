/**
 * Property/fuzz tests of the agent's receive state machine (issue "Hostile
 * networks"): device-agent/receiver/receiver.ts Receiver.push fed arbitrary datagrams,
 * forged manifests and mutated real datagrams, interleaved with a genuine
 * release's carousel.
 *
 * Contract: push never throws; every datagram that does not parse, or names a
 * release other than the one being received, is counted in stats.dropped at
 * once; no forged symbol reaches the FEC decoder; and the genuine image is
 * still rebuilt, byte for byte, from the genuine datagrams.
 */
import test from 'ava';
import fc from 'fast-check';
import { Receiver, type ReceiverEvent } from '../device-agent/receiver/receiver.js';
import { encodeCbor } from '../protocol/cbor.js';
import { signCoseSign1 } from '../protocol/cose-sign1.js';
import * as ed25519 from '../protocol/ed25519.js';
import { FwcastError } from '../protocol/errors.js';
import { encodeManifest, releaseIdOf } from '../protocol/manifest.js';
import { decodePacket, encodeManifestFragment, PacketType, type Packet } from '../protocol/packet.js';
import { Carousel } from '../carousel/carousel.js';
import { buildRelease, type Release } from '../server/release.js';
import { makeImage, type TestKey } from './helpers/fixtures.js';
import { cat, eq, fixedKey, hexOf, mutate, run, type Mutation } from './helpers/fuzz.js';

const NOW = 1_800_000_100;
const MODEL = 'fuzz-rx';

let key: TestKey;
let stranger: TestKey;
let release: Release;
let genuineId: string;
/** Two rounds of the genuine carousel: enough to complete on their own. */
let genuine: Uint8Array[] = [];
/** The two rounds that follow, for the recovery phase. */
let more: Uint8Array[] = [];
let genuineSet: Set<string>;
/** An older release (seq 4) signed by the same trusted key: replaying it is a rollback attempt. */
let older: Release;
let olderDatagrams: Uint8Array[] = [];
/** Index in `genuine` of the datagram whose push makes the receiver accept the release. */
let acceptIndex = -1;
/** The genuine manifest fragments. */
let fragments: Uint8Array[] = [];

test.before(async () => {
  await ed25519.ready();
  key = fixedKey(1);
  stranger = fixedKey(2);
  release = buildRelease({
    image: makeImage(100_000, 9), seed: key.seed, model: MODEL, version: '2.0.0', seq: 5, created: 1_800_000_000, expires: 1_900_000_000,
    segmentSize: 32 * 1208, repairPercent: 50,
  });
  genuineId = hexOf(release.releaseId);
  const carousel = new Carousel({ ...release, manifestEvery: 20 });
  const n = Math.ceil(carousel.roundLength * 2);
  genuine = Array.from({ length: n }, () => carousel.next());
  more = Array.from({ length: n }, () => carousel.next());
  genuineSet = new Set([...genuine, ...more].map(hexOf));
  older = buildRelease({
    image: makeImage(9_000, 3), seed: key.seed, model: MODEL, version: '1.9.0', seq: 4, created: 1_700_000_000, expires: 1_900_000_000, repairPercent: 20,
  });
  const olderCarousel = new Carousel({ ...older, manifestEvery: 5 });
  olderDatagrams = Array.from({ length: Math.ceil(olderCarousel.roundLength) }, () => olderCarousel.next());
  fragments = carousel.manifestFragments;
  const r = new Receiver({ model: MODEL, trusted: [key] });
  acceptIndex = genuine.findIndex((d) => r.push(d, NOW).some((e) => e.kind === 'accepted'));
  r.close();
});

function tryDecode(d: Uint8Array): Packet | undefined {
  try {
    return decodePacket(d);
  } catch (err) {
    if (!(err instanceof FwcastError)) throw err;
    return undefined;
  }
}

const droppedTotal = (r: Receiver): number => Object.values(r.stats.dropped).reduce((a, b) => a + b, 0);

interface Outcome {
  image: Uint8Array;
  complete: boolean;
  accepted: string[];
  rejected: Array<{ releaseId: string; error: unknown }>;
}

/** Pushes datagrams one by one, checking the per-datagram accounting; returns what came out. */
function pushAll(r: Receiver, datagrams: readonly Uint8Array[], out: Outcome): void {
  for (const d of datagrams) {
    const before = { datagrams: r.stats.datagrams, dropped: droppedTotal(r), accepted: r.stats.symbolsAccepted, duplicates: r.stats.duplicates };
    const current = r.current ? hexOf(r.current.releaseId) : undefined;
    let events: ReceiverEvent[];
    try {
      events = r.push(d, NOW);
    } catch (err) {
      throw new Error(`Receiver.push threw ${String(err)} on ${hexOf(d.subarray(0, 48))}… (${d.length} bytes)`);
    }
    if (r.stats.datagrams !== before.datagrams + 1) throw new Error('stats.datagrams does not count every push');
    const p = tryDecode(d);
    const dropped = droppedTotal(r) - before.dropped;
    if (!p) {
      // Unparseable: dropped and counted exactly once, and nothing else moves.
      if (dropped !== 1 || events.length !== 0 || r.stats.symbolsAccepted !== before.accepted || r.stats.duplicates !== before.duplicates) {
        throw new Error(`unparseable datagram not counted as exactly one drop (dropped +${dropped}): ${hexOf(d.subarray(0, 48))}`);
      }
    } else if (p.type !== PacketType.Manifest && hexOf(p.releaseId) !== current) {
      // A symbol or AUTH datagram of a release not being received: one drop, no events.
      if (dropped !== 1 || events.length !== 0) throw new Error(`datagram of unknown release ${hexOf(p.releaseId)} not counted as one drop`);
    }
    for (const e of events) {
      if (e.kind === 'accepted') out.accepted.push(hexOf(e.release.releaseId));
      if (e.kind === 'rejected') out.rejected.push({ releaseId: e.releaseId, error: e.error });
      if (e.kind === 'store-error' || e.kind === 'store-ok') throw new Error(`a memory assembler reported on a store: ${e.kind}`);
      if (e.kind === 'root' || e.kind === 'root-refused') throw new Error(`a receiver without a root reported on one: ${e.kind}`);
      if (e.kind === 'halt') throw new Error('a forged halt was accepted');
      const id = hexOf((e.kind === 'rejected' ? { releaseId: Buffer.from(e.releaseId, 'hex') } : e.release).releaseId);
      if (e.kind === 'segment') {
        const source = id === genuineId ? release : id === hexOf(older.releaseId) ? older : undefined;
        if (!source) throw new Error('a segment of a forged release was delivered');
        const bytes = e.bytes!;
        if (!eq(bytes, source.image.subarray(e.segment.offset, e.segment.offset + bytes.length))) throw new Error('a segment was delivered with the wrong bytes');
        if (source === release) out.image.set(bytes, e.segment.offset);
      }
      if (e.kind === 'complete' && id === genuineId) out.complete = true;
    }
  }
}

/** Global accounting that holds whatever was pushed: no datagram is counted twice. */
function checkTotals(r: Receiver): void {
  const s = r.stats;
  const counted = droppedTotal(r) + s.symbolsAccepted + s.duplicates + s.authChunksVerified;
  if (counted > s.datagrams) throw new Error(`more outcomes (${counted}) than datagrams (${s.datagrams}): ${JSON.stringify(s)}`);
  if (s.dropped['segment-digest-mismatch']) throw new Error('a decoded segment failed its digest: an unauthenticated symbol reached the decoder');
}

// ---------------------------------------------------------------------------
// Hostile datagrams
// ---------------------------------------------------------------------------

const u32 = fc.oneof(fc.nat({ max: 0xffffffff }), fc.constantFrom(0, 1, 2, 0xff, 0xffff, 0x7fffffff, 0xffffffff));
const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('u32' as const), at: fc.oneof(fc.constantFrom(12, 16, 17, 20), fc.nat()), value: u32 }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('truncate' as const), to: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('extend' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 32 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('splice' as const), at: fc.nat(), from: fc.nat(), start: fc.nat(), length: fc.nat({ max: 1300 }) }) },
);

/** Fragments `signed` as a carousel would, under the release id it hashes to (so it passes the id check). */
function fragmentsOf(signed: Uint8Array, size = 600): Uint8Array[] {
  const releaseId = releaseIdOf(signed);
  const out: Uint8Array[] = [];
  for (let offset = 0; offset < signed.length; offset += size) {
    out.push(encodeManifestFragment({ releaseId, totalLength: signed.length, offset, bytes: signed.subarray(offset, offset + size) }));
  }
  return out;
}

/** A hostile burst: one or more datagrams. */
const hostileArb: fc.Arbitrary<Uint8Array[]> = fc.oneof(
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 1500 }).map((d) => [d]) },
  // valid-looking header, with the genuine release id half of the time
  {
    weight: 3,
    arbitrary: fc.tuple(fc.constantFrom(1, 2, 3, 0, 4, 255), fc.boolean(), fc.uint8Array({ minLength: 8, maxLength: 8 }), fc.array(u32, { maxLength: 3 }), fc.uint8Array({ maxLength: 1300 }))
      .map(([type, ours, id, fields, body]) => {
        const head = new Uint8Array(12 + 4 * fields.length);
        head.set([0x46, 0x57, 1, type]);
        head.set(ours ? release.releaseId : id, 4);
        fields.forEach((f, i) => new DataView(head.buffer).setUint32(12 + 4 * i, f));
        return [cat(head, body)];
      }),
  },
  // mutated genuine datagrams (symbols, AUTH and manifest fragments alike)
  { weight: 6, arbitrary: fc.tuple(fc.nat(), fc.array(mutationArb, { minLength: 1, maxLength: 3 })).map(([i, ms]) => [ms.reduce((d, m) => mutate(d, m, genuine), genuine[i % genuine.length]!)]) },
  // replays: genuine datagrams again (any order), and an older genuinely signed release
  { weight: 1, arbitrary: fc.array(fc.nat(), { minLength: 1, maxLength: 8 }).map((is) => is.map((i) => genuine[i % genuine.length]!)) },
  { weight: 1, arbitrary: fc.tuple(fc.nat(), fc.integer({ min: 1, max: 40 })).map(([i, n]) => olderDatagrams.slice(i % olderDatagrams.length, (i % olderDatagrams.length) + n)) },
  // complete forged manifests under their own release ids: untrusted signer, tampered payload, random CBOR
  {
    weight: 1,
    arbitrary: fc.tuple(fc.constantFrom('stranger', 'tampered', 'random', 'trusted-garbage'), fc.uint8Array({ minLength: 1, maxLength: 200 }), fc.nat())
      .map(([kind, junk, at]) => {
        let signed: Uint8Array;
        if (kind === 'stranger') signed = signCoseSign1(encodeManifest(release.manifest), stranger.seed);
        else if (kind === 'tampered') { signed = Uint8Array.from(release.signed); signed[at % signed.length]! ^= 0x01; }
        else if (kind === 'trusted-garbage') signed = signCoseSign1(junk, key.seed);
        else signed = encodeCbor([junk, new Map(), junk, junk]);
        return fragmentsOf(signed);
      }),
  },
);

test('sanity: the genuine datagrams alone complete the image, with every counter consistent', (t) => {
  const r = new Receiver({ model: MODEL, trusted: [key] });
  const out: Outcome = { image: new Uint8Array(release.image.length), complete: false, accepted: [], rejected: [] };
  pushAll(r, genuine, out);
  t.true(out.complete);
  t.true(eq(out.image, release.image));
  t.deepEqual(out.accepted, [genuineId]);
  checkTotals(r);
  t.true(release.manifest.segments.length >= 3);
});

test('Receiver.push: hostile datagrams alone never throw; each is dropped at once unless it is a manifest fragment or belongs to the release under way', (t) => {
  fc.assert(fc.property(fc.array(hostileArb, { minLength: 1, maxLength: 40 }), (bursts) => {
    const r = new Receiver({ model: MODEL, trusted: [key] });
    const out: Outcome = { image: new Uint8Array(release.image.length), complete: false, accepted: [], rejected: [] };
    for (const burst of bursts) {
      // pushAll checks each one: unparseable, or not of the release under way → exactly one drop
      pushAll(r, burst, out);
    }
    checkTotals(r);
    // With no release installed, the older signed release is acceptable on its own; nothing else is.
    for (const id of out.accepted) if (id !== genuineId && id !== hexOf(older.releaseId)) throw new Error(`forged release ${id} accepted`);
    for (const e of out.rejected) if (!(e.error instanceof FwcastError)) throw new Error('rejection without a typed error');
    r.close();
  }), run(150));
  t.pass();
});

/**
 * Runs `genuine` with hostile bursts inserted at positions ≥ `from`, then the
 * following genuine rounds if needed; checks everything the contract promises.
 */
function interleaved(inserts: Array<[number, Uint8Array[]]>, from: number, stats: { completedDuring: number }): void {
  const stream: Uint8Array[] = [...genuine];
  // insert from the back so earlier positions stay meaningful
  const sorted = inserts.map(([at, burst]) => [from + (at % (genuine.length + 1 - from)), burst] as const).sort((a, b) => b[0] - a[0]);
  for (const [at, burst] of sorted) stream.splice(at, 0, ...burst);
  const r = new Receiver({ model: MODEL, trusted: [key] });
  const out: Outcome = { image: new Uint8Array(release.image.length), complete: false, accepted: [], rejected: [] };
  pushAll(r, stream, out);
  if (out.complete) stats.completedDuring++;
  // Recovery: the genuine carousel goes on, with no more hostile traffic.
  if (!out.complete) pushAll(r, more, out);
  checkTotals(r);
  if (!out.complete) throw new Error(`the genuine release did not complete; stats ${JSON.stringify(r.stats)}`);
  if (!eq(out.image, release.image)) throw new Error('completed with the wrong bytes');
  for (const id of out.accepted) if (id !== genuineId && id !== hexOf(older.releaseId)) throw new Error(`forged release ${id} accepted`);
  if (from > acceptIndex && out.accepted.some((id) => id !== genuineId)) throw new Error('an older release was accepted while a newer one was under way');
  const olderSet = new Set(olderDatagrams.map(hexOf));
  const genuineSymbols = stream.concat(more).filter((d) => (genuineSet.has(hexOf(d)) || olderSet.has(hexOf(d))) && d[3] === PacketType.Symbol).length;
  if (r.stats.symbolsAccepted + r.stats.duplicates > genuineSymbols) throw new Error('more symbols reached the decoder than genuine symbols were pushed');
  r.close();
}

test('Receiver.push: hostile datagrams interleaved with a genuine release under way: no throw, no forgery decoded, the image completes', (t) => {
  const stats = { completedDuring: 0 };
  fc.assert(fc.property(fc.array(fc.tuple(fc.nat(), hostileArb), { minLength: 1, maxLength: 60 }), (inserts) => {
    interleaved(inserts, acceptIndex + 1, stats);
  }), run(60));
  t.log(`completed without the recovery phase in ${stats.completedDuring} of 60 runs`);
  t.pass();
});

/** Mutated genuine manifest fragments: the datagrams a forger aims at the reassembly. */
const fieldMutation: fc.Arbitrary<Mutation> = fc.record({
  op: fc.constant('u32' as const),
  at: fc.constantFrom(12, 16), // total length, offset
  value: fc.oneof(u32, fc.integer({ min: -8, max: 8 }).map((d) => Math.max(0, (release?.signed.length ?? 0) + d))),
});
const fragmentHostile: fc.Arbitrary<Uint8Array[]> = fc.tuple(fc.nat(), fc.array(fc.oneof(mutationArb, fieldMutation), { minLength: 1, maxLength: 2 }))
  .map(([i, ms]) => [ms.reduce((d, m) => mutate(d, m, genuine), fragments[i % fragments.length]!)]);

// Regression (found by this property, fixed in the working tree while this
// suite was written): Receiver.#onFragment keyed a reassembly by release id
// alone and fixed its length from the first fragment seen, so ONE forged
// fragment with the genuine id and another total length, arriving before the
// genuine manifest, got every genuine fragment dropped as "malformed" and the
// release never installed. Shrunk counterexample: the genuine one-fragment
// manifest datagram with its total length (bytes 12..15) raised by one, pushed
// first; the regression test below pushes
//   4657 0101 <release id> <signed.length + 1, u32> 0000 0000 00
// then the genuine carousel.
test('Receiver.push: hostile datagrams anywhere, even before the genuine manifest, do not stop the release', (t) => {
  const stats = { completedDuring: 0 };
  fc.assert(fc.property(fc.array(fc.tuple(fc.oneof(fc.constant(0), fc.nat()), fc.oneof(hostileArb, fragmentHostile)), { minLength: 1, maxLength: 30 }), (inserts) => {
    interleaved(inserts, 0, stats);
  }), run(100));
  t.log(`completed without the recovery phase in ${stats.completedDuring} of 100 runs`);
  t.pass();
});

test('regression: one forged manifest fragment under the genuine release id (wrong total length) does not block the release', (t) => {
  // A forger who has seen the release id sends one fragment claiming a different total length.
  const forged = encodeManifestFragment({ releaseId: release.releaseId, totalLength: release.signed.length + 1, offset: 0, bytes: Uint8Array.of(0) });
  const r = new Receiver({ model: MODEL, trusted: [key] });
  const out: Outcome = { image: new Uint8Array(release.image.length), complete: false, accepted: [], rejected: [] };
  pushAll(r, [forged, ...genuine, ...more], out);
  t.true(out.complete, `stats ${JSON.stringify(r.stats)}`);
});

/** Pushes a forged manifest (fragments under its own id) and returns the time taken and the events. */
function pushForgedManifest(signed: Uint8Array): { ms: number; events: ReceiverEvent[]; r: Receiver } {
  const r = new Receiver({ model: MODEL, trusted: [key] });
  const start = performance.now();
  const events: ReceiverEvent[] = [];
  for (const d of fragmentsOf(signed, 1200)) events.push(...r.push(d, NOW));
  return { ms: performance.now() - start, events, r };
}

test('Receiver.push: forged manifests that make the parsers leak TypeError/RangeError are still dropped, counted and rejected', (t) => {
  // See fuzz-manifest.test.ts: a cbor-x record {toString: 1} as alg, and alg nested thousands of levels deep.
  const record = Buffer.from(`8454a101d9dfff8319e0008168746f537472696e6701a0405840${'00'.repeat(64)}`, 'hex');
  const deep = (depth: number): Uint8Array => {
    const nest = cat(new Uint8Array(depth).fill(0x81), [0x01]);
    const prot = cat([0xa1, 0x01], nest);
    return encodeCbor([prot, new Map(), new Uint8Array(0), new Uint8Array(64)]);
  };
  for (const signed of [record, ...[2000, 3000, 3250, 3500, 5000, 10_000].map(deep)]) {
    let result: ReturnType<typeof pushForgedManifest> | undefined;
    t.notThrows(() => { result = pushForgedManifest(signed); });
    const rejected = result!.events.filter((e) => e.kind === 'rejected');
    t.is(rejected.length, 1);
    t.true(rejected[0]!.kind === 'rejected' && rejected[0]!.error instanceof FwcastError);
    t.is(droppedTotal(result!.r), 1);
  }
});

// Regression: found by this suite, fixed while it was written (commit 8b48b2e:
// CBOR profile check before cbor-x, Object.hasOwn for limits). Was (see fuzz-
// manifest.test.ts): cbor-x decodes CBOR bignums (tag 2/3) in
// time quadratic in their length. A forged "manifest" that is just a bignum,
// fragmented under the release id it hashes to, reaches decodeCbor before any
// signature check: 100 kB cost ~0.7 s of synchronous CPU in Receiver.push, and
// 256 kB (DEFAULT_LIMITS.maxManifestSize, ~213 fragments of 1232 bytes) ~50 s,
// during which the agent's event loop is blocked. Each new forgery has a new
// release id, so the refused-release memory does not help.
test('regression: Receiver.push: a forged manifest holding a 100 kB CBOR bignum is dropped within 200 ms', (t) => {
  const bignum = cat([0xc2, 0x5a, 0x00, 0x01, 0x86, 0xa0], new Uint8Array(100_000).fill(0xff));
  const { ms, events } = pushForgedManifest(bignum);
  t.is(events.filter((e) => e.kind === 'rejected').length, 1);
  t.true(ms < 200, `Receiver.push spent ${ms.toFixed(0)} ms on one forged manifest`);
});
