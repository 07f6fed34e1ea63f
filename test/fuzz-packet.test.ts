/**
 * Property/fuzz tests of the fixed-layout parsers (issue "Hostile networks"):
 * datagrams (protocol/packet.ts, every type including AUTH), AUTH chunk bodies
 * (protocol/auth.ts), OTI (protocol/oti.ts), the release-file header
 * (protocol/release-file.ts) and keys (protocol/keys.ts).
 *
 * The contract checked everywhere: a parser returns a value or throws a typed
 * FwcastError subclass, never anything else (no TypeError/RangeError leaks),
 * and what it returns is consistent with its input.
 *
 * Fixed seed and bounded run counts, so CI is reproducible: a failure prints
 * the seed and the shrunk counterexample; re-run with the same seed to replay.
 */
import test from 'ava';
import fc from 'fast-check';
import * as auth from '../protocol/auth.js';
import { CHUNK_HEADER_SIZE, decodeChunkBody, decodeParityBody, encodeChunkBody, MerkleTree, NODE_SIZE, verifyProof } from '../protocol/auth.js';
import * as ed25519 from '../protocol/ed25519.js';
import { FwcastError } from '../protocol/errors.js';
import {
  decodePrivateKeyPem, decodePublicKey, encodePrivateKeyPem, encodePublicKeyPem, keyId,
} from '../protocol/keys.js';
import { decodeOti, encodeOti, OTI_SIZE } from '../protocol/oti.js';
import * as packet from '../protocol/packet.js';
import {
  decodePacket, encodeManifestFragment, encodeSymbolPacket, HEADER_SIZE, MANIFEST_OVERHEAD, MAX_DATAGRAM, MAX_HALT_BYTES,
  PacketType, SYMBOL_OVERHEAD, type Packet,
} from '../protocol/packet.js';
import { decodeReleaseLayout, encodeReleaseHeader, MAX_RELEASE_HEADER_SIZE, RELEASE_MAGIC, RELEASE_MAGIC_V2 } from '../protocol/release-file.js';
import { Carousel } from '../carousel/carousel.js';
import { buildRelease } from '../server/release.js';
import { makeImage } from './helpers/fixtures.js';
import { eq, fixedKey, hexOf, mutate, run, typed, type Mutation } from './helpers/fuzz.js';

// AUTH (type 3) is read from the module at run time, so this file keeps
// working whatever the packet module exports.
const AUTH_TYPE: number | undefined = (PacketType as Record<string, number>)['Auth'];
const AUTH_OVERHEAD: number | undefined = (packet as Record<string, unknown>)['AUTH_OVERHEAD'] as number | undefined;
const MAX_AUTH_DEPTH: number = ((packet as Record<string, unknown>)['MAX_AUTH_DEPTH'] as number | undefined) ?? 24;
type AuthEncoder = (p: { releaseId: Uint8Array; leaf: number; path: Uint8Array[]; body: Uint8Array }) => Uint8Array;
const encodeAuthPacket = (packet as Record<string, unknown>)['encodeAuthPacket'] as AuthEncoder | undefined;

