/**
 * Every transport against the one contract (test/helpers/transport-compliance.ts):
 * in-memory; IPv6 UDP multicast on the lab's loopback (scripts/lab.sh routes
 * ff00::/8 locally on lo); MQTT through a real mosquitto started here; and
 * both of those at once as a multi transport.
 */
import { MemoryHub, MemoryTransport } from '../transport/memory.js';
import { MqttTransport } from '../transport/mqtt.js';
import { MultiTransport } from '../transport/multi.js';
import type { Channel } from '../transport/transport.js';
import { UdpMulticastTransport } from '../transport/udp-multicast.js';
import { Broker, freePort, requireMosquitto } from './helpers/broker.js';
import { transportCompliance, uniqueChannels } from './helpers/transport-compliance.js';

const channels = (): (() => Channel) => uniqueChannels('compliance', 'c0');

transportCompliance('memory', async () => {
  const hub = new MemoryHub();
  return { create: () => new MemoryTransport(hub, { address: 'memory-sender' }), channel: channels(), from: /^memory-sender$/ };
});

transportCompliance('udp6 multicast on lo', async () => ({
  create: () => new UdpMulticastTransport({ iface: 'lo', hops: 1 }),
  channel: channels(),
  from: /^::1$/,
}));

async function startBroker(): Promise<Broker> {
  requireMosquitto();
  return Broker.start({ port: await freePort() });
}

transportCompliance('mqtt through mosquitto', async () => {
  const broker = await startBroker();
  return {
    create: () => new MqttTransport({ url: broker.url, connectTimeoutMs: 5000 }),
    channel: channels(),
    from: new RegExp(`^mqtt:127\\.0\\.0\\.1:${broker.port}$`),
    teardown: () => broker.stop(),
  };
});

transportCompliance('multi: udp6 multicast and mqtt', async () => {
  const broker = await startBroker();
  return {
    create: () => new MultiTransport([new UdpMulticastTransport({ iface: 'lo', hops: 1 }), new MqttTransport({ url: broker.url, connectTimeoutMs: 5000 })]),
    channel: channels(),
    from: new RegExp(`^(::1|mqtt:127\\.0\\.0\\.1:${broker.port})$`),
    copies: 2,
    teardown: () => broker.stop(),
  };
});
