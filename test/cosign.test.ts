/**
 * Co-signed manifests (RFC 9338 countersignatures in the COSE_Sign1
 * unprotected header) and root delegations with a threshold above 1: what
 * counts toward the threshold, what does not, and hostile headers.
 */
import test from 'ava';
import fc from 'fast-check';
import { encodeCbor, Tag } from '../protocol/cbor.js';
import { addCountersignature, COSE_SIGN1_TAG, decodeCoseSign1, MAX_COSIGNATURES } from '../protocol/cose-sign1.js';
import * as ed25519 from '../protocol/ed25519.js';
import { FwcastError, InvalidSignatureError } from '../protocol/errors.js';
import { openSignedManifest, type Manifest } from '../protocol/manifest.js';
import { authorizeRelease, trustRoot } from '../protocol/root.js';
import { seedSigner } from '../protocol/signer.js';
import { fixedKey, typed } from './helpers/fuzz.js';
import { signedRoot, T0 } from './helpers/roots.js';
import { buildRelease } from '../protocol/release.js';

await ed25519.ready();
const [r1, p1, p2, p3, outsider] = [1, 21, 22, 23, 99].map(fixedKey) as Array<ReturnType<typeof fixedKey>>;
const trustedKeys = [p1!, p2!, p3!].map((k) => ({ publicKey: k.publicKey, kid: k.kid }));
const release = buildRelease({ image: new Uint8Array(3000).fill(7), seed: p1!.seed, model: 'sensor', version: '1', seq: 5, created: T0 });
const reason = (f: () => unknown): string => {
  try {
    f();
    return 'accepted';
  } catch (err) {
    if (err instanceof FwcastError) return err.reason;
    throw err;
  }
};

test('a co-signature verifies, changes the release id, keeps the payload and first signature, and counts once per key', async (t) => {
  const once = await addCountersignature(release.signed, seedSigner(p2!.seed));
  const twice = await addCountersignature(once, seedSigner(p3!.seed));
  const a = decodeCoseSign1(release.signed);
  const b = decodeCoseSign1(twice);
  t.deepEqual([b.payload, b.signature, b.protectedBytes], [a.payload, a.signature, a.protectedBytes]);
  t.deepEqual(b.countersignatures.map((c) => c.kid), [p2!.kid, p3!.kid]);
  const v = openSignedManifest(twice, trustedKeys);
  t.deepEqual(v.cosigners, [p2!.kid, p3!.kid]);
  t.notDeepEqual(v.releaseId, openSignedManifest(release.signed, trustedKeys).releaseId, 'the signed bytes changed');
  // The same key again, or the first signer, is refused at signing.
  await t.throwsAsync(addCountersignature(once, seedSigner(p2!.seed)), { instanceOf: InvalidSignatureError });
  await t.throwsAsync(addCountersignature(once, seedSigner(p1!.seed)), { instanceOf: InvalidSignatureError });
});

test('co-signatures that do not count: unknown key, broken signature, copied onto another manifest', async (t) => {
  const byOutsider = await addCountersignature(release.signed, seedSigner(outsider!.seed));
  t.deepEqual(openSignedManifest(byOutsider, trustedKeys).cosigners, [], 'a key the verifier does not know');
  const good = await addCountersignature(release.signed, seedSigner(p2!.seed));
  const cose = decodeCoseSign1(good);
  const flipped = Uint8Array.from(cose.countersignatures[0]!.signature);
  flipped[0]! ^= 1;
  const rebuilt = (payload: Uint8Array, signature: Uint8Array, cs: Uint8Array): Uint8Array =>
    encodeCbor(new Tag([cose.protectedBytes, new Map([[11, [[cose.countersignatures[0]!.protectedBytes, new Map(), cs]]]]), payload, signature], COSE_SIGN1_TAG));
  t.deepEqual(openSignedManifest(rebuilt(cose.payload, cose.signature, flipped), trustedKeys).cosigners, [], 'a flipped bit');
  // p2's co-signature moved onto another release signed by p1: it covers the other payload and signature.
  const other = buildRelease({ image: new Uint8Array(3000).fill(8), seed: p1!.seed, model: 'sensor', version: '2', seq: 6, created: T0 });
  const o = decodeCoseSign1(other.signed);
  t.deepEqual(openSignedManifest(rebuilt(o.payload, o.signature, cose.countersignatures[0]!.signature), trustedKeys).cosigners, []);
});

test('a delegation with threshold 2 authorizes a release only with a co-signature by a second key of that delegation', async (t) => {
  const root = trustRoot(await signedRoot({ version: 1, keys: [r1!], delegations: [{ keys: [p1!, p2!], models: ['sensor'], threshold: 2 }, { keys: [p3!], models: ['sensor'] }] }, [r1!]));
  const m: Manifest = openSignedManifest(release.signed, trustedKeys).manifest;
  const judge = async (signed: Uint8Array): Promise<string> => {
    const v = openSignedManifest(signed, trustedKeys);
    return reason(() => authorizeRelease(root, m, v.kid, T0, v.cosigners));
  };
  t.is(await judge(release.signed), 'delegation-threshold', 'p1 alone');
  t.is(await judge(await addCountersignature(release.signed, seedSigner(p3!.seed))), 'delegation-threshold', 'p3 is trusted, but not a key of that delegation');
  t.is(await judge(await addCountersignature(release.signed, seedSigner(outsider!.seed))), 'delegation-threshold');
  t.is(await judge(await addCountersignature(release.signed, seedSigner(p2!.seed))), 'accepted');
});

test('hostile unprotected headers: other labels, wrong shapes, too many co-signatures give a typed error or a value, never a crash', (t) => {
  const cose = decodeCoseSign1(release.signed);
  const withUnprotected = (u: unknown): Uint8Array => encodeCbor(new Tag([cose.protectedBytes, u, cose.payload, cose.signature], COSE_SIGN1_TAG));
  t.is(reason(() => decodeCoseSign1(withUnprotected(new Map([[4, new Uint8Array(8)]])))), 'malformed', 'a kid outside the signed header');
  t.is(reason(() => decodeCoseSign1(withUnprotected(new Map([[11, []]])))), 'malformed');
  const cs = [protectedFor(p2!.kid), new Map(), new Uint8Array(64)];
  t.is(reason(() => decodeCoseSign1(withUnprotected(new Map([[11, cs]])))), 'accepted', 'one countersignature, not in an array (RFC 9338 allows it)');
  t.is(reason(() => decodeCoseSign1(withUnprotected(new Map([[11, Array.from({ length: MAX_COSIGNATURES + 1 }, () => cs)]])))), 'malformed');
  const value = fc.oneof(fc.uint8Array({ maxLength: 40 }), fc.integer(), fc.string({ maxLength: 20 }), fc.constant(new Map()), fc.constant(protectedFor(p2!.kid)));
  const header = fc.oneof(
    fc.array(fc.tuple(fc.integer({ min: -2, max: 14 }), value), { maxLength: 3 }).map((e) => new Map(e)),
    fc.array(fc.tuple(value, value, value), { maxLength: 20 }).map((list) => new Map([[11, list]])),
    fc.tuple(value, value, value).map((one) => new Map([[11, one]])),
  );
  fc.assert(fc.property(header, (u) => {
    const r = typed(() => openSignedManifest(withUnprotected(u), trustedKeys));
    if (r.ok && r.value.cosigners.length > 0) throw new Error('a made-up co-signature counted');
  }), { numRuns: 800 });
  t.pass();
});

function protectedFor(kid: Uint8Array): Uint8Array {
  return encodeCbor(new Map<number, unknown>([[1, -8], [4, kid]]));
}