/** Checks structural facts any successfully decoded packet must satisfy. */
function checkDecoded(datagram: Uint8Array, p: Packet): void {
  const fail = (why: string): never => { throw new Error(`decodePacket(${hexOf(datagram.subarray(0, 64))}…): ${why}`); };
  if (datagram.length < HEADER_SIZE || datagram.length > MAX_DATAGRAM) fail('accepted a datagram of impossible length');
  if (datagram[0] !== 0x46 || datagram[1] !== 0x57) fail('accepted bad magic');
  if (p.type !== datagram[3]) fail(`type ${p.type} differs from byte 3 (${datagram[3]})`);
  if (!eq(p.releaseId, datagram.subarray(4, 12))) fail('release id is not bytes 4..12');
  switch (p.type) {
    case PacketType.Manifest:
    case PacketType.Root:
      if (p.bytes.length === 0) fail('empty manifest fragment accepted');
      if (p.offset + p.bytes.length > p.totalLength) fail('fragment beyond its total length');
      if (!eq(p.bytes, datagram.subarray(MANIFEST_OVERHEAD))) fail('fragment bytes are not the datagram tail');
      break;
    case PacketType.Symbol:
      if (p.symbol.length === 0) fail('empty symbol accepted');
      if (p.esi < 0 || p.esi > 0xffffff || !Number.isInteger(p.esi)) fail(`ESI ${p.esi} out of range`);
      if (!eq(p.symbol, datagram.subarray(SYMBOL_OVERHEAD))) fail('symbol bytes are not the datagram tail');
      break;
    case PacketType.Halt:
      if (p.signed.length === 0 || p.signed.length > MAX_HALT_BYTES) fail(`halt of ${p.signed.length} bytes accepted`);
      if (!eq(p.signed, datagram.subarray(HEADER_SIZE))) fail('halt bytes are not the datagram tail');
      break;
    default: {
      const a = p as unknown as { leaf: number; path: Uint8Array[]; body: Uint8Array };
      if (AUTH_TYPE === undefined || p.type !== AUTH_TYPE) fail(`unknown type ${String(p.type)} accepted`);
      if (a.path.length > MAX_AUTH_DEPTH) fail('path deeper than the maximum');
      if (a.path.some((n) => n.length !== NODE_SIZE)) fail('path node of the wrong size');
      if (a.body.length === 0) fail('empty auth body accepted');
      if (AUTH_OVERHEAD !== undefined && AUTH_OVERHEAD + a.path.length * NODE_SIZE + a.body.length !== datagram.length) fail('auth fields do not cover the datagram');
    }
  }
}

// ---------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------

const interestingU32 = fc.constantFrom(0, 1, 2, 7, 8, 0xff, 0x100, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff);
const u32 = fc.oneof(fc.nat({ max: 0xffffffff }), interestingU32);

/** A datagram that starts like an fwcast one: magic, mostly the right version, any type, any body. */
const headerLike = fc.record({
  version: fc.oneof({ arbitrary: fc.constant(1), weight: 8 }, { arbitrary: fc.integer({ min: 0, max: 255 }), weight: 1 }),
  type: fc.oneof({ arbitrary: fc.constantFrom(1, 2, 3), weight: 8 }, { arbitrary: fc.integer({ min: 0, max: 255 }), weight: 1 }),
  releaseId: fc.uint8Array({ minLength: 8, maxLength: 8 }),
  fields: fc.array(u32, { maxLength: 3 }),
  depth: fc.option(fc.integer({ min: 0, max: 40 })),
  body: fc.uint8Array({ maxLength: 1400 }),
}).map(({ version, type, releaseId, fields, depth, body }) => {
  const head = new Uint8Array(12 + 4 * fields.length + (depth === null ? 0 : 1));
  head.set([0x46, 0x57, version, type]);
  head.set(releaseId, 4);
  const view = new DataView(head.buffer);
  fields.forEach((f, i) => view.setUint32(12 + 4 * i, f));
  if (depth !== null) head[head.length - 1] = depth;
  return Uint8Array.from([...head, ...body]);
});

const anyBytes = fc.uint8Array({ maxLength: 2000 });
/** Lengths around the limits, without building 64 KiB arrays on every run. */
const edgeLengths = fc.constantFrom(0, 1, 11, 12, 13, 19, 20, 21, 23, 24, 25, 1232, MAX_DATAGRAM, MAX_DATAGRAM + 1)
  .chain((n) => fc.uint8Array({ minLength: 4, maxLength: 4 }).map((b) => {
    const d = new Uint8Array(n);
    if (n >= 4) d.set([0x46, 0x57, 1, b[0]! % 4]);
    if (n >= 16) d.set(b, 12);
    return d;
  }));

