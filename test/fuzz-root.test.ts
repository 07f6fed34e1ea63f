/**
 * Property/fuzz tests of the root-of-trust parsers (protocol/root.ts), as
 * fuzz-manifest.test.ts does for manifests: decodeSignedRoot, decodeRootChain,
 * trustRoot and verifyRootChain on arbitrary bytes, on cbor-x encodings of
 * arbitrary values, on root-shaped structures whose fields are replaced by
 * such values, and on mutations of a real signed root and chain.
 *
 * Contract: a value or a typed FwcastError, never another exception, within a
 * time budget; a mutated signed root is never trusted with a payload other
 * than the signed one.
 */
import test from 'ava';
import fc from 'fast-check';
import { encodeCbor, Tag } from '../protocol/cbor.js';
import * as ed25519 from '../protocol/ed25519.js';
import { decodeRootChain, decodeSignedRoot, encodeRootChain, trustRoot, verifyRootChain } from '../protocol/root.js';
import { eq, fixedKey, mutate, run, typed, type Mutation } from './helpers/fuzz.js';
import { signedRoot, T0 } from './helpers/roots.js';

await ed25519.ready();
const [r1, r2, r3] = [1, 2, 3].map(fixedKey) as [ReturnType<typeof fixedKey>, ReturnType<typeof fixedKey>, ReturnType<typeof fixedKey>];
const pub = fixedKey(11);
const v1 = await signedRoot({ version: 1, keys: [r1, r2], threshold: 1, delegations: [{ keys: [pub], models: ['cam/*'], notAfter: T0 + 10 }] }, [r1]);
const v2 = await signedRoot({ version: 2, keys: [r2, r3], threshold: 2, delegations: [{ keys: [pub], models: ['cam'] }] }, [r1, r2, r3]);
const trusted = trustRoot(v1);
const v1Payload = decodeSignedRoot(v1).payload;
const v2Payload = decodeSignedRoot(v2).payload;

const MAX_MS = 200;
function timed<T>(f: () => T): ReturnType<typeof typed<T>> {
  const start = performance.now();
  const r = typed(f);
  const ms = performance.now() - start;
  if (ms > MAX_MS) {
    const again = performance.now();
    typed(f);
    if (performance.now() - again > MAX_MS) throw new Error(`took ${ms.toFixed(0)} ms (budget ${MAX_MS})`);
  }
  return r;
}

/** Values cbor-x encodes: what a hostile encoder could send inside well-formed CBOR. */
const value: fc.Arbitrary<unknown> = fc.letrec<{ v: unknown }>((tie) => ({
  v: fc.oneof({ depthSize: 'small', maxDepth: 4 },
    fc.integer(), fc.constantFrom(0, 1, 2, -8, 98, 2 ** 53, -1), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    fc.uint8Array({ maxLength: 70 }), fc.constantFrom(32, 64, 8).chain((n) => fc.uint8Array({ minLength: n, maxLength: n })),
    fc.string({ maxLength: 20 }), fc.constantFrom('cam/*', '*', 'cam', 'application/fwcast-root+cbor', '__proto__'),
    fc.boolean(), fc.constant(null), fc.double(),
    fc.array(tie('v'), { maxLength: 4 }),
    fc.array(fc.tuple(fc.oneof(fc.integer({ min: -2, max: 8 }), fc.string({ maxLength: 3 })), tie('v')), { maxLength: 5 }).map((pairs) => new Map(pairs)),
  ),
})).v;

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ op: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ op: fc.constant('u32' as const), at: fc.nat(), value: fc.nat() }),
  fc.record({ op: fc.constant('truncate' as const), to: fc.nat() }),
  fc.record({ op: fc.constant('extend' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
  fc.record({ op: fc.constant('delete' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 16 }) }),
  fc.record({ op: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
  fc.record({ op: fc.constant('copy' as const), from: fc.nat(), at: fc.nat(), length: fc.integer({ min: 1, max: 40 }) }),
);

const allParsers = (b: Uint8Array): void => {
  timed(() => decodeSignedRoot(b));
  timed(() => decodeSignedRoot(b, { unsigned: true }));
  timed(() => trustRoot(b));
  timed(() => decodeRootChain(b));
  timed(() => verifyRootChain(trusted, [b], T0));
};

test('arbitrary bytes and cbor-x values: a value or a typed error', (t) => {
  fc.assert(fc.property(fc.oneof(fc.uint8Array({ maxLength: 300 }), value.map((v) => encodeCbor(v)), value.map((v) => encodeCbor(new Tag(v, 98)))), (b) => {
    allParsers(b);
  }), run(1500));
  t.pass();
});

test('root-shaped structures with fields replaced: a value or a typed error', (t) => {
  const s = decodeSignedRoot(v1);
  const real = [s.bodyProtected, new Map(), s.payload, s.signatures.map((x) => [x.protectedBytes, new Map(), x.signature])] as unknown[];
  const payloadMap = new Map<number, unknown>([[1, 1], [2, 2], [3, T0], [4, [r1.publicKey]], [5, 1], [6, [new Map<number, unknown>([[1, [pub.publicKey]], [3, ['cam']]])]]]);
  fc.assert(fc.property(fc.integer({ min: 0, max: 3 }), value, fc.integer({ min: 1, max: 7 }), value, fc.boolean(), (field, replacement, payloadKey, payloadValue, inPayload) => {
    let doc: unknown[];
    if (inPayload) {
      const p = new Map(payloadMap);
      p.set(payloadKey, payloadValue);
      doc = [real[0], real[1], encodeCbor(p), real[3]];
    } else {
      doc = [...real];
      doc[field] = replacement;
    }
    const bytes = encodeCbor(new Tag(doc, 98));
    allParsers(bytes);
    const trustedNow = typed(() => trustRoot(bytes));
    // Only the signed payload can ever be trusted.
    if (trustedNow.ok) t.true(eq(trustedNow.value.signed.payload, v1Payload));
  }), run(1500));
  t.pass();
});

test('mutations of a real signed root and chain never trust other content', (t) => {
  const chain = encodeRootChain([v1, v2]);
  fc.assert(fc.property(fc.array(mutation, { minLength: 1, maxLength: 3 }), (ms) => {
    const root = ms.reduce((d, m) => mutate(d, m), v1);
    allParsers(root);
    const r = typed(() => trustRoot(root));
    if (r.ok) t.true(eq(r.value.signed.payload, v1Payload));
    const c = ms.reduce((d, m) => mutate(d, m), chain);
    const walked = typed(() => verifyRootChain(trusted, decodeRootChain(c), T0));
    if (walked.ok && walked.value.applied.length > 0) t.true(eq(walked.value.root.signed.payload, v2Payload));
  }), run(1500));
  t.pass();
});
