/**
 * fwcast's messaging library (`import { Context } from 'fwcast/channels'`):
 * Librecast's model of a context, sockets and channels, for any multicast
 * application, on top of fwcast's transports (transport/): IPv6 UDP
 * multicast, MQTT (the same channel name as a topic) and in-memory.
 *
 *   const ctx = await Context.create({ iface: 'eth0' });
 *   const chat = ctx.channel('chat/lobby');          // Librecast's group for the name
 *   const sock = ctx.socket();                       // Librecast message framing
 *   await sock.join(chat);
 *   sock.send(chat, new TextEncoder().encode('hello'));
 *   for await (const m of sock.messages({ signal })) console.log(m.from, m.payload);
 *   await ctx.close();
 *
 * A socket frames messages as Librecast's `lc_msg_send` does
 * (protocol/librecast-message.ts), so C programs using liblibrecast and this
 * library talk to each other; `framing: 'raw'` gives plain datagrams (what
 * `lc_channel_send` sends, and fwcast's own packets). A datagram that is not
 * a valid message is dropped and counted (`stats().dropped`, the `drop`
 * event), never thrown at the application.
 *
 * The context owns one transport; each socket's memberships are joins on it,
 * left on part(), on the join's AbortSignal, on socket.close() or on
 * ctx.close().
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { channelGroup, checkMulticastGroup, DEFAULT_PORT } from '../protocol/channel.js';
import { FwcastError } from '../protocol/errors.js';
import {
  decodeLibrecastMessage, encodeLibrecastMessage, LIBRECAST_HEADER_SIZE, LIBRECAST_RECV_MAX_PAYLOAD, LibrecastOp, type LibrecastOpcode,
} from '../protocol/librecast-message.js';
import { MemoryHub, MemoryTransport } from '../transport/memory.js';
import { MqttTransport, type MqttTransportInit } from '../transport/mqtt.js';
import { MultiTransport } from '../transport/multi.js';
import { TransportClosedError, type Channel as TransportChannel, type Transport, type TransportStats } from '../transport/transport.js';
import { UdpMulticastTransport, type UdpMulticastInit } from '../transport/udp-multicast.js';
import { MessageQueue } from './message-queue.js';

export { DEFAULT_PORT, LibrecastOp, MemoryHub, LIBRECAST_HEADER_SIZE, LIBRECAST_RECV_MAX_PAYLOAD, TransportClosedError };
export type { LibrecastOpcode, Transport, TransportStats, MqttTransportInit, UdpMulticastInit };

/** Where a context's datagrams travel; several of iface, mqtt and memory at once make one multi transport. */
export interface ContextOptions {
  /** IPv6 UDP multicast on this interface (e.g. "eth0"). */
  iface?: string;
  /** Multicast settings besides the interface (hop limit, loopback, largest datagram). */
  udp?: Omit<UdpMulticastInit, 'iface'>;
  /** MQTT through a broker: the channel name becomes the topic `<topicPrefix>/<name>`. */
  mqtt?: MqttTransportInit;
  /** In-memory: every context on the same hub hears the others (tests, simulations). */
  memory?: MemoryHub;
  /** Any other Transport implementation, used as given (the context closes it). */
  transport?: Transport;
}

/**
 * A channel: a multicast group and port, and the name MQTT uses as its topic
 * (the transport's Channel: any such object works, e.g. fwcast's own).
 */
export type Channel = TransportChannel;

export interface ChannelOptions {
  /** UDP port (default 4242, Librecast's). */
  port?: number;
}

export interface ExplicitChannel {
  /** An IPv6 multicast address, e.g. "ff1e::1234". */
  group: string;
  port?: number;
  /** Topic name on MQTT (default "[group]:port"). */
  name?: string;
}

export interface SocketOptions {
  /** "librecast" (default): Librecast messages; "raw": whole datagrams, no header. */
  framing?: 'librecast' | 'raw';
}

export interface Message {
  channel: Channel;
  /** The message's bytes (the datagram's, for raw framing). */
  payload: Uint8Array;
  /** The sender: an IPv6 address on multicast, "mqtt:host:port" on MQTT. */
  from: string;
  /** Librecast's header fields; absent for raw framing. */
  seq?: bigint;
  timestamp?: bigint;
  op?: LibrecastOpcode;
}

/** Why a received datagram did not become a message; the name of its counter. */
export type DropReason = 'malformed' | 'limit-exceeded' | 'overflow';

