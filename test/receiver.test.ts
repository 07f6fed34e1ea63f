/**
 * Unit tests of device-agent/receiver/receiver.ts: datagrams from carousel/carousel.ts
 * (and hand-made ones) pushed in memory, events and drop counters checked.
 */
import test from 'ava';
import fc from 'fast-check';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { DropReason } from '../device-agent/receiver/drop-reasons.js';
import { Receiver, type ReceiverEvent, type ReceiverInit } from '../device-agent/receiver/receiver.js';
import * as ed25519 from '../protocol/ed25519.js';
import {
  ExpiredManifestError, RollbackError, UnknownKeyError, WrongModelError, type FwcastError,
} from '../protocol/errors.js';
import { DEFAULT_LIMITS } from '../protocol/limits.js';
import { encodeChunkBody, symbolDigest } from '../protocol/auth.js';
import { symbolOf } from '../protocol/symbol-set.js';
import {
  decodePacket, encodeAuthPacket, encodeManifestFragment, encodeSymbolPacket, PacketType, type AuthPacket,
} from '../protocol/packet.js';
import type { Release, ReleaseInit } from '../server/release.js';
import { makeKey, prng, sha256hex, type TestKey } from './helpers/fixtures.js';
import { carouselOf, feed, runUntilComplete, take, testRelease, toHex } from './helpers/releases.js';

const NOW = 1_800_000_100;

test.before(async () => {
  await ed25519.ready();
});

const isSymbol = (d: Uint8Array): boolean => d[3] === PacketType.Symbol;
const isFragment = (d: Uint8Array): boolean => d[3] === PacketType.Manifest;
const kinds = (events: ReceiverEvent[]): string[] => events.map((e) => e.kind);

let sharedKey: TestKey | undefined;
async function key(): Promise<TestKey> {
  sharedKey ??= await makeKey();
  return sharedKey;
}

// ---------------------------------------------------------------------------
// Manifest refusals: one table, each case checked the same way.
// ---------------------------------------------------------------------------

interface RefusalCase {
  name: string;
  release: Partial<ReleaseInit>;
  receiver: Partial<ReceiverInit> & { untrusted?: boolean };
  error: new (message: string) => FwcastError;
  reason: string;
  message: string;
}

const REFUSALS: RefusalCase[] = [
  { name: 'signed by an unknown key', release: {}, receiver: { untrusted: true }, error: UnknownKeyError, reason: 'unknown-key', message: 'which is not trusted' },
  { name: 'for another model', release: { model: 'rpi3' }, receiver: {}, error: WrongModelError, reason: 'wrong-model', message: 'release is for model "rpi3", this agent is "rpi4"' },
  { name: 'seq equal to the installed one', release: { seq: 5 }, receiver: { installedSeq: 5 }, error: RollbackError, reason: 'rollback', message: 'sequence 5 is not above the installed 5' },
  { name: 'seq below the installed one', release: { seq: 4 }, receiver: { installedSeq: 5 }, error: RollbackError, reason: 'rollback', message: 'sequence 4 is not above the installed 5' },
  { name: 'expiring exactly now', release: { expires: NOW }, receiver: {}, error: ExpiredManifestError, reason: 'expired', message: 'expired at' },
  { name: 'expired before now', release: { expires: NOW - 60 }, receiver: {}, error: ExpiredManifestError, reason: 'expired', message: 'expired at' },
];

for (const c of REFUSALS) {
  test(`a release ${c.name} is rejected once (${c.error.name}), nothing is decoded, repeats are counted`, async (t) => {
    const k = await key();
    const release = testRelease(k, c.release);
    const carousel = carouselOf(release, 10);
    const trusted = c.receiver.untrusted ? [await makeKey()] : [k];
    const { untrusted: _, ...init } = c.receiver;
    const receiver = new Receiver({ model: 'rpi4', trusted, ...init });
    const datagrams = take(carousel, carousel.roundLength * 3);
    t.true(datagrams.filter(isFragment).length >= 3, 'the manifest was repeated');
    const { events } = feed(receiver, datagrams, NOW);

    t.deepEqual(kinds(events), ['rejected']);
    const e = events[0] as Extract<ReceiverEvent, { kind: 'rejected' }>;
    t.true(e.error instanceof c.error, e.error.name);
    t.true(e.error.message.includes(c.message), e.error.message);
    t.is(e.error.reason, c.reason);
    t.is(e.releaseId, toHex(release.releaseId));
    t.is(receiver.current, undefined);
    t.is(receiver.stats.symbolsAccepted, 0);
    t.is(receiver.stats.segmentsDecoded, 0);
    // Every datagram of the refused release, manifest copies and symbols alike, is dropped under the refusal's reason.
    t.deepEqual(receiver.stats.dropped, { [c.reason]: datagrams.length });
  });
}

