/**
 * Transports from configuration, shared by both CLIs: IPv6 multicast on an
 * interface, MQTT through a broker, or both at once.
 */
import { ConfigError } from '../protocol/errors.js';
import { errorFields, type Logger } from '../protocol/log.js';
import { MqttTransport, readMqttFiles } from './mqtt.js';
import { MultiTransport } from './multi.js';
import type { Transport, TransportStats } from './transport.js';
import { UdpMulticastTransport, type ReceiveBufferReport } from './udp-multicast.js';

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

/**
 * One transport for IPv6 multicast on `iface`, MQTT, or both (merged).
 * `maxDatagramSize` raises multicast's 1232-byte limit, for releases signed
 * with a larger datagram size.
 */
export function createTransport(opts: {
  iface?: string; mqtt?: MqttConfig; hops?: number; maxDatagramSize?: number;
  /** Multicast receive buffer per joined channel, bytes, and what the kernel granted (receive-buffer.ts). */
  receiveBuffer?: number; onReceiveBuffer?: (report: ReceiveBufferReport) => void;
}, log: Logger, where = 'mqtt'): Transport {
  const list: Transport[] = [];
  if (opts.iface) {
    list.push(new UdpMulticastTransport({
      iface: opts.iface,
      ...(opts.hops !== undefined ? { hops: opts.hops } : {}),
      ...(opts.maxDatagramSize !== undefined ? { maxDatagramSize: opts.maxDatagramSize } : {}),
      ...(opts.receiveBuffer !== undefined ? { receiveBuffer: opts.receiveBuffer } : {}),
      ...(opts.onReceiveBuffer ? { onReceiveBuffer: opts.onReceiveBuffer } : {}),
    }));
  }
  if (opts.mqtt) list.push(mqttTransport(opts.mqtt, log, where));
  if (list.length === 0) throw new ConfigError('no transport: give a network interface, an MQTT broker, or both');
  return list.length === 1 ? list[0]! : new MultiTransport(list);
}

/** The stats of the first transport of `kind` (e.g. "mqtt") in `t` or among its parts, for stats lines. */
export function statsOfKind(t: Transport, kind: string): TransportStats | undefined {
  const find = (s: TransportStats): TransportStats | undefined => (s.kind === kind ? s : s.parts.map(find).find((x) => x !== undefined));
  return find(t.stats());
}

/** The MQTT part's counters as the `mqtt.stats` log event names them, if `t` has an MQTT part. */
export function mqttSummary(t: Transport): { published: number; droppedOffline: number; droppedBackpressure: number; sendErrors: number; reconnects: number } | undefined {
  const mq = statsOfKind(t, 'mqtt');
  return mq && { published: mq.sent, droppedOffline: mq.sendErrorsBy.offline, droppedBackpressure: mq.sendErrorsBy.backpressure, sendErrors: mq.sendErrors, reconnects: mq.reconnects };
}
