/**
 * Wire-format test vectors, table-driven in the mqtt-packet style: each fixture
 * (name, value, annotated bytes) expands into decode, encode and round-trip
 * tests. The vectors are the ones printed in protocol/SPEC.md; if one of these
 * tests changes, SPEC.md must change with it.
 */
import test from 'ava';
import { symbolOf } from '../protocol/symbol-set.js';
import { createHash } from 'node:crypto';
import { parityPiece, recoverData } from '../protocol/reed-solomon.js';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { channelGroup, channelGroupBytes, DEFAULT_PORT, modelChannelName } from '../protocol/channel.js';
import { decodeCbor, encodeCbor } from '../protocol/cbor.js';
import { decodeCoseSign1, signCoseSign1 } from '../protocol/cose-sign1.js';
import * as ed25519 from '../protocol/ed25519.js';
import {
  FwcastError, InvalidManifestError, InvalidSignatureError, LimitExceededError, MalformedPacketError,
  UnknownKeyError, UnsupportedVersionError,
} from '../protocol/errors.js';
import { SegmentEncoder } from '../protocol/fec.js';
import { DEFAULT_LIMITS } from '../protocol/limits.js';
import {
  decodeManifest, encodeManifest, openSignedManifest, releaseIdOf, signManifest, type Manifest,
} from '../protocol/manifest.js';
import { decodeOti, encodeOti, type Oti } from '../protocol/oti.js';
import {
  decodePacket, encodeAuthPacket, encodeManifestFragment, encodeSymbolPacket, PacketType,
  type AuthPacket, type ManifestFragment, type SymbolPacket,
} from '../protocol/packet.js';
import { leafHash, nodeHash, symbolDigest, verifyProof } from '../protocol/auth.js';
import { readPayloadId, writePayloadId, type PayloadId } from '../protocol/payload-id.js';
import { Carousel } from '../carousel/carousel.js';
import { exampleImage, exampleRelease, fixedKey, FIXED_SEED, toHex, unhex } from './helpers/releases.js';
import { makeKey } from './helpers/fixtures.js';

type ErrorClass = new (message: string) => FwcastError;

// libsodium must be initialised before any synchronous signing below.
test.before(async () => {
  await ed25519.ready();
});

// ---------------------------------------------------------------------------
// The example release of SPEC.md §12 (RFC 8032 TEST 1 key, 5000-byte image).
// ---------------------------------------------------------------------------

const EXAMPLE_PUBLIC_KEY = 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a';
const EXAMPLE_KID = '21fe31dfa154a261';
const EXAMPLE_RELEASE_ID = 'fcfcf0ded23e21b1';
const EXAMPLE_AUTH_ROOT = '2c74111c0ee9f4eadfe6780c7a0d2b28';

const EXAMPLE_PROTECTED = `
  a2                        # map(2)
    01 27                   #   1 (alg): -8 (EdDSA)
    04 48 21fe31dfa154a261  #   4 (kid): bytes(8)
`;

const EXAMPLE_PAYLOAD = `
  a9                                    # map(9)
    01 01                               #   1 format: 1
    02 64 72706934                      #   2 model: "rpi4"
    03 07                               #   3 seq: 7
    04 65 312e322e33                    #   4 version: "1.2.3"
    05 1a 6b49d200                      #   5 created: 1800000000
    06 1a 713fb300                      #   6 expires: 1900000000
    07 19 1388                          #   7 size: 5000
    08 82                               #   8 digest: array(2)
       2f                               #       -16 (SHA-256)
       58 20 69dbee893909fa17d1be397e0c07691336fe42049c29d403467d3d4a1fc3b5a1
    09 a6                               #   9 fec: map(6)
       01 06                            #       1 encoding: 6 (RaptorQ)
       02 19 04b8                       #       2 symbol-size: 1208
       03 19 0970                       #       3 segment-size: 2416
       04 18 32                         #       4 repair: 50 (%)
       05 83                            #       5 segments: array(3)
          82 4c 00000009700004b801000108   #     [OTI(F=2416), SHA-256]
             58 20 a20d0b7ce86e746a7cd57bfc41c18aa16f1db7d2826ddf4afd716be6f1117ed7
          82 4c 00000009700004b801000108   #     [OTI(F=2416), SHA-256]
             58 20 a97f12f4050d8252b30d30dfc89a19f545515918c5acc9224ecb9af0ac09ec9a
          82 4c 00000000a80004b801000108   #     [OTI(F=168), SHA-256]
             58 20 a6a55191963aa6a86f6cd005e0b9ff9d59217c0b76663fccecac44dd6aa9d6a1
       06 a4                            #       6 auth: map(4)
          01 01                         #         1 scheme: 1 (Merkle chunks)
          02 0c                         #         2 digest-length: 12
          03 18 61                      #         3 chunk-symbols: 97
          04 50 ${EXAMPLE_AUTH_ROOT}     #         4 root: bytes(16)
`;

const EXAMPLE_SIGNATURE = `
  3228cdcf1495261f07b42413ada62f0d6ab5c175df741a0fccda1541f733e5ee
  7078b4079b876c0abab9e0fe8cfd240d069ee586afcea8c9ef4e4bae44482005
`;

const EXAMPLE_SIGNED = `
  d2                # tag(18) COSE_Sign1
  84                # array(4)
  4d ${EXAMPLE_PROTECTED}   # protected: bytes(13)
  a0                # unprotected: map(0)
  59 0103 ${EXAMPLE_PAYLOAD}  # payload: bytes(259)
  58 40 ${EXAMPLE_SIGNATURE} # signature: bytes(64)
`;

const EXAMPLE_SIG_STRUCTURE = `
  84                              # array(4)
  6a 5369676e617475726531         # "Signature1"
  4d ${EXAMPLE_PROTECTED}         # protected: bytes(13), exactly as in the message
  40                              # external_aad: bytes(0)
  59 0103 ${EXAMPLE_PAYLOAD}      # payload: bytes(259)
`;

test('example: the fixed seed is RFC 8032 TEST 1; kid = SHA-256(public key)[0..8]', async (t) => {
  const key = await fixedKey();
  t.is(toHex(key.publicKey), EXAMPLE_PUBLIC_KEY);
  t.is(toHex(key.kid), EXAMPLE_KID);
});

