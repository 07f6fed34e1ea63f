/**
 * The root of trust's verifier (protocol/root.ts): TUF rotation over a chain
 * of signed roots, and release authorization by the current root. Each
 * refusal is asserted by its `reason`, the drop counter's name.
 */
import test from 'ava';
import { encodeCbor, Tag } from '../protocol/cbor.js';
import * as ed25519 from '../protocol/ed25519.js';
import { FwcastError } from '../protocol/errors.js';
import {
  authorizeRelease, decodeRootChain, decodeSignedRoot, encodeRootChain, ExpiredRootUpdateError, MAX_ROOT_CHAIN, mergeRootSignatures,
  modelMatches, signRootDetached, trustRoot, unsignedRoot, verifyRootChain, type TrustedRoot,
} from '../protocol/root.js';
import { seedSigner } from '../protocol/signer.js';
import { hex } from '../protocol/hex.js';
import { fixedKey } from './helpers/fuzz.js';
import { manifestFor, rootDocument, signedRoot, T0, YEAR } from './helpers/roots.js';

await ed25519.ready();
const [r1, r2, r3, r4, r5] = [1, 2, 3, 4, 5].map(fixedKey) as [ReturnType<typeof fixedKey>, ReturnType<typeof fixedKey>, ReturnType<typeof fixedKey>, ReturnType<typeof fixedKey>, ReturnType<typeof fixedKey>];
const pubA = fixedKey(11);
const pubB = fixedKey(12);
const pubC = fixedKey(13);

const reason = (f: () => unknown): string => {
  try {
    f();
  } catch (err) {
    if (err instanceof FwcastError) return err.reason;
    throw err;
  }
  return 'accepted';
};

// v1: root keys r1 r2 r3, 2 of 3; delegates pubA for "cam".
const v1 = await signedRoot({ version: 1, keys: [r1, r2, r3], threshold: 2, delegations: [{ keys: [pubA], models: ['cam'] }] }, [r1, r2]);
const trusted1 = (): TrustedRoot => trustRoot(v1);

test('a root round-trips: encode, sign detached, merge, decode', (t) => {
  const s = decodeSignedRoot(v1);
  t.is(s.root.version, 1);
  t.is(s.root.threshold, 2);
  t.deepEqual(s.root.delegations.map((d) => d.models), [['cam']]);
  t.is(s.signatures.length, 2);
  t.is(trustRoot(v1).signed.root.version, 1);
});

test('a provisioned root must carry a threshold of its own keys', async (t) => {
  const one = await signedRoot({ version: 1, keys: [r1, r2, r3], threshold: 2 }, [r1]);
  t.is(reason(() => trustRoot(one)), 'root-threshold');
});

test('one key signing twice counts once toward a threshold', async (t) => {
  const unsigned = unsignedRoot(rootDocument({ version: 1, keys: [r1, r2], threshold: 2 }));
  const a = await signRootDetached(unsigned, seedSigner(r1.seed));
  t.is(decodeSignedRoot(mergeRootSignatures(unsigned, [a, a])).signatures.length, 1, 'merging the same signature twice keeps one');
  // Listed twice on the wire anyway (a hand-made document): still one key.
  const s = decodeSignedRoot(mergeRootSignatures(unsigned, [a]));
  const sig = [s.signatures[0]!.protectedBytes, new Map(), s.signatures[0]!.signature];
  const doubled = encodeCbor(new Tag([s.bodyProtected, new Map(), s.payload, [sig, sig]], 98));
  t.is(decodeSignedRoot(doubled).signatures.length, 2);
  t.is(reason(() => trustRoot(doubled)), 'root-threshold');
});

test('rotation: v2 needs a threshold of v1 root keys and of its own', async (t) => {
  // v2 rotates root key r3 out for r4 and r5, threshold 2 of 4.
  const spec = { version: 2, keys: [r1, r2, r4, r5], threshold: 2, delegations: [{ keys: [pubB], models: ['cam'] }] };
  const good = await signedRoot(spec, [r1, r2, r4]);
  const r = verifyRootChain(trusted1(), [good], T0);
  t.is(r.root.signed.root.version, 2);
  t.is(r.applied.length, 1);
  t.deepEqual(r.root.formerKeys.map(hex), [hex(pubA.publicKey)]);

  const onlyNew = await signedRoot(spec, [r4, r5]);
  t.is(reason(() => verifyRootChain(trusted1(), [onlyNew], T0)), 'root-threshold', 'signed only by the new keys');
  const tooFewOld = await signedRoot(spec, [r1, r4, r5]);
  t.is(reason(() => verifyRootChain(trusted1(), [tooFewOld], T0)), 'root-threshold', 'one of the two old signatures needed');
  const tooFewOwn = await signedRoot({ ...spec, keys: [r4, r5], threshold: 2 }, [r1, r2, r4]);
  t.is(reason(() => verifyRootChain(trusted1(), [tooFewOwn], T0)), 'root-threshold', 'one of its own two needed');
});

