/**
 * Deltas (protocol/delta.ts): making them (server/delta-build.ts), applying
 * them (device-agent/delta-apply.ts), the delta entry of the manifest (key
 * 12) and the sub-channel name; the test vector of SPEC §19.
 */
import test from 'ava';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { brotliDecompressSync } from 'node:zlib';
import { channelGroup } from '../protocol/channel.js';
import { decodeDeltaHeader, DELTA_HEADER_SIZE, deltaChannelName, DeltaOpParser, deltaView, type DeltaOp } from '../protocol/delta.js';
import * as ed25519 from '../protocol/ed25519.js';
import { InvalidDeltaError, InvalidManifestError } from '../protocol/errors.js';
import { hex } from '../protocol/hex.js';
import { decodeManifest, encodeManifest, openSignedManifest } from '../protocol/manifest.js';
import { buildRelease } from '../protocol/release.js';
import { applyDelta } from '../device-agent/delta-apply.js';
import { buildDelta, diffImages, type DiffStats } from '../server/delta-build.js';
import { CodecPool } from '../server/codec-pool.js';
import { readReleaseFile, writeReleaseFile } from '../server/release.js';
import { RejectedError, ReleaseStore } from '../server/serve/release-store.js';
import { Readable } from 'node:stream';
import { Agent } from '../device-agent/agent.js';
import { CommandInstaller } from '../device-agent/installers/command-installer.js';
import { Store, type InstalledRecord } from '../device-agent/store.js';
import { Carousel } from '../carousel/carousel.js';
import { MemoryHub, MemoryTransport } from '../transport/memory.js';
import type { Logger } from '../protocol/log.js';
import { encodeCbor, decodeCbor } from '../protocol/cbor.js';
import { makeImage, sha256hex } from './helpers/fixtures.js';
import { fixedKey } from './helpers/fuzz.js';
import { unhex } from './helpers/releases.js';

test.before(() => ed25519.ready());

async function roundTrip(base: Uint8Array, next: Uint8Array): Promise<{ delta: Uint8Array; rebuilt: Uint8Array; sha256: string; stats: DiffStats }> {
  const stats: DiffStats = { copies: 0, copiedBytes: 0, literalBytes: 0 };
  const delta = diffImages(base, next, stats);
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-delta-unit-'));
  writeFileSync(join(dir, 'base'), base);
  writeFileSync(join(dir, 'delta'), delta);
  const sha256 = await applyDelta({ basePath: join(dir, 'base'), deltaPath: join(dir, 'delta'), outPath: join(dir, 'new'), baseSize: base.length, newSize: next.length });
  return { delta, rebuilt: new Uint8Array(readFileSync(join(dir, 'new'))), sha256, stats };
}

/** `base` with the bytes of `at` replaced, `insert` bytes inserted at `insertAt`. */
function edited(base: Uint8Array, edits: { at: number; bytes: Uint8Array }[], insertAt: number, insert: Uint8Array): Uint8Array {
  const out = Uint8Array.from(base);
  for (const e of edits) out.set(e.bytes, e.at);
  return Uint8Array.from([...out.subarray(0, insertAt), ...insert, ...out.subarray(insertAt)]);
}

test('a few edits and an insertion in 1 MiB: the delta rebuilds the exact image, copies most of it and costs about the changed bytes', async (t) => {
  const base = makeImage(1 << 20, 4);
  const next = edited(base, [{ at: 1000, bytes: makeImage(3000, 5) }, { at: 700_000, bytes: Uint8Array.of(0xaa) }], 500_000, makeImage(77, 6));
  const r = await roundTrip(base, next);
  t.is(r.sha256, sha256hex(next));
  t.deepEqual(r.rebuilt, next);
  t.true(r.stats.literalBytes < 3000 + 77 + 64, `${r.stats.literalBytes} literal bytes`);
  t.true(r.delta.length < 3000 + 77 + 200, `delta of ${r.delta.length} bytes`);
});

test('edge cases rebuild exactly: identical, unrelated, empty base, shorter, one byte, blocks moved around', async (t) => {
  const a = makeImage(200_000, 7);
  const cases: Array<[string, Uint8Array, Uint8Array]> = [
    ['identical', a, a],
    ['unrelated', a, makeImage(150_000, 8)],
    ['empty base', new Uint8Array(0), makeImage(5000, 9)],
    ['shorter', a, a.subarray(50_000, 120_000)],
    ['one byte', a, Uint8Array.of(42)],
    ['moved', a, Uint8Array.from([...a.subarray(100_000), ...a.subarray(0, 100_000)])],
    ['repeated', a, Uint8Array.from([...a.subarray(0, 40_000), ...a.subarray(0, 40_000), ...a.subarray(0, 40_000)])],
    ['zeros', new Uint8Array(100_000), new Uint8Array(100_007)],
  ];
  for (const [name, base, next] of cases) {
    const r = await roundTrip(base, next);
    t.deepEqual(r.rebuilt, next, name);
    t.is(r.sha256, sha256hex(next), name);
  }
  const identical = await roundTrip(a, a);
  t.true(identical.delta.length < DELTA_HEADER_SIZE + 32, `an unchanged image is a ${identical.delta.length}-byte delta`);
});