test('example: the signed manifest is exactly the bytes in SPEC.md, and so is its release id', async (t) => {
  await ed25519.ready();
  const release = exampleRelease();
  t.is(toHex(release.signed), toHex(unhex(EXAMPLE_SIGNED)));
  t.is(release.signed.length, 345);
  t.is(toHex(release.releaseId), EXAMPLE_RELEASE_ID);
  t.is(toHex(releaseIdOf(unhex(EXAMPLE_SIGNED))), EXAMPLE_RELEASE_ID);
  t.is(createHash('sha256').update(unhex(EXAMPLE_SIGNED)).digest('hex').slice(0, 16), EXAMPLE_RELEASE_ID);
});

test('example: Sig_structure and the Ed25519 signature over it', async (t) => {
  const key = await fixedKey();
  const sigStructure = unhex(EXAMPLE_SIG_STRUCTURE);
  t.is(sigStructure.length, 289);
  t.is(toHex(ed25519.sign(sigStructure, FIXED_SEED)), toHex(unhex(EXAMPLE_SIGNATURE)));
  t.true(ed25519.verify(unhex(EXAMPLE_SIGNATURE), sigStructure, key.publicKey));
  const cose = decodeCoseSign1(unhex(EXAMPLE_SIGNED));
  t.is(toHex(cose.protectedBytes), toHex(unhex(EXAMPLE_PROTECTED)));
  t.is(toHex(cose.payload), toHex(unhex(EXAMPLE_PAYLOAD)));
  t.is(cose.alg, -8);
  t.is(toHex(cose.kid), EXAMPLE_KID);
});

test('example: opening the signed manifest yields the documented fields', async (t) => {
  const key = await fixedKey();
  const opened = openSignedManifest(unhex(EXAMPLE_SIGNED), [key]);
  const m = opened.manifest;
  t.is(toHex(opened.releaseId), EXAMPLE_RELEASE_ID);
  t.is(toHex(opened.kid), EXAMPLE_KID);
  t.like(m, { model: 'rpi4', seq: 7, version: '1.2.3', created: 1_800_000_000, expires: 1_900_000_000, imageSize: 5000, symbolSize: 1208, segmentSize: 2416, repairPercent: 50 });
  t.is(toHex(m.imageSha256), createHash('sha256').update(exampleImage()).digest('hex'));
  t.deepEqual(m.segments.map((s) => [s.index, s.offset, s.oti.transferLength, s.sourceSymbols, s.published]), [
    [0, 0, 2416, 2, 3],
    [1, 2416, 2416, 2, 3],
    [2, 4832, 168, 1, 2],
  ]);
  t.is(toHex(encodeManifest(m)), toHex(unhex(EXAMPLE_PAYLOAD)), 'the payload re-encodes to the same bytes');
});

/** SHA-256 of the 1208-byte encoding symbols of the example (confirmed against lcrq, an independent RFC 6330 implementation). */
const EXAMPLE_SYMBOL_SHA256: Array<[segment: number, esi: number, sha256: string]> = [
  [0, 0, 'ff96a1fa1c9f4cb8ce55f14a9aadb26de6a20573f88fcc431ab1b01141ed593a'],
  [0, 1, '0358c7c40da00937fd9b48d669467847fed8891738d3f077b4f1bf06da8d2c49'],
  [0, 2, '1ca0b2cda4eb071edf03b9352cd1e6c9cce491105657aa5458f9dd2066ad438d'], // first repair symbol, ISI = 2 + K' − K = 10
  [2, 0, 'f369d0866988e31d4e0f12ea02658f19dced45eddee492bcd9ed31a73b454bd0'],
  [2, 1, 'f369d0866988e31d4e0f12ea02658f19dced45eddee492bcd9ed31a73b454bd0'], // K = 1: ISI 10 happens to equal the source symbol
];

test('example: encoding symbols under RFC ESIs (source = data, repair from K)', (t) => {
  const image = exampleImage();
  const release = exampleRelease();
  for (const [segment, esi, sha] of EXAMPLE_SYMBOL_SHA256) {
    const seg = release.manifest.segments[segment]!;
    const encoder = new SegmentEncoder(image.subarray(seg.offset, seg.offset + seg.oti.transferLength), 1208);
    try {
      const symbol = encoder.symbols(seg.published)[esi]!;
      t.is(symbol.esi, esi);
      t.is(createHash('sha256').update(symbol.data).digest('hex'), sha, `segment ${segment} ESI ${esi}`);
    } finally {
      encoder.free();
    }
  }
});

// ---------------------------------------------------------------------------
// Packets
// ---------------------------------------------------------------------------

interface Fixture<V> {
  name: string;
  value: V;
  bytes: string;
}

const SYMBOL_FIXTURES: Array<Fixture<Omit<SymbolPacket, 'type'>>> = [
  {
    name: 'small symbol, segment 3, ESI 0x012345',
    value: { releaseId: unhex('0102030405060708'), segment: 3, esi: 0x012345, symbol: unhex('a0a1a2a3a4a5a6a7') },
    bytes: `
      46 57                    # magic "FW"
      01                       # version 1
      02                       # type 2 = SYMBOL
      01 02 03 04 05 06 07 08  # release id
      00 00 00 03              # segment index 3
      00                       # SBN 0
      01 23 45                 # ESI 74565
      a0 a1 a2 a3 a4 a5 a6 a7  # symbol (T = 8)
    `,
  },
  {
    name: 'largest segment index and ESI',
    value: { releaseId: unhex('ffffffffffffffff'), segment: 0xffffffff, esi: 0xffffff, symbol: unhex('00') },
    bytes: `
      46 57 01 02              # "FW", version 1, SYMBOL
      ff ff ff ff ff ff ff ff  # release id
      ff ff ff ff              # segment index 4294967295
      00 ff ff ff              # SBN 0, ESI 16777215
      00                       # symbol (1 byte: structure only, T is checked against the manifest)
    `,
  },
  {
    name: 'example release, segment 2 (K = 1), ESI 0: the source symbol is the data, zero-padded to T',
    value: {
      releaseId: unhex(EXAMPLE_RELEASE_ID), segment: 2, esi: 0,
      symbol: Uint8Array.from([...exampleImage().subarray(4832), ...new Uint8Array(1208 - 168)]),
    },
    bytes: `
      46 57 01 02              # "FW", version 1, SYMBOL
      fc fc f0 de d2 3e 21 b1  # release id of the example
      00 00 00 02              # segment 2
      00 00 00 00              # SBN 0, ESI 0
      ${toHex(exampleImage().subarray(4832))}   # image[4832..5000): 168 bytes
      ${'00'.repeat(1040)}                      # padding to T = 1208
    `,
  },
];