test('boundaries: expires one second after now, and seq one above the installed one, are accepted', async (t) => {
  const k = await key();
  const release = testRelease(k, { expires: NOW + 1, seq: 6 });
  const receiver = new Receiver({ model: 'rpi4', trusted: [k], installedSeq: 5 });
  const result = runUntilComplete(receiver, carouselOf(release), NOW, 1000);
  t.deepEqual(kinds(result.events).filter((x) => x !== 'segment'), ['accepted', 'complete']);
  t.is(sha256hex(result.image!), sha256hex(release.image));
});

test('a release marked installed is refused as already-installed afterwards', async (t) => {
  const k = await key();
  const release = testRelease(k);
  const receiver = new Receiver({ model: 'rpi4', trusted: [k] });
  const carousel = carouselOf(release);
  const first = runUntilComplete(receiver, carousel, NOW, 1000);
  const accepted = first.events.find((e) => e.kind === 'accepted')!;
  receiver.markInstalled((accepted as Extract<ReceiverEvent, { kind: 'accepted' }>).release);
  t.is(receiver.installedSeq, 1);
  const more = take(carousel, carousel.roundLength);
  t.deepEqual(feed(receiver, more, NOW).events, []);
  t.is(receiver.stats.dropped['already-installed'], more.length);
});

// ---------------------------------------------------------------------------
// Several releases
// ---------------------------------------------------------------------------

test('a newer seq arriving mid-transfer supersedes the current release; the older one is then ignored', async (t) => {
  const k = await key();
  const older = testRelease(k, { seq: 1, imageSeed: 1 });
  const newer = testRelease(k, { seq: 2, imageSeed: 2 });
  t.not(sha256hex(older.image), sha256hex(newer.image));
  const receiver = new Receiver({ model: 'rpi4', trusted: [k] });
  const a = carouselOf(older, 5);
  const b = carouselOf(newer, 5);

  const start = feed(receiver, take(a, 12), NOW);
  t.is(kinds(start.events)[0], 'accepted');
  t.false(kinds(start.events).includes('complete'), 'the older release was not finished');
  t.true(receiver.progress()!.symbols > 0, 'the older release was under way');

  const events: ReceiverEvent[] = [];
  const image = new Uint8Array(newer.image.length);
  let complete = false;
  for (let i = 0; i < 2000 && !complete; i++) {
    for (const d of [b.next(), a.next()]) {
      for (const e of receiver.push(d, NOW)) {
        events.push(e);
        if (e.kind === 'segment') image.set(e.bytes!, e.segment.offset);
        if (e.kind === 'complete') complete = true;
      }
    }
  }
  t.true(complete);
  t.deepEqual(kinds(events).filter((x) => x !== 'segment'), ['accepted', 'complete']);
  const accepted = events[0] as Extract<ReceiverEvent, { kind: 'accepted' }>;
  t.is(toHex(accepted.release.releaseId), toHex(newer.releaseId));
  t.true(events.filter((e) => e.kind === 'segment').every((e) => toHex(e.release.releaseId) === toHex(newer.releaseId)));
  t.is(sha256hex(image), sha256hex(newer.image));
  t.true((receiver.stats.dropped['unknown-release'] ?? 0) > 0, 'symbols of the superseded release are dropped');
  t.true((receiver.stats.dropped['superseded'] ?? 0) > 0, 'repeats of the older manifest are dropped');
  t.is(toHex(receiver.current!.releaseId), toHex(newer.releaseId));
});

test('an older seq arriving during a transfer does not interrupt it', async (t) => {
  const k = await key();
  const newer = testRelease(k, { seq: 2 });
  const older = testRelease(k, { seq: 1, imageSeed: 3 });
  const receiver = new Receiver({ model: 'rpi4', trusted: [k] });
  t.deepEqual(kinds(feed(receiver, take(carouselOf(newer), 3), NOW).events), ['accepted']);
  const olderManifest = carouselOf(older).manifestFragments;
  t.deepEqual(feed(receiver, olderManifest, NOW).events, []);
  t.is(receiver.stats.dropped['superseded'], 1);
  t.is(toHex(receiver.current!.releaseId), toHex(newer.releaseId));
});

