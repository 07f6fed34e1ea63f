/**
 * The TUF / Uptane / SUIT attack list against the agent's receiver: each
 * attack is refused with a named reason, counted, and nothing is decoded or
 * installed from it.
 */
import test from 'ava';
import { MemoryAssembler } from '../device-agent/assembler.js';
import type { DropReason } from '../device-agent/receiver/drop-reasons.js';
import { Receiver, type ReceiverEvent } from '../device-agent/receiver/receiver.js';
import { RaptorqCodec } from '../protocol/fec.js';
import { RaptorqWasm, type DecoderHandle } from '../protocol/raptorq-wasm.js';
import { encodeCbor, Tag } from '../protocol/cbor.js';
import { COSE_SIGN1_TAG } from '../protocol/cose-sign1.js';
import { releaseIdOf, signManifest, type Manifest } from '../protocol/manifest.js';
import { DEFAULT_LIMITS } from '../protocol/limits.js';
import { decodePacket, encodeManifestFragment, encodeSymbolPacket, PacketType } from '../protocol/packet.js';
import { Carousel } from '../carousel/carousel.js';
import { buildRelease, type Release } from '../server/release.js';
import { makeImage, makeKey, sha256hex } from './helpers/fixtures.js';

const NOW = 1_800_000_000;

function datagramsOf(release: Release, count: number): Uint8Array[] {
  const carousel = new Carousel({ ...release });
  return Array.from({ length: count }, () => carousel.next());
}

function fragments(signed: Uint8Array): Uint8Array[] {
  const releaseId = releaseIdOf(signed);
  const out: Uint8Array[] = [];
  for (let offset = 0; offset < signed.length; offset += 1000) {
    out.push(encodeManifestFragment({ releaseId, totalLength: signed.length, offset, bytes: signed.subarray(offset, offset + 1000) }));
  }
  return out;
}

function feed(receiver: Receiver, datagrams: Uint8Array[], from = 'attacker'): ReceiverEvent[] {
  return datagrams.flatMap((d) => receiver.push(d, NOW, from));
}

async function setup(opts: { installedSeq?: number; limits?: typeof DEFAULT_LIMITS } = {}) {
  const key = await makeKey();
  const image = makeImage(300_000, 21);
  const release = buildRelease({ image, seed: key.seed, model: 'rpi4', version: '2.0.0', seq: 5, created: NOW - 10 });
  const receiver = new Receiver({ model: 'rpi4', trusted: [key], ...opts });
  return { key, image, release, receiver };
}

function rejection(t: import('ava').ExecutionContext, events: ReceiverEvent[], errorName: string, reason: DropReason, receiver: Receiver) {
  const rejected = events.filter((e) => e.kind === 'rejected');
  t.is(rejected.length, 1, 'reported once');
  const e = rejected[0] as Extract<ReceiverEvent, { kind: 'rejected' }>;
  t.is(e.error.name, errorName);
  t.is(e.error.reason, reason);
  t.true((receiver.stats.dropped[reason] ?? 0) >= 1, `counted under ${reason}`);
  t.false(events.some((x) => x.kind === 'accepted' || x.kind === 'segment' || x.kind === 'complete'), 'nothing accepted or decoded');
  t.is(receiver.stats.symbolsAccepted, 0, 'no symbol reached the decoder');
}

function manifestWith(base: Manifest, change: Partial<Manifest>): Manifest {
  return { ...base, ...change };
}

test('arbitrary software: a manifest signed by an unknown key', async (t) => {
  const { release } = await setup();
  const other = await makeKey();
  const receiver = new Receiver({ model: 'rpi4', trusted: [other] });
  rejection(t, feed(receiver, datagramsOf(release, 400)), 'UnknownKeyError', 'unknown-key', receiver);
});

test('arbitrary software: a bad signature under a trusted key id', async (t) => {
  const { release, receiver } = await setup();
  const forged = release.signed.slice();
  forged[forged.length - 5]! ^= 0x01; // inside the 64-byte signature
  rejection(t, feed(receiver, fragments(forged)), 'InvalidSignatureError', 'bad-signature', receiver);
});

test('arbitrary software: a forged payload keeping the genuine signature', async (t) => {
  const { release, receiver } = await setup();
  const text = Buffer.from(release.signed);
  const at = text.indexOf(Buffer.from('2.0.0'));
  text.write('6.6.6', at);
  rejection(t, feed(receiver, fragments(new Uint8Array(text))), 'InvalidSignatureError', 'bad-signature', receiver);
});

test('arbitrary software: a missing signature', async (t) => {
  const { receiver, key } = await setup();
  const cose = new Tag([encodeCbor(new Map<number, unknown>([[1, -8], [4, key.kid]])), new Map(), encodeCbor(new Map([[1, 1]])), new Uint8Array(0)], COSE_SIGN1_TAG);
  rejection(t, feed(receiver, fragments(encodeCbor(cose))), 'InvalidSignatureError', 'bad-signature', receiver);
});