export interface Drop {
  reason: DropReason;
  channel: Channel;
  from: string;
  /** The decoding error (absent for overflow). */
  error?: FwcastError;
}

export interface SocketStats {
  /** Messages delivered (to events and iterators together, once each). */
  received: number;
  /** Messages handed to the transport. */
  sent: number;
  /** Messages send() refused: longer than the transport carries. */
  oversize: number;
  dropped: Record<DropReason, number>;
}

export interface MessagesOptions {
  /** Ends the iteration when aborted. */
  signal?: AbortSignal;
  /** Messages kept for a slow reader before newer ones are dropped (`overflow`; default 1024). */
  maxQueued?: number;
}

function checkPort(port: number): number {
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError(`port: ${port} is not a UDP port (1-65535)`);
  return port;
}

export class Context {
  readonly transport: Transport;
  #sockets = new Set<Socket>();
  #seq = new WeakMap<Channel, bigint>();
  #closed = false;

  /** A context that can join at once; sending needs open() (or use Context.create()). */
  constructor(options: ContextOptions) {
    const parts: Transport[] = [];
    if (options.transport) parts.push(options.transport);
    if (options.iface) parts.push(new UdpMulticastTransport({ ...options.udp, iface: options.iface }));
    if (options.mqtt) parts.push(new MqttTransport(options.mqtt));
    if (options.memory) parts.push(new MemoryTransport(options.memory));
    if (parts.length === 0) throw new TypeError('Context: give iface, mqtt, memory or transport');
    this.transport = parts.length === 1 ? parts[0]! : new MultiTransport(parts);
  }

  /** A context on the transport(s) the options name, ready to send. */
  static async create(options: ContextOptions): Promise<Context> {
    const ctx = new Context(options);
    try {
      await ctx.open();
    } catch (err) {
      await ctx.close();
      throw err;
    }
    return ctx;
  }

  /** Prepares for sending (the transport's open(): sockets, broker connection). Idempotent. */
  open(): Promise<void> {
    return this.transport.open();
  }

  /**
   * The channel for `name` (Librecast's derivation: the same group as
   * `lc_channel_new(ctx, name)`), or for an explicit group and port
   * (`lc_channel_init_grp`).
   */
  channel(name: string, options?: ChannelOptions): Channel;
  channel(explicit: ExplicitChannel): Channel;
  channel(spec: string | ExplicitChannel, options: ChannelOptions = {}): Channel {
    if (typeof spec === 'string') return Object.freeze({ name: spec, group: channelGroup(spec), port: checkPort(options.port ?? DEFAULT_PORT) });
    const group = checkMulticastGroup(spec.group);
    const port = checkPort(spec.port ?? DEFAULT_PORT);
    return Object.freeze({ name: spec.name ?? `[${group}]:${port}`, group, port });
  }