// ---------------------------------------------------------------------------
// 1. decodePacket over arbitrary bytes, and round trips
// ---------------------------------------------------------------------------

test('decodePacket: arbitrary bytes (0..2000) give a consistent packet or a FwcastError', (t) => {
  fc.assert(fc.property(anyBytes, (d) => {
    const r = typed(() => decodePacket(d));
    if (r.ok) checkDecoded(d, r.value);
  }), run(3000));
  t.pass();
});

test('decodePacket: valid-looking headers (magic, version 1, any type, any fields, any body)', (t) => {
  let accepted = 0;
  fc.assert(fc.property(fc.oneof(headerLike, edgeLengths), (d) => {
    const r = typed(() => decodePacket(d));
    if (r.ok) {
      checkDecoded(d, r.value);
      accepted++;
    }
  }), run(4000));
  t.true(accepted > 500, `the biased generator should reach the type-specific decoders (accepted ${accepted})`);
});

test('decodePacket: a datagram that is a view into a larger buffer decodes exactly like a copy', (t) => {
  // decodePacket builds a DataView on datagram.buffer; an offset view must not read outside it.
  fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), headerLike, fc.uint8Array({ maxLength: 64 }), (pre, d, post) => {
    const big = Uint8Array.from([...pre, ...d, ...post]);
    const view = big.subarray(pre.length, pre.length + d.length);
    const a = typed(() => decodePacket(d));
    const b = typed(() => decodePacket(view));
    if (a.ok !== b.ok) throw new Error('decoding depends on the position of the view in its buffer');
    if (a.ok && b.ok) {
      if (JSON.stringify(summary(a.value)) !== JSON.stringify(summary(b.value))) throw new Error('decoded fields depend on the buffer offset');
    }
  }), run(1500));
  t.pass();
});

function summary(p: Packet): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(p)) {
    out[k] = v instanceof Uint8Array ? hexOf(v) : Array.isArray(v) ? v.map((x: unknown) => (x instanceof Uint8Array ? hexOf(x) : x)) : v;
  }
  return out;
}

const releaseIdArb = fc.uint8Array({ minLength: 8, maxLength: 8 });

test('round trip: manifest fragments encode → decode to the same fields', (t) => {
  const arb = fc.record({
    releaseId: releaseIdArb,
    bytes: fc.uint8Array({ minLength: 1, maxLength: 1212 }),
    offset: fc.nat({ max: 0xffffffff }),
    slack: fc.nat({ max: 0xffffffff }),
  }).filter(({ bytes, offset }) => offset + bytes.length <= 0xffffffff);
  fc.assert(fc.property(arb, ({ releaseId, bytes, offset, slack }) => {
    const totalLength = Math.min(0xffffffff, offset + bytes.length + slack);
    const d = encodeManifestFragment({ releaseId, totalLength, offset, bytes });
    const p = decodePacket(d);
    if (p.type !== PacketType.Manifest) throw new Error('type changed');
    if (!eq(p.releaseId, releaseId) || p.totalLength !== totalLength || p.offset !== offset || !eq(p.bytes, bytes)) {
      throw new Error(`fields changed: ${JSON.stringify(summary(p))}`);
    }
  }), run(1500));
  t.pass();
});

test('round trip: symbol packets encode → decode to the same fields', (t) => {
  const arb = fc.record({
    releaseId: releaseIdArb,
    segment: fc.nat({ max: 0xffffffff }),
    esi: fc.nat({ max: 0xffffff }),
    symbol: fc.uint8Array({ minLength: 1, maxLength: 1208 }),
  });
  fc.assert(fc.property(arb, (f) => {
    const p = decodePacket(encodeSymbolPacket(f));
    if (p.type !== PacketType.Symbol) throw new Error('type changed');
    if (!eq(p.releaseId, f.releaseId) || p.segment !== f.segment || p.esi !== f.esi || !eq(p.symbol, f.symbol)) {
      throw new Error(`fields changed: ${JSON.stringify(summary(p))}`);
    }
  }), run(1500));
  t.pass();
});