test('symbols of a release whose manifest has not been seen are dropped as unknown-release', async (t) => {
  const k = await key();
  const receiver = new Receiver({ model: 'rpi4', trusted: [k] });
  const carousel = carouselOf(testRelease(k));
  const symbols = take(carousel, carousel.roundLength).filter(isSymbol);
  t.deepEqual(feed(receiver, symbols, NOW).events, []);
  t.deepEqual(receiver.stats.dropped, { 'unknown-release': symbols.length });
  t.is(receiver.stats.symbolsAccepted, 0);
});

// ---------------------------------------------------------------------------
// Manifest reassembly
// ---------------------------------------------------------------------------

function refragment(release: Release, size: number, releaseId = release.releaseId, totalLength = release.signed.length): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let offset = 0; offset < release.signed.length; offset += size) {
    out.push(encodeManifestFragment({ releaseId, totalLength, offset, bytes: release.signed.subarray(offset, offset + size) }));
  }
  return out;
}

test('manifest fragments whose bytes do not hash to their release id are dropped as manifest-mismatch', async (t) => {
  const k = await key();
  const release = testRelease(k);
  const receiver = new Receiver({ model: 'rpi4', trusted: [k] });
  const wrongId = Uint8Array.from(release.releaseId);
  wrongId[0]! ^= 0xff;
  const forged = refragment(release, 100, wrongId);
  t.true(forged.length > 1);
  t.deepEqual(feed(receiver, forged, NOW).events, []);
  t.deepEqual(receiver.stats.dropped, { 'manifest-mismatch': 1 });
  // The wrong id is not remembered as refused; the genuine manifest still gets through.
  t.deepEqual(kinds(feed(receiver, refragment(release, 100), NOW).events), ['accepted']);
});

test('manifest reassembly: fragments in any order and of several cuts; a corrupt fragment heard first costs nothing', async (t) => {
  const k = await key();
  const release = testRelease(k);
  const receiver = new Receiver({ model: 'rpi4', trusted: [k] });
  const corrupt = encodeManifestFragment({ releaseId: release.releaseId, totalLength: release.signed.length, offset: 10, bytes: new Uint8Array(20) });
  // No first writer wins: the genuine copy tiles by itself and hashes to its release id.
  t.deepEqual(kinds(feed(receiver, [corrupt, ...refragment(release, 64).reverse()], NOW).events), ['accepted']);
  t.is(receiver.stats.dropped['manifest-mismatch'] ?? 0, 0);
  const other = new Receiver({ model: 'rpi4', trusted: [k] });
  const mixed = [...refragment(release, 97).filter((_, i) => i % 2 === 0), ...refragment(release, 50)];
  t.deepEqual(kinds(feed(other, mixed, NOW).events), ['accepted']);
});

test('a fragment disagreeing on the total length of a reassembly in progress goes its own way; the genuine one completes', async (t) => {
  const k = await key();
  const release = testRelease(k);
  const receiver = new Receiver({ model: 'rpi4', trusted: [k] });
  const [first, ...rest] = refragment(release, 100);
  feed(receiver, [first!], NOW);
  const liar = encodeManifestFragment({ releaseId: release.releaseId, totalLength: release.signed.length + 1, offset: 0, bytes: new Uint8Array(1) });
  t.deepEqual(feed(receiver, [liar], NOW).events, []);
  t.deepEqual(kinds(feed(receiver, rest, NOW).events), ['accepted']);
});

// A spoofed fragment (same sender, genuine release id, wrong total length) must not block the genuine manifest.
test('a single spoofed fragment with a wrong total length does not block the genuine manifest', async (t) => {
  const k = await key();
  const release = testRelease(k);
  const receiver = new Receiver({ model: 'rpi4', trusted: [k] });
  const spoof = encodeManifestFragment({ releaseId: release.releaseId, totalLength: release.signed.length + 1, offset: 0, bytes: new Uint8Array(1) });
  receiver.push(spoof, NOW);
  const carousel = carouselOf(release, 10);
  const { events } = feed(receiver, take(carousel, carousel.roundLength * 3), NOW);
  t.true(kinds(events).includes('accepted'), `dropped: ${JSON.stringify(receiver.stats.dropped)}`);
});

