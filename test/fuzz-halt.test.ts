/**
 * Property/fuzz tests of the HALT datagram (SPEC §17.5) at the receiver, as
 * fuzz-root.test.ts does for roots: arbitrary bytes after a HALT header, cbor-x
 * encodings of arbitrary values signed by the trusted key, and mutations of a
 * real halt datagram.
 *
 * Contract: push() never throws; each datagram is either one counted drop or
 * the one genuine halt, whose release is the one its signed bytes name; a flood
 * of distinct bad halts neither grows without bound in time nor masks the
 * genuine one.
 */
import test from 'ava';
import fc from 'fast-check';
import { encodeCbor, Tag } from '../protocol/cbor.js';
import { signCoseSign1With } from '../protocol/cose-sign1.js';
import * as ed25519 from '../protocol/ed25519.js';
import { openSignedHalt, signHaltWith } from '../protocol/halt.js';
import { decodePacket, encodeHaltPacket, HEADER_SIZE, PacketType } from '../protocol/packet.js';
import { seedSigner } from '../protocol/signer.js';
import { Receiver } from '../device-agent/receiver/receiver.js';
import { eq, fixedKey, mutate, run, type Mutation } from './helpers/fuzz.js';
import { T0 } from './helpers/roots.js';

await ed25519.ready();
const key = fixedKey(31);
const RELEASE = Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8);
const genuineSigned = await signHaltWith({ model: 'cam', releaseId: RELEASE, issued: T0 }, seedSigner(key.seed));
const genuine = encodeHaltPacket({ releaseId: RELEASE, signed: genuineSigned });

const dropsOf = (r: Receiver): number => Object.values(r.stats.dropped).reduce((n, x) => n + (x ?? 0), 0);

/** Pushes `d`: exactly one drop, or the genuine halt as its one event. */
function oneOutcome(r: Receiver, d: Uint8Array): 'drop' | 'halt' {
  const before = dropsOf(r);
  const events = r.push(d, T0);
  const dropped = dropsOf(r) - before;
  if (events.length === 0 && dropped === 1) return 'drop';
  const e = events[0];
  if (events.length === 1 && dropped === 0 && e?.kind === 'halt') {
    // Only the signed statement can be accepted, naming the release it signs.
    if (!eq(e.halt.signed, genuineSigned) || !eq(e.halt.halt.releaseId, RELEASE)) throw new Error('a halt other than the genuine one was accepted');
    return 'halt';
  }
  throw new Error(`${events.length} events and ${dropped} drops for one datagram`);
}

const header = (releaseId: Uint8Array): Uint8Array => Uint8Array.from([0x46, 0x57, 1, PacketType.Halt, ...releaseId]);

/** Values cbor-x encodes: what a hostile signer (a trusted key, compromised or careless) could put in a halt. */
const value: fc.Arbitrary<unknown> = fc.letrec<{ v: unknown }>((tie) => ({
  v: fc.oneof({ depthSize: 'small', maxDepth: 3 },
    fc.integer(), fc.constantFrom(0, 1, 2, 3, 4, -1, 2 ** 53), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    fc.uint8Array({ maxLength: 20 }), fc.constant(RELEASE), fc.string({ maxLength: 70 }), fc.constantFrom('cam', '__proto__', ''),
    fc.boolean(), fc.constant(null), fc.double(),
    fc.array(tie('v'), { maxLength: 4 }),
    fc.array(fc.tuple(fc.integer({ min: -1, max: 6 }), tie('v')), { maxLength: 6 }).map((pairs) => new Map(pairs)),
  ),
})).v;

test('arbitrary bytes in a HALT datagram: one counted drop each, never an exception', (t) => {
  const r = new Receiver({ model: 'cam', trusted: [key] });
  fc.assert(fc.property(fc.uint8Array({ minLength: 8, maxLength: 8 }), fc.oneof(fc.uint8Array({ maxLength: 600 }), value.map((v) => encodeCbor(v)), value.map((v) => encodeCbor(new Tag(v, 18)))), (id, body) => {
    if (oneOutcome(r, Uint8Array.from([...header(id), ...body])) !== 'drop') throw new Error('random bytes were a halt');
  }), run(3000));
  t.pass();
});

test('halts signed by the trusted key over arbitrary payloads: only a well-formed halt of this model counts', async (t) => {
  const signer = seedSigner(key.seed);
  const payloads = fc.sample(fc.oneof(value, fc.tuple(value, fc.integer({ min: 1, max: 4 })).map(([v, k]) => {
    const m = new Map<number, unknown>([[1, 1], [2, 'cam'], [3, RELEASE], [4, T0]]);
    m.set(k, v);
    return m;
  })), { seed: 20261125, numRuns: 400 });
  const r = new Receiver({ model: 'cam', trusted: [key] });
  let accepted = 0;
  for (const payload of payloads) {
    const signed = await signCoseSign1With(encodeCbor(payload), signer);
    if (signed.length > 512) continue;
    const before = dropsOf(r);
    const events = r.push(encodeHaltPacket({ releaseId: RELEASE, signed }), T0);
    if (events.length > 0) {
      accepted++;
      const h = events[0]!.kind === 'halt' ? events[0]!.halt.halt : undefined;
      t.truthy(h);
      t.true(h!.model === 'cam' && eq(h!.releaseId, RELEASE) && Number.isSafeInteger(h!.issued));
    } else {
      t.is(dropsOf(r) - before, 1);
    }
  }
  t.log(`${accepted} of ${payloads.length} signed payloads were well-formed halts`);
});

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ op: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ op: fc.constant('truncate' as const), to: fc.nat() }),
  fc.record({ op: fc.constant('extend' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
  fc.record({ op: fc.constant('delete' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 16 }) }),
  fc.record({ op: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
);

test('mutations of a genuine HALT datagram: the genuine one or a drop, and a flood of them never masks it', (t) => {
  const r = new Receiver({ model: 'cam', trusted: [key] });
  let halts = 0;
  fc.assert(fc.property(fc.array(mutation, { minLength: 1, maxLength: 3 }), (ms) => {
    const d = ms.reduce((x, m) => mutate(x, m), genuine);
    if (d.length >= HEADER_SIZE && d[3] === PacketType.Halt && d[0] === 0x46) {
      const p = (() => {
        try {
          return decodePacket(d);
        } catch {
          return undefined;
        }
      })();
      // A mutation that leaves the signed bytes and the header's id whole is the genuine halt again.
      if (p?.type === PacketType.Halt && eq(p.signed, genuineSigned) && eq(p.releaseId, RELEASE)) return;
    }
    if (oneOutcome(r, d) === 'halt') halts++;
  }), run(3000));
  t.is(halts, 0, 'no mutated datagram was a halt');
  const started = performance.now();
  t.is(oneOutcome(r, genuine), 'halt', 'the genuine halt still comes through after the flood');
  t.true(performance.now() - started < 100);
  t.is(oneOutcome(r, genuine), 'drop', 'and its repeats are one hash each');
  t.deepEqual(openSignedHalt(genuineSigned, [key]).halt.releaseId, RELEASE);
});
