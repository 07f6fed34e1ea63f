/**
 * The messaging library (fwcast/channels) keeps the transport contract on
 * every transport underneath: its raw sockets, seen as a Transport
 * (channels/channel-transport.ts), pass the compliance suite
 * (test/helpers/transport-compliance.ts) on in-memory, IPv6 UDP multicast on
 * the lab's loopback, MQTT through a real mosquitto started here, and both
 * at once.
 */
import { ChannelTransport } from '../channels/channel-transport.js';
import { MemoryHub } from '../transport/memory.js';
import type { Channel } from '../transport/transport.js';
import { Broker, freePort, requireMosquitto } from './helpers/broker.js';
import { transportCompliance, uniqueChannels } from './helpers/transport-compliance.js';

const channels = (): (() => Channel) => uniqueChannels('channels', 'c1');

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

transportCompliance('channel API on udp6 multicast and mqtt at once', async () => {
  requireMosquitto();
  const broker = await Broker.start({ port: await freePort() });
  return {
    create: () => new ChannelTransport({ iface: 'lo', udp: { hops: 1 }, mqtt: { url: broker.url, connectTimeoutMs: 5000 } }),
    channel: channels(),
    from: new RegExp(`^(::1|mqtt:127\\.0\\.0\\.1:${broker.port})$`),
    copies: 2,
    teardown: () => broker.stop(),
  };
});
