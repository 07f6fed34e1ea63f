/**
 * Paced sending of several carousels, one per channel, within one rate budget.
 * Channels take turns datagram by datagram, so each gets an equal share of the
 * rate. The budget counts whole IPv6 packets (payload + 48 bytes of IPv6 and
 * UDP headers), so the rate is what the link actually carries.
 *
 * Channels can be added, replaced and removed while the publisher runs (the
 * long-running server swaps in new releases this way).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Channel, Transport } from '../transport/transport.js';
import { hex } from '../protocol/hex.js';
import type { Carousel } from './carousel.js';

export const IPV6_UDP_HEADERS = 48;

export interface PublisherEntry {
  channel: Channel;
  carousel: Carousel;
}

export interface ChannelStats {
  channel: string;
  releaseId: string;
  packets: number;
  bytes: number;
  rounds: number;
}

export interface PublisherInit {
  transport: Transport;
  /** Bits per second on the wire, all channels together. */
  rate: number;
  /** Stop each channel after this many complete rounds (it is then removed). */
  rounds?: number;
}

interface Slot extends PublisherEntry {
  stats: ChannelStats;
}

export class Publisher {
  readonly rate: number;
  #transport: Transport;
  #rounds: number | undefined;
  #slots = new Map<string, Slot>();
  /** The slots in turn order, rebuilt when a channel comes or goes. */
  #order: Slot[] = [];
  #finished: ChannelStats[] = [];
  #turn = 0;

  constructor(init: PublisherInit) {
    if (!(init.rate > 0)) throw new RangeError('rate must be positive');
    this.rate = init.rate;
    this.#transport = init.transport;
    this.#rounds = init.rounds;
  }

  /** Starts (or replaces) the carousel on a channel, keyed by channel name. */
  set(entry: PublisherEntry): void {
    this.#slots.set(entry.channel.name, { ...entry, stats: { channel: entry.channel.name, releaseId: hex(entry.carousel.releaseId), packets: 0, bytes: 0, rounds: 0 } });
    this.#order = [...this.#slots.values()];
  }

  remove(channelName: string): void {
    const slot = this.#slots.get(channelName);
    if (!slot) return;
    this.#slots.delete(channelName);
    this.#order = [...this.#slots.values()];
    this.#finished.push(slot.stats);
  }

  /** Live channels' stats, then those of channels that finished or were removed. */
  stats(): ChannelStats[] {
    return [...[...this.#slots.values()].map((s) => s.stats), ...this.#finished];
  }

  get idle(): boolean {
    return this.#slots.size === 0;
  }

  /**
   * Sends until the signal aborts, the duration passes, or (with `rounds`, or
   * `untilIdle`) no channel is left.
   */
  async run(opts: { signal?: AbortSignal; durationMs?: number; untilIdle?: boolean; onTick?: (elapsedMs: number) => void; tickMs?: number } = {}): Promise<void> {
    await this.#transport.open();
    const bytesPerMs = this.rate / 8 / 1000;
    // Up to 20 ms of sending per burst: enough to ride out timer jitter.
    const maxBudget = Math.max(bytesPerMs * 20, 2 * 1500);
    const start = performance.now();
    const tickMs = opts.tickMs ?? 250;
    let last = start;
    let lastTick = start;
    let budget = 0;
    const stopWhenIdle = opts.untilIdle || this.#rounds !== undefined;
    while (!opts.signal?.aborted) {
      const now = performance.now();
      if (opts.durationMs !== undefined && now - start >= opts.durationMs) break;
      budget = Math.min(maxBudget, budget + (now - last) * bytesPerMs);
      last = now;
      while (budget > 0 && this.#slots.size > 0) budget -= this.#sendOne();
      if (opts.onTick && now - lastTick >= tickMs) {
        lastTick = now;
        opts.onTick(now - start);
      }
      if (stopWhenIdle && this.#slots.size === 0) break;
      await sleep(1);
    }
    opts.onTick?.(performance.now() - start);
  }

  /** Sends the next datagram of the next channel in turn; returns its cost in wire bytes. */
  #sendOne(): number {
    const slot = this.#order[this.#turn++ % this.#order.length]!;
    const datagram = slot.carousel.next();
    this.#transport.send(slot.channel, datagram);
    slot.stats.packets++;
    slot.stats.bytes += datagram.length;
    slot.stats.rounds = slot.carousel.round;
    if (this.#rounds !== undefined && slot.carousel.round >= this.#rounds) this.remove(slot.channel.name);
    return datagram.length + IPV6_UDP_HEADERS;
  }
}