const authTest = AUTH_TYPE !== undefined && encodeAuthPacket !== undefined ? test : test.skip;
authTest('round trip: AUTH packets encode → decode to the same fields', (t) => {
  const arb = fc.record({
    releaseId: releaseIdArb,
    leaf: fc.nat({ max: 0xffffffff }),
    path: fc.array(fc.uint8Array({ minLength: NODE_SIZE, maxLength: NODE_SIZE }), { maxLength: MAX_AUTH_DEPTH }),
    body: fc.uint8Array({ minLength: 1, maxLength: 800 }),
  });
  fc.assert(fc.property(arb, (f) => {
    const p = decodePacket(encodeAuthPacket!(f)) as unknown as { type: number; releaseId: Uint8Array; leaf: number; path: Uint8Array[]; body: Uint8Array };
    if (p.type !== AUTH_TYPE) throw new Error('type changed');
    if (!eq(p.releaseId, f.releaseId) || p.leaf !== f.leaf || !eq(p.body, f.body) || p.path.length !== f.path.length
      || p.path.some((n, i) => !eq(n, f.path[i]!))) {
      throw new Error(`fields changed: ${JSON.stringify(summary(p as unknown as Packet))}`);
    }
  }), run(1000));
  t.pass();
});

authTest('AUTH packets: any depth byte and any length, including paths deeper than the limit', (t) => {
  const arb = fc.record({
    releaseId: releaseIdArb,
    leaf: u32,
    depth: fc.integer({ min: 0, max: 255 }),
    rest: fc.uint8Array({ maxLength: 30 * NODE_SIZE }),
  }).map(({ releaseId, leaf, depth, rest }) => {
    const d = new Uint8Array(HEADER_SIZE + 5 + rest.length);
    d.set([0x46, 0x57, 1, AUTH_TYPE!]);
    d.set(releaseId, 4);
    new DataView(d.buffer).setUint32(HEADER_SIZE, leaf);
    d[HEADER_SIZE + 4] = depth;
    d.set(rest, HEADER_SIZE + 5);
    return d;
  });
  fc.assert(fc.property(arb, (d) => {
    const r = typed(() => decodePacket(d));
    if (r.ok) checkDecoded(d, r.value);
  }), run(2000));
  t.pass();
});

test('AUTH chunk bodies: decodeChunkBody of arbitrary bytes and digest lengths gives consistent fields or a FwcastError', (t) => {
  const arb = fc.record({
    digestLength: fc.integer({ min: 1, max: 32 }),
    body: fc.oneof(
      fc.uint8Array({ maxLength: 600 }),
      // well-formed headers whose count may or may not match the length
      fc.record({ seg: u32, esi: u32, count: fc.nat({ max: 0xffff }), digests: fc.uint8Array({ maxLength: 600 }) })
        .map(({ seg, esi, count, digests }) => encodeChunkBody({ leaf: 0, segment: seg, firstEsi: esi, count }, digests)),
    ),
    pre: fc.nat({ max: 7 }),
  });
  fc.assert(fc.property(arb, ({ digestLength, body, pre }) => {
    const holder = new Uint8Array(pre + body.length);
    holder.set(body, pre);
    const view = holder.subarray(pre);
    const r = typed(() => decodeChunkBody(view, digestLength));
    if (r.ok) {
      const c = r.value;
      if (c.digests.length !== c.count * digestLength || body.length !== CHUNK_HEADER_SIZE + c.digests.length) throw new Error('chunk fields do not cover the body');
      const v = new DataView(body.buffer, body.byteOffset);
      if (c.segment !== v.getUint32(0) || c.firstEsi !== v.getUint32(4) || c.count !== v.getUint16(8)) throw new Error('chunk header misread');
    }
  }), run(2000));
  t.pass();
});