const FRAGMENT_FIXTURES: Array<Fixture<Omit<ManifestFragment, 'type'>>> = [
  {
    name: 'small fragment in the middle of a 10-byte manifest',
    value: { releaseId: unhex('0102030405060708'), totalLength: 10, offset: 4, bytes: unhex('aabbcc') },
    bytes: `
      46 57                    # magic "FW"
      01                       # version 1
      01                       # type 1 = MANIFEST
      01 02 03 04 05 06 07 08  # release id
      00 00 00 0a              # total length 10
      00 00 00 04              # fragment offset 4
      aa bb cc                 # manifest bytes [4, 7)
    `,
  },
  {
    name: 'example manifest, second fragment at 200-byte datagrams',
    value: { releaseId: unhex(EXAMPLE_RELEASE_ID), totalLength: 345, offset: 180, bytes: unhex(EXAMPLE_SIGNED).subarray(180) },
    bytes: `
      46 57 01 01              # "FW", version 1, MANIFEST
      fc fc f0 de d2 3e 21 b1  # release id
      00 00 01 59              # total length 345
      00 00 00 b4              # offset 180
      ${toHex(unhex(EXAMPLE_SIGNED).subarray(180))}  # bytes [180, 345)
    `,
  },
];

for (const f of SYMBOL_FIXTURES) {
  test(`symbol decode: ${f.name}`, (t) => {
    t.deepEqual(decodePacket(unhex(f.bytes)), { type: PacketType.Symbol, ...f.value });
  });
  test(`symbol encode: ${f.name}`, (t) => {
    t.is(toHex(encodeSymbolPacket(f.value)), toHex(unhex(f.bytes)));
  });
  test(`symbol round trip: ${f.name}`, (t) => {
    const bytes = unhex(f.bytes);
    const p = decodePacket(bytes);
    t.is(p.type, PacketType.Symbol);
    t.is(toHex(encodeSymbolPacket(p as SymbolPacket)), toHex(bytes));
  });
}

for (const f of FRAGMENT_FIXTURES) {
  test(`fragment decode: ${f.name}`, (t) => {
    t.deepEqual(decodePacket(unhex(f.bytes)), { type: PacketType.Manifest, ...f.value });
  });
  test(`fragment encode: ${f.name}`, (t) => {
    t.is(toHex(encodeManifestFragment(f.value)), toHex(unhex(f.bytes)));
  });
  test(`fragment round trip: ${f.name}`, (t) => {
    const bytes = unhex(f.bytes);
    const p = decodePacket(bytes);
    t.is(p.type, PacketType.Manifest);
    t.is(toHex(encodeManifestFragment(p as ManifestFragment)), toHex(bytes));
  });
}

const AUTH_FIXTURES: Array<Fixture<Omit<AuthPacket, 'type'>>> = [
  {
    name: 'small AUTH datagram, leaf 5, depth 2',
    value: { releaseId: unhex('0102030405060708'), leaf: 5, path: [unhex('aa'.repeat(16)), unhex('bb'.repeat(16))], body: unhex('c0c1c2') },
    bytes: `
      46 57 01 03              # "FW", version 1, type 3 = AUTH
      01 02 03 04 05 06 07 08  # release id
      00 00 00 05              # leaf index 5
      02                       # depth 2
      ${'aa'.repeat(16)}       # sibling at level 0
      ${'bb'.repeat(16)}       # sibling at level 1
      c0 c1 c2                 # chunk body (structure is checked against the manifest, not here)
    `,
  },
  {
    name: 'example release, leaf 2 (segment 2, ESIs 0..1)',
    value: {
      releaseId: unhex(EXAMPLE_RELEASE_ID), leaf: 2,
      path: [new Uint8Array(16), unhex('53b5bef8c9833304b3e4cba97e9f022f')],
      body: unhex('00000002 00000000 0002 f369d0866988e31d4e0f12ea f369d0866988e31d4e0f12ea'),
    },
    bytes: `
      46 57 01 03                          # "FW", version 1, AUTH
      fc fc f0 de d2 3e 21 b1              # release id
      00 00 00 02                          # leaf 2
      02                                   # depth 2 (3 leaves, padded to 4)
      00000000000000000000000000000000     # sibling level 0: leaf 3, padding (16 zero bytes)
      53b5bef8c9833304b3e4cba97e9f022f     # sibling level 1: node(leaf 0, leaf 1)
      00 00 00 02                          # body: segment 2
      00 00 00 00                          #       first ESI 0
      00 02                                #       count 2
      f369d0866988e31d4e0f12ea             #       digest of ESI 0 (12 bytes)
      f369d0866988e31d4e0f12ea             #       digest of ESI 1
    `,
  },
];

for (const f of AUTH_FIXTURES) {
  test(`auth decode: ${f.name}`, (t) => {
    t.deepEqual(decodePacket(unhex(f.bytes)), { type: PacketType.Auth, ...f.value });
  });
  test(`auth encode: ${f.name}`, (t) => {
    t.is(toHex(encodeAuthPacket(f.value)), toHex(unhex(f.bytes)));
  });
  test(`auth round trip: ${f.name}`, (t) => {
    const bytes = unhex(f.bytes);
    const p = decodePacket(bytes);
    t.is(p.type, PacketType.Auth);
    t.is(toHex(encodeAuthPacket(p as AuthPacket)), toHex(bytes));
  });
}

