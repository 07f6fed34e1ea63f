// Small codecs under the protocols: CRC, SMP header, console framing limits,
// Intel HEX, and the link's timeout/abort contract.
import test from 'ava';
import { createLinkPair, SerialTimeoutError } from '../../device-agent/serial/link.js';
import { ConsoleFrameDecoder, crc16Xmodem, decodeSmpPacket, encodeConsoleFrame, encodeSmpPacket, MalformedSmpPacketError } from '../../device-agent/serial/smp-frame.js';
import { IntelHexError, parseIntelHex } from '../../device-agent/serial/intel-hex.js';

test('CRC-16/XMODEM check value', (t) => {
  t.is(crc16Xmodem(Buffer.from('123456789')), 0x31c3);
});

test('SMP header round trip and length check', (t) => {
  const packet = encodeSmpPacket({ op: 2, version: 1, flags: 0, group: 1, seq: 7, id: 1 }, Uint8Array.of(0xa0));
  t.is(Buffer.from(packet).toString('hex'), '0a00000100010701a0');
  t.deepEqual(decodeSmpPacket(packet).header, { op: 2, version: 1, flags: 0, length: 1, group: 1, seq: 7, id: 1 });
  t.throws(() => decodeSmpPacket(packet.subarray(0, 8)), { instanceOf: MalformedSmpPacketError, message: /says 1 payload bytes, packet carries 0/ });
});

test('console frames: lines of at most 127 bytes cut at multiples of 4 characters', (t) => {
  const frame = encodeConsoleFrame(new Uint8Array(600).fill(0x55));
  const lines = Buffer.from(frame).toString('latin1').split('\n').slice(0, -1);
  t.true(lines.length > 1);
  for (const [i, line] of lines.entries()) {
    t.true(line.length + 1 <= 127);
    t.is(line.slice(0, 2), i === 0 ? '\x06\x09' : '\x04\x14');
    t.is((line.length - 2) % 4, 0);
  }
  const decoder = new ConsoleFrameDecoder();
  const outcomes = lines.map((l) => decoder.pushLine(Buffer.from(l, 'latin1')));
  t.deepEqual(outcomes.at(-1), { kind: 'packet', packet: new Uint8Array(600).fill(0x55) });
});

test('Intel HEX: data, extended linear address, and errors that name the line', (t) => {
  const image = parseIntelHex(':020000040800F2\n:0400000001020304F2\n:00000001FF\n');
  t.is(image.base, 0x08000000);
  t.deepEqual([...image.data], [1, 2, 3, 4]);
  t.throws(() => parseIntelHex(':0400000001020304F3\n:00000001FF\n'), { instanceOf: IntelHexError, message: 'line 1: checksum mismatch' });
  t.throws(() => parseIntelHex(':0400000001020304F2\n'), { instanceOf: IntelHexError, message: /no end-of-file record/ });
});

test('link: read times out with what did arrive, and an abort rejects at once', async (t) => {
  const [a, b] = createLinkPair();
  await b.write(Uint8Array.of(1, 2));
  const timeout = await t.throwsAsync(a.read(4, { timeoutMs: 30 }), { instanceOf: SerialTimeoutError });
  t.is(timeout?.message, 'no 4 byte(s) within 30 ms (got 2 byte(s): 0102)');
  const controller = new AbortController();
  const pending = a.read(10, { timeoutMs: 10_000, signal: controller.signal });
  controller.abort(new Error('install cancelled'));
  await t.throwsAsync(pending, { message: 'install cancelled' });
  await a.close();
});