test('AUTH parity bodies: decodeParityBody of arbitrary bytes gives the header and C·L parity bytes, or a FwcastError', (t) => {
  const arb = fc.record({
    chunkSymbols: fc.integer({ min: 1, max: 60 }),
    digestLength: fc.integer({ min: 1, max: 32 }),
    body: fc.oneof(fc.uint8Array({ maxLength: 600 }), fc.nat({ max: 60 * 32 }).map((n) => new Uint8Array(CHUNK_HEADER_SIZE + n).fill(0xa5))),
  });
  fc.assert(fc.property(arb, ({ chunkSymbols, digestLength, body }) => {
    const r = typed(() => decodeParityBody(body, chunkSymbols, digestLength));
    if (r.ok !== (body.length === CHUNK_HEADER_SIZE + chunkSymbols * digestLength)) throw new Error(`accepted ${r.ok} for a body of ${body.length} bytes`);
    if (r.ok) {
      const v = new DataView(body.buffer, body.byteOffset);
      if (r.value.segment !== v.getUint32(0) || r.value.firstEsi !== v.getUint32(4) || r.value.index !== v.getUint16(8)) throw new Error('parity header misread');
      if (r.value.parity.length !== chunkSymbols * digestLength) throw new Error('parity bytes do not cover the body');
    }
  }), run(2000));
  t.pass();
});

// ---------------------------------------------------------------------------
// 2. Mutations of real datagrams from a carousel
// ---------------------------------------------------------------------------

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }) },
  // fields live at 12, 16, 20 and in the first bytes: aim 32-bit overwrites there
  { weight: 2, arbitrary: fc.record({ op: fc.constant('u32' as const), at: fc.oneof(fc.constantFrom(0, 2, 3, 4, 12, 16, 17, 20), fc.nat()), value: u32 }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('truncate' as const), to: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('extend' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('splice' as const), at: fc.nat(), from: fc.nat(), start: fc.nat(), length: fc.nat({ max: 1300 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('delete' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 64 }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 32 }) }) },
);

let corpus: Uint8Array[] = [];
test.before(async () => {
  await ed25519.ready();
  const key = fixedKey(1);
  const release = buildRelease({
    image: makeImage(20_000, 11), seed: key.seed, model: 'fuzz', version: '1', seq: 1, created: 1_800_000_000, segmentSize: 8 * 1208, repairPercent: 50,
  });
  const carousel = new Carousel({ ...release, manifestEvery: 10 });
  corpus = Array.from({ length: Math.ceil(carousel.roundLength * 1.5) }, () => carousel.next());
});

test('corpus: the carousel datagrams all decode (sanity for the mutation properties)', (t) => {
  const types = new Set<number>();
  for (const d of corpus) types.add(decodePacket(d).type);
  t.true(types.has(PacketType.Manifest) && types.has(PacketType.Symbol));
  if (AUTH_TYPE !== undefined) t.true(types.has(AUTH_TYPE), 'the carousel sends AUTH datagrams');
});

test('decodePacket: mutated real datagrams (bit flips, truncation, extension, splicing) never throw anything but FwcastError', (t) => {
  fc.assert(fc.property(fc.nat(), fc.array(mutationArb, { minLength: 1, maxLength: 4 }), (pick, ms) => {
    let d = corpus[pick % corpus.length]!;
    for (const m of ms) d = mutate(d, m, corpus);
    const r = typed(() => decodePacket(d));
    if (r.ok) checkDecoded(d, r.value);
  }), run(4000));
  t.pass();
});

// ---------------------------------------------------------------------------
// 4. OTI, release header, keys
// ---------------------------------------------------------------------------

