/**
 * Paced sending of several carousels, one per channel, within one rate budget,
 * onto a transport. The pacing itself (budget, turns, rounds) is the Pacer's
 * (pacer.ts), which has no clock; this is only the loop that reads the clock,
 * sleeps until the next datagram is due, and hands datagrams to the transport.
 *
 * Channels can be added, replaced and removed while the publisher runs (the
 * long-running server swaps in new releases this way).
 */
import { LimitExceededError } from '../protocol/errors.js';
import { hex } from '../protocol/hex.js';
import type { Transport } from '../transport/transport.js';
import { Pacer, type ChannelStats, type PacerInit, type PublisherEntry, type Send } from './pacer.js';

export { channelCounts, IPV6_UDP_HEADERS, type ChannelStats, type PublisherEntry } from './pacer.js';

export interface PublisherInit extends PacerInit {
  transport: Transport;
}

export interface RunOptions {
  signal?: AbortSignal;
  durationMs?: number;
  /** Stop once no channel is left (implied by `rounds`). */
  untilIdle?: boolean;
  /** Called every `tickMs` (default 250) and once at the end, with the milliseconds since the start. */
  onTick?: (elapsedMs: number) => void;
  tickMs?: number;
}

export class Publisher {
  readonly rate: number;
  #transport: Transport;
  #pacer: Pacer;
  #running = false;
  /** Ends the current sleep early: a channel came, or the signal aborted. */
  #alarm: (() => void) | undefined;

  constructor(init: PublisherInit) {
    this.#pacer = new Pacer(init);
    this.rate = this.#pacer.rate;
    this.#transport = init.transport;
  }

  /**
   * Starts (or replaces) the carousel on a channel, keyed by channel name. Throws LimitExceededError,
   * and changes nothing, if its datagrams are longer than the transport
   * carries: every one of them would be refused.
   */
  set(entry: PublisherEntry): void {
    const { largestDatagram } = entry.carousel;
    if (largestDatagram > this.#transport.maxDatagramSize) {
      throw new LimitExceededError(`release ${hex(entry.carousel.releaseId)} sends datagrams of up to ${largestDatagram} bytes; ${this.#transport.description} carries at most ${this.#transport.maxDatagramSize} (sign it with a smaller --datagram-size)`);
    }
    this.#pacer.set(entry);
    this.#alarm?.();
  }

  remove(channelName: string): void {
    this.#pacer.remove(channelName);
  }

  /** Holds (pauses) or resumes a channel, e.g. while it has no listeners (listener-gate.ts). */
  hold(channelName: string, held: boolean): void {
    this.#pacer.hold(channelName, held);
    if (!held) this.#alarm?.();
  }

  held(channelName: string): boolean {
    return this.#pacer.held(channelName);
  }

  /** Live channels' stats, then those of channels that finished or were removed. */
  stats(): ChannelStats[] {
    return this.#pacer.stats();
  }

  get idle(): boolean {
    return this.#pacer.idle;
  }

  /**
   * Sends until the signal aborts, the duration passes, or (with `rounds`, or
   * `untilIdle`) no channel is left.
   */
  async run(opts: RunOptions = {}): Promise<void> {
    if (this.#running) throw new Error('the publisher is already running');
    this.#running = true;
    const { signal } = opts;
    const alarm = (): void => this.#alarm?.();
    signal?.addEventListener('abort', alarm);
    try {
      await this.#transport.open();
      const transport = this.#transport;
      const send: Send = (channel, datagram) => transport.send(channel, datagram);
      const start = performance.now();
      const end = opts.durationMs === undefined ? Infinity : start + opts.durationMs;
      const tickMs = opts.tickMs ?? 250;
      // Also bounds every sleep, so the loop looks at the clock at least this often.
      let nextTick = start + tickMs;
      const stopWhenIdle = opts.untilIdle || this.#pacer.rounds !== undefined;
      while (!signal?.aborted) {
        const now = performance.now();
        if (now >= end) break;
        const due = this.#pacer.due(now, send);
        if (now >= nextTick) {
          nextTick = now + tickMs;
          opts.onTick?.(now - start);
        }
        if (stopWhenIdle && this.#pacer.idle) break;
        // At least 1 ms: at high rates each wake-up sends a batch, not one datagram.
        await this.#sleep(Math.max(1, Math.min(due, nextTick, end) - now));
      }
      opts.onTick?.(performance.now() - start);
    } finally {
      signal?.removeEventListener('abort', alarm);
      this.#running = false;
    }
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#alarm = undefined;
        resolve();
      }, ms);
      this.#alarm = () => {
        clearTimeout(timer);
        this.#alarm = undefined;
        resolve();
      };
    });
  }
}