// ---------------------------------------------------------------------------
// Symbols: named drops, forgeries
// ---------------------------------------------------------------------------

test('symbol drop reasons of an accepted release', async (t) => {
  const k = await key();
  const release = testRelease(k);
  const m = release.manifest;
  const receiver = new Receiver({ model: 'rpi4', trusted: [k], limits: { ...DEFAULT_LIMITS, maxManifestSize: 4096 } });
  feed(receiver, refragment(release, 1200), NOW);
  t.truthy(receiver.current);
  const last = m.segments[m.segments.length - 1]!;
  const symbol = (segment: number, esi: number, size = m.symbolSize) =>
    encodeSymbolPacket({ releaseId: release.releaseId, segment, esi, symbol: new Uint8Array(size) });
  const cases: Array<[DropReason, Uint8Array]> = [
    ['bad-segment', symbol(m.segments.length, 0)],
    ['bad-segment', symbol(0xffffffff, 0)],
    ['bad-esi', symbol(last.index, last.published)],
    ['bad-esi', symbol(0, 0xffffff)],
    ['bad-symbol-size', symbol(0, 0, m.symbolSize - 8)],
    ['bad-symbol-size', symbol(0, 0, m.symbolSize + 1)],
    ['manifest-repeat', refragment(release, 1200)[0]!],
    ['limit-exceeded', encodeManifestFragment({ releaseId: new Uint8Array(8), totalLength: 4097, offset: 0, bytes: new Uint8Array(1) })],
    ['unsupported-version', Uint8Array.from([0x46, 0x57, 0x02, 0x02, ...new Uint8Array(20)])],
    ['malformed', Uint8Array.from([0x46, 0x57, 0x01, 0x04, ...new Uint8Array(20)])],
    ['malformed', new Uint8Array(3)],
  ];
  for (const [reason, datagram] of cases) {
    const before = receiver.stats.dropped[reason] ?? 0;
    t.deepEqual(receiver.push(datagram, NOW), [], reason);
    t.is(receiver.stats.dropped[reason], before + 1, reason);
  }
  t.is(receiver.stats.symbolsAccepted, 0);
  // A duplicate symbol is counted, not dropped (its AUTH chunk goes first).
  const c = carouselOf(release);
  const upToFirstSymbol: Uint8Array[] = [];
  do upToFirstSymbol.push(c.next()); while (!isSymbol(upToFirstSymbol.at(-1)!));
  feed(receiver, upToFirstSymbol.filter((d) => !isFragment(d)), NOW);
  receiver.push(upToFirstSymbol.at(-1)!, NOW);
  t.is(receiver.stats.authChunksVerified, 1);
  t.is(receiver.stats.symbolsAccepted, 1);
  t.is(receiver.stats.duplicates, 1);
});

test('symbols for a segment already decoded are dropped as segment-complete', async (t) => {
  const k = await key();
  const release = testRelease(k);
  const receiver = new Receiver({ model: 'rpi4', trusted: [k] });
  const carousel = carouselOf(release);
  const result = runUntilComplete(receiver, carousel, NOW, 1000);
  t.truthy(result.image);
  const more = take(carousel, carousel.roundLength);
  const before = { ...receiver.stats.dropped };
  t.deepEqual(feed(receiver, more, NOW).events, []);
  // Symbols and parity pieces of a decoded segment; its chunks' own AUTH datagrams are repeats.
  const chunkLeaves = release.symbolSet!.layout.chunkLeaves;
  const isParity = (d: Uint8Array) => d[3] === PacketType.Auth && (decodePacket(d) as AuthPacket).leaf >= chunkLeaves;
  t.is(receiver.stats.dropped['segment-complete']! - (before['segment-complete'] ?? 0), more.filter(isSymbol).length + more.filter(isParity).length);
  t.is(receiver.stats.dropped['manifest-repeat']! - (before['manifest-repeat'] ?? 0), more.filter(isFragment).length);
});

interface Forgery {
  name: string;
  /** (segment, esi) pairs forged with garbage data, relative to the manifest. */
  pick: (r: Release) => Array<[number, number]>;
}

