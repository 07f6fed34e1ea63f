/**
 * In-memory transport for unit tests: a shared hub delivers every datagram
 * sent to a channel (keyed by group and port, like UDP) to each joined
 * handler, synchronously, with an optional per-transport drop function to
 * model loss. It keeps the whole transport contract, so a test that uses it
 * sees what a network transport would do.
 */
import { MAX_DATAGRAM } from '../protocol/packet.js';
import { Lifecycle } from './lifecycle.js';
import type { Channel, DatagramHandler, Transport, TransportStats } from './transport.js';

export class MemoryHub {
  #members = new Map<string, Set<DatagramHandler>>();

  subscribe(channel: Channel, handler: DatagramHandler): () => void {
    const key = `${channel.group}:${channel.port}`;
    let set = this.#members.get(key);
    if (!set) this.#members.set(key, (set = new Set()));
    set.add(handler);
    return () => set.delete(handler);
  }

  /** Delivers as if sent by `from` (tests use it to inject traffic); each handler gets its own copy. */
  deliver(channel: Channel, data: Uint8Array, from: string): void {
    for (const handler of [...(this.#members.get(`${channel.group}:${channel.port}`) ?? [])]) {
      try {
        handler(data.slice(), from);
      } catch (err) {
        // A network transport would meet a throwing handler in its event loop,
        // not in the sender's send(): report it the same way.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}

export interface MemoryTransportInit {
  /** Returns true for datagrams this transport's handlers lose (default: none). */
  drop?: (data: Uint8Array) => boolean;
  /** `from` of datagrams this transport sends (default "memory"). */
  address?: string;
  /** Largest datagram sent (default 65527, like MQTT). */
  maxDatagramSize?: number;
}

export class MemoryTransport implements Transport {
  readonly description = 'in-memory';
  readonly maxDatagramSize: number;
  #life: Lifecycle;
  #drop: (data: Uint8Array) => boolean;
  #address: string;
  #unsubscribe = new Set<() => void>();

  constructor(private readonly hub: MemoryHub, init: MemoryTransportInit = {}) {
    this.maxDatagramSize = init.maxDatagramSize ?? MAX_DATAGRAM;
    this.#life = new Lifecycle('memory', this.description, this.maxDatagramSize);
    this.#drop = init.drop ?? (() => false);
    this.#address = init.address ?? 'memory';
  }

  async join(channel: Channel, onDatagram: DatagramHandler, signal?: AbortSignal): Promise<void> {
    this.#life.checkJoin(signal);
    const member = this.#life.member(onDatagram, signal);
    const unsubscribe = this.hub.subscribe(channel, (data, from) => {
      if (!this.#drop(data)) member(data, from);
    });
    const leave = (): void => {
      unsubscribe();
      this.#unsubscribe.delete(leave);
    };
    this.#unsubscribe.add(leave);
    signal?.addEventListener('abort', leave, { once: true });
  }

  open(): Promise<void> {
    return this.#life.open(async () => {});
  }

  send(channel: Channel, data: Uint8Array): void {
    if (!this.#life.admit(data)) return;
    this.#life.sent++;
    this.hub.deliver(channel, data, this.#address);
  }

  stats(): TransportStats {
    return this.#life.stats();
  }

  async close(): Promise<void> {
    this.#life.close();
    for (const leave of [...this.#unsubscribe]) leave();
  }
}
