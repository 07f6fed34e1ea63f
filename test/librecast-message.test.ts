/**
 * Librecast's message header (protocol/librecast-message.ts): a vector laid
 * out byte by byte as liblibrecast 0.5.1's lc_msg_send writes it, round trips,
 * and properties: any bytes decode to a message or a typed FwcastError, never
 * anything else, and a decoded payload is always exactly the declared length.
 */
import test from 'ava';
import fc from 'fast-check';
import { LimitExceededError, MalformedPacketError } from '../protocol/errors.js';
import {
  decodeLibrecastMessage, encodeLibrecastMessage, LIBRECAST_HEADER_SIZE, LIBRECAST_MAX_PAYLOAD, LibrecastOp,
} from '../protocol/librecast-message.js';
import { MAX_DATAGRAM } from '../protocol/packet.js';
import { run, typed } from './helpers/fuzz.js';

test('the header is 33 packed big-endian bytes: timestamp, seq, rnd, op, len, then the payload', (t) => {
  const bytes = encodeLibrecastMessage({
    timestamp: 0x0102030405060708n, seq: 1n, rnd: 0xa1a2a3a4a5a6a7a8n, op: LibrecastOp.SET, payload: new TextEncoder().encode('abc'),
  });
  t.is(Buffer.from(bytes).toString('hex'), [
    '0102030405060708', '0000000000000001', 'a1a2a3a4a5a6a7a8', '04', '0000000000000003', '616263',
  ].join(''));
  t.is(LIBRECAST_HEADER_SIZE, 33);
});

test('a datagram captured from liblibrecast 0.5.1 decodes to its fields', (t) => {
  // lc_msg_send of "abc" on a fresh channel, as received in the lab.
  const captured = Buffer.from('18ef1a9affff984d0000000000000001aae450aa8c54c5d9000000000000000003616263', 'hex');
  const m = decodeLibrecastMessage(captured);
  t.is(m.seq, 1n);
  t.is(m.op, LibrecastOp.DATA);
  t.is(m.timestamp, 0x18ef1a9affff984dn);
  t.is(Buffer.from(m.payload).toString(), 'abc');
});

test('round trip from empty to the largest payload', (t) => {
  for (const size of [0, 1, 1000, LIBRECAST_MAX_PAYLOAD]) {
    const payload = new Uint8Array(size).map((_, i) => i * 7);
    const bytes = encodeLibrecastMessage({ timestamp: 5n, seq: 2n, rnd: 3n, op: LibrecastOp.DATA, payload });
    t.is(bytes.length, size + 33);
    t.deepEqual(decodeLibrecastMessage(bytes).payload, payload, `${size} bytes`);
  }
  t.is(LIBRECAST_MAX_PAYLOAD + 33, MAX_DATAGRAM);
});

test('bad datagrams are typed errors: short, a len that disagrees, an unknown opcode, too large', (t) => {
  const good = encodeLibrecastMessage({ timestamp: 1n, seq: 1n, rnd: 1n, op: 0, payload: new Uint8Array(10) });
  for (const n of [0, 1, 32]) t.throws(() => decodeLibrecastMessage(good.subarray(0, n)), { instanceOf: MalformedPacketError }, `${n} bytes`);
  t.throws(() => decodeLibrecastMessage(good.subarray(0, 42)), { instanceOf: MalformedPacketError, message: /says 10 payload bytes, the datagram has 9/ });
  const longer = new Uint8Array(good.length + 1);
  longer.set(good);
  t.throws(() => decodeLibrecastMessage(longer), { instanceOf: MalformedPacketError });
  const huge = good.slice();
  huge.fill(0xff, 25, 33);
  t.throws(() => decodeLibrecastMessage(huge), { instanceOf: MalformedPacketError });
  const op9 = good.slice();
  op9[24] = 9;
  t.throws(() => decodeLibrecastMessage(op9), { instanceOf: MalformedPacketError, message: /opcode 9/ });
  t.throws(() => decodeLibrecastMessage(new Uint8Array(MAX_DATAGRAM + 1)), { instanceOf: LimitExceededError });
  t.throws(() => encodeLibrecastMessage({ timestamp: 0n, seq: 0n, rnd: 0n, op: 0, payload: new Uint8Array(LIBRECAST_MAX_PAYLOAD + 1) }), { instanceOf: LimitExceededError });
  t.throws(() => encodeLibrecastMessage({ timestamp: -1n, seq: 0n, rnd: 0n, op: 0, payload: new Uint8Array() }), { instanceOf: RangeError });
});

test('property: any bytes decode to a message whose payload is exactly what follows the header, or to a typed error', (t) => {
  const datagrams = fc.oneof(
    fc.uint8Array({ maxLength: 200 }),
    // Valid messages with mutations aimed at the header.
    fc.record({ payload: fc.uint8Array({ maxLength: 200 }), op: fc.integer({ min: 0, max: 6 }), at: fc.nat(40), byte: fc.integer({ min: 0, max: 255 }), cut: fc.nat(240) })
      .map(({ payload, op, at, byte, cut }) => {
        const b = encodeLibrecastMessage({ timestamp: 1n, seq: 2n, rnd: 3n, op: op as 0, payload });
        if (at < b.length) b[at] = byte;
        return b.subarray(0, Math.min(b.length, cut + 33));
      }),
  );
  fc.assert(fc.property(datagrams, (d) => {
    const r = typed(() => decodeLibrecastMessage(d));
    if (!r.ok) return ['malformed', 'limit-exceeded'].includes(r.error.reason);
    return r.value.payload.length === d.length - 33 && Buffer.from(r.value.payload).equals(Buffer.from(d.subarray(33))) && r.value.op <= 6;
  }), run(2000));
  t.pass();
});

test('property: encode then decode gives back every field', (t) => {
  const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
  fc.assert(fc.property(u64, u64, u64, fc.integer({ min: 0, max: 6 }), fc.uint8Array({ maxLength: 300 }), (timestamp, seq, rnd, op, payload) => {
    const m = decodeLibrecastMessage(encodeLibrecastMessage({ timestamp, seq, rnd, op: op as 0, payload }));
    return m.timestamp === timestamp && m.seq === seq && m.rnd === rnd && m.op === op && Buffer.from(m.payload).equals(Buffer.from(payload));
  }), run(1000));
  t.pass();
});
