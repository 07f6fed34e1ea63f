/**
 * `fwcast inspect`: what a release file holds, as a user or a second
 * implementation reads it. Each segment's OTI is checked against the image
 * itself (offsets, lengths, digests), not against fwcast's own decoder.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildRelease, writeReleaseFile } from '../server/release.js';
import { makeImage, makeKey, sha256hex } from './helpers/fixtures.js';
import { FWCAST, fwcast } from './helpers/processes.js';

interface Inspected {
  imageSize: number;
  sha256: string;
  keyId: string;
  fec: { symbolSize: number; segmentSize: number; segments: number; repairPercent: number };
  segments: Array<{
    index: number;
    offset: number;
    oti: { transferLength: number; symbolSize: number; sourceBlocks: number; subBlocks: number; alignment: number };
    sourceSymbols: number;
    published: number;
    sha256: string;
  }>;
  signature?: string;
  image: string;
}

function signed(t: { teardown: (fn: () => void) => void }) {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-inspect-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  fwcast('keygen', '--out', dir);
  fwcast('keygen', '--out', join(dir, 'other'));
  const image = makeImage(300_000, 7);
  writeFileSync(join(dir, 'image.bin'), image);
  const release = join(dir, 'release.fwc');
  fwcast('sign', join(dir, 'image.bin'), '--key', join(dir, 'publisher.key'), '--model', 'rpi4', '--version', '1.0.0', '--seq', '1',
    '--segment-size', '100000', '--repair', '50', '--out', release);
  return { dir, image, release };
}

test('inspect --json: per segment the OTI (F, T, Z, N, Al), K, published symbols and SHA-256, consistent with the image', (t) => {
  const { dir, image, release } = signed(t);
  const info = JSON.parse(fwcast('inspect', release, '--json', '--key', join(dir, 'publisher.pub'))) as Inspected;
  t.is(info.signature, 'valid');
  t.is(info.image, 'matches manifest');
  t.is(info.imageSize, image.length);
  t.is(info.sha256, sha256hex(image));

  const T = info.fec.symbolSize;
  t.is(info.segments.length, info.fec.segments);
  t.true(info.segments.length >= 3, 'a 300 kB image in 100 kB segments');
  let offset = 0;
  info.segments.forEach((seg, i) => {
    t.is(seg.index, i);
    t.is(seg.offset, offset);
    const F = seg.oti.transferLength;
    t.deepEqual(seg.oti, { transferLength: F, symbolSize: T, sourceBlocks: 1, subBlocks: 1, alignment: 8 }, `segment ${i}: one source block and one sub-block (SPEC §6.2)`);
    t.true(F > 0 && F <= info.fec.segmentSize);
    t.is(seg.sourceSymbols, Math.ceil(F / T));
    t.is(seg.published, seg.sourceSymbols + Math.ceil((seg.sourceSymbols * info.fec.repairPercent) / 100));
    t.is(seg.sha256, sha256hex(image.subarray(offset, offset + F)));
    offset += F;
  });
  t.is(offset, image.length, 'the segments cover the image exactly');
});

test('inspect: one line per segment in text; a signature by another key is INVALID and exits 3 (refused)', (t) => {
  const { dir, release } = signed(t);
  const text = fwcast('inspect', release);
  const segmentLines = text.split('\n').filter((l) => l.startsWith('segment '));
  t.is(segmentLines.length, (JSON.parse(fwcast('inspect', release, '--json')) as Inspected).segments.length);
  t.regex(segmentLines[0]!, /^segment 0 +\{"offset":0,"oti":\{"transferLength":\d+,"symbolSize":1208,"sourceBlocks":1,"subBlocks":1,"alignment":8\}/);

  const wrong = spawnSync(process.execPath, [FWCAST, 'inspect', release, '--key', join(dir, 'other', 'publisher.pub')], { encoding: 'utf8' });
  t.is(wrong.status, 3, wrong.stderr);
  t.regex(wrong.stdout, /^signature +INVALID$/m);
});

test('regression: fwcast sign without --segment-size uses the publisher\'s default segment size (3 MiB), not a default of its own', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-inspect-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  fwcast('keygen', '--out', dir);
  writeFileSync(join(dir, 'image.bin'), makeImage(6 << 20, 5));
  const release = join(dir, 'release.fwc');
  fwcast('sign', join(dir, 'image.bin'), '--key', join(dir, 'publisher.key'), '--model', 'rpi4', '--version', '1', '--seq', '1', '--out', release);
  const r = JSON.parse(fwcast('inspect', release, '--json')) as Inspected;
  t.is(r.fec.segmentSize, 2605 * 1208);
  t.deepEqual(r.segments.map((s) => s.sourceSymbols), [2605, 2604]);
  t.is(r.fec.repairPercent, 200);
});

test('regression: output cut short by a closed pipe (fwcast inspect … | head -n 1) ends quietly, not with an EPIPE stack trace', (t) => {
  const { release } = signed(t);
  const r = spawnSync('bash', ['-o', 'pipefail', '-c', `"${process.execPath}" "${FWCAST}" inspect "${release}" | head -n 1`], { encoding: 'utf8' });
  t.is(r.stdout.split('\n').filter(Boolean).length, 1);
  t.is(r.stderr, '', 'nothing on stderr');
  t.is(r.status, 0);
});

test('regression: inspect of an untrusted release file shows its strings escaped: no terminal control or forged line reaches the terminal', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-inspect-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // Signed by anyone: inspect reads files before anyone checks who signed them.
  const key = await makeKey();
  const release = buildRelease({ image: makeImage(5000, 2), seed: key.seed, model: 'rpi4', version: '\u001b[2J\u001b[31mrm -rf\nsignature   valid\u202e', seq: 1 });
  const file = join(dir, 'hostile.fwc');
  writeReleaseFile(file, release);
  const r = spawnSync(process.execPath, [FWCAST, 'inspect', file], { encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  t.false(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202e]/.test(r.stdout), JSON.stringify(r.stdout));
  t.is(r.stdout.split('\n').filter((l) => l.startsWith('signature')).length, 0, 'no forged "signature valid" line');
  t.regex(r.stdout, /^version +"?\\u001b\[2J/m);
});