const FORGERIES: Forgery[] = [
  { name: 'a source symbol (ESI 0 of segment 0)', pick: () => [[0, 0]] },
  { name: 'the last source symbol of the last segment', pick: (r) => { const s = r.manifest.segments.at(-1)!; return [[s.index, s.sourceSymbols - 1]]; } },
  { name: 'the first repair symbol (ESI K of segment 1)', pick: (r) => [[1, r.manifest.segments[1]!.sourceSymbols]] },
  { name: 'the last published ESI of segment 2', pick: (r) => [[2, r.manifest.segments[2]!.published - 1]] },
  { name: 'one symbol in every segment', pick: (r) => r.manifest.segments.map((s) => [s.index, s.index % s.published]) },
];

for (const f of FORGERIES) {
  test(`a forged symbol (${f.name}) costs at most a segment restart; the image still completes correctly`, async (t) => {
    const k = await key();
    const release = testRelease(k);
    const receiver = new Receiver({ model: 'rpi4', trusted: [k] });
    const carousel = carouselOf(release);
    const fragments = carousel.manifestFragments.length;
    const { events: start } = feed(receiver, take(carousel, fragments), NOW);
    t.deepEqual(kinds(start), ['accepted']);
    const next = prng(99);
    const forged = f.pick(release).map(([segment, esi]) => encodeSymbolPacket({
      releaseId: release.releaseId, segment, esi,
      symbol: new Uint8Array(release.manifest.symbolSize).map(() => (next() * 256) | 0),
    }));
    t.deepEqual(feed(receiver, forged, NOW).events, []);
    t.is(receiver.stats.symbolsAccepted, 0, 'held back until their AUTH chunk arrives');

    const result = runUntilComplete(receiver, carousel, NOW, carousel.roundLength * 6);
    t.truthy(result.image, `did not complete; dropped ${JSON.stringify(receiver.stats.dropped)}`);
    t.is(sha256hex(result.image!), sha256hex(release.image));
    const mismatches = receiver.stats.dropped['segment-digest-mismatch'] ?? 0;
    t.true(mismatches <= forged.length, `${mismatches} digest mismatches for ${forged.length} forged symbols`);
    t.is(receiver.stats.segmentsDecoded, release.manifest.segments.length);
    // With per-packet authentication the forged symbols wait for their AUTH chunk and are then
    // refused by digest: none reaches the decoder, no segment has to start over.
    t.is(mismatches, 0);
    t.is(receiver.stats.dropped['bad-symbol-digest'], forged.length);
  });
}

// ---------------------------------------------------------------------------
// AUTH datagrams
// ---------------------------------------------------------------------------

test('AUTH drop reasons: wrong leaf, wrong depth, tampered body or path, repeats, unknown release', async (t) => {
  const k = await key();
  const release = testRelease(k);
  const receiver = new Receiver({ model: 'rpi4', trusted: [k] });
  const c = carouselOf(release);
  const fragments = c.manifestFragments.length;
  const head = take(c, fragments + 1);
  feed(receiver, head.slice(0, fragments), NOW);
  const genuine = decodePacket(head[fragments]!);
  if (genuine.type !== PacketType.Auth) return t.fail('expected an AUTH datagram after the manifest');
  const layout = { leaves: release.symbolSet!.layout.leaves, depth: release.symbolSet!.layout.depth };
  t.true(layout.depth >= 1);
  const flip = (bytes: Uint8Array, at: number) => { const b = Uint8Array.from(bytes); b[at]! ^= 0x01; return b; };
  const auth = (over: Partial<Omit<AuthPacket, 'type'>>) => encodeAuthPacket({ releaseId: genuine.releaseId, leaf: genuine.leaf, path: genuine.path, body: genuine.body, ...over });
  const cases: Array<[DropReason, Uint8Array]> = [
    ['bad-auth', auth({ leaf: layout.leaves })],
    ['bad-auth', auth({ leaf: genuine.leaf + 1 })],
    ['bad-auth', auth({ path: genuine.path.slice(1) })],
    ['bad-auth', auth({ body: flip(genuine.body, genuine.body.length - 1) })],
    ['bad-auth', auth({ body: flip(genuine.body, 3) })],
    ['bad-auth', auth({ body: genuine.body.subarray(0, 9) })],
    ['bad-auth', auth({ path: [flip(genuine.path[0]!, 0), ...genuine.path.slice(1)] })],
    ['unknown-release', auth({ releaseId: new Uint8Array(8) })],
  ];
  for (const [reason, datagram] of cases) {
    const before = receiver.stats.dropped[reason] ?? 0;
    t.deepEqual(receiver.push(datagram, NOW), [], reason);
    t.is(receiver.stats.dropped[reason], before + 1, reason);
  }
  t.is(receiver.stats.authChunksVerified, 0);
  receiver.push(head[fragments]!, NOW);
  t.is(receiver.stats.authChunksVerified, 1);
  receiver.push(head[fragments]!, NOW);
  t.is(receiver.stats.dropped['auth-repeat'], 1);
});

