/**
 * Halts (protocol/halt.ts, SPEC §17.5) at the receiver: a halt signed by a key
 * that may sign the model's releases stops exactly the release it names; any
 * other is counted and changes nothing.
 */
import test from 'ava';
import * as ed25519 from '../protocol/ed25519.js';
import { decodeHalt, encodeHalt, MAX_HALT_SIZE, openSignedHalt, signHaltWith, type Halt } from '../protocol/halt.js';
import { hex } from '../protocol/hex.js';
import { decodePacket, encodeHaltPacket, PacketType } from '../protocol/packet.js';
import { trustRoot } from '../protocol/root.js';
import { seedSigner } from '../protocol/signer.js';
import { signCoseSign1With } from '../protocol/cose-sign1.js';
import { encodeCbor } from '../protocol/cbor.js';
import { Receiver } from '../device-agent/receiver/receiver.js';
import { fixedKey } from './helpers/fuzz.js';
import { carouselOf, take, testRelease } from './helpers/releases.js';
import { signedRoot, T0 } from './helpers/roots.js';
import type { TestKey } from './helpers/fixtures.js';

await ed25519.ready();
const publisher = fixedKey(21);
const stranger = fixedKey(22);
const rootKey = fixedKey(23);
const otherModelKey = fixedKey(24);

const haltDatagram = async (key: TestKey, halt: Halt, headerId = halt.releaseId): Promise<Uint8Array> =>
  encodeHaltPacket({ releaseId: headerId, signed: await signHaltWith(halt, seedSigner(key.seed)) });

test('a signed halt round-trips through its datagram', async (t) => {
  const halt: Halt = { model: 'cam', releaseId: Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8), issued: T0 };
  const d = await haltDatagram(publisher, halt);
  const p = decodePacket(d);
  if (p.type !== PacketType.Halt) return t.fail();
  t.is(hex(p.releaseId), '0102030405060708');
  const v = openSignedHalt(p.signed, [publisher]);
  t.deepEqual(v.halt, halt);
  t.true(p.signed.length < MAX_HALT_SIZE / 2, `${p.signed.length} bytes`);
  t.throws(() => openSignedHalt(p.signed, [stranger]), { message: /not trusted/ });
  t.throws(() => decodePacket(new Uint8Array([...d.subarray(0, 12)])), { message: /empty/ });
  t.throws(() => decodePacket(new Uint8Array([...d, ...new Uint8Array(MAX_HALT_SIZE)])), { message: /exceeds/ });
  t.throws(() => decodeHalt(encodeCbor(new Map<number, unknown>([[1, 1], [2, 'cam'], [3, new Uint8Array(8)], [4, 1], [5, 'extra']]))), { message: /exactly keys 1-4/ });
  t.deepEqual(decodeHalt(encodeHalt(halt)), halt);
});

test('a trusted halt stops the release it names, and only that one', async (t) => {
  const older = testRelease(publisher, { model: 'cam', seq: 1 });
  const halted = testRelease(publisher, { model: 'cam', seq: 2, imageSeed: 2 });
  const r = new Receiver({ model: 'cam', trusted: [publisher] });
  // The transfer of the halted release is under way when the halt comes.
  const events = take(carouselOf(halted), 30).flatMap((d) => r.push(d, T0));
  t.true(events.some((e) => e.kind === 'accepted'));
  const halt = await haltDatagram(publisher, { model: 'cam', releaseId: halted.releaseId, issued: T0 });
  const heard = r.push(halt, T0);
  t.deepEqual(heard.map((e) => e.kind), ['halt']);
  t.is(r.current, undefined, 'the transfer ended');
  t.is(r.push(halt, T0).length, 0);
  t.is(r.stats.dropped['halt-repeat'], 1);
  // Its manifest and symbols are refused from now on; another release of the model is not.
  const again = take(carouselOf(halted), 200).flatMap((d) => r.push(d, T0));
  t.false(again.some((e) => e.kind === 'accepted'));
  t.true((r.stats.dropped.halted ?? 0) > 0);
  const other = take(carouselOf(older), 30).flatMap((d) => r.push(d, T0));
  t.true(other.some((e) => e.kind === 'accepted'), 'a release the halt does not name is received');
});

test('halts that must change nothing: untrusted, forged, another model, another release than the header', async (t) => {
  const release = testRelease(publisher, { model: 'cam', seq: 3 });
  const r = new Receiver({ model: 'cam', trusted: [publisher] });
  const id = release.releaseId;
  const real = await haltDatagram(publisher, { model: 'cam', releaseId: id, issued: T0 });
  const forged = Uint8Array.from(real);
  forged[forged.length - 1]! ^= 1;
  const bad = [
    await haltDatagram(stranger, { model: 'cam', releaseId: id, issued: T0 }),
    forged,
    await haltDatagram(publisher, { model: 'cam-v2', releaseId: id, issued: T0 }),
    // A genuine halt of another release, re-labelled with this release's id.
    await haltDatagram(publisher, { model: 'cam', releaseId: Uint8Array.of(9, 9, 9, 9, 9, 9, 9, 9), issued: T0 }, id),
    encodeHaltPacket({ releaseId: id, signed: await signCoseSign1With(encodeCbor(new Map([[1, 2]])), seedSigner(publisher.seed)) }),
  ];
  for (const d of bad) t.deepEqual(r.push(d, T0), []);
  t.like(r.stats.dropped, { 'unknown-key': 1, 'bad-signature': 1, 'wrong-model': 1, 'bad-halt': 2 });
  // None masks the real halt, which still comes through.
  t.deepEqual(r.push(real, T0).map((e) => e.kind), ['halt']);
  const events = take(carouselOf(release), 100).flatMap((d) => r.push(d, T0));
  t.false(events.some((e) => e.kind === 'accepted'));
});

test('with a root, a halt is authorized as the model\'s manifests are', async (t) => {
  const root = trustRoot(await signedRoot({ version: 1, keys: [rootKey], delegations: [{ keys: [publisher], models: ['cam'] }, { keys: [otherModelKey], models: ['door'] }] }, [rootKey]));
  const release = testRelease(publisher, { model: 'cam', seq: 4 });
  const r = new Receiver({ model: 'cam', trusted: [], root });
  const outOfScope = await haltDatagram(otherModelKey, { model: 'cam', releaseId: release.releaseId, issued: T0 });
  t.deepEqual(r.push(outOfScope, T0), []);
  t.is(r.stats.dropped['key-out-of-scope'], 1);
  t.deepEqual(r.push(await haltDatagram(publisher, { model: 'cam', releaseId: release.releaseId, issued: T0 }), T0).map((e) => e.kind), ['halt']);
});