  /** The sequence number of the next message sent on `channel` from this context (Librecast's per-channel counter, from 1). */
  nextSeq(channel: Channel): bigint {
    const seq = (this.#seq.get(channel) ?? 0n) + 1n;
    this.#seq.set(channel, seq);
    return seq;
  }

  socket(options: SocketOptions = {}): Socket {
    if (this.#closed) throw new TransportClosedError('socket() after close() of the context');
    const socket = new Socket(this, options.framing ?? 'librecast', () => this.#sockets.delete(socket));
    this.#sockets.add(socket);
    return socket;
  }

  /** The transport's counters (datagrams sent, received, refused by reason). */
  stats(): TransportStats {
    return this.transport.stats();
  }

  /** Closes every socket and the transport. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const s of [...this.#sockets]) s.close();
    await this.transport.close();
  }
}

export interface SocketEvents {
  message: [Message];
  drop: [Drop];
  close: [];
}

/**
 * Joins channels and sends on them. Messages arrive as `message` events and
 * through messages() iterators; every consumer sees every message.
 */
export class Socket extends EventEmitter<SocketEvents> {
  #memberships = new Map<Channel, AbortController>();
  #iterators = new Set<MessageQueue<Message>>();
  #closed = false;
  #stats: SocketStats = { received: 0, sent: 0, oversize: 0, dropped: { malformed: 0, 'limit-exceeded': 0, overflow: 0 } };

  /** @internal Use Context.socket(). */
  constructor(readonly context: Context, readonly framing: 'librecast' | 'raw', private readonly onClose: () => void) {
    super();
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Joins `channel` (resolves once datagrams sent from then on arrive).
   * Joining a channel this socket already joined does nothing. The membership
   * ends on part(), close(), or when `signal` aborts; an aborted signal
   * rejects with its reason, as the transport does.
   */
  async join(channel: Channel, options: { signal?: AbortSignal } = {}): Promise<void> {
    if (this.#closed) throw new TransportClosedError('join() after close() of the socket');
    if (this.#memberships.has(channel)) return;
    const membership = new AbortController();
    this.#memberships.set(channel, membership);
    const signal = options.signal ? AbortSignal.any([membership.signal, options.signal]) : membership.signal;
    // Removed with the membership, so a long-lived signal does not collect listeners.
    options.signal?.addEventListener('abort', () => this.part(channel), { once: true, signal: membership.signal });
    try {
      await this.context.transport.join(channel, (data, from) => this.#arrived(channel, data, from), signal);
    } catch (err) {
      if (this.#memberships.get(channel) === membership) this.#memberships.delete(channel);
      throw err;
    }
  }

  /** Leaves `channel`; no more of its messages arrive here. */
  part(channel: Channel): void {
    const membership = this.#memberships.get(channel);
    if (!membership) return;
    this.#memberships.delete(channel);
    membership.abort();
  }

  /** Channels currently joined. */
  get channels(): Channel[] {
    return [...this.#memberships.keys()];
  }

  /**
   * Sends one message on `channel` (no join needed). Never throws for the
   * network: returns false if the message is too long for the transport
   * (counted as `oversize` here, and for raw framing by the transport too);
   * other refusals are in the context's stats().
   */
  send(channel: Channel, payload: Uint8Array, options: { op?: LibrecastOpcode } = {}): boolean {
    const transport = this.context.transport;
    if (this.framing === 'raw') {
      if (payload.length > transport.maxDatagramSize) {
        this.#stats.oversize++;
        // The transport refuses it too, and counts it with its other send errors.
        transport.send(channel, payload);
        return false;
      }
    } else if (payload.length + LIBRECAST_HEADER_SIZE > transport.maxDatagramSize) {
      this.#stats.oversize++;
      return false;
    }
    let datagram = payload;
    if (this.framing === 'librecast') {
      datagram = encodeLibrecastMessage({
        timestamp: BigInt(Date.now()) * 1_000_000n,
        seq: this.context.nextSeq(channel),
        rnd: randomBytes(8).readBigUInt64BE(),
        op: options.op ?? LibrecastOp.DATA,
        payload,
      });
    } else {
      // The transport keeps the datagram until it is sent: not the caller's buffer.
      datagram = payload.slice();
    }
    transport.send(channel, datagram);
    this.#stats.sent++;
    return true;
  }

  /** Messages as they arrive, until the signal aborts or the socket closes. */
  messages(options: MessagesOptions = {}): AsyncIterableIterator<Message> {
    const ended = new AbortController();
    const queue: MessageQueue<Message> = new MessageQueue(options.maxQueued ?? 1024, () => {
      this.#iterators.delete(queue);
      ended.abort();
    });
    if (this.#closed || options.signal?.aborted) {
      queue.end();
      return queue;
    }
    this.#iterators.add(queue);
    options.signal?.addEventListener('abort', () => queue.end(), { once: true, signal: ended.signal });
    return queue;
  }

  stats(): SocketStats {
    return { ...this.#stats, dropped: { ...this.#stats.dropped } };
  }

  /** Leaves every channel and ends every iterator. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const channel of [...this.#memberships.keys()]) this.part(channel);
    for (const q of [...this.#iterators]) q.end();
    this.onClose();
    this.emit('close');
  }

  #arrived(channel: Channel, data: Uint8Array, from: string): void {
    if (this.#closed) return;
    let message: Message;
    if (this.framing === 'raw') {
      message = { channel, payload: data, from };
    } else {
      try {
        const m = decodeLibrecastMessage(data);
        message = { channel, payload: m.payload, from, seq: m.seq, timestamp: m.timestamp, op: m.op };
      } catch (err) {
        if (!(err instanceof FwcastError)) throw err;
        this.#drop({ reason: err.reason as DropReason, channel, from, error: err });
        return;
      }
    }
    this.#stats.received++;
    for (const q of this.#iterators) if (!q.push(message)) this.#drop({ reason: 'overflow', channel, from });
    this.emit('message', message);
  }

  #drop(drop: Drop): void {
    this.#stats.dropped[drop.reason]++;
    this.emit('drop', drop);
  }
}
