/**
 * Several transports as one: join on all, send on all. An agent listening on
 * both IPv6 multicast and MQTT merges the symbols from both (the receiver
 * ignores duplicates); a publisher sending on both serves both populations
 * from one rate budget per transport.
 *
 * The multi transport keeps the lifecycle and refuses what no part may send
 * (before open, after close, longer than the smallest part's maximum) itself,
 * counted once; the parts count what their networks do. Its stats sum both.
 */
import { Lifecycle } from './lifecycle.js';
import type { Channel, DatagramHandler, Transport, TransportStats } from './transport.js';

export class MultiTransport implements Transport {
  readonly description: string;
  readonly transports: readonly Transport[];
  /** The smallest part's: a larger datagram would reach only some populations. */
  readonly maxDatagramSize: number;
  #life: Lifecycle;

  constructor(transports: readonly Transport[]) {
    if (transports.length === 0) throw new TypeError('transports: at least one transport is needed');
    this.transports = transports;
    this.description = transports.map((t) => t.description).join(' + ');
    this.maxDatagramSize = Math.min(...transports.map((t) => t.maxDatagramSize));
    this.#life = new Lifecycle('multi', this.description, this.maxDatagramSize);
  }

  /** Resolves once every transport joined; if one fails, the others are left again. */
  async join(channel: Channel, onDatagram: DatagramHandler, signal?: AbortSignal): Promise<void> {
    this.#life.checkJoin(signal);
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

  open(): Promise<void> {
    return this.#life.open(async () => {
      await Promise.all(this.transports.map((t) => t.open()));
    });
  }

  send(channel: Channel, data: Uint8Array): void {
    if (!this.#life.admit(data)) return;
    for (const t of this.transports) t.send(channel, data);
  }

  stats(): TransportStats {
    const own = this.#life.stats();
    const parts = this.transports.map((t) => t.stats());
    const all = [own, ...parts];
    const sum = (pick: (s: TransportStats) => number): number => all.reduce((n, s) => n + pick(s), 0);
    const sendErrorsBy = { ...own.sendErrorsBy };
    for (const s of parts) for (const [reason, n] of Object.entries(s.sendErrorsBy)) sendErrorsBy[reason as keyof typeof sendErrorsBy] += n;
    const errors = all.flatMap((s) => (s.lastSendError ? [s.lastSendError] : []));
    return {
      ...own,
      sent: sum((s) => s.sent),
      received: sum((s) => s.received),
      sendErrors: sum((s) => s.sendErrors),
      sendErrorsBy,
      lastSendError: errors.sort((a, b) => a.at - b.at).pop(),
      reconnects: sum((s) => s.reconnects),
      parts,
    };
  }

  async close(): Promise<void> {
    this.#life.close();
    await Promise.all(this.transports.map((t) => t.close()));
  }
}