test('the op parser gives the same ops whether the stream comes whole or a byte at a time', (t) => {
  const base = makeImage(100_000, 10);
  const next = edited(base, [{ at: 5000, bytes: makeImage(300, 11) }], 60_000, Uint8Array.of(1, 2, 3));
  const delta = diffImages(base, next);
  const header = decodeDeltaHeader(delta, { baseSize: base.length, newSize: next.length });
  const stream = brotliDecompressSync(delta.subarray(DELTA_HEADER_SIZE));
  const whole = new DeltaOpParser(header);
  const flat = (ops: DeltaOp[]): Array<[string, number, number] | [string, string]> => ops.map((o) => o.kind === 'copy' ? ['copy', o.offset, o.length] : ['literal', hex(o.bytes)]);
  const a = flat(whole.push(stream));
  whole.finish();
  const bytewise = new DeltaOpParser(header);
  const b: Array<[string, number, number] | [string, string]> = [];
  for (const byte of stream) b.push(...flat(bytewise.push(Uint8Array.of(byte))));
  bytewise.finish();
  // Literals come out a byte at a time: joined, they are the same.
  const join = (ops: typeof a): typeof a => ops.reduce<typeof a>((out, op) => {
    const last = out.at(-1);
    if (op[0] === 'literal' && last?.[0] === 'literal') out[out.length - 1] = ['literal', (last[1] as string) + (op[1] as string)];
    else out.push(op);
    return out;
  }, []);
  t.deepEqual(join(b), a);
  t.is(whole.written, next.length);
});

test('the op parser refuses what breaks the format, with InvalidDeltaError', (t) => {
  const h = { baseSize: 100, newSize: 10 };
  const refuse = (bytes: number[], finish = false): void => {
    const p = new DeltaOpParser(h);
    t.throws(() => {
      p.push(Uint8Array.from(bytes));
      if (finish) p.finish();
    }, { instanceOf: InvalidDeltaError }, JSON.stringify(bytes));
  };
  refuse([0x01, 95, 10]); // copy past the base
  refuse([0x01, 0, 11]); // copy past the new image
  refuse([0x01, 0, 0]); // empty copy
  refuse([0x02, 0]); // empty literal
  refuse([0x02, 11]); // literal past the new image
  refuse([0x00]); // end before the image is complete
  refuse([0x03]); // unknown op
  refuse([0x01, 0, 10, 0x00, 0x00]); // bytes after the end
  refuse([0x01, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]); // varint of 9 bytes
  refuse([0x01, 0, 5], true); // cut short
  t.throws(() => decodeDeltaHeader(Uint8Array.of(1, 2, 3)), { instanceOf: InvalidDeltaError });
  const ok = new DeltaOpParser(h);
  t.deepEqual(ok.push(Uint8Array.of(0x01, 90, 6, 0x02, 4, 9, 9, 9, 9, 0x00)).map((o) => o.kind), ['copy', 'literal']);
  ok.finish();
});

test('applying a delta to the wrong base size, or a corrupt delta, fails with InvalidDeltaError', async (t) => {
  const base = makeImage(50_000, 12);
  const next = edited(base, [{ at: 100, bytes: makeImage(500, 13) }], 0, new Uint8Array(0));
  const delta = diffImages(base, next);
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-delta-bad-'));
  writeFileSync(join(dir, 'base'), base);
  const apply = (bytes: Uint8Array, baseSize = base.length): Promise<string> => {
    writeFileSync(join(dir, 'delta'), bytes);
    return applyDelta({ basePath: join(dir, 'base'), deltaPath: join(dir, 'delta'), outPath: join(dir, 'new'), baseSize, newSize: next.length });
  };
  await t.throwsAsync(apply(delta, base.length + 1), { instanceOf: InvalidDeltaError });
  const corrupt = Uint8Array.from(delta);
  corrupt[DELTA_HEADER_SIZE + 3]! ^= 0xff;
  await t.throwsAsync(apply(corrupt), { instanceOf: InvalidDeltaError });
  await t.throwsAsync(apply(delta.subarray(0, delta.length - 3)), { instanceOf: InvalidDeltaError });
  t.is(await apply(delta), sha256hex(next));
});