/** Small datagrams, so that each segment has several chunks: 4 segments of 9 chunks, in groups of 3 (one per round). */
function codedRelease(k: TestKey, seed: number): Release {
  return testRelease(k, { image: new Uint8Array(90_000).map((_, i) => (i * seed + (i >>> 9)) & 0xff), datagramSize: 400, segmentSize: 60 * 376, chunkCoding: { groupChunks: 3, parityPerChunk: 2 } });
}

test('coded chunks: a receiver that never hears a chunk\'s own AUTH datagram rebuilds every chunk from parity pieces and completes', async (t) => {
  const k = await key();
  const release = codedRelease(k, 7);
  const layout = release.symbolSet!.layout;
  t.true(layout.chunkLeaves >= 6 && layout.parityPerChunk === 2, 'several chunks, several groups');
  const receiver = new Receiver({ model: 'rpi4', trusted: [k] });
  const c = carouselOf(release);
  let parity = 0;
  const datagrams: Uint8Array[] = [];
  for (let i = 0; i < 6 * c.roundLength; i++) {
    const d = c.next();
    if (d[3] === PacketType.Auth) {
      const p = decodePacket(d) as AuthPacket;
      if (p.leaf < layout.chunkLeaves) continue;
      parity++;
    }
    datagrams.push(d);
  }
  t.true(parity > 0);
  const result = feed(receiver, datagrams, NOW);
  t.true(result.events.some((e) => e.kind === 'complete'), `completed; dropped ${JSON.stringify(receiver.stats.dropped)}`);
  t.is(sha256hex(result.image!), sha256hex(release.image));
  t.true(receiver.stats.authChunksVerified > 0, 'chunks were rebuilt');
  t.is(receiver.stats.dropped['bad-auth'] ?? 0, 0);
});

test('coded chunks: a parity piece with a wrong index or length is refused at once, one with a flipped bit when a rebuild checks it; the genuine pieces rebuild the group once a symbol of it waits', async (t) => {
  const k = await key();
  const release = codedRelease(k, 5);
  const layout = release.symbolSet!.layout;
  const receiver = new Receiver({ model: 'rpi4', trusted: [k] });
  const c = carouselOf(release);
  feed(receiver, take(c, c.manifestFragments.length), NOW);
  const leaf = layout.parityLeaf(0, 1);
  const body = release.symbolSet!.bodies[leaf]!;
  const path = release.symbolSet!.tree.proof(leaf);
  const flip = (bytes: Uint8Array, at: number) => { const b = Uint8Array.from(bytes); b[at]! ^= 0x40; return b; };
  const auth = (over: Partial<Omit<AuthPacket, 'type'>>) => encodeAuthPacket({ releaseId: release.releaseId, leaf, path, body, ...over });
  for (const datagram of [
    auth({ body: flip(body, 9) }),
    auth({ body: body.subarray(0, body.length - 1) }),
    auth({ leaf: layout.parityLeaf(0, 2) }),
    auth({ body: flip(body, body.length - 1) }),
  ]) {
    t.deepEqual(receiver.push(datagram, NOW), []);
  }
  t.is(receiver.stats.dropped['bad-auth'], 3, 'the flipped parity byte is only found out when the piece is needed');
  // The genuine pieces 0..2 of group 0 (3 chunks) add up to the group, but nothing waits for it: no check, no rebuild.
  for (const j of [0, 1, 2]) {
    const l = layout.parityLeaf(0, j);
    receiver.push(encodeAuthPacket({ releaseId: release.releaseId, leaf: l, path: release.symbolSet!.tree.proof(l), body: release.symbolSet!.bodies[l]! }), NOW);
  }
  t.is(receiver.stats.authChunksVerified, 0, 'no rebuild while no symbol waits');
  t.is(receiver.stats.dropped['bad-auth'], 3, 'and no piece checked');
  // The first symbol of chunk 1, whose own AUTH datagram never came: the group is rebuilt and the symbol accepted.
  const esi = layout.chunk(1).firstEsi;
  receiver.push(encodeSymbolPacket({ releaseId: release.releaseId, segment: 0, esi, symbol: symbolOf(release.symbolSet!, 0, esi) }), NOW);
  t.is(receiver.stats.authChunksVerified, 3, 'all three chunks rebuilt');
  t.is(receiver.stats.symbolsAccepted, 1);
  t.is(receiver.stats.dropped['bad-auth'], 4, 'the forged copy of piece 1 failed its Merkle path when the rebuild checked it');
  receiver.push(auth({}), NOW);
  t.is(receiver.stats.dropped['auth-repeat'], 1, 'a piece of a group already rebuilt is a repeat');
});

