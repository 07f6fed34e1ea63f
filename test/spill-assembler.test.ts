/**
 * device-agent/spill-assembler.ts on its own: what it hands back for a
 * segment, with and without the SHA-256 it computes while symbols arrive.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { closeSync, fstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddResult } from '../device-agent/assembler.js';
import { SpillAssembler } from '../device-agent/spill-assembler.js';
import { StoreError } from '../protocol/errors.js';
import { RaptorqCodec, RaptorqTrapError } from '../protocol/fec.js';
import type { SegmentInfo } from '../protocol/manifest.js';
import { RaptorqWasm, type DecoderHandle } from '../protocol/raptorq-wasm.js';
import { symbolOf } from '../protocol/symbol-set.js';
import type { Release } from '../server/release.js';
import { makeImage, makeKey, shuffle } from './helpers/fixtures.js';
import { testRelease } from './helpers/releases.js';

// Two segments, the last symbol of each only partly image bytes.
const release = testRelease(await makeKey(), { image: makeImage(2 * 40 * 1208 - 500, 9), segmentSize: 40 * 1208 });

function withAssembler(t: { teardown(fn: () => void): void }, r: Release, codec?: RaptorqCodec): { open(): SpillAssembler } {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-spill-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return { open: () => new SpillAssembler(dir, r.manifest, codec) };
}

const symbol = (seg: SegmentInfo, esi: number): Uint8Array => symbolOf(release.symbolSet!, seg.index, esi);
const sha256 = (bytes: Uint8Array): Buffer => createHash('sha256').update(bytes).digest();
const segmentBytes = (seg: SegmentInfo): Uint8Array => release.image.subarray(seg.offset, seg.offset + seg.oti.transferLength);

/** Adds the symbols with these ESIs until the segment decodes; the last result. */
function addAll(spill: SpillAssembler, seg: SegmentInfo, esis: Iterable<number>): AddResult {
  let result: AddResult = { kind: 'stored', received: 0 };
  for (const esi of esis) {
    result = spill.add(seg, esi, symbol(seg, esi));
    if (result.kind === 'decoded') break;
  }
  return result;
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i);

test('sources in order: the segment comes back with its SHA-256 already computed, equal to the signed one', (t) => {
  const spill = withAssembler(t, release).open();
  t.teardown(() => spill.close());
  for (const seg of release.manifest.segments) {
    const result = addAll(spill, seg, range(0, seg.sourceSymbols));
    t.is(result.kind, 'decoded');
    if (result.kind !== 'decoded') return;
    t.deepEqual(Buffer.from(result.bytes), Buffer.from(segmentBytes(seg)));
    t.truthy(result.sha256, `segment ${seg.index} hashed on the way`);
    t.deepEqual(Buffer.from(result.sha256!), Buffer.from(seg.sha256));
    spill.commit(seg, result.bytes);
  }
});

test('sources out of order, or repair symbols needed: no precomputed digest, the receiver hashes the bytes', (t) => {
  const spill = withAssembler(t, release).open();
  t.teardown(() => spill.close());
  const [first, second] = release.manifest.segments;
  const result = addAll(spill, first!, shuffle(range(0, first!.sourceSymbols), 3));
  t.is(result.kind, 'decoded');
  if (result.kind !== 'decoded') return;
  t.is(result.sha256, undefined);
  t.deepEqual(sha256(result.bytes), Buffer.from(first!.sha256));
  spill.commit(first!, result.bytes);

  // ESI 5 lost: repair symbols stand in, and RaptorQ decodes.
  const repaired = addAll(spill, second!, range(0, second!.published).filter((esi) => esi !== 5));
  t.is(repaired.kind, 'decoded');
  if (repaired.kind !== 'decoded') return;
  t.is(repaired.sha256, undefined);
  t.deepEqual(Buffer.from(repaired.bytes), Buffer.from(segmentBytes(second!)));
});

test('after a restart, symbols on disk are not taken as hashed: the completed segment has no precomputed digest', (t) => {
  const lab = withAssembler(t, release);
  const seg = release.manifest.segments[0]!;
  const before = lab.open();
  t.is(addAll(before, seg, range(0, 10)).kind, 'stored');
  before.close();
  const after = lab.open();
  t.teardown(() => after.close());
  t.is(after.resumedSymbols, 10);
  const result = addAll(after, seg, range(10, seg.sourceSymbols));
  t.is(result.kind, 'decoded');
  if (result.kind !== 'decoded') return;
  t.is(result.sha256, undefined);
  t.deepEqual(Buffer.from(result.bytes), Buffer.from(segmentBytes(seg)));
});

