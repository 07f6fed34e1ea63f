/**
 * Transports from configuration, shared by both CLIs: IPv6 multicast on an
 * interface, MQTT through a broker, or both at once.
 */
import { ConfigError } from '../protocol/errors.js';
import { errorFields, type Logger } from '../protocol/log.js';
import { MqttTransport, readMqttFiles } from './mqtt.js';
import { MultiTransport } from './multi.js';
import type { Transport } from './transport.js';
import { UdpMulticastTransport } from './udp-multicast.js';

/** MQTT settings as configured: file paths, not file contents. */
export interface MqttConfig {
  url: string;
  ca?: string;
  cert?: string;
  key?: string;
  username?: string;
  passwordFile?: string;
  topicPrefix?: string;
}

/** An MqttTransport from a validated config; reads the TLS and password files now. */
export function mqttTransport(config: MqttConfig, log: Logger, where = 'mqtt'): MqttTransport {
  const files = readMqttFiles(config, where);
  let lastError = '';
  return new MqttTransport({
    url: config.url,
    ...files,
    ...(config.username ? { username: config.username } : {}),
    ...(config.topicPrefix ? { topicPrefix: config.topicPrefix } : {}),
    onEvent: (e) => {
      if (e.kind === 'connected') {
        lastError = '';
        log.event('mqtt.connected', { url: config.url, reconnects: e.reconnects },
          e.reconnects > 0 ? `MQTT reconnected to ${config.url} (reconnect ${e.reconnects})` : `MQTT connected to ${config.url}`);
      } else if (e.kind === 'disconnected') {
        log.event('mqtt.disconnected', { url: config.url, retryInMs: e.retryInMs }, `MQTT disconnected from ${config.url}; retrying in ${e.retryInMs} ms`);
      } else if (e.error.message !== lastError) {
        // Once per distinct error, not once per retry.
        lastError = e.error.message;
        log.event('mqtt.error', { url: config.url, ...errorFields(e.error) }, `MQTT ${config.url}: ${e.error.message}`);
      }
    },
  });
}

/** One transport for IPv6 multicast on `iface`, MQTT, or both (merged). */
export function createTransport(opts: { iface?: string; mqtt?: MqttConfig; hops?: number }, log: Logger, where = 'mqtt'): Transport {
  const list: Transport[] = [];
  if (opts.iface) list.push(new UdpMulticastTransport({ iface: opts.iface, ...(opts.hops !== undefined ? { hops: opts.hops } : {}) }));
  if (opts.mqtt) list.push(mqttTransport(opts.mqtt, log, where));
  if (list.length === 0) throw new ConfigError('no transport: give a network interface, an MQTT broker, or both');
  return list.length === 1 ? list[0]! : new MultiTransport(list);
}

/** Drop counters of MQTT transports inside `t`, for stats lines. */
export function mqttStats(t: Transport): ReturnType<MqttTransport['stats']> | undefined {
  const all = t instanceof MultiTransport ? t.transports : [t];
  const m = all.find((x): x is MqttTransport => x instanceof MqttTransport);
  return m?.stats();
}
