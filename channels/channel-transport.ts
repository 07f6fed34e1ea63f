/**
 * The channel API seen as a Transport (transport/transport.ts): every join is
 * a raw socket's membership, every send a raw socket's send, so code written
 * against Transport (fwcast's publisher, agent and relay) can run through the
 * messaging library, and the transport compliance suite checks the library's
 * sockets on every transport underneath.
 */
import type { Channel, DatagramHandler, Transport, TransportStats } from '../transport/transport.js';
import { Context, type ContextOptions, type Socket } from './index.js';

export class ChannelTransport implements Transport {
  readonly context: Context;
  readonly description: string;
  readonly maxDatagramSize: number;
  #sender: Socket | undefined;

  constructor(options: ContextOptions) {
    this.context = new Context(options);
    this.description = this.context.transport.description;
    this.maxDatagramSize = this.context.transport.maxDatagramSize;
  }

  open(): Promise<void> {
    return this.context.open();
  }

  /**
   * One socket per join: the contract gives two joins of a channel two
   * memberships. Channels pass through as they are: the caller may know them
   * by identity (the transport reports them back, e.g. receive buffers).
   */
  async join(channel: Channel, onDatagram: DatagramHandler, signal?: AbortSignal): Promise<void> {
    const socket = this.context.socket({ framing: 'raw' });
    socket.on('message', (m) => onDatagram(m.payload, m.from));
    try {
      await socket.join(channel, signal ? { signal } : {});
    } catch (err) {
      socket.close();
      throw err;
    }
    signal?.addEventListener('abort', () => socket.close(), { once: true });
  }

  send(channel: Channel, data: Uint8Array): void {
    try {
      this.#sender ??= this.context.socket({ framing: 'raw' });
    } catch {
      // Closed: the transport underneath refuses and counts it.
      this.context.transport.send(channel, data);
      return;
    }
    // The caller's buffer is theirs until sent (the contract): the raw socket copies.
    this.#sender.send(channel, data);
  }

  stats(): TransportStats {
    return this.context.stats();
  }

  close(): Promise<void> {
    return this.context.close();
  }
}