test('a trap while decoding recycles the assembler\'s own codec only, and the symbols on disk still decode', (t) => {
  const codec = new RaptorqCodec();
  const other = new RaptorqCodec();
  const otherWasm = other.wasm;
  const spill = withAssembler(t, release, codec).open();
  t.teardown(() => spill.close());
  const seg = release.manifest.segments[0]!;
  // ESI 5 lost: the segment must go through the WASM decoder, not be copied.
  const esis = range(0, seg.published).filter((esi) => esi !== 5);
  t.is(addAll(spill, seg, esis.slice(0, seg.sourceSymbols - 1)).kind, 'stored');

  // A real trap on the 10th packet of the first decode: it is cut short of its payload ID.
  const original = RaptorqWasm.prototype.decoderDecode;
  let calls = 0;
  RaptorqWasm.prototype.decoderDecode = function (this: RaptorqWasm, decoder: DecoderHandle, packet: Uint8Array) {
    return original.call(this, decoder, codec.isCurrent(this) && ++calls === 10 ? packet.subarray(0, 2) : packet);
  };
  let trapped: unknown;
  try {
    spill.add(seg, esis[seg.sourceSymbols - 1]!, symbol(seg, esis[seg.sourceSymbols - 1]!));
  } catch (err) {
    trapped = err;
  } finally {
    RaptorqWasm.prototype.decoderDecode = original;
  }
  t.true(trapped instanceof RaptorqTrapError, `the decode attempt trapped: ${String(trapped)}`);
  const trappedWasm = codec.wasm;
  spill.recoverFromTrap();
  t.false(codec.isCurrent(trappedWasm), 'its own codec was recycled');
  t.true(other.isCurrent(otherWasm), 'another codec was not');

  const result = addAll(spill, seg, esis.slice(seg.sourceSymbols));
  t.is(result.kind, 'decoded');
  if (result.kind !== 'decoded') return;
  t.deepEqual(Buffer.from(result.bytes), Buffer.from(segmentBytes(seg)));
});

test('regression: close() twice does not close a descriptor that by then belongs to someone else', (t) => {
  const spill = withAssembler(t, release).open();
  const seg = release.manifest.segments[0]!;
  addAll(spill, seg, range(0, 5));
  spill.close();
  // The lowest free descriptors are reused at once: this file gets one the assembler had.
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-other-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'f'), 'x');
  const fds = [openSync(join(dir, 'f'), 'r'), openSync(join(dir, 'f'), 'r'), openSync(join(dir, 'f'), 'r')];
  t.teardown(() => fds.forEach((fd) => closeSync(fd)));
  spill.close();
  for (const fd of fds) t.notThrows(() => fstatSync(fd), `descriptor ${fd} still open`);
});

test('regression: a symlink planted in the transfer directory is not written through', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-spill-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const outside = join(dir, 'outside');
  writeFileSync(outside, 'precious', { mode: 0o644 });
  const transfer = join(dir, 'transfer');
  mkdirSync(transfer);
  for (const name of ['image.part', 'done', 'model']) {
    rmSync(join(transfer, name), { force: true });
    symlinkSync(outside, join(transfer, name));
    t.throws(() => new SpillAssembler(transfer, release.manifest), { instanceOf: StoreError }, name);
    rmSync(join(transfer, name));
  }
  t.is(readFileSync(outside, 'utf8'), 'precious');
  t.is(statSync(outside).mode & 0o777, 0o644);
});

test('regression: a full disk refuses symbols with a StoreError, loses none already taken, and the segment decodes once space returns', (t) => {
  if (process.env.FWCAST_LAB !== '1') return t.fail('needs the lab (npm test runs in it): mounts a tmpfs');
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-full-'));
  t.teardown(() => {
    spawnSync('umount', [dir]);
    rmSync(dir, { recursive: true, force: true });
  });
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'fwcast-full', dir], { encoding: 'utf8' });
  t.is(mounted.status, 0, mounted.stderr);
  const seg = release.manifest.segments[0]!;
  // Leave room for the transfer's small files and part of one segment's symbols only.
  const filler = join(dir, 'filler');
  writeFileSync(filler, Buffer.alloc(256 * 1024 - 8 * 4096));
  const spill = new SpillAssembler(join(dir, 't'), release.manifest);
  t.teardown(() => spill.close());
  const esis = range(0, seg.sourceSymbols);
  let refused = 0;
  let result: AddResult | undefined;
  for (const esi of esis) {
    try {
      result = spill.add(seg, esi, symbol(seg, esi));
    } catch (err) {
      t.true(err instanceof StoreError, String(err));
      t.is((err as StoreError).facts.code, 'ENOSPC');
      refused++;
    }
  }
  t.true(refused > 0, 'the disk filled');
  t.throws(() => spill.flush(), { instanceOf: StoreError });
  rmSync(filler);
  t.true(spill.flush() > 0, 'the waiting records are written once space returns');
  // The refused symbols come again (the carousel repeats); what was taken before was not lost.
  for (const esi of esis) {
    const r = spill.add(seg, esi, symbol(seg, esi));
    if (r.kind !== 'duplicate') result = r;
    if (r.kind === 'decoded') break;
  }
  t.is(result?.kind, 'decoded');
  if (result?.kind !== 'decoded') return;
  t.deepEqual(Buffer.from(result.bytes), Buffer.from(segmentBytes(seg)));
  t.notThrows(() => spill.commit(seg, result!.kind === 'decoded' ? result!.bytes : new Uint8Array()));
});