test('the manifest lists deltas under key 12 and decodes them back; without deltas it is encoded as before', (t) => {
  const key = fixedKey(3);
  const release = buildRelease({ image: makeImage(10_000, 14), model: 'rpi4', version: '2', seq: 2, created: 1_800_000_000, seed: key.seed });
  const delta = buildRelease({ image: makeImage(3000, 15), model: 'rpi4', version: '2', seq: 2, created: 1_800_000_000, seed: key.seed }).manifest;
  const entry = {
    baseReleaseId: unhex('0102030405060708'), baseSha256: new Uint8Array(32).fill(9), size: delta.imageSize, sha256: delta.imageSha256,
    symbolSize: delta.symbolSize, segmentSize: delta.segmentSize, repairPercent: delta.repairPercent, segments: delta.segments, auth: delta.auth,
  };
  const plain = encodeManifest(release.manifest);
  const withDeltas = encodeManifest({ ...release.manifest, deltas: [entry] });
  const map = decodeCbor(withDeltas, 'manifest') as Map<number, unknown>;
  t.deepEqual([...map.keys()], [1, 2, 3, 4, 5, 7, 8, 9, 12]);
  map.delete(12);
  t.deepEqual(encodeCbor(map), plain, 'a manifest without key 12 is the manifest of old');
  const decoded = decodeManifest(withDeltas);
  t.is(decoded.deltas?.length, 1);
  t.deepEqual(decoded.deltas![0]!.baseReleaseId, entry.baseReleaseId);
  t.is(decoded.deltas![0]!.size, entry.size);
  t.deepEqual(hex(decoded.deltas![0]!.auth.root), hex(entry.auth.root));
  t.is(decodeManifest(plain).deltas, undefined);
  // The view a sub-channel's receiver takes: the delta's object in place of the image.
  const view = deltaView({ manifest: decoded, signed: new Uint8Array(), releaseId: new Uint8Array(8), kid: new Uint8Array(), cosigners: [] }, decoded.deltas![0]!);
  t.is(view.manifest.imageSize, entry.size);
  t.deepEqual(view.manifest.segments.map((s) => s.sha256), entry.segments.map((s) => s.sha256));
  t.is(view.manifest.deltas, undefined);
  // One delta per base; a base id is 8 bytes.
  t.throws(() => decodeManifest(encodeManifest({ ...release.manifest, deltas: [entry, entry] })), { instanceOf: InvalidManifestError });
  t.throws(() => decodeManifest(encodeManifest({ ...release.manifest, deltas: [{ ...entry, baseReleaseId: new Uint8Array(7) }] })), { instanceOf: InvalidManifestError });
  t.throws(() => decodeManifest(encodeManifest({ ...release.manifest, deltas: [] })), { instanceOf: InvalidManifestError });
  // A signed manifest with deltas verifies as any other.
  t.truthy(openSignedManifest(release.signed, [key]));
});

test('SPEC §19 vectors: the sub-channel of a base, and a delta object', (t) => {
  const base = unhex('9bdff128241616ac');
  t.is(deltaChannelName('rpi4', base), 'fw/rpi4/delta/9bdff128241616ac');
  t.is(channelGroup(deltaChannelName('rpi4', base)), 'ff1e:d4f2:124:f912:82c0:4a00:4c67:ea22');
  // base "ABCDEFGHIJ", new "ABCDxyEFGHIJ": copy 0..4, literal "xy", copy 4..10.
  const p = new DeltaOpParser(decodeDeltaHeader(unhex('465743444c54 0001 000000000000000a 000000000000000c')));
  const ops = p.push(unhex('01 00 04 02 02 7879 01 04 06 00'));
  p.finish();
  t.deepEqual(ops.map((o) => o.kind === 'copy' ? `copy ${o.offset} ${o.length}` : `literal ${Buffer.from(o.bytes).toString()}`), ['copy 0 4', 'literal xy', 'copy 4 6']);
});