test('catching up: v1 → v2 → v3 in one walk; intermediate expiry ignored', async (t) => {
  const v2 = await signedRoot({ version: 2, keys: [r4], threshold: 1, expires: T0 - 1, delegations: [{ keys: [pubB], models: ['cam'] }] }, [r1, r2, r4]);
  const v3 = await signedRoot({ version: 3, keys: [r5], threshold: 1, delegations: [{ keys: [pubC], models: ['cam'] }] }, [r4, r5]);
  const r = verifyRootChain(trusted1(), [v1, v2, v3], T0);
  t.deepEqual(r.applied.map((s) => s.root.version), [2, 3]);
  t.deepEqual(new Set(r.root.formerKeys.map(hex)), new Set([hex(pubA.publicKey), hex(pubB.publicKey)]));
  t.is(authorizeRelease(r.root, manifestFor('cam'), pubC.kid, T0).keys.length, 1);
  t.is(reason(() => authorizeRelease(r.root, manifestFor('cam'), pubA.kid, T0)), 'revoked-key');
  t.is(reason(() => authorizeRelease(r.root, manifestFor('cam'), pubB.kid, T0)), 'revoked-key');
  // The same chain again changes nothing.
  t.is(verifyRootChain(r.root, [v1, v2, v3], T0).applied.length, 0);
});

test('an older root replayed is a rollback; a gap is a bad root', async (t) => {
  const v2 = await signedRoot({ version: 2, keys: [r1, r2, r3], threshold: 2 }, [r1, r2]);
  const at2 = verifyRootChain(trusted1(), [v2], T0).root;
  t.is(reason(() => verifyRootChain(at2, [v1], T0)), 'root-rollback');
  const v3 = await signedRoot({ version: 3, keys: [r1, r2, r3], threshold: 2 }, [r1, r2]);
  t.is(reason(() => verifyRootChain(trusted1(), [v3], T0)), 'bad-root');
  t.is(reason(() => verifyRootChain(trusted1(), [v2, v2], T0)), 'bad-root', 'versions must increase');
});

test('an update whose newest root has expired is refused as root-expired, with the verified root for the store', async (t) => {
  const v2 = await signedRoot({ version: 2, keys: [r1, r2, r3], threshold: 2, expires: T0 }, [r1, r2]);
  const err = t.throws(() => verifyRootChain(trusted1(), [v2], T0), { instanceOf: ExpiredRootUpdateError });
  t.is(err!.reason, 'root-expired');
  t.is(err!.result.root.signed.root.version, 2);
  t.is(reason(() => authorizeRelease(err!.result.root, manifestFor('cam'), pubA.kid, T0)), 'root-expired');
});

test('an endless chain is refused before any signature is checked', (t) => {
  const chain = Array.from({ length: MAX_ROOT_CHAIN + 1 }, () => new Uint8Array([0xff]));
  t.is(reason(() => verifyRootChain(trusted1(), chain, T0)), 'root-chain-too-long');
  t.is(reason(() => decodeRootChain(encodeRootChain(chain))), 'root-chain-too-long');
});

test('authorization: scope, prefixes, windows, thresholds, foreign keys', async (t) => {
  const root = trustRoot(await signedRoot({
    version: 1, keys: [r1], delegations: [
      { keys: [pubA], models: ['cam/*', 'gateway'] },
      { keys: [pubB], models: ['cam/indoor'], notBefore: T0, notAfter: T0 + 100 },
      { keys: [pubC, r5], models: ['sensor'], threshold: 2, name: 'two-man' },
    ],
  }, [r1]));
  const ok = (model: string, key: typeof pubA, now = T0): string => reason(() => authorizeRelease(root, manifestFor(model), key.kid, now));
  t.is(ok('cam/indoor', pubA), 'accepted');
  t.is(ok('gateway', pubA), 'accepted');
  t.is(ok('cam', pubA), 'key-out-of-scope', '"cam/*" does not cover "cam"');
  t.is(ok('camera/x', pubA), 'key-out-of-scope');
  t.is(ok('cam/indoor', pubB, T0 + 99), 'accepted');
  t.is(ok('cam/indoor', pubB, T0 + 100), 'delegation-expired');
  t.is(ok('cam/indoor', pubB, T0 - 1), 'delegation-not-yet-valid');
  t.is(ok('sensor', pubC), 'delegation-threshold');
  t.is(ok('cam/indoor', fixedKey(99)), 'unknown-key', 'a key of another root');
  t.is(ok('cam/indoor', pubA, T0 + YEAR), 'root-expired');
});

test('model patterns', (t) => {
  t.true(modelMatches('cam/*', 'cam/a'));
  t.true(modelMatches('cam/*', 'cam/a/b'));
  t.false(modelMatches('cam/*', 'cam/'));
  t.false(modelMatches('cam/*', 'cam'));
  t.true(modelMatches('cam', 'cam'));
  t.false(modelMatches('cam', 'cam/a'));
});

test('bad documents are refused as bad-root with the rule named', (t) => {
  const doc = rootDocument({ version: 1, keys: [r1] });
  t.throws(() => unsignedRoot({ ...doc, threshold: 2 }), { message: /threshold/ });
  t.throws(() => unsignedRoot({ ...doc, keys: [r1.publicKey, r1.publicKey] }), { message: /twice/ });
  t.throws(() => unsignedRoot({ ...doc, version: 0 }), { message: /version/ });
  t.throws(() => unsignedRoot({ ...doc, delegations: [{ keys: [pubA.publicKey], threshold: 1, models: ['*'] }] }), { message: /pattern/ });
  t.throws(() => unsignedRoot({ ...doc, delegations: [{ keys: [pubA.publicKey], threshold: 1, models: ['a'], notBefore: 5, notAfter: 5 }] }), { message: /notAfter/ });
  t.is(reason(() => decodeSignedRoot(unsignedRoot(doc))), 'bad-root', 'no signature at all');
});