test('decodeOti: arbitrary bytes give an OTI within RFC 6330 bounds or a FwcastError', (t) => {
  const arb = fc.oneof(fc.uint8Array({ maxLength: 24 }), fc.uint8Array({ minLength: OTI_SIZE, maxLength: OTI_SIZE }));
  fc.assert(fc.property(arb, fc.nat({ max: 5 }), (b, pre) => {
    const holder = new Uint8Array(pre + b.length);
    holder.set(b, pre);
    const r = typed(() => decodeOti(holder.subarray(pre)));
    if (r.ok) {
      const o = r.value;
      if (b.length !== OTI_SIZE) throw new Error('OTI of the wrong size accepted');
      if (!(o.transferLength >= 1 && o.transferLength <= 946270874880) || o.alignment === 0 || o.symbolSize === 0 || o.symbolSize % o.alignment !== 0) {
        throw new Error(`out-of-range OTI accepted: ${JSON.stringify(o)}`);
      }
      if (!eq(encodeOti(o).subarray(0, 5), b.subarray(0, 5)) || !eq(encodeOti(o).subarray(6), b.subarray(6))) throw new Error('OTI does not re-encode to its bytes');
    }
  }), run(3000));
  t.pass();
});

test('OTI round trip: encodeOti → decodeOti', (t) => {
  const arb = fc.record({
    transferLength: fc.integer({ min: 1, max: 946270874880 }),
    alignment: fc.integer({ min: 1, max: 255 }),
    mult: fc.integer({ min: 1, max: 255 }),
    sourceBlocks: fc.integer({ min: 0, max: 255 }),
    subBlocks: fc.integer({ min: 0, max: 0xffff }),
  }).filter(({ alignment, mult }) => alignment * mult <= 0xffff);
  fc.assert(fc.property(arb, ({ transferLength, alignment, mult, sourceBlocks, subBlocks }) => {
    const oti = { transferLength, symbolSize: alignment * mult, sourceBlocks, subBlocks, alignment };
    const back = decodeOti(encodeOti(oti));
    if (JSON.stringify(back) !== JSON.stringify(oti)) throw new Error(`${JSON.stringify(oti)} → ${JSON.stringify(back)}`);
  }), run(1500));
  t.pass();
});

test('decodeReleaseLayout: arbitrary and magic-prefixed bytes give a layout within the limits or a FwcastError', (t) => {
  const arb = fc.oneof(
    fc.uint8Array({ maxLength: 40 }),
    fc.tuple(u32, fc.nat({ max: 0xffffffff }), fc.uint8Array({ maxLength: 16 })).map(([len, chain, tail]) => Uint8Array.from([...encodeReleaseHeader(len, chain), ...tail])),
    fc.tuple(fc.nat({ max: MAX_RELEASE_HEADER_SIZE }), fc.constantFrom(RELEASE_MAGIC, RELEASE_MAGIC_V2), fc.uint8Array({ maxLength: 4 }))
      .map(([cut, magic, tail]) => Uint8Array.from([...magic, 0, 0, 1, 0, 0, 0, 0, 9].slice(0, cut).concat([...tail]))),
  );
  fc.assert(fc.property(arb, fc.oneof(fc.constant(256 * 1024), fc.nat({ max: 0xffffffff })), fc.nat({ max: 5 }), (b, max, pre) => {
    const holder = new Uint8Array(pre + b.length);
    holder.set(b, pre);
    const r = typed(() => decodeReleaseLayout(holder.subarray(pre), max, max));
    if (r.ok) {
      const l = r.value;
      if (!(l.manifestLength >= 1 && l.manifestLength <= max)) throw new Error(`length ${l.manifestLength} outside 1..${max}`);
      if (l.manifestLength !== new DataView(b.buffer, b.byteOffset).getUint32(RELEASE_MAGIC.length)) throw new Error('length misread');
      if (l.version === 2 && !(l.rootChainLength >= 1 && l.rootChainLength <= max)) throw new Error(`root chain ${l.rootChainLength} outside 1..${max}`);
      if (l.imageOffset !== l.manifestOffset + l.manifestLength + l.rootChainLength) throw new Error('sections overlap or leave a gap');
    }
  }), run(3000));
  t.pass();
});