test('a release listing a delta that never comes on its sub-channel (a relay sending full images): the agent takes the full image after its wait', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-delta-wait-'));
  const key = fixedKey(6);
  const old = makeImage(100_000, 30);
  const v1 = buildRelease({ image: old, seed: key.seed, model: 'rpi4', version: '1', seq: 1 });
  const next = Uint8Array.from([...old.subarray(0, 50_000), 1, 2, 3, ...old.subarray(50_000)]);
  const built = await buildDeltaInMemory(next, v1);
  const v2 = buildRelease({ image: next, seed: key.seed, model: 'rpi4', version: '2', seq: 2, deltas: [built.entry] });
  const store = new Store(join(dir, 'store'));
  writeFileSync(join(dir, 'v1.img'), old);
  const id = hex(v1.releaseId);
  const path = store.keepRelease('rpi4', id, join(dir, 'v1.img'), v1.signed);
  store.recordInstalled({ model: 'rpi4', seq: 1, version: '1', sha256: sha256hex(old), releaseId: id, installedAt: new Date().toISOString(), path });
  const hub = new MemoryHub();
  const channel = { name: 'fw/rpi4', group: 'ff1e::1', port: 4242 };
  const lines: Array<Record<string, unknown>> = [];
  const log: Logger = { event: (event, fields) => lines.push({ event, ...fields }), child: () => log };
  const installer = new CommandInstaller('true');
  const agent = new Agent({ models: [{ model: 'rpi4', channel, installer }], trusted: [key], store, transport: new MemoryTransport(hub), log, deltaWaitMs: 300 });
  t.teardown(() => agent.stop());
  const installed = new Promise<InstalledRecord>((resolve) => agent.once('installed', resolve));
  await agent.start();
  t.true(lines.some((l) => l.event === 'delta.joined' && l.channel === `fw/rpi4/delta/${id}`), 'the holder joined its base sub-channel');
  // Only the model's channel: nobody sends the delta.
  const carousel = new Carousel({ ...v2 });
  const publisher = new MemoryTransport(hub);
  await publisher.open();
  let done = false;
  void installed.then(() => { done = true; });
  const deadline = Date.now() + 30_000;
  while (!done && Date.now() < deadline) {
    for (let i = 0; i < 50; i++) publisher.send(channel, carousel.next());
    await new Promise((r) => setTimeout(r, 10));
  }
  const record = await installed;
  t.is(record.seq, 2);
  t.is(record.sha256, sha256hex(next));
  t.true((agent.stats().rpi4!.dropped['delta-chosen'] ?? 0) > 0, 'the full image was refused while the delta was awaited');
  t.like(lines.find((l) => l.event === 'delta.failed'), { seq: 2, error: 'DeltaNotHeardError' });
});

async function buildDeltaInMemory(next: Uint8Array, base: { releaseId: Uint8Array; image: Uint8Array }) {
  const pool = new CodecPool();
  try {
    return await buildDelta({ image: next, model: 'rpi4', version: '2', seq: 2 }, { releaseId: base.releaseId, image: base.image, model: 'rpi4' }, pool);
  } finally {
    await pool.close();
  }
}

test('fwcast serve stores a release with deltas, every object checked; a delta that does not match its digest is refused, nothing stored', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-delta-serve-'));
  const key = fixedKey(7);
  const old = makeImage(20_000, 40);
  const v1 = buildRelease({ image: old, seed: key.seed, model: 'rpi4', version: '1', seq: 1 });
  const next = Uint8Array.from([...old.subarray(0, 9000), 9, ...old.subarray(9000)]);
  const built = await buildDeltaInMemory(next, v1);
  const v2 = { ...buildRelease({ image: next, seed: key.seed, model: 'rpi4', version: '2', seq: 2, deltas: [built.entry] }), deltaObjects: [built.object] };
  writeReleaseFile(join(dir, 'v2.fwc'), v2);
  t.is(readReleaseFile(join(dir, 'v2.fwc')).deltaObjects?.length, 1, 'the release file carries its delta');
  const store = new ReleaseStore({ dir: join(dir, 'serve'), trusted: [key], models: ['rpi4'] });
  store.open();
  // The last byte of the file is the delta's: flipped, the upload is refused and nothing is stored.
  const bytes = readFileSync(join(dir, 'v2.fwc'));
  const tampered = Buffer.from(bytes);
  tampered[tampered.length - 1]! ^= 1;
  const err = await t.throwsAsync(store.ingest(Readable.from([tampered]), 1 << 30), { instanceOf: RejectedError });
  t.is(err?.reason, 'malformed');
  t.regex(err?.message ?? '', /delta 0 does not match/);
  t.deepEqual(store.list(), []);
  const { release, created } = await store.ingest(Readable.from([bytes]), 1 << 30);
  t.true(created);
  t.like(release, { seq: 2, state: 'live' });
  const loaded = store.load(release.releaseId);
  t.true(Buffer.from(loaded.deltaObjects![0]!).equals(Buffer.from(built.object)), 'served from the store with its delta');
});