/** Symbol digests of the example: SHA-256(symbol)[0..12), the first 12 bytes of EXAMPLE_SYMBOL_SHA256. */
const EXAMPLE_SYMBOL_DIGESTS = [
  ['ff96a1fa1c9f4cb8ce55f14a', '0358c7c40da00937fd9b48d6', '1ca0b2cda4eb071edf03b935'],
  ['be899cc7ab8a7db9456b2d52', 'ce18a6cf702ae15afa47c75e', 'b630b1252da18e83cd4cb608'],
  ['f369d0866988e31d4e0f12ea', 'f369d0866988e31d4e0f12ea'],
];
const EXAMPLE_LEAVES = ['fabc8d7d8c699cafff0f1cc933d2114a', '3ad5124de9bd875088ee8778c9cb34a8', '08e92c02726ee1f2c4bc3f364b31b365'];
const EXAMPLE_NODES = ['53b5bef8c9833304b3e4cba97e9f022f', 'dc4b56b3ddbfc6b4b466af8ed4bc6170'];

test('example: per-packet authentication material (symbol digests, chunk leaves, Merkle tree)', (t) => {
  const release = exampleRelease();
  const set = release.symbolSet!;
  t.deepEqual({ ...release.manifest.auth, root: toHex(release.manifest.auth.root) }, { scheme: 1, digestLength: 12, chunkSymbols: 97, root: EXAMPLE_AUTH_ROOT });
  const digests = set.segments.map((_, seg) => Array.from({ length: release.manifest.segments[seg]!.published }, (_, esi) => toHex(symbolDigest(symbolOf(set, seg, esi), 12))));
  t.deepEqual(digests, EXAMPLE_SYMBOL_DIGESTS);
  t.is(set.layout.leaves, 3);
  t.is(set.layout.depth, 2);
  t.deepEqual(set.bodies.map((c) => toHex(leafHash(c))), EXAMPLE_LEAVES);
  t.is(toHex(nodeHash(unhex(EXAMPLE_LEAVES[0]!), unhex(EXAMPLE_LEAVES[1]!))), EXAMPLE_NODES[0]!);
  t.is(toHex(nodeHash(unhex(EXAMPLE_LEAVES[2]!), new Uint8Array(16))), EXAMPLE_NODES[1]!);
  t.is(toHex(nodeHash(unhex(EXAMPLE_NODES[0]!), unhex(EXAMPLE_NODES[1]!))), EXAMPLE_AUTH_ROOT);
  t.is(toHex(set.tree.root), EXAMPLE_AUTH_ROOT);
  const auth = decodePacket(unhex(AUTH_FIXTURES[1]!.bytes)) as AuthPacket;
  t.true(verifyProof(leafHash(auth.body), auth.leaf, auth.path, unhex(EXAMPLE_AUTH_ROOT)));
  t.false(verifyProof(leafHash(auth.body), 3, auth.path, unhex(EXAMPLE_AUTH_ROOT)), 'the leaf index is bound by the path');
  // Hand-computed: the hashes are plain SHA-256 with a one-byte domain prefix, truncated.
  const sha = (...parts: string[]) => createHash('sha256').update(unhex(parts.join(''))).digest('hex');
  t.is(sha('00', toHex(auth.body)).slice(0, 32), EXAMPLE_LEAVES[2]!);
  t.is(sha('01', EXAMPLE_NODES[0]!, EXAMPLE_NODES[1]!).slice(0, 32), EXAMPLE_AUTH_ROOT);
  t.is(sha(toHex(symbolOf(set, 0, 2))).slice(0, 24), EXAMPLE_SYMBOL_DIGESTS[0]![2]!);
});

test('the example carousel sends exactly these fragments, AUTH datagrams and the documented source symbol', (t) => {
  const release = exampleRelease();
  const small = new Carousel({ ...release, datagramSize: 200 });
  t.is(small.manifestFragments.length, 2);
  t.is(toHex(small.manifestFragments[1]!), toHex(unhex(FRAGMENT_FIXTURES[1]!.bytes)));
  const carousel = new Carousel({ ...release });
  t.is(carousel.manifestFragments.length, 1, 'at 1232-byte datagrams the example manifest is one fragment');
  const first = Array.from({ length: 7 }, () => carousel.next());
  t.is(toHex(first[0]!.subarray(0, 20)), '46570101fcfcf0ded23e21b10000015900000000');
  t.is(toHex(first[5]!), toHex(unhex(AUTH_FIXTURES[1]!.bytes)), 'the AUTH datagram of leaf 2 precedes segment 2');
  t.is(toHex(first[6]!), toHex(unhex(SYMBOL_FIXTURES[2]!.bytes)), 'then segment 2, ESI 0');
});

test('example carousel order: rounds of K symbols from ESI r·K mod published, segments interleaved, AUTH before', (t) => {
  const carousel = new Carousel({ ...exampleRelease() });
  const seen: string[] = [];
  for (let i = 0; i < 20; i++) {
    const p = decodePacket(carousel.next());
    seen.push(p.type === PacketType.Manifest ? `M${p.offset}` : p.type === PacketType.Auth ? `A${p.leaf}` : p.type === PacketType.Root ? `R${p.offset}` : p.type === PacketType.Halt ? 'H' : `${p.segment}/${p.esi}`);
  }
  t.deepEqual(seen, [
    'M0', 'A0', '0/0', 'A1', '1/0', 'A2', '2/0', '0/1', '1/1', // round 0
    'M0', 'A0', '0/2', 'A1', '1/2', 'A2', '2/1', 'A0', '0/0', 'A1', '1/0', // round 1: ESI 3 wraps to 0 (published 3)
  ]);
});

// ---------------------------------------------------------------------------
// FEC Payload ID and OTI
// ---------------------------------------------------------------------------

const PAYLOAD_ID_FIXTURES: Array<Fixture<PayloadId>> = [
  { name: 'first source symbol', value: { sbn: 0, esi: 0 }, bytes: '00 000000  # SBN 0, ESI 0' },
  { name: 'first repair symbol of the example segment 0 (K = 2)', value: { sbn: 0, esi: 2 }, bytes: '00 000002  # SBN 0, ESI 2 = K' },
  { name: 'byte order', value: { sbn: 0, esi: 0x123456 }, bytes: '00 12 34 56  # ESI big-endian' },
  { name: 'largest ESI', value: { sbn: 0, esi: 0xffffff }, bytes: '00 ff ff ff  # ESI 2^24 − 1' },
  { name: 'non-zero SBN (parsed here, refused by decodePacket)', value: { sbn: 7, esi: 1 }, bytes: '07 00 00 01' },
];