/** Text that looks a bit like PEM/base64 and a bit like anything. */
const b64Char = fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/='.split(''));
const keyText = (label: string): fc.Arbitrary<string> => fc.oneof(
  fc.string({ maxLength: 200 }),
  fc.string({ unit: 'binary', maxLength: 200 }),
  fc.string({ unit: b64Char, minLength: 40, maxLength: 48 }),
  fc.tuple(fc.string({ unit: fc.oneof(b64Char, fc.constantFrom('\n', ' ', '\t', '-', '!')), maxLength: 120 }), fc.boolean(), fc.string({ maxLength: 10 }))
    .map(([body, end, junk]) => `${junk}-----BEGIN ${label}-----\n${body}\n${end ? `-----END ${label}-----` : ''}${junk}`),
  fc.uint8Array({ minLength: 0, maxLength: 60 }).map((der) => `-----BEGIN ${label}-----\n${Buffer.from(der).toString('base64')}\n-----END ${label}-----\n`),
);

test('decodePublicKey: arbitrary text gives a 32-byte key with its kid, or a ConfigError', (t) => {
  fc.assert(fc.property(keyText('PUBLIC KEY'), (text) => {
    const r = typed(() => decodePublicKey(text));
    if (r.ok) {
      if (r.value.publicKey.length !== 32 || !eq(r.value.kid, keyId(r.value.publicKey))) throw new Error('inconsistent public key');
    } else if (r.error.reason !== 'config') {
      throw new Error(`unexpected error class ${r.error.name}`);
    }
  }), run(2000));
  t.pass();
});

test('decodePrivateKeyPem: arbitrary text gives a 32-byte seed or a ConfigError', (t) => {
  fc.assert(fc.property(keyText('PRIVATE KEY'), (text) => {
    const r = typed(() => decodePrivateKeyPem(text));
    if (r.ok && r.value.length !== 32) throw new Error('seed of the wrong size');
    if (!r.ok && r.error.reason !== 'config') throw new Error(`unexpected error class ${r.error.name}`);
  }), run(2000));
  t.pass();
});

test('keys round trip: PEM and base64 encodings decode to the same key', async (t) => {
  await ed25519.ready();
  fc.assert(fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.uint8Array({ minLength: 32, maxLength: 32 }), (seed, pub) => {
    if (!eq(decodePrivateKeyPem(encodePrivateKeyPem(seed)), seed)) throw new Error('private key PEM round trip');
    if (!eq(decodePublicKey(encodePublicKeyPem(pub)).publicKey, pub)) throw new Error('public key PEM round trip');
    if (!eq(decodePublicKey(`  ${Buffer.from(pub).toString('base64')}\n`).publicKey, pub)) throw new Error('public key base64 round trip');
  }), run(500));
  t.pass();
});

test('keys: large hostile PEM-like inputs are refused quickly (no regex blow-up)', (t) => {
  const big = [
    '-----BEGIN PUBLIC KEY-----'.repeat(2000),
    `-----BEGIN PUBLIC KEY-----${'A'.repeat(200_000)}`,
    `-----BEGIN PUBLIC KEY-----${' \n'.repeat(100_000)}-----END PUBLIC KEY----`,
    `${'-----BEGIN PUBLIC KEY-----AAAA'.repeat(5000)}`,
  ];
  for (const text of big) {
    const start = performance.now();
    const r = typed(() => decodePublicKey(text));
    t.false(r.ok);
    const r2 = typed(() => decodePrivateKeyPem(text.replaceAll('PUBLIC', 'PRIVATE')));
    t.false(r2.ok);
    t.true(performance.now() - start < 1000, `took ${performance.now() - start} ms`);
  }
});

