/**
 * The messaging library (fwcast/channels) keeps the transport contract on
 * every transport underneath: its raw sockets, seen as a Transport
 * (channels/channel-transport.ts), pass the compliance suite
 * (test/helpers/transport-compliance.ts) on in-memory, IPv6 UDP multicast on
 * the lab's loopback, and MQTT through a real mosquitto started here.
 */
import { randomBytes } from 'node:crypto';
import { ChannelTransport } from '../channels/channel-transport.js';
import { MemoryHub } from '../transport/memory.js';
import type { Channel } from '../transport/transport.js';
import { Broker, freePort, requireMosquitto } from './helpers/broker.js';
import { transportCompliance } from './helpers/transport-compliance.js';

/** Channels unique to this run: a group in ff1e::/16 and a name per call. */
function channels(): () => Channel {
  const run = randomBytes(4).toString('hex');
  const port = 20_000 + randomBytes(2).readUInt16BE() % 40_000;
  let n = 0;
  return () => {
    n++;
    return { name: `channels/${run}/${n}`, group: `ff1e::c1:${run.slice(0, 4)}:${run.slice(4)}:${n.toString(16)}`, port };
  };
}

transportCompliance('channel API on memory', async () => {
  const hub = new MemoryHub();
  return { create: () => new ChannelTransport({ memory: hub }), channel: channels(), from: /^memory$/ };
});

transportCompliance('channel API on udp6 multicast on lo', async () => ({
  create: () => new ChannelTransport({ iface: 'lo', udp: { hops: 1 } }),
  channel: channels(),
  from: /^::1$/,
}));

transportCompliance('channel API on mqtt through mosquitto', async () => {
  requireMosquitto();
  const broker = await Broker.start({ port: await freePort() });
  return {
    create: () => new ChannelTransport({ mqtt: { url: broker.url, connectTimeoutMs: 5000 } }),
    channel: channels(),
    from: new RegExp(`^mqtt:127\\.0\\.0\\.1:${broker.port}$`),
    teardown: () => broker.stop(),
  };
});
