import test from 'ava';
import { MAX_SEGMENT_SIZE } from '../protocol/limits.js';
import { buildRelease, segmentSizeFor } from '../server/release.js';
import { makeImage, makeKey } from './helpers/fixtures.js';

const T = 1208;

test('a requested segment size is rounded up to whole symbols, so an image of n MiB makes n segments of 1 MiB', async (t) => {
  t.is(segmentSizeFor(T, 1 << 20), 869 * T);
  t.is(segmentSizeFor(T, 10 * T), 10 * T, 'a whole number of symbols is kept');
  const key = await makeKey();
  const release = buildRelease({ image: makeImage(4 << 20, 3), seed: key.seed, model: 'm', version: '1', seq: 1, created: 1_800_000_000, segmentSize: 1 << 20 });
  t.is(release.manifest.segments.length, 4);
  t.deepEqual(release.manifest.segments.map((s) => s.sourceSymbols), [869, 868, 868, 868], 'RFC 6330 partition of 3473 symbols');
});

test('the default segment is 3 MiB of whole symbols: an image of 3n MiB makes n segments', async (t) => {
  const key = await makeKey();
  const release = buildRelease({ image: makeImage(6 << 20, 4), seed: key.seed, model: 'm', version: '1', seq: 1, created: 1_800_000_000 });
  t.is(release.manifest.segmentSize, 2605 * T);
  t.deepEqual(release.manifest.segments.map((s) => s.sourceSymbols), [2605, 2604]);
});

test('near the format\'s largest segment the size is rounded down instead, never past the limit', (t) => {
  const size = segmentSizeFor(T, MAX_SEGMENT_SIZE);
  t.true(size <= MAX_SEGMENT_SIZE);
  t.is(size % T, 0);
  t.true(MAX_SEGMENT_SIZE - size < T);
  t.is(segmentSizeFor(T, 100), T, 'never less than one symbol');
});
