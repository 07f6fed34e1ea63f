/**
 * The largest MQTT packet an agent takes: announced to the broker (MQTT 5
 * Maximum Packet Size) and enforced on the byte stream before MQTT.js buffers
 * a packet (transport/mqtt-packet-limit.ts). The broker here is a hostile one
 * written for the test, as no real broker sends what it was told not to;
 * test/memory-bounds.test.ts floods a real mosquitto.
 */
import test from 'ava';
import fc from 'fast-check';
import { once } from 'node:events';
import { createServer, type Socket } from 'node:net';
import { MAX_DATAGRAM } from '../protocol/packet.js';
import { MqttPacketLimit } from '../transport/mqtt-packet-limit.js';
import { MqttOversizeError, MqttTransport, type MqttEvent } from '../transport/mqtt.js';

/** A fixed header: type byte, then the remaining length as a variable byte integer. */
function fixedHeader(type: number, remaining: number): Uint8Array {
  const out = [type];
  do {
    let byte = remaining % 128;
    remaining = Math.floor(remaining / 128);
    if (remaining > 0) byte |= 0x80;
    out.push(byte);
  } while (remaining > 0);
  return Uint8Array.from(out);
}

function splitAt(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let from = 0;
  for (const p of [...points, bytes.length]) {
    out.push(bytes.subarray(from, p));
    from = p;
  }
  return out;
}

test('packet limit: packets up to the limit pass in any chunking; the first one over it is caught at its header', (t) => {
  const limit = 3000;
  fc.assert(fc.property(
    fc.array(fc.nat({ max: limit - 5 }), { maxLength: 8 }),
    // The largest remaining length MQTT can express.
    fc.integer({ min: limit - 4, max: 268_435_455 }),
    fc.array(fc.nat(), { maxLength: 20 }),
    (sizes, oversize, cuts) => {
      const parts = sizes.flatMap((n) => [fixedHeader(0x30, n), new Uint8Array(n)]);
      const header = fixedHeader(0x30, oversize);
      const good = Buffer.concat(parts);
      const guard = new MqttPacketLimit(limit);
      for (const chunk of splitAt(good, cuts)) if (guard.push(chunk) !== undefined) return false;
      if (1 + (header.length - 1) + oversize <= limit) return guard.push(header) === undefined;
      // Caught by the header alone, byte by byte: nothing of its body is needed.
      let caught: string | undefined;
      for (const byte of header) caught ??= guard.push(Uint8Array.of(byte));
      return caught !== undefined && caught.includes(`${1 + (header.length - 1) + oversize} bytes`);
    },
  ));
  t.regex(new MqttPacketLimit(10).push(Uint8Array.of(0x30, 0xff, 0xff, 0xff, 0xff)) ?? '', /malformed/);
});

/** Reads CONNECT and SUBSCRIBE packets well enough to answer them (short packets only). */
function readPackets(socket: Socket, onPacket: (type: number, body: Buffer) => void): void {
  let buf = Buffer.alloc(0);
  socket.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    for (;;) {
      if (buf.length < 2) return;
      let length = 0;
      let i = 1;
      let mult = 1;
      for (;;) {
        if (i >= buf.length) return;
        const b = buf[i++]!;
        length += (b & 0x7f) * mult;
        mult *= 128;
        if (!(b & 0x80)) break;
      }
      if (buf.length < i + length) return;
      onPacket(buf[0]! >> 4, buf.subarray(i, i + length));
      buf = buf.subarray(i + length);
    }
  });
}

test('a broker that sends a 150 MB PUBLISH anyway: the agent\'s transport closes the connection at its header and reconnects', async (t) => {
  const connects: Array<{ level: number; maximumPacketSize?: number }> = [];
  const closedAfter: number[] = [];
  const server = createServer((socket) => {
    let sent = 0;
    socket.on('error', () => {});
    socket.on('close', () => closedAfter.push(sent));
    readPackets(socket, (type, body) => {
      if (type === 1) {
        // CONNECT: protocol name (2 + 4), level; MQTT 5 properties after flags (1) and keep-alive (2).
        const level = body[6]!;
        const props = body.subarray(11, 11 + body[10]!);
        const at = props.indexOf(0x27);
        connects.push({ level, ...(at >= 0 ? { maximumPacketSize: props.readUInt32BE(at + 1) } : {}) });
        socket.write(Uint8Array.of(0x20, 0x03, 0x00, 0x00, 0x00));
      } else if (type === 8) {
        // SUBSCRIBE: SUBACK with the same packet id, QoS 0 granted.
        socket.write(Uint8Array.of(0x90, 0x04, body[0]!, body[1]!, 0x00, 0x00));
        if (connects.length > 1) return;
        // The first connection gets a PUBLISH that declares 150 MB and brings 64 KB of it, then waits.
        const topic = Buffer.from('fwcast/fw/rpi4');
        const remaining = 2 + topic.length + 1 + 150 * 1024 * 1024;
        setTimeout(() => {
          socket.write(fixedHeader(0x30, remaining));
          socket.write(Buffer.concat([Uint8Array.of(0, topic.length), topic, Uint8Array.of(0), new Uint8Array(65536)]));
          sent = 65536;
        }, 100);
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const { port } = server.address() as { port: number };
  const seen: MqttEvent[] = [];
  const transport = new MqttTransport({ url: `mqtt://127.0.0.1:${port}`, reconnectMinMs: 50, onEvent: (e) => seen.push(e) });
  t.teardown(() => transport.close());
  let datagrams = 0;
  await transport.join({ name: 'fw/rpi4', group: 'ff1e::1', port: 4242 }, () => datagrams++);
  const deadline = Date.now() + 10_000;
  while (connects.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.is(connects[0]?.level, 5, 'the transport speaks MQTT 5');
  t.is(connects[0]?.maximumPacketSize, MAX_DATAGRAM + Buffer.byteLength('fwcast') + 1024, 'and announces the largest packet it takes');
  t.deepEqual(closedAfter, [65536], 'the transport closed the connection with 64 KB of the 150 MB sent, not waiting for the rest');
  t.true(seen.some((e) => e.kind === 'error' && e.error instanceof MqttOversizeError && /157286\d+ bytes/.test(e.error.message)), JSON.stringify(seen.map((e) => e.kind === 'error' ? e.error.message : e.kind)));
  t.is(connects.length, 2, 'and connected again');
  t.is(datagrams, 0);
});