for (const f of PAYLOAD_ID_FIXTURES) {
  test(`payload id decode: ${f.name}`, (t) => {
    t.deepEqual(readPayloadId(unhex(f.bytes), 0), f.value);
  });
  test(`payload id encode: ${f.name}`, (t) => {
    const out = new Uint8Array(4);
    writePayloadId(out, 0, f.value);
    t.is(toHex(out), toHex(unhex(f.bytes)));
  });
  test(`payload id round trip: ${f.name}`, (t) => {
    const out = new Uint8Array(6);
    writePayloadId(out, 2, readPayloadId(unhex(f.bytes), 0));
    t.is(toHex(out.subarray(2)), toHex(unhex(f.bytes)));
  });
}

const OTI_FIXTURES: Array<Fixture<Oti>> = [
  {
    name: 'example segment 0: 2416 bytes, T = 1208',
    value: { transferLength: 2416, symbolSize: 1208, sourceBlocks: 1, subBlocks: 1, alignment: 8 },
    bytes: `
      00 00 00 09 70   # F = 2416 (40 bits)
      00               # reserved
      04 b8            # T = 1208
      01               # Z = 1
      00 01            # N = 1
      08               # Al = 8
    `,
  },
  {
    name: 'example segment 2: 168 bytes',
    value: { transferLength: 168, symbolSize: 1208, sourceBlocks: 1, subBlocks: 1, alignment: 8 },
    bytes: '00000000a8 00 04b8 01 0001 08',
  },
  {
    name: 'F uses all 40 bits',
    value: { transferLength: 0x0102030405, symbolSize: 8, sourceBlocks: 1, subBlocks: 1, alignment: 8 },
    bytes: '01 02 03 04 05  00  00 08  01  00 01  08',
  },
  {
    name: 'largest F (RFC 6330 §4.4.1.2) and T',
    value: { transferLength: 946270874880, symbolSize: 65528, sourceBlocks: 1, subBlocks: 1, alignment: 8 },
    bytes: 'dc 52 23 ad 00  00  ff f8  01  00 01  08',
  },
];

for (const f of OTI_FIXTURES) {
  test(`OTI decode: ${f.name}`, (t) => {
    t.deepEqual(decodeOti(unhex(f.bytes)), f.value);
  });
  test(`OTI encode: ${f.name}`, (t) => {
    t.is(toHex(encodeOti(f.value)), toHex(unhex(f.bytes)));
  });
  test(`OTI round trip: ${f.name}`, (t) => {
    t.is(toHex(encodeOti(decodeOti(unhex(f.bytes)))), toHex(unhex(f.bytes)));
  });
}

// ---------------------------------------------------------------------------
// Channels
// ---------------------------------------------------------------------------

const CHANNEL_FIXTURES: Array<{ name: string; group: string }> = [
  { name: 'fw/rpi4', group: 'ff1e:2bd7:ec2e:cb43:283:3ede:32a4:d45f' },
  { name: 'firmware', group: 'ff1e:de8e:9d22:fcc8:1bed:a3f7:ac72:d732' },
  { name: 'test', group: 'ff1e:43c9:5d65:329e:b58a:2883:c48e:4e73' },
];

for (const c of CHANNEL_FIXTURES) {
  test(`channel "${c.name}" → ${c.group}`, (t) => {
    t.is(channelGroup(c.name), c.group);
    const bytes = channelGroupBytes(c.name);
    t.is(bytes.length, 16);
    t.deepEqual([bytes[0], bytes[1]], [0xff, 0x1e]);
  });
}

test('model channel name and port', (t) => {
  t.is(modelChannelName('rpi4'), 'fw/rpi4');
  t.is(DEFAULT_PORT, 4242);
});

// ---------------------------------------------------------------------------
// Error tables
// ---------------------------------------------------------------------------

interface ErrorFixture {
  name: string;
  bytes: string;
  error: ErrorClass;
  message: string;
}

const PACKET_ERRORS: ErrorFixture[] = [
  { name: 'empty datagram', bytes: '', error: MalformedPacketError, message: 'shorter than the 12-byte header' },
  { name: 'truncated header', bytes: '46 57 01 02 01 02 03 04 05 06 07', error: MalformedPacketError, message: 'datagram of 11 bytes is shorter than the 12-byte header' },
  { name: 'bad magic', bytes: '46 58 01 02 0102030405060708 00000000 00000000 00', error: MalformedPacketError, message: 'bad magic' },
  { name: 'wrong version', bytes: '46 57 02 02 0102030405060708 00000000 00000000 00', error: UnsupportedVersionError, message: 'wire version 2 is not supported' },
  { name: 'version 0', bytes: '46 57 00 01 0102030405060708 00000001 00000000 00', error: UnsupportedVersionError, message: 'wire version 0' },
  { name: 'unknown type 0', bytes: '46 57 01 00 0102030405060708 00', error: MalformedPacketError, message: 'unknown packet type 0' },
  { name: 'unknown type 6', bytes: '46 57 01 06 0102030405060708 00000000 00000000 00', error: MalformedPacketError, message: 'unknown packet type 6' },
  { name: 'root fragment beyond total length', bytes: '46 57 01 04 0102030405060708 00000000 00000000 00', error: MalformedPacketError, message: 'root fragment [0, 1) lies beyond its total length 0' },
  { name: 'unknown type 255', bytes: '46 57 01 ff 0102030405060708 00', error: MalformedPacketError, message: 'unknown packet type 255' },
  { name: 'non-zero SBN', bytes: '46 57 01 02 0102030405060708 00000000 01 000000 00', error: MalformedPacketError, message: 'source block number 1 is not 0' },
  { name: 'symbol packet without symbol bytes', bytes: '46 57 01 02 0102030405060708 00000000 00000000', error: MalformedPacketError, message: 'symbol packet is empty or truncated' },
  { name: 'symbol packet cut inside the payload id', bytes: '46 57 01 02 0102030405060708 00000000 00', error: MalformedPacketError, message: 'symbol packet is empty or truncated' },
  { name: 'manifest fragment without bytes', bytes: '46 57 01 01 0102030405060708 0000000a 00000000', error: MalformedPacketError, message: 'manifest fragment is empty or truncated' },
  { name: 'fragment beyond total length', bytes: '46 57 01 01 0102030405060708 0000000a 00000008 aabbcc', error: MalformedPacketError, message: 'manifest fragment [8, 11) lies beyond its total length 10' },
  { name: 'AUTH shorter than its fixed fields', bytes: '46 57 01 03 0102030405060708 00000000', error: MalformedPacketError, message: 'auth packet truncated' },
  { name: 'AUTH path deeper than 24', bytes: '46 57 01 03 0102030405060708 00000000 19 00', error: MalformedPacketError, message: 'auth path of depth 25 exceeds 24' },
  { name: 'AUTH cut inside its path', bytes: `46 57 01 03 0102030405060708 00000000 02 ${'aa'.repeat(31)}`, error: MalformedPacketError, message: 'auth packet truncated in its path' },
  { name: 'AUTH with a path but no body', bytes: `46 57 01 03 0102030405060708 00000000 01 ${'aa'.repeat(16)}`, error: MalformedPacketError, message: 'auth packet truncated in its path' },
  { name: 'fragment with offset near 2^32', bytes: '46 57 01 01 0102030405060708 ffffffff ffffffff aa', error: MalformedPacketError, message: 'lies beyond its total length' },
];

