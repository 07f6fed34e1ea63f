/**
 * server/codec-pool.ts: segments encoded and decoded on worker threads give
 * the same bytes as the in-thread codec, and the pool reports what it cannot do.
 */
import test from 'ava';
import { SegmentEncoder, sourceSymbolCount } from '../protocol/fec.js';
import { CodecPool } from '../server/codec-pool.js';
import { makeImage, shuffle } from './helpers/fixtures.js';

const T = 1208;
const SEGMENT = 200 * T + 17;

test('two workers encode segments in parallel, byte-identical to the in-thread encoder, and decode them back after 10% loss', async (t) => {
  const image = makeImage(4 * SEGMENT, 5);
  const segments = [0, 1, 2, 3].map((i) => image.subarray(i * SEGMENT, (i + 1) * SEGMENT));
  const k = sourceSymbolCount(SEGMENT, T);
  const count = k + 30;
  const pool = new CodecPool(2);
  t.teardown(() => pool.close());
  await pool.warmUp();
  const encoded = await Promise.all(segments.map((s) => pool.encode(s.slice(), T, count)));
  segments.forEach((s, i) => {
    const local = new SegmentEncoder(s, T);
    const expected = new Uint8Array(count * T);
    for (const { esi, data } of local.symbols(count)) expected.set(data, esi * T);
    local.free();
    t.true(Buffer.compare(encoded[i]!, expected) === 0, `segment ${i}`);
  });
  const decoded = await Promise.all(encoded.map((symbols, i) => {
    const lost = new Set(shuffle([...Array(k).keys()], 11 + i).slice(0, 20));
    const esis = [...Array(count).keys()].filter((esi) => !lost.has(esi));
    const picked = new Uint8Array(esis.length * T);
    esis.forEach((esi, n) => picked.set(symbols.subarray(esi * T, (esi + 1) * T), n * T));
    return pool.decode(SEGMENT, T, Uint32Array.from(esis), picked);
  }));
  decoded.forEach((bytes, i) => t.true(Buffer.compare(bytes, segments[i]!) === 0, `segment ${i} round trip`));
});

test('encode() takes over its input buffer; a decode with fewer than K symbols is refused with the count; warmUp() is refused while a job runs', async (t) => {
  const pool = new CodecPool(1);
  t.teardown(() => pool.close());
  const k = sourceSymbolCount(SEGMENT, T);
  const data = makeImage(SEGMENT, 6);
  const symbols = await pool.encode(data, T, k);
  t.is(data.byteLength, 0, 'the segment\'s bytes moved to the worker, as documented: no copy');
  const esis = Uint32Array.from([...Array(k - 5).keys()]);
  await t.throwsAsync(pool.decode(SEGMENT, T, esis, symbols.subarray(0, esis.length * T)), { message: `not enough symbols to decode (${k - 5})` });
  const busy = pool.encode(makeImage(SEGMENT, 7), T, k);
  await t.throwsAsync(pool.warmUp(), { message: /before any other job/ });
  t.is((await busy).length, k * T);
});