test('rollback: a sequence number not above the installed one', async (t) => {
  const { key, release } = await setup({ installedSeq: 5 });
  const receiver = new Receiver({ model: 'rpi4', trusted: [key], installedSeq: 5 });
  rejection(t, feed(receiver, datagramsOf(release, 50)), 'RollbackError', 'rollback', receiver);
});

test('freeze: an expired manifest', async (t) => {
  const key = await makeKey();
  const stale = buildRelease({ image: makeImage(1000, 2), seed: key.seed, model: 'rpi4', version: '1.1.0', seq: 9, created: NOW - 100, expires: NOW - 1 });
  const receiver = new Receiver({ model: 'rpi4', trusted: [key] });
  rejection(t, feed(receiver, datagramsOf(stale, 50)), 'ExpiredManifestError', 'expired', receiver);
});

test('mix-and-match: a manifest of another model on this channel', async (t) => {
  const key = await makeKey();
  const foreign = buildRelease({ image: makeImage(1000, 3), seed: key.seed, model: 'other-board', version: '1', seq: 99, created: NOW });
  const receiver = new Receiver({ model: 'rpi4', trusted: [key] });
  rejection(t, feed(receiver, datagramsOf(foreign, 50)), 'WrongModelError', 'wrong-model', receiver);
});

test('mix-and-match: symbols of another release relabelled with the current release id are refused by their digests', async (t) => {
  const { release, image, receiver, key } = await setup();
  const other = buildRelease({ image: makeImage(300_000, 99), seed: key.seed, model: 'rpi4', version: '2.0.1', seq: 6, created: NOW });
  const genuine = datagramsOf(release, 2000);
  // Accept the genuine manifest and AUTH chunks first, then offer the other release's symbols under this release's id.
  feed(receiver, genuine.filter((d) => d[3] !== PacketType.Symbol), 'publisher');
  const relabelled = datagramsOf(other, 600).filter((d) => d[3] === PacketType.Symbol).map((d) => {
    const p = decodePacket(d);
    if (p.type !== PacketType.Symbol) throw new Error('unreachable');
    return encodeSymbolPacket({ releaseId: release.releaseId, segment: p.segment, esi: p.esi, symbol: p.symbol });
  });
  feed(receiver, relabelled);
  t.true((receiver.stats.dropped['bad-symbol-digest'] ?? 0) > 100, 'relabelled symbols refused by digest');
  t.is(receiver.stats.symbolsAccepted, 0);
  // The genuine release still completes.
  const assembled = new Uint8Array(image.length);
  let complete = false;
  for (const e of feed(receiver, genuine, 'publisher')) {
    if (e.kind === 'segment') assembled.set(e.bytes!, e.segment.offset);
    if (e.kind === 'complete') complete = true;
  }
  t.true(complete);
  t.is(sha256hex(assembled), sha256hex(image));
});

test('endless data: declared sizes beyond the configured limits', async (t) => {
  const { release, key } = await setup();
  const limits = { ...DEFAULT_LIMITS, maxImageSize: 100_000, maxSegments: 8, maxSymbolSize: 1024 };
  const cases: Array<[string, Partial<Manifest>]> = [
    ['image size', { imageSize: 2 ** 40 }],
    ['symbol size', { symbolSize: 4096 }],
  ];
  for (const [what, change] of cases) {
    const receiver = new Receiver({ model: 'rpi4', trusted: [key], limits: { ...limits, maxImageSize: what === 'image size' ? 100_000 : 2 ** 31 } });
    const signed = signManifest(manifestWith(release.manifest, change), key.seed);
    const events = feed(receiver, fragments(signed));
    const e = events.find((x) => x.kind === 'rejected') as Extract<ReceiverEvent, { kind: 'rejected' }> | undefined;
    t.is(e?.error.name, 'LimitExceededError', what);
    t.is(receiver.stats.dropped['limit-exceeded'], 1, what);
  }
  const big = buildRelease({ image: makeImage(20 * 1208 * 10, 4), seed: key.seed, model: 'rpi4', version: '3', seq: 7, created: NOW, segmentSize: 1208 * 10 });
  const receiver = new Receiver({ model: 'rpi4', trusted: [key], limits: { ...DEFAULT_LIMITS, maxSegments: 8 } });
  const events = feed(receiver, datagramsOf(big, 20));
  t.is((events.find((x) => x.kind === 'rejected') as Extract<ReceiverEvent, { kind: 'rejected' }>).error.message, '20 segments exceed the limit of 8');
  // A manifest fragment announcing more than the manifest limit is dropped before any buffer is allocated.
  const huge = encodeManifestFragment({ releaseId: new Uint8Array(8), totalLength: 0xffffffff, offset: 0, bytes: new Uint8Array(100) });
  const r2 = new Receiver({ model: 'rpi4', trusted: [key] });
  feed(r2, [huge]);
  t.is(r2.stats.dropped['limit-exceeded'], 1);
});