for (const e of PACKET_ERRORS) {
  test(`packet error: ${e.name}`, (t) => {
    const err = t.throws(() => decodePacket(unhex(e.bytes)), { instanceOf: e.error });
    t.true(err!.message.includes(e.message), err!.message);
  });
}

test('packet error: oversized datagram', (t) => {
  const big = new Uint8Array(65528);
  big.set([0x46, 0x57, 0x01, 0x02]);
  t.throws(() => decodePacket(big), { instanceOf: MalformedPacketError, message: /65528 bytes is too large/ });
});

const OTI_ERRORS: ErrorFixture[] = [
  { name: 'short OTI', bytes: '00 00 00 09 70 00 04 b8 01 00 01', error: MalformedPacketError, message: 'OTI must be 12 bytes, got 11' },
  { name: 'F = 0', bytes: '0000000000 00 04b8 01 0001 08', error: MalformedPacketError, message: 'transfer length 0 out of range' },
  { name: 'F above the RFC maximum', bytes: 'dc 52 23 ad 01 00 04b8 01 0001 08', error: MalformedPacketError, message: 'transfer length 946270874881 out of range' },
  { name: 'T not a multiple of Al', bytes: '0000000970 00 04b9 01 0001 08', error: MalformedPacketError, message: 'symbol size 1209 is not a multiple of alignment 8' },
  { name: 'Al = 0', bytes: '0000000970 00 04b8 01 0001 00', error: MalformedPacketError, message: 'alignment 0' },
  { name: 'T = 0', bytes: '0000000970 00 0000 01 0001 08', error: MalformedPacketError, message: 'symbol size 0' },
];

for (const e of OTI_ERRORS) {
  test(`OTI error: ${e.name}`, (t) => {
    const err = t.throws(() => decodeOti(unhex(e.bytes)), { instanceOf: e.error });
    t.true(err!.message.includes(e.message), err!.message);
  });
}

// ---------------------------------------------------------------------------
// Manifest validation errors
// ---------------------------------------------------------------------------

function exampleManifest(): Manifest {
  return structuredClone(exampleRelease().manifest);
}

interface ManifestErrorFixture {
  name: string;
  /** Produces the signed manifest to open (signed with FIXED_SEED unless it says otherwise). */
  signed: () => Uint8Array | Promise<Uint8Array>;
  trusted?: 'fixed' | 'other';
  limits?: Partial<typeof DEFAULT_LIMITS>;
  error: ErrorClass;
  message: string;
}

const resign = (edit: (m: Manifest) => void): Uint8Array => {
  const m = exampleManifest();
  edit(m);
  return signManifest(m, FIXED_SEED);
};

/** Signs an arbitrary CBOR map (integer keys) as a manifest payload. */
const signMap = (edit: (map: Map<number, unknown>) => void): Uint8Array => {
  const map = decodeMapPayload();
  edit(map);
  return signCoseSign1(encodeCbor(map), FIXED_SEED);
};

function decodeMapPayload(): Map<number, unknown> {
  const cose = decodeCoseSign1(unhex(EXAMPLE_SIGNED));
  // Round-trip through the project's own CBOR settings: integer-keyed Map.
  return structuredClone(decodeCborMap(cose.payload));
}

const authMap = (map: Map<number, unknown>): Map<number, unknown> => (map.get(9) as Map<number, unknown>).get(6) as Map<number, unknown>;

function decodeCborMap(bytes: Uint8Array): Map<number, unknown> {
  const v = decodeCbor(bytes, 'test');
  if (!(v instanceof Map)) throw new Error('not a map');
  return v as Map<number, unknown>;
}

