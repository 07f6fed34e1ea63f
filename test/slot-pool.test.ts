/** SlotPool: fixed-size slots in one allocation, for what the receiver holds during a transfer. */
import test from 'ava';
import { SlotPool } from '../device-agent/receiver/slot-pool.js';

test('a slot holds a copy until given back, then is reused; a full pool or an oversized item gives undefined', (t) => {
  const pool = new SlotPool(4, 2);
  const source = Uint8Array.of(1, 2, 3);
  const a = pool.take(source)!;
  source[0] = 9;
  t.deepEqual([...a], [1, 2, 3], 'a copy, not a view of the caller\'s bytes');
  const b = pool.take(Uint8Array.of(4, 5, 6, 7))!;
  t.is(pool.take(Uint8Array.of(8)), undefined, 'full');
  t.is(pool.take(Uint8Array.of(1, 2, 3, 4, 5)), undefined, 'larger than a slot');
  t.is(pool.available, 0);
  pool.give(a);
  t.is(pool.available, 1);
  const c = pool.take(Uint8Array.of(7, 7))!;
  t.is(c.byteOffset, a.byteOffset, 'the slot given back is reused');
  t.deepEqual([...b], [4, 5, 6, 7], 'other slots are untouched');
  pool.give(Uint8Array.of(1, 2));
  t.is(pool.available, 0, 'a plain copy given back frees nothing');
});
