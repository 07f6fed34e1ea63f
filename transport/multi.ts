/**
 * Several transports as one: join on all, send on all. An agent listening on
 * both IPv6 multicast and MQTT merges the symbols from both (the receiver
 * ignores duplicates); a publisher sending on both serves both populations
 * from one rate budget per transport.
 */
import type { Channel, DatagramHandler, Transport } from './transport.js';

export class MultiTransport implements Transport {
  readonly description: string;
  readonly transports: readonly Transport[];

  constructor(transports: readonly Transport[]) {
    if (transports.length === 0) throw new TypeError('transports: at least one transport is needed');
    this.transports = transports;
    this.description = transports.map((t) => t.description).join(' + ');
  }

  /** Resolves once every transport joined; if one fails, the others are left again. */
  async join(channel: Channel, onDatagram: DatagramHandler, signal?: AbortSignal): Promise<void> {
    const inner = new AbortController();
    const onAbort = (): void => inner.abort(signal?.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await Promise.all(this.transports.map((t) => t.join(channel, onDatagram, inner.signal)));
    } catch (err) {
      inner.abort(err);
      signal?.removeEventListener('abort', onAbort);
      throw err;
    }
  }

  async open(): Promise<void> {
    await Promise.all(this.transports.map((t) => t.open()));
  }

  send(channel: Channel, data: Uint8Array): void {
    for (const t of this.transports) {
      try {
        t.send(channel, data);
      } catch {
        // Transports do not throw from send(); a broken one must not stop the others.
      }
    }
  }

  get sendErrors(): number {
    return this.transports.reduce((n, t) => n + t.sendErrors, 0);
  }

  async close(): Promise<void> {
    await Promise.all(this.transports.map((t) => t.close()));
  }
}