// ---------------------------------------------------------------------------
// AUTH verification (protocol/auth.ts): forged paths never verify, even after
// the caching MerkleVerifier has proven genuine paths that share nodes.
// ---------------------------------------------------------------------------

type Verifier = { verify(leaf: Uint8Array, index: number, path: readonly Uint8Array[]): boolean };
const authModule = auth as Record<string, unknown>;
const MerkleVerifierCtor = authModule['MerkleVerifier'] as (new (root: Uint8Array, depth: number) => Verifier) | undefined;
const merkleTest = MerkleVerifierCtor ? test : test.skip;

merkleTest('MerkleVerifier: genuine paths verify in any order; mutated leaves, indexes or paths never do', (t) => {
  const arb = fc.record({
    leaves: fc.array(fc.uint8Array({ minLength: NODE_SIZE, maxLength: NODE_SIZE }), { minLength: 1, maxLength: 40 }),
    order: fc.array(fc.nat(), { maxLength: 60 }),
    forgeries: fc.array(fc.record({
      of: fc.nat(), kind: fc.constantFrom('leaf', 'index', 'path', 'swap', 'short', 'long'), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }), index: fc.nat({ max: 2 ** 32 - 1 }),
    }), { minLength: 1, maxLength: 20 }),
  });
  fc.assert(fc.property(arb, ({ leaves, order, forgeries }) => {
    const tree = new MerkleTree(leaves);
    const depth = tree.levels.length - 1;
    const v = new MerkleVerifierCtor!(tree.root, depth);
    const steps = [...order.map((o) => ({ genuine: true as const, o })), ...forgeries.map((f) => ({ genuine: false as const, f }))];
    // interleave genuine proofs and forgeries deterministically
    steps.sort((a, b) => ((a.genuine ? a.o : a.f.at) % 7) - ((b.genuine ? b.o : b.f.at) % 7));
    for (const s of steps) {
      if (s.genuine) {
        const i = s.o % leaves.length;
        if (!v.verify(leaves[i]!, i, tree.proof(i))) throw new Error(`genuine proof of leaf ${i} refused`);
        if (!verifyProof(leaves[i]!, i, tree.proof(i), tree.root)) throw new Error(`verifyProof refused genuine leaf ${i}`);
        continue;
      }
      const f = s.f;
      const i = f.of % leaves.length;
      let leaf = Uint8Array.from(leaves[i]!);
      let index = i;
      let path = tree.proof(i).map((n) => Uint8Array.from(n));
      switch (f.kind) {
        case 'leaf': leaf[f.at % NODE_SIZE]! ^= 1 << f.bit; break;
        // Indexes are taken within the tree (2^depth slots): verify() ignores index bits above
        // the depth, and the Receiver refuses leaf ≥ layout.leaves before calling it.
        case 'index': if (depth === 0) continue; index = f.index % 2 ** depth; if (index === i) index ^= 1; break;
        case 'path': if (path.length) path[f.at % path.length]![f.at % NODE_SIZE]! ^= 1 << f.bit; else leaf[0]! ^= 1; break;
        case 'swap': leaf = Uint8Array.from(leaves[(i + 1 + (f.at % Math.max(1, leaves.length - 1))) % leaves.length]!); break;
        case 'short': path = path.slice(0, -1); if (path.length === depth) leaf[0]! ^= 1; break;
        case 'long': path = [...path, new Uint8Array(NODE_SIZE)]; break;
      }
      // A forgery equal to some genuine (leaf, index) pair is not a forgery.
      const sameAsGenuine = index < leaves.length && eq(leaf, leaves[index]!) && path.length === depth;
      if (sameAsGenuine) continue;
      let r: boolean;
      try {
        r = v.verify(leaf, index, path);
      } catch (err) {
        throw new Error(`MerkleVerifier.verify threw ${String(err)}`);
      }
      if (r) throw new Error(`forged ${f.kind} accepted for leaf ${i} (index ${index})`);
    }
  }), run(300));
  t.pass();
});