test('replay: an old release after a newer one was installed, and the installed one again', async (t) => {
  const key = await makeKey();
  const v1 = buildRelease({ image: makeImage(50_000, 5), seed: key.seed, model: 'rpi4', version: '1', seq: 1, created: NOW });
  const v2 = buildRelease({ image: makeImage(50_000, 6), seed: key.seed, model: 'rpi4', version: '2', seq: 2, created: NOW });
  const receiver = new Receiver({ model: 'rpi4', trusted: [key] });
  const events = feed(receiver, datagramsOf(v2, 200), 'publisher');
  const complete = events.find((e) => e.kind === 'complete') as Extract<ReceiverEvent, { kind: 'complete' }>;
  receiver.markInstalled(complete.release);
  const accepted = receiver.stats.symbolsAccepted;
  const replay = feed(receiver, [...datagramsOf(v1, 200), ...datagramsOf(v2, 200)]);
  t.is(replay.filter((e) => e.kind === 'rejected').length, 1, 'the old release is reported once');
  t.true(receiver.stats.dropped.rollback! > 1, 'old release packets counted as rollback');
  t.true(receiver.stats.dropped['already-installed']! > 1, 'the installed release is dropped as such');
  t.is(receiver.stats.symbolsAccepted, accepted, 'no replayed symbol decoded');
});

test('truncated, oversized and malformed datagrams', async (t) => {
  const { release, receiver } = await setup();
  const genuine = datagramsOf(release, 300);
  feed(receiver, genuine.slice(0, 3), 'publisher');
  const symbol = genuine.find((d) => d[3] === PacketType.Symbol)!;
  const oversized = new Uint8Array(symbol.length + 64);
  oversized.set(symbol);
  const badVersion = symbol.slice();
  badVersion[2] = 9;
  feed(receiver, [new Uint8Array(0), symbol.subarray(0, 7), symbol.subarray(0, 15), Uint8Array.of(0x46, 0x58, 1, 2), oversized, symbol.subarray(0, symbol.length - 1), badVersion]);
  t.is(receiver.stats.dropped.malformed, 4);
  t.is(receiver.stats.dropped['bad-symbol-size'], 2);
  t.is(receiver.stats.dropped['unsupported-version'], 1);
});

