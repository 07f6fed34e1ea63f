/**
 * protocol/reed-solomon.ts: any g of the (r + 1)·g pieces give back the data,
 * checked exhaustively for small codes and by property for random ones.
 */
import test from 'ava';
import fc from 'fast-check';
import { maxDataPieces, parityPiece, recoverData } from '../protocol/reed-solomon.js';
import { shuffle } from './helpers/fixtures.js';

const FC = { seed: 6330, numRuns: 200 };

function encode(data: Uint8Array[], parity: number): Map<number, Uint8Array> {
  const pieces = new Map<number, Uint8Array>(data.map((d, i) => [i, d]));
  for (let j = 0; j < parity; j++) pieces.set(data.length + j, parityPiece(data, j, parity));
  return pieces;
}

function subsets(n: number, k: number): number[][] {
  if (k === 0) return [[]];
  if (n < k) return [];
  return [...subsets(n - 1, k - 1).map((s) => [...s, n - 1]), ...subsets(n - 1, k)];
}

test('every choice of 4 out of 12 pieces (g = 4, r = 2) gives back the data', (t) => {
  const data = [0, 1, 2, 3].map((i) => Uint8Array.from({ length: 37 }, (_, b) => (b * 29 + i * 71 + 5) & 0xff));
  const pieces = encode(data, 8);
  const choices = subsets(12, 4);
  t.is(choices.length, 495);
  for (const keep of choices) {
    const got = recoverData(4, 8, new Map(keep.map((k) => [k, pieces.get(k)!])));
    t.deepEqual(got, data, `pieces ${keep.join(',')}`);
  }
});

test('fewer than g pieces recover nothing; parity is linear, so all-zero data gives all-zero parity', (t) => {
  const data = [Uint8Array.of(1, 2), Uint8Array.of(3, 4), Uint8Array.of(5, 6)];
  const pieces = encode(data, 6);
  t.is(recoverData(3, 6, new Map([[0, data[0]!], [7, pieces.get(7)!]])), undefined);
  t.deepEqual(parityPiece([new Uint8Array(9), new Uint8Array(9)], 3, 4), new Uint8Array(9));
  t.throws(() => parityPiece(data, 6, 6), { instanceOf: RangeError });
  t.throws(() => recoverData(3, 6, new Map([[0, Uint8Array.of(1)], [1, Uint8Array.of(1, 2)], [2, Uint8Array.of(3)]])), { instanceOf: RangeError });
  t.is(maxDataPieces(2), 85);
});

test('property: random data, g and r, any g surviving pieces give back the data', (t) => {
  t.notThrows(() => fc.assert(fc.property(
    fc.integer({ min: 1, max: 12 }), fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 64 }), fc.integer(),
    (g, r, length, seed) => {
      let x = seed | 1;
      const next = (): number => ((x = Math.imul(x ^ (x >>> 15), 0x2c1b3c6d) ^ (x >>> 13)) >>> 0);
      const data = Array.from({ length: g }, () => Uint8Array.from({ length }, () => next() & 0xff));
      const pieces = encode(data, r * g);
      const order = shuffle([...pieces.keys()], next() | 1);
      const keep = new Map(order.slice(0, g).map((k) => [k, pieces.get(k)!]));
      const got = recoverData(g, r * g, keep);
      return got !== undefined && got.every((d, i) => Buffer.compare(d, data[i]!) === 0);
    },
  ), FC));
});