const MANIFEST_ERRORS: ManifestErrorFixture[] = [
  { name: 'model not matching the pattern', signed: () => resign((m) => { m.model = '-rpi4'; }), error: InvalidManifestError, message: 'model "-rpi4" must be 1-64 characters' },
  { name: 'model with a space', signed: () => resign((m) => { m.model = 'rpi 4'; }), error: InvalidManifestError, message: 'model "rpi 4"' },
  { name: 'OTI transfer length not matching the segment plan', signed: () => resign((m) => { m.segments[0]!.oti = { ...m.segments[0]!.oti, transferLength: 2415 }; }), error: InvalidManifestError, message: 'segment 0 OTI must describe 2416 bytes' },
  { name: 'OTI with Z = 2', signed: () => resign((m) => { m.segments[2]!.oti = { ...m.segments[2]!.oti, sourceBlocks: 2 }; }), error: InvalidManifestError, message: 'segment 2 OTI must describe 168 bytes as one source block' },
  { name: 'OTI with N = 2', signed: () => resign((m) => { m.segments[1]!.oti = { ...m.segments[1]!.oti, subBlocks: 2 }; }), error: InvalidManifestError, message: 'segment 1 OTI must describe' },
  { name: 'OTI with another symbol size', signed: () => resign((m) => { m.segments[0]!.oti = { ...m.segments[0]!.oti, symbolSize: 1200 }; }), error: InvalidManifestError, message: 'segment 0 OTI must describe' },
  { name: 'one segment missing', signed: () => resign((m) => { m.segments.pop(); }), error: InvalidManifestError, message: 'manifest must list 3 segments for 5000 bytes' },
  { name: 'one segment too many', signed: () => resign((m) => { m.segments.push(m.segments[2]!); }), error: InvalidManifestError, message: 'manifest must list 3 segments' },
  { name: 'image over the limit', signed: () => unhex(EXAMPLE_SIGNED), limits: { maxImageSize: 4999 }, error: LimitExceededError, message: 'image of 5000 bytes exceeds the limit of 4999' },
  { name: 'too many segments for the limit', signed: () => unhex(EXAMPLE_SIGNED), limits: { maxSegments: 2 }, error: LimitExceededError, message: '3 segments exceed the limit of 2' },
  { name: 'symbol size over the limit', signed: () => unhex(EXAMPLE_SIGNED), limits: { maxSymbolSize: 1200 }, error: LimitExceededError, message: 'symbol size 1208 exceeds the limit of 1200' },
  { name: 'signed manifest over the limit', signed: () => unhex(EXAMPLE_SIGNED), limits: { maxManifestSize: 344 }, error: LimitExceededError, message: 'signed manifest of 345 bytes exceeds the limit of 344' },
  { name: 'no authentication parameters', signed: () => signMap((map) => { (map.get(9) as Map<number, unknown>).delete(6); }), error: InvalidManifestError, message: 'no per-packet authentication parameters (fec key 6)' },
  { name: 'unknown authentication scheme', signed: () => signMap((map) => { authMap(map).set(1, 2); }), error: InvalidManifestError, message: 'authentication scheme 2 is not supported' },
  { name: 'symbol digests shorter than 8 bytes', signed: () => signMap((map) => { authMap(map).set(2, 7); }), error: InvalidManifestError, message: 'symbol digests of 7 bytes are too short' },
  { name: 'symbol digests longer than 32 bytes', signed: () => signMap((map) => { authMap(map).set(2, 33); }), error: InvalidManifestError, message: 'fec.auth.digest-length' },
  { name: 'zero chunk symbols', signed: () => signMap((map) => { authMap(map).set(3, 0); }), error: InvalidManifestError, message: 'chunk-symbols must be at least 1' },
  { name: 'Merkle root of 15 bytes', signed: () => signMap((map) => { authMap(map).set(4, new Uint8Array(15)); }), error: InvalidManifestError, message: 'fec.auth.root must be 16 bytes' },
  { name: 'expires = created', signed: () => resign((m) => { m.expires = m.created; }), error: InvalidManifestError, message: 'expires before it was created' },
  { name: 'expires < created', signed: () => resign((m) => { m.expires = m.created - 1; }), error: InvalidManifestError, message: 'expires before it was created' },
  { name: 'empty image', signed: () => signMap((map) => { map.set(7, 0); }), error: InvalidManifestError, message: 'empty image' },
  { name: 'unknown manifest format', signed: () => signMap((map) => { map.set(1, 2); }), error: InvalidManifestError, message: 'manifest format 2 is not supported' },
  { name: 'negative seq', signed: () => signMap((map) => { map.set(3, -1); }), error: InvalidManifestError, message: 'manifest field "seq" must be an integer' },
  { name: 'digest algorithm not SHA-256', signed: () => signMap((map) => { map.set(8, [-43, new Uint8Array(32)]); }), error: InvalidManifestError, message: 'manifest digest must be [-16 (SHA-256), digest]' },
  { name: 'FEC encoding not RaptorQ', signed: () => signMap((map) => { (map.get(9) as Map<number, unknown>).set(1, 5); }), error: InvalidManifestError, message: 'FEC encoding 5 is not RaptorQ (6)' },
  { name: 'segment size not a multiple of T', signed: () => signMap((map) => { (map.get(9) as Map<number, unknown>).set(3, 2417); }), error: InvalidManifestError, message: 'segment size 2417 must be a multiple of the symbol size 1208' },
  { name: 'payload not a map', signed: () => signCoseSign1(encodeCbor([1, 2, 3]), FIXED_SEED), error: InvalidManifestError, message: 'manifest is not a CBOR map' },
  {
    name: 'bad signature',
    signed: () => { const b = unhex(EXAMPLE_SIGNED); b[b.length - 1]! ^= 0x01; return b; },
    error: InvalidSignatureError,
    message: `manifest signature does not verify with trusted key ${EXAMPLE_KID}`,
  },
  {
    name: 'tampered payload byte (version "1.2.3" → "1.2.4")',
    signed: () => { const b = unhex(EXAMPLE_SIGNED); const at = toHex(b).indexOf('312e322e33') / 2; b[at + 4] = 0x34; return b; },
    error: InvalidSignatureError,
    message: 'does not verify',
  },
  {
    name: 'tampered protected header (kid kept, alg changed to ES256)',
    signed: () => { const b = unhex(EXAMPLE_SIGNED); b[5] = 0x26; return b; },
    error: InvalidSignatureError,
    message: 'COSE algorithm -7 is not EdDSA (-8)',
  },
  { name: 'unknown key', signed: () => unhex(EXAMPLE_SIGNED), trusted: 'other', error: UnknownKeyError, message: `manifest is signed by key ${EXAMPLE_KID}, which is not trusted` },
  { name: 'wrong CBOR tag', signed: () => { const b = unhex(EXAMPLE_SIGNED); b[0] = 0xd1; return b; }, error: MalformedPacketError, message: 'tag 17 is not allowed' },
  { name: 'trailing garbage after the COSE_Sign1', signed: () => Uint8Array.from([...unhex(EXAMPLE_SIGNED), 0x00]), error: MalformedPacketError, message: 'trailing bytes after the item' },
];

for (const e of MANIFEST_ERRORS) {
  test(`manifest error: ${e.name}`, async (t) => {
    const fixed = await fixedKey();
    const trusted = e.trusted === 'other' ? [await makeKey()] : [fixed];
    const signed = await e.signed();
    const err = t.throws(() => openSignedManifest(signed, trusted, { ...DEFAULT_LIMITS, ...e.limits }), { instanceOf: e.error });
    t.true(err!.message.includes(e.message), err!.message);
  });
}

