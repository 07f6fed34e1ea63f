/**
 * A hostile relay for relay tests: subscribes to a channel's MQTT topic like a
 * relay agent would, and re-multicasts every datagram on the LAN, with bytes
 * flipped. Manifest fragments pass unchanged (so agents accept the release and
 * get as far as checking symbols); every SYMBOL gets one flipped byte in its
 * symbol data, and every other AUTH one flipped byte in its chunk body or
 * Merkle path. Downstream agents must drop them (bad-symbol-digest, bad-auth)
 * and install nothing.
 *
 *   node --import tsx test/helpers/tamper-relay.ts --mqtt URL --iface eth0 [--model rpi4] [--port 4242]
 *
 * Prints "tamper-relay: ready" on stderr once subscribed, and one JSON summary
 * line on stdout on SIGTERM/SIGINT. Run it only inside a lab namespace.
 */
import { parseArgs } from 'node:util';
import { channelGroup, DEFAULT_PORT, modelChannelName } from '../../protocol/channel.js';
import { AUTH_OVERHEAD, HEADER_SIZE, PacketType, SYMBOL_OVERHEAD } from '../../protocol/packet.js';
import { MqttTransport } from '../../transport/mqtt.js';
import { UdpMulticastTransport } from '../../transport/udp-multicast.js';

const { values } = parseArgs({
  options: {
    mqtt: { type: 'string' },
    iface: { type: 'string', default: 'eth0' },
    model: { type: 'string', default: 'rpi4' },
    port: { type: 'string', default: String(DEFAULT_PORT) },
  },
});
if (!values.mqtt) throw new Error('--mqtt URL is required');

const name = modelChannelName(values.model);
const channel = { name, group: channelGroup(name), port: Number(values.port) };
const upstream = new MqttTransport({ url: values.mqtt });
const lan = new UdpMulticastTransport({ iface: values.iface, hops: 1 });
const summary = { received: 0, forwarded: 0, manifestUnchanged: 0, symbolsFlipped: 0, authFlipped: 0, authUnchanged: 0 };
let auths = 0;

await lan.open();
await upstream.join(channel, (data) => {
  summary.received++;
  const out = data.slice();
  const type = out.length >= HEADER_SIZE ? out[3] : undefined;
  if (type === PacketType.Symbol && out.length > SYMBOL_OVERHEAD) {
    const at = SYMBOL_OVERHEAD + ((summary.received * 7919) % (out.length - SYMBOL_OVERHEAD));
    out[at] = out[at]! ^ 0x5a;
    summary.symbolsFlipped++;
  } else if (type === PacketType.Auth && out.length > AUTH_OVERHEAD && auths++ % 2 === 0) {
    const at = AUTH_OVERHEAD + ((summary.received * 7919) % (out.length - AUTH_OVERHEAD));
    out[at] = out[at]! ^ 0x01;
    summary.authFlipped++;
  } else if (type === PacketType.Auth) {
    summary.authUnchanged++;
  } else {
    summary.manifestUnchanged++;
  }
  lan.send(channel, out);
  summary.forwarded++;
});
process.stderr.write(`tamper-relay: ready (${upstream.description} → ${lan.description})\n`);

const stop = async (): Promise<void> => {
  await upstream.close();
  await lan.close();
  process.stdout.write(JSON.stringify(summary) + '\n');
  process.exit(0);
};
process.once('SIGTERM', () => void stop());
process.once('SIGINT', () => void stop());