test('a forger who also forges the AUTH chunk for its symbols is refused (the Merkle root is signed)', async (t) => {
  const k = await key();
  const release = testRelease(k);
  const receiver = new Receiver({ model: 'rpi4', trusted: [k] });
  const c = carouselOf(release);
  feed(receiver, c.manifestFragments, NOW);
  const { digestLength, chunkSymbols } = release.manifest.auth;
  const seg = release.manifest.segments[0]!;
  const count = Math.min(chunkSymbols, seg.published);
  const garbage = Array.from({ length: count }, (_, esi) => new Uint8Array(release.manifest.symbolSize).fill(esi + 1));
  const digests = new Uint8Array(count * digestLength);
  garbage.forEach((g, i) => digests.set(symbolDigest(g, digestLength), i * digestLength));
  const body = encodeChunkBody({ leaf: 0, segment: 0, firstEsi: 0, count }, digests);
  const path = Array.from({ length: release.symbolSet!.layout.depth }, () => new Uint8Array(16));
  feed(receiver, garbage.map((symbol, esi) => encodeSymbolPacket({ releaseId: release.releaseId, segment: 0, esi, symbol })), NOW);
  feed(receiver, [encodeAuthPacket({ releaseId: release.releaseId, leaf: 0, path, body })], NOW);
  t.is(receiver.stats.dropped['bad-auth'], 1);
  t.is(receiver.stats.symbolsAccepted, 0);
  const result = runUntilComplete(receiver, c, NOW, c.roundLength * 4);
  t.is(sha256hex(result.image!), sha256hex(release.image));
  t.is(receiver.stats.dropped['bad-symbol-digest'], count, 'the held-back forgeries are refused once the genuine chunk arrives');
});

// ---------------------------------------------------------------------------
// Garbage
// ---------------------------------------------------------------------------

test('random datagrams never throw and never produce events (fast-check)', async (t) => {
  const k = await key();
  const release = testRelease(k);
  const m = release.manifest;
  const header = (type: number, id: Uint8Array) => Uint8Array.from([0x46, 0x57, 0x01, type, ...id]);
  const withHeader = (type: number, id: Uint8Array, rest: Uint8Array) => Uint8Array.from([...header(type, id), ...rest]);
  const ids = fc.oneof(fc.constant(release.releaseId), fc.uint8Array({ minLength: 8, maxLength: 8 }));
  const datagram = fc.oneof(
    fc.uint8Array({ maxLength: 1500 }),
    fc.tuple(fc.constantFrom(0, 1, 2, 3, 255), ids, fc.uint8Array({ maxLength: 1300 })).map(([type, id, rest]) => withHeader(type, id, rest)),
    fc.record({ segment: fc.nat(m.segments.length + 1), esi: fc.nat(40), fill: fc.nat(255) }).map(({ segment, esi, fill }) =>
      encodeSymbolPacket({ releaseId: release.releaseId, segment, esi, symbol: new Uint8Array(m.symbolSize).fill(fill) })),
    fc.record({ total: fc.nat(600), offset: fc.nat(600), bytes: fc.uint8Array({ minLength: 1, maxLength: 100 }) }).map(({ total, offset, bytes }) =>
      Uint8Array.from([...header(1, new Uint8Array(8)), ...u32(total), ...u32(offset), ...bytes])),
  );
  fc.assert(fc.property(fc.boolean(), fc.array(datagram, { maxLength: 30 }), (accepted, datagrams) => {
    const receiver = new Receiver({ model: 'rpi4', trusted: [k] });
    if (accepted && kinds(feed(receiver, carouselOf(release).manifestFragments, NOW).events)[0] !== 'accepted') return false;
    const { events } = feed(receiver, datagrams, NOW);
    receiver.close();
    return events.length === 0 && receiver.stats.datagrams === datagrams.length + (accepted ? carouselOf(release).manifestFragments.length : 0);
  }), { numRuns: 150, seed: 7 });
  t.pass();
});

