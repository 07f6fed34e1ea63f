/**
 * A hostile sender for the memory and manifest-poisoning tests, over UDP
 * multicast (run inside a lab namespace) or through an MQTT broker:
 *
 *   poison  one-byte manifest fragments (random offset, random byte) for a
 *           genuine release id and total length, taken from its release file:
 *           with first-writer-wins reassembly they spoil every genuine copy
 *   junk    datagrams of --size bytes behind a valid SYMBOL or AUTH header
 *           with a random release id each: what a receiver keeps for a
 *           manifest it has not heard yet
 *
 * UDP: `--source ADDR` adds the genuine publisher's address to the interface
 * (nodad) and sends from it: the receiver sees the very sender it reassembles
 * the genuine manifest from.
 *
 *   node --import tsx test/helpers/hostile-sender.ts --mode poison --release R.fwc
 *        (--group ADDR [--port 4242] [--iface eth0] [--source ADDR] | --mqtt URL --topic T)
 *        [--rate 5000] [--count N] [--duration S] [--size 65000]
 *
 * Prints "hostile: ready" on stderr once it can send, then one JSON summary
 * line on stdout when it stops (count or duration reached, SIGTERM).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import mqtt from 'mqtt';
import { releaseIdOf } from '../../protocol/manifest.js';
import { encodeManifestFragment, HEADER_SIZE, MAGIC_0, MAGIC_1, PacketType, SYMBOL_OVERHEAD, WIRE_VERSION } from '../../protocol/packet.js';
import { decodeReleaseLayout } from '../../protocol/release-file.js';
import { multicastSender, runPacedFlood } from './paced-flood.js';

export interface HostileSummary {
  sent: number;
  sendErrors: number;
  /** The source address sent from, when spoofed. */
  spoofed?: string;
  firstSendAt?: number;
  lastSendAt?: number;
  stopReason: string;
}

const { values } = parseArgs({
  options: {
    mode: { type: 'string', default: 'poison' },
    release: { type: 'string' },
    group: { type: 'string' },
    port: { type: 'string', default: '4242' },
    iface: { type: 'string', default: 'eth0' },
    source: { type: 'string' },
    mqtt: { type: 'string' },
    topic: { type: 'string' },
    rate: { type: 'string', default: '5000' },
    count: { type: 'string', default: '1000000' },
    duration: { type: 'string', default: '60' },
    size: { type: 'string', default: '65000' },
  },
});
const rate = Number(values.rate);
const maxCount = Number(values.count);
const maxMs = Number(values.duration) * 1000;
if (!(rate > 0 && rate <= 100_000)) throw new Error('--rate: 1..100000 per second');
if (!(maxCount > 0 && maxCount <= 10_000_000)) throw new Error('--count: 1..10000000');
if (!(maxMs > 0 && maxMs <= 600_000)) throw new Error('--duration: up to 600 s');

/** Datagram number n. */
let make: (n: number) => Uint8Array;
if (values.mode === 'poison') {
  if (!values.release) throw new Error('--release: the release file whose manifest to poison');
  const file = readFileSync(values.release);
  const { manifestOffset, manifestLength: length } = decodeReleaseLayout(file, 1 << 20, 1 << 20);
  const signed = file.subarray(manifestOffset, manifestOffset + length);
  const releaseId = releaseIdOf(signed);
  make = () => encodeManifestFragment({ releaseId, totalLength: length, offset: randomInt(length), bytes: randomBytes(1) });
} else if (values.mode === 'junk') {
  const size = Number(values.size);
  if (!(size > SYMBOL_OVERHEAD && size <= 65527)) throw new Error('--size: a datagram size up to 65527');
  make = (n) => {
    const out = new Uint8Array(size);
    out[0] = MAGIC_0;
    out[1] = MAGIC_1;
    out[2] = WIRE_VERSION;
    // Symbols and AUTH datagrams in turn: a receiver keeps both kinds for a release it has not heard of.
    out[3] = n % 2 === 0 ? PacketType.Symbol : PacketType.Auth;
    out.set(randomBytes(HEADER_SIZE - 4), 4);
    return out;
  };
} else {
  throw new Error(`--mode: poison or junk, not ${values.mode}`);
}

let send: (d: Uint8Array, done: (err?: Error | null) => void) => void;
let closeAll: () => void;
let spoofed: string | undefined;
if (values.mqtt) {
  if (!values.topic) throw new Error('--topic: the channel topic');
  const client = mqtt.connect(values.mqtt, { clientId: `hostile-${randomInt(1e9)}`, reconnectPeriod: 0 });
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  const topic = values.topic;
  send = (d, done) => client.publish(topic, Buffer.from(d), { qos: 0 }, (err) => done(err));
  closeAll = () => client.end(true);
} else {
  if (!values.group) throw new Error('--group or --mqtt');
  const group = values.group;
  const iface = values.iface;
  const port = Number(values.port);
  let source = '::';
  if (values.source) {
    // Another host's address on our own interface: the receiver cannot tell us apart.
    source = values.source;
    execFileSync('ip', ['addr', 'add', `${source}/128`, 'dev', iface, 'nodad']);
    spoofed = source;
  }
  const socket = await multicastSender(iface, source);
  const destination = `${group}%${iface}`;
  send = (d, done) => socket.send(d, port, destination, (err) => done(err));
  closeAll = () => socket.close();
}

let sent = 0;
let sendErrors = 0;
const onSent = (err?: Error | null): void => {
  if (err) sendErrors++;
};
process.stderr.write(`hostile: ready, ${values.mode} at ${rate}/s, at most ${maxCount} in ${maxMs / 1000} s\n`);
runPacedFlood({
  rate, maxCount, maxMs, burst: 256, intervalMs: 1,
  sendOne: (n) => {
    send(make(n), onSent);
    sent++;
  },
  summary: (stopReason, times): HostileSummary => ({ sent, sendErrors, ...(spoofed ? { spoofed } : {}), ...times, stopReason }),
  close: closeAll,
});