test('an untagged COSE_Sign1 is accepted too, with a different release id', async (t) => {
  const key = await fixedKey();
  const untagged = unhex(EXAMPLE_SIGNED).subarray(1);
  const opened = openSignedManifest(untagged, [key]);
  t.is(opened.manifest.version, '1.2.3');
  t.not(toHex(opened.releaseId), EXAMPLE_RELEASE_ID);
});

test('decodeManifest on the example payload alone (no signature) gives the same manifest', (t) => {
  const m = decodeManifest(unhex(EXAMPLE_PAYLOAD));
  t.is(m.segments.length, 3);
  t.is(toHex(m.segments[2]!.sha256), 'a6a55191963aa6a86f6cd005e0b9ff9d59217c0b76663fccecac44dd6aa9d6a1');
});

// ---------------------------------------------------------------------------
// Integers of 2^32 and above (SPEC.md §8.1: every integer field is a CBOR
// unsigned integer, major type 0, up to 2^53 − 1).
// ---------------------------------------------------------------------------

// Numbers in 2^32 .. 2^53 − 1 must be major-type-0 integers, not float64.
test('a manifest with seq = 2^32 encodes seq as a CBOR unsigned integer (1b ...)', (t) => {
  const m = exampleManifest();
  m.seq = 2 ** 32;
  t.true(toHex(encodeManifest(m)).includes('031b0000000100000000'), toHex(encodeManifest(m)).slice(0, 40));
});

// cbor-x decodes 8-byte integers as BigInt; they must still open.
test('a manifest whose seq is encoded as 1b 00000001 00000000 opens with seq = 2^32', async (t) => {
  const key = await fixedKey();
  const payload = toHex(unhex(EXAMPLE_PAYLOAD)).replace('03070465', '031b00000001000000000465');
  const signed = signCoseSign1(unhex(payload), FIXED_SEED);
  t.is(openSignedManifest(signed, [key]).manifest.seq, 2 ** 32);
});

test('integers below 2^32 use the shortest CBOR encoding (preferred serialization)', (t) => {
  for (const [n, bytes] of [[0, '00'], [23, '17'], [24, '1818'], [255, '18ff'], [256, '190100'], [65536, '1a00010000'], [2 ** 32 - 1, '1affffffff']] as const) {
    t.is(toHex(encodeCbor(n)), bytes, String(n));
  }
});

// ---------------------------------------------------------------------------
// SPEC.md itself: the printed vectors are the ones above.
// ---------------------------------------------------------------------------

const SPEC = readFileSync(fileURLToPath(new URL('../protocol/SPEC.md', import.meta.url)), 'utf8');

/** The first indented code block after `marker` in SPEC.md, as annotated hex. */
function specBlock(marker: string): string {
  const at = SPEC.indexOf(marker);
  if (at < 0) throw new Error(`SPEC.md has no "${marker}"`);
  const lines = SPEC.slice(at).split('\n');
  const start = lines.findIndex((l) => l.startsWith('    '));
  const block: string[] = [];
  for (const line of lines.slice(start)) {
    if (!line.startsWith('    ')) break;
    block.push(line);
  }
  return block.join('\n');
}

test('SPEC.md §12 prints exactly the bytes the code produces', (t) => {
  t.is(toHex(unhex(specBlock('### 12.3 Signed manifest'))), toHex(unhex(EXAMPLE_SIGNED)));
  t.true(SPEC.includes(`release id = SHA-256(those 345 bytes)[0..8) = ${EXAMPLE_RELEASE_ID}`));
  t.is(toHex(unhex(specBlock('### 12.5 OTI'))), toHex(unhex(OTI_FIXTURES[0]!.bytes)));
  t.is(toHex(unhex(specBlock('An AUTH datagram, leaf 2'))), toHex(unhex(AUTH_FIXTURES[1]!.bytes)));
  t.is(toHex(unhex(specBlock('A small SYMBOL datagram'))), toHex(unhex(SYMBOL_FIXTURES[0]!.bytes)));
  t.is(toHex(unhex(specBlock('A small MANIFEST fragment'))), toHex(unhex(FRAGMENT_FIXTURES[0]!.bytes)));
  t.true(SPEC.includes(`root      = SHA-256(01 ‖ node(0,1) ‖ node(2,3))[0..16) = ${EXAMPLE_AUTH_ROOT}`));
  for (const leaf of EXAMPLE_LEAVES) t.true(SPEC.includes(leaf), leaf);
  for (const node of EXAMPLE_NODES) t.true(SPEC.includes(node), node);
  for (const digest of EXAMPLE_SYMBOL_DIGESTS.flat()) t.true(SPEC.includes(`\`${digest}\``), digest);
  for (const [, , sha] of EXAMPLE_SYMBOL_SHA256) t.true(SPEC.includes(`\`${sha}\``), sha);
  for (const c of CHANNEL_FIXTURES) t.true(SPEC.includes(`| \`${c.name}\``) && SPEC.includes(`\`${c.group}\``), c.name);
  t.true(SPEC.includes(`kid         ${EXAMPLE_KID}`));
  t.true(SPEC.includes(`public key  ${EXAMPLE_PUBLIC_KEY}`));
});

test('SPEC.md §12.9: the Reed–Solomon parity pieces printed are the code\'s, and any two pieces give back the data', (t) => {
  const data = [unhex('01028000'), unhex('030400ff')];
  const section = SPEC.slice(SPEC.indexOf('### 12.9'), SPEC.indexOf('## 13.'));
  const printed = [...section.matchAll(/^\| (\d) \| inv\(\d\) \| inv\(\d\) \| `([0-9a-f]+)` \|$/gm)].map((m) => [Number(m[1]), m[2]!] as const);
  t.is(printed.length, 4);
  const pieces = new Map<number, Uint8Array>(data.map((d, i) => [i, d]));
  for (const [j, hex] of printed) {
    t.is(toHex(parityPiece(data, j, 4)), hex, `parity ${j}`);
    pieces.set(2 + j, unhex(hex));
  }
  for (const a of pieces.keys()) {
    for (const b of pieces.keys()) {
      if (a < b) t.deepEqual(recoverData(2, 4, new Map([[a, pieces.get(a)!], [b, pieces.get(b)!]])), data, `pieces ${a}, ${b}`);
    }
  }
});