test('CBOR bombs in a manifest are refused quickly as malformed', async (t) => {
  const { key } = await setup();
  const bombs = [
    new Uint8Array(60_000).fill(0x81), // 60k nested arrays
    Uint8Array.from([0xd2, 0x84, 0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), // array of 2^64−1 items
    Uint8Array.from([0xd2, 0x84, 0x5b, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00]), // 4 GiB byte string
    Uint8Array.from([0xd2, 0x9f, 0x9f, 0x9f, 0x9f]), // indefinite arrays never closed
    Uint8Array.from([0xd2, 0xbf, ...new Uint8Array(5000).fill(0x00)]), // endless indefinite map
  ];
  for (const bomb of bombs) {
    const receiver = new Receiver({ model: 'rpi4', trusted: [key] });
    const started = performance.now();
    const events = feed(receiver, fragments(bomb));
    t.true(performance.now() - started < 500, 'refused quickly');
    const e = events.find((x) => x.kind === 'rejected') as Extract<ReceiverEvent, { kind: 'rejected' }> | undefined;
    t.is(e?.error.reason, 'malformed');
  }
});

/**
 * Runs `body` with the `nth` call into a WASM decoder (of `codec` only, if
 * given) made a real trap: that call gets the packet cut short of its 4-byte
 * payload ID, on which the raptorq crate panics. `traps()` counts them. The
 * body is synchronous, so no other test sees the patched binding.
 */
function withTrapOnDecode<R>(nth: number, codec: RaptorqCodec | undefined, body: (traps: () => number) => R): R {
  const original = RaptorqWasm.prototype.decoderDecode;
  let calls = 0;
  let traps = 0;
  RaptorqWasm.prototype.decoderDecode = function (this: RaptorqWasm, decoder: DecoderHandle, packet: Uint8Array) {
    if ((!codec || codec.isCurrent(this)) && ++calls === nth) {
      traps++;
      return original.call(this, decoder, packet.subarray(0, 2));
    }
    return original.call(this, decoder, packet);
  };
  try {
    return body(() => traps);
  } finally {
    RaptorqWasm.prototype.decoderDecode = original;
  }
}

test('a trap inside the WASM decoder does not stop the transfer: the codec is recycled', async (t) => {
  const { release, image, receiver } = await setup();
  const assembled = new Uint8Array(image.length);
  let complete = false;
  const traps = withTrapOnDecode(50, undefined, (traps) => {
    for (const d of datagramsOf(release, 3000)) {
      for (const e of receiver.push(d, NOW, 'publisher')) {
        if (e.kind === 'segment') assembled.set(e.bytes!, e.segment.offset);
        if (e.kind === 'complete') complete = true;
      }
      if (complete) break;
    }
    return traps();
  });
  t.is(traps, 1);
  t.is(receiver.stats.decoderTraps, 1);
  t.is(receiver.stats.dropped['decoder-trap'], 1);
  t.true(complete, 'transfer completed after the trap');
  t.is(sha256hex(assembled), sha256hex(image));
});

test('a decoder trap while receiving one model costs the other model nothing', async (t) => {
  const key = await makeKey();
  const models = ['rpi4', 'esp32'];
  const images = models.map((_, i) => makeImage(300_000, 30 + i));
  const streams = models.map((model, i) => datagramsOf(buildRelease({ image: images[i]!, seed: key.seed, model, version: '1.0.0', seq: 1, created: NOW - 10 }), 3000));

  // Control: model B alone, no trap anywhere.
  const control = new Receiver({ model: 'esp32', trusted: [key] });
  let controlDatagrams = 0;
  for (const d of streams[1]!) {
    controlDatagrams++;
    if (control.push(d, NOW, 'publisher').some((e) => e.kind === 'complete')) break;
  }

  // Both models at once, datagrams interleaved; the 100th decode in A's codec traps.
  const codecA = new RaptorqCodec();
  const a = new Receiver({ model: 'rpi4', trusted: [key], assemblerFor: (r) => new MemoryAssembler(r.manifest.symbolSize, codecA) });
  const b = new Receiver({ model: 'esp32', trusted: [key] });
  const receivers = [a, b];
  const assembled = images.map((image) => new Uint8Array(image.length));
  const sent = [0, 0];
  const complete = [false, false];
  let bAround: [before: { symbols: number; segmentsDone: number; segments: number }, after: number] | undefined;
  const traps = withTrapOnDecode(100, codecA, (traps) => {
    for (let i = 0; i < 3000 && !(complete[0] && complete[1]); i++) {
      for (const m of [0, 1]) {
        if (complete[m]) continue;
        const bBefore = b.progress();
        const trapsBefore = traps();
        sent[m]!++;
        for (const e of receivers[m]!.push(streams[m]![i]!, NOW, 'publisher')) {
          if (e.kind === 'segment') assembled[m]!.set(e.bytes!, e.segment.offset);
          if (e.kind === 'complete') complete[m] = true;
        }
        if (traps() > trapsBefore && bBefore) bAround = [bBefore, b.progress()!.symbols];
      }
    }
    return traps();
  });
  t.is(traps, 1, 'one real trap, in model A\'s codec');
  t.is(a.stats.decoderTraps, 1);
  t.true(complete[0], 'A recovered and completed');
  t.is(sha256hex(assembled[0]!), sha256hex(images[0]!));

  t.truthy(bAround, 'B was receiving when A trapped');
  const [before, after] = bAround!;
  t.true(before.symbols > 0 && before.segmentsDone < before.segments, 'B was mid-transfer when A trapped');
  t.is(after, before.symbols, 'B\'s received symbols are unchanged by A\'s trap');
  t.is(b.stats.decoderTraps, 0, 'B never trapped');
  t.true(complete[1], 'B completed');
  t.is(sent[1], controlDatagrams, 'B needed exactly as many datagrams as without the trap');
  t.is(b.stats.symbolsAccepted, control.stats.symbolsAccepted);
  t.is(sha256hex(assembled[1]!), sha256hex(images[1]!));
});

test('bounded state: junk manifests from one sender do not evict another sender\'s reassembly', async (t) => {
  const key = await makeKey();
  // A release whose manifest needs several fragments.
  const big = buildRelease({ image: makeImage(3_000_000, 8), seed: key.seed, model: 'rpi4', version: '9', seq: 9, created: NOW, segmentSize: 1208 * 16 });
  const parts = fragments(big.signed);
  t.true(parts.length >= 3, `manifest in ${parts.length} fragments`);
  const receiver = new Receiver({ model: 'rpi4', trusted: [key] });
  feed(receiver, parts.slice(0, -1), 'publisher');
  for (let i = 0; i < 500; i++) {
    const id = new Uint8Array(8);
    new DataView(id.buffer).setUint32(0, i);
    receiver.push(encodeManifestFragment({ releaseId: id, totalLength: 60_000, offset: 0, bytes: new Uint8Array(1000) }), NOW, 'attacker');
  }
  const events = feed(receiver, parts.slice(-1), 'publisher');
  t.true(events.some((e) => e.kind === 'accepted'), 'the genuine manifest completed despite 500 junk reassemblies');
});
