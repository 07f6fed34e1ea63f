/**
 * In-memory transport for unit tests: a shared hub delivers every datagram
 * sent to a channel to each joined handler, with an optional per-handler drop
 * function to model loss.
 */
import type { Channel, DatagramHandler, Transport } from './transport.js';

export class MemoryHub {
  #members = new Map<string, Set<DatagramHandler>>();

  subscribe(channel: Channel, handler: DatagramHandler): () => void {
    const key = `${channel.group}:${channel.port}`;
    let set = this.#members.get(key);
    if (!set) this.#members.set(key, (set = new Set()));
    set.add(handler);
    return () => set.delete(handler);
  }

  deliver(channel: Channel, data: Uint8Array, from: string): void {
    for (const handler of this.#members.get(`${channel.group}:${channel.port}`) ?? []) handler(data.slice(), from);
  }
}

export class MemoryTransport implements Transport {
  readonly description = 'in-memory';
  readonly sendErrors = 0;
  #unsubscribe: Array<() => void> = [];

  constructor(private readonly hub: MemoryHub, private readonly drop: (data: Uint8Array) => boolean = () => false, private readonly address = 'memory') {}

  async join(channel: Channel, onDatagram: DatagramHandler, signal?: AbortSignal): Promise<void> {
    const off = this.hub.subscribe(channel, (data, from) => {
      if (!this.drop(data)) onDatagram(data, from);
    });
    this.#unsubscribe.push(off);
    signal?.addEventListener('abort', off, { once: true });
  }

  async open(): Promise<void> {}

  send(channel: Channel, data: Uint8Array): void {
    this.hub.deliver(channel, data, this.address);
  }

  async close(): Promise<void> {
    for (const off of this.#unsubscribe.splice(0)) off();
  }
}
