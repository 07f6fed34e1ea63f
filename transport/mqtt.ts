/**
 * MQTT through a broker, for where multicast does not reach (cloud links,
 * NAT, cellular). The very same datagrams go out as QoS 0 PUBLISH messages, one
 * topic per channel: `<topicPrefix>/<channel name>`, e.g. `fwcast/fw/rpi4`.
 * Nothing about fwcast changes: loss, duplicates and reordering are what the
 * carousel and the receiver already handle, and authenticity comes from the
 * signed manifest, never from the broker.
 *
 * Connection: `mqtt://`, `mqtts://` (TLS with an optional CA, client
 * certificate and key), `ws://`, `wss://`; username and password. After a lost
 * connection it reconnects with exponential backoff (`reconnectMinMs` doubling
 * up to `reconnectMaxMs`) and subscribes again to every joined channel.
 *
 * MQTT 5: CONNECT announces the largest packet we take (the largest datagram,
 * its topic and headers), so the broker drops bigger messages for us; a packet
 * over it that comes anyway closes the connection at its header, before any
 * of it is buffered (mqtt-packet-limit.ts). A broker must speak MQTT 5.
 *
 * Sending never throws and never queues without bound: while disconnected a
 * datagram is dropped and counted (send error `offline`), and while the
 * socket's write buffer holds more than `maxBufferedBytes` it is dropped and
 * counted (`backpressure`). Pacing is the Publisher's job (`--rate`): a broker
 * drops QoS 0 messages silently once a subscriber falls too far behind
 * (mosquitto: `max_queued_messages`), so the rate must stay below what the
 * broker and the slowest subscriber sustain (see docs/mqtt.md).
 */
import { readFileSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import type { IClientOptions, MqttClient } from 'mqtt';

// MQTT.js costs ~20 MB of resident memory: loaded only by agents and
// publishers that use a broker.
let mqttModule: typeof import('mqtt').default | undefined;
async function loadMqtt(): Promise<typeof import('mqtt').default> {
  mqttModule ??= (await import('mqtt')).default;
  return mqttModule;
}
import { ConfigError } from '../protocol/errors.js';
import { MAX_DATAGRAM } from '../protocol/packet.js';
import { Lifecycle } from './lifecycle.js';
import { MqttPacketLimit } from './mqtt-packet-limit.js';
import type { Channel, DatagramHandler, Transport, TransportStats } from './transport.js';

export const DEFAULT_TOPIC_PREFIX = 'fwcast';

export interface MqttTransportInit {
  /** Broker URL: mqtt://host:1883, mqtts://host:8883, ws://…, wss://… (IPv6 literals in brackets). */
  url: string;
  /** PEM: CA certificate(s) to trust for mqtts/wss (default: the system's). */
  ca?: string | Buffer;
  /** PEM: client certificate and key, for brokers that authenticate clients by certificate. */
  cert?: string | Buffer;
  key?: string | Buffer;
  username?: string;
  password?: string;
  /** Topic prefix (default "fwcast"): channel fw/rpi4 is topic "fwcast/fw/rpi4". */
  topicPrefix?: string;
  /** MQTT client id (default: fwcast-<random>). */
  clientId?: string;
  /** First reconnect delay, doubled on each failure (default 250 ms). */
  reconnectMinMs?: number;
  /** Longest reconnect delay (default 10 s). */
  reconnectMaxMs?: number;
  /** Datagrams are dropped while the socket buffers more than this (default 1 MiB). */
  maxBufferedBytes?: number;
  /** Connection attempt timeout (default 10 s). */
  connectTimeoutMs?: number;
  /** Largest datagram sent (default 65527, the largest a receiver accepts); set it to the broker's message_size_limit. */
  maxDatagramSize?: number;
  /** Called on connection changes and errors (the transport never logs itself). */
  onEvent?: (event: MqttEvent) => void;
}

export type MqttEvent =
  | { kind: 'connected'; reconnects: number }
  | { kind: 'disconnected'; retryInMs: number }
  | { kind: 'error'; error: Error };

/** The broker sent a packet larger than we accept (the connection is closed and opened again). */
export class MqttOversizeError extends Error {
  override name = 'MqttOversizeError';
}

/**
 * Room in a PUBLISH packet besides the topic and the payload: fixed header (5),
 * topic length (2), packet id (2), properties a broker may add (MQTT 5).
 */
const PUBLISH_OVERHEAD = 1024;

/** Connection refused for a reason retrying will not fix (credentials, authorisation). */
export class MqttRefusedError extends Error {
  override name = 'MqttRefusedError';
}

/** CONNACK codes that mean "fix the configuration" (MQTT 3.1.1 §3.2.2.3, MQTT 5 §3.2.2.2). */
const PERMANENT_CONNACK = new Set([1, 2, 4, 5, 0x84, 0x85, 0x86, 0x87, 0x8a, 0x8c]);

/** The topic a channel travels on. */
export function channelTopic(prefix: string, channel: Channel): string {
  return `${prefix.replace(/\/+$/, '')}/${channel.name}`;
}

/** Reads the TLS and password files named in a configuration, with errors naming the file. */
export function readMqttFiles(files: { ca?: string; cert?: string; key?: string; passwordFile?: string }, where = 'mqtt'): Pick<MqttTransportInit, 'ca' | 'cert' | 'key' | 'password'> {
  const read = (path: string, field: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      // Name the flag (--mqtt-password-file) or the config field (mqtt.passwordFile).
      const name = where.startsWith('--') ? `${where}-${field.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}` : `${where}.${field}`;
      throw new ConfigError(`${name}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  };
  return {
    ...(files.ca ? { ca: read(files.ca, 'ca') } : {}),
    ...(files.cert ? { cert: read(files.cert, 'cert') } : {}),
    ...(files.key ? { key: read(files.key, 'key') } : {}),
    ...(files.passwordFile ? { password: read(files.passwordFile, 'passwordFile').toString('utf8').replace(/\r?\n$/, '') } : {}),
  };
}

export class MqttTransport implements Transport {
  readonly description: string;
  readonly maxDatagramSize: number;
  #life: Lifecycle;
  #init: MqttTransportInit;
  #prefix: string;
  #from: string;
  #client: MqttClient | undefined;
  #handlers = new Map<string, Set<DatagramHandler>>();
  #retryTimer: NodeJS.Timeout | undefined;
  #retryMs: number;
  #waiters = new Set<{ resolve: () => void; reject: (err: Error) => void }>();
  #refused: Error | undefined;
  /** Largest MQTT packet taken from the broker: the largest datagram a receiver accepts, its topic and headers. */
  #packetLimit: number;

  constructor(init: MqttTransportInit) {
    let url: URL;
    try {
      url = new URL(init.url);
    } catch {
      throw new ConfigError(`mqtt.url: "${init.url}" is not a URL (e.g. mqtt://broker:1883 or mqtts://broker:8883)`);
    }
    if (!['mqtt:', 'mqtts:', 'tcp:', 'ssl:', 'tls:', 'ws:', 'wss:'].includes(url.protocol)) {
      throw new ConfigError(`mqtt.url: unsupported scheme "${url.protocol}" (mqtt, mqtts, ws or wss)`);
    }
    const prefix = init.topicPrefix ?? DEFAULT_TOPIC_PREFIX;
    if (!/^[^#+\0]+$/.test(prefix) || prefix.startsWith('/')) throw new ConfigError(`mqtt.topicPrefix: "${prefix}" must be a topic without wildcards or a leading "/"`);
    this.#init = init;
    this.#prefix = prefix.replace(/\/+$/, '');
    this.#retryMs = init.reconnectMinMs ?? 250;
    url.password = '';
    url.username = '';
    this.#from = `mqtt:${url.host}`;
    this.description = `MQTT ${url.protocol}//${url.host} topics ${this.#prefix}/…`;
    this.maxDatagramSize = init.maxDatagramSize ?? MAX_DATAGRAM;
    // Topics are the prefix and a channel name (fw/<model>: short).
    this.#packetLimit = MAX_DATAGRAM + Buffer.byteLength(this.#prefix) + PUBLISH_OVERHEAD;
    this.#life = new Lifecycle('mqtt', this.description, this.maxDatagramSize);
  }

  stats(): TransportStats {
    return this.#life.stats();
  }

  get connected(): boolean {
    return this.#client?.connected ?? false;
  }

  topicOf(channel: Channel): string {
    return channelTopic(this.#prefix, channel);
  }

  #ensureClient(): MqttClient {
    if (this.#client) return this.#client;
    const i = this.#init;
    const options: IClientOptions = {
      clientId: i.clientId ?? `fwcast-${Math.random().toString(16).slice(2, 10)}`,
      clean: true,
      // Backoff is ours (below); MQTT.js would retry at a fixed period.
      reconnectPeriod: 0,
      connectTimeout: i.connectTimeoutMs ?? 10_000,
      keepalive: 30,
      // QoS 0 while offline is dropped here, never queued for later.
      queueQoSZero: false,
      resubscribe: false,
      // MQTT 5, to tell the broker the largest packet we take (MQTT 5 §3.1.2.11.4):
      // it then drops bigger messages for us rather than send them.
      protocolVersion: 5,
      properties: { maximumPacketSize: this.#packetLimit },
      // The stream is wrapped first (below).
      manualConnect: true,
      ...(i.username !== undefined ? { username: i.username } : {}),
      ...(i.password !== undefined ? { password: i.password } : {}),
      ...(i.ca !== undefined ? { ca: i.ca } : {}),
      ...(i.cert !== undefined ? { cert: i.cert } : {}),
      ...(i.key !== undefined ? { key: i.key } : {}),
    };
    const client = mqttModule!.connect(i.url, options);
    // Every stream (one per connection) goes through the packet limit before MQTT.js parses
    // it. streamBuilder is MQTT.js's own (typed private); test/mqtt-limits.test.ts fails if it goes.
    const inner = client as unknown as { streamBuilder: (c: MqttClient) => Duplex };
    const build = inner.streamBuilder;
    inner.streamBuilder = (c) => {
      const stream = build(c);
      const limit = new MqttPacketLimit(this.#packetLimit);
      // Added before MQTT.js pipes the stream: this listener sees each chunk first.
      stream.on('data', (chunk: Uint8Array) => {
        const over = limit.push(chunk);
        if (over === undefined || stream.destroyed) return;
        this.#init.onEvent?.({ kind: 'error', error: new MqttOversizeError(`MQTT broker ${this.#from.slice(5)} sent ${over}: connection closed, reconnecting`) });
        stream.destroy();
      });
      return stream;
    };
    client.connect();
    let everConnected = false;
    client.on('connect', () => {
      if (everConnected) this.#life.reconnects++;
      everConnected = true;
      this.#refused = undefined;
      this.#retryMs = i.reconnectMinMs ?? 250;
      this.#init.onEvent?.({ kind: 'connected', reconnects: this.#life.reconnects });
      // A clean session forgets subscriptions: subscribe again to every joined channel.
      for (const topic of this.#handlers.keys()) {
        client.subscribe(topic, { qos: 0 }, (err, grants) => {
          if (err || (grants?.[0]?.qos ?? 0x80) >= 0x80) this.#init.onEvent?.({ kind: 'error', error: err ?? new MqttRefusedError(`MQTT broker refused the subscription to ${topic}`) });
        });
      }
      for (const w of [...this.#waiters]) w.resolve();
      this.#waiters.clear();
    });
    client.on('message', (topic, payload) => {
      const handlers = this.#handlers.get(topic);
      if (!handlers) return;
      const data = new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
      // Each membership owns its bytes, as with one UDP socket per join.
      for (const h of [...handlers]) h(handlers.size > 1 ? data.slice() : data, this.#from);
    });
    client.on('error', (err) => {
      const code = (err as Error & { code?: number | string }).code;
      if (typeof code === 'number' && PERMANENT_CONNACK.has(code)) {
        this.#refused = new MqttRefusedError(`MQTT broker ${this.#from.slice(5)} refused the connection: ${err.message}`);
        for (const w of [...this.#waiters]) w.reject(this.#refused);
        this.#waiters.clear();
      }
      this.#init.onEvent?.({ kind: 'error', error: err });
    });
    client.on('close', () => this.#scheduleReconnect());
    this.#client = client;
    return client;
  }

  #scheduleReconnect(): void {
    if (this.#life.closed || this.#retryTimer) return;
    const delay = this.#retryMs;
    this.#retryMs = Math.min(this.#retryMs * 2, this.#init.reconnectMaxMs ?? 10_000);
    this.#init.onEvent?.({ kind: 'disconnected', retryInMs: delay });
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      if (!this.#life.closed && this.#client && !this.#client.connected) this.#client.reconnect();
    }, delay);
  }

  /**
   * Resolves once connected, or after `waitMs` still unconnected (the
   * transport keeps retrying: a device may boot before its broker is up).
   * Rejects if the broker refuses us for good or the signal aborts.
   */
  async #connected(call: string, waitMs: number, signal?: AbortSignal): Promise<void> {
    await loadMqtt();
    if (this.#life.closed) throw this.#life.closedError(call);
    signal?.throwIfAborted();
    const client = this.#ensureClient();
    if (client.connected) return Promise.resolve();
    if (this.#refused) return Promise.reject(this.#refused);
    return new Promise<void>((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#waiters.delete(waiter);
        signal?.removeEventListener('abort', onAbort);
      };
      const waiter = {
        resolve: () => {
          done();
          resolve();
        },
        reject: (err: Error) => {
          done();
          reject(err);
        },
      };
      const timer = setTimeout(waiter.resolve, waitMs);
      const onAbort = (): void => waiter.reject(signal!.reason as Error);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.add(waiter);
    });
  }

  async join(channel: Channel, onDatagram: DatagramHandler, signal?: AbortSignal): Promise<void> {
    this.#life.checkJoin(signal);
    const topic = this.topicOf(channel);
    const member = this.#life.member(onDatagram, signal);
    let set = this.#handlers.get(topic);
    if (!set) this.#handlers.set(topic, (set = new Set()));
    set.add(member);
    const leave = (): void => {
      if (!set.delete(member)) return;
      if (set.size === 0 && this.#handlers.get(topic) === set) {
        this.#handlers.delete(topic);
        if (this.#client?.connected) this.#client.unsubscribe(topic, () => {});
      }
    };
    signal?.addEventListener('abort', leave, { once: true });
    try {
      await this.#connected('join()', this.#init.connectTimeoutMs ?? 10_000, signal);
      const client = this.#client;
      // Not connected yet: the connect handler subscribes once the broker answers.
      if (!client?.connected) return;
      const granted = await new Promise<number | undefined>((resolve, reject) => {
        client.subscribe(topic, { qos: 0 }, (err, grants) => (err ? reject(err) : resolve(grants?.[0]?.qos)));
      });
      // Closed or aborted while subscribing.
      this.#life.checkJoin(signal);
      if (granted === undefined || granted >= 0x80) {
        throw new MqttRefusedError(`MQTT broker refused the subscription to ${topic} (check the broker's ACL for this user)`);
      }
    } catch (err) {
      // No membership stays behind a failed join.
      signal?.removeEventListener('abort', leave);
      leave();
      throw this.#life.joinError(err, signal);
    }
  }

  /** Connects; gives up waiting after connectTimeoutMs (sends are dropped and counted until connected). */
  open(): Promise<void> {
    return this.#life.open(() => this.#connected('open()', this.#init.connectTimeoutMs ?? 10_000));
  }

  send(channel: Channel, data: Uint8Array): void {
    if (!this.#life.admit(data)) return;
    const topic = this.topicOf(channel);
    try {
      const client = this.#client;
      if (!client || !client.connected) {
        this.#life.refuse('offline', `not connected to MQTT broker ${this.#from.slice(5)}`);
        return;
      }
      const buffered = (client.stream as { writableLength?: number } | undefined)?.writableLength ?? 0;
      const most = this.#init.maxBufferedBytes ?? 1 << 20;
      if (buffered > most) {
        this.#life.refuse('backpressure', `MQTT broker ${this.#from.slice(5)} is not keeping up: ${buffered} bytes unsent (most ${most})`);
        return;
      }
      client.publish(topic, Buffer.from(data.buffer, data.byteOffset, data.byteLength), { qos: 0 }, (err) => {
        if (err) this.#life.refuse('network', `publishing to ${topic}: ${err.message}`, err);
      });
      this.#life.sent++;
    } catch (err) {
      this.#life.refuse('network', `publishing to ${topic}: ${(err as Error).message}`, err);
    }
  }

  async close(): Promise<void> {
    if (!this.#life.close()) return;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    for (const w of [...this.#waiters]) w.reject(this.#life.closedError('waiting for the broker'));
    this.#waiters.clear();
    this.#handlers.clear();
    const client = this.#client;
    this.#client = undefined;
    if (!client) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        client.end(true);
        resolve();
      }, 2000);
      client.end(false, {}, () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}