function u32(n: number): number[] {
  return [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
}

test('after a burst of garbage the genuine release still completes', async (t) => {
  const k = await key();
  const release = testRelease(k);
  const receiver = new Receiver({ model: 'rpi4', trusted: [k] });
  const next = prng(1234);
  const carousel = carouselOf(release);
  const events: ReceiverEvent[] = [];
  let image: Uint8Array | undefined;
  const out = new Uint8Array(release.image.length);
  for (let i = 0; i < carousel.roundLength * 6 && !image; i++) {
    const garbage = new Uint8Array(1 + Math.floor(next() * 1300)).map(() => (next() * 256) | 0);
    if (next() < 0.5) garbage.set([0x46, 0x57, 0x01, next() < 0.5 ? 1 : 2]);
    if (next() < 0.3) garbage.set(release.releaseId, 4);
    for (const d of [garbage, carousel.next()]) {
      t.notThrows(() => {
        for (const e of receiver.push(d, NOW)) {
          events.push(e);
          if (e.kind === 'segment') out.set(e.bytes!, e.segment.offset);
          if (e.kind === 'complete') image = out;
        }
      });
    }
  }
  t.truthy(image);
  t.is(sha256hex(image!), sha256hex(release.image));
  t.deepEqual(kinds(events).filter((x) => x !== 'segment'), ['accepted', 'complete']);
  t.true(decodePacket(carousel.manifestFragments[0]!).type === PacketType.Manifest);
});

test('symbols and AUTH heard before the manifest are kept and used once it arrives', async (t) => {
  const k = await key();
  const release = testRelease(k);
  const receiver = new Receiver({ model: 'rpi4', trusted: [k] });
  const carousel = carouselOf(release, 1000);
  const all = take(carousel, 400);
  // Join just after the manifest went by: everything until its next copy comes first.
  const early = all.slice(1).filter((d) => decodePacket(d).type !== PacketType.Manifest).slice(0, 60);
  feed(receiver, early, NOW);
  t.is(receiver.stats.symbolsAccepted, 0, 'nothing usable without the manifest');
  t.is(receiver.stats.dropped['unknown-release'], early.length);
  const { events } = feed(receiver, [all[0]!], NOW);
  t.is(kinds(events)[0], 'accepted');
  t.true(receiver.stats.symbolsAccepted > 0, 'the kept symbols were authenticated and used');
  t.is(receiver.stats.dropped['unknown-release'] ?? 0, 0, 'they are no longer counted as drops');
});

test('datagrams of unknown releases are kept up to 1 MiB, whatever their size: 1,200 of 64 KB retain no more', async (t) => {
  // Retained memory, measured after a full collection (the peak of a flood is the
  // garbage collector's business: test/memory-bounds.test.ts measures the agent's).
  v8.setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const k = await key();
  const receiver = new Receiver({ model: 'rpi4', trusted: [k] });
  const random = prng(5);
  const junk = (i: number): Uint8Array => {
    const d = new Uint8Array(65000);
    d.set([0x46, 0x57, 1, i % 2 === 0 ? PacketType.Symbol : PacketType.Auth]);
    for (let j = 4; j < 12; j++) d[j] = Math.floor(random() * 256);
    return d;
  };
  // Backing stores are freed by a sweeper after the collection: collect until the count settles.
  const retained = async (): Promise<number> => {
    let last = -1;
    for (let i = 0; i < 20 && process.memoryUsage().arrayBuffers !== last; i++) {
      last = process.memoryUsage().arrayBuffers;
      gc();
      await new Promise((r) => setTimeout(r, 20));
    }
    return process.memoryUsage().arrayBuffers;
  };
  const before = await retained();
  for (let i = 0; i < 1200; i++) receiver.push(junk(i), NOW);
  const kept = (await retained()) - before;
  t.log(`retained ${(kept / 1048576).toFixed(2)} MiB after 1,200 datagrams of 64 KB`);
  t.is(receiver.stats.dropped['unknown-release'], 1200);
  t.true(kept <= 1.25 * 1048576, `retained ${kept} bytes`);
});
