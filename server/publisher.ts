/**
 * Paced sending of several carousels, one per channel, within one rate budget.
 * Channels take turns datagram by datagram, so each gets an equal share of the
 * rate. The budget counts whole IPv6 packets (payload + 48 bytes of IPv6 and
 * UDP headers), so `--rate` is what the link actually carries.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Channel, Transport } from '../transport/transport.js';
import type { Carousel } from './carousel.js';

export const IPV6_UDP_HEADERS = 48;

export interface PublisherEntry {
  channel: Channel;
  carousel: Carousel;
}

export interface ChannelStats {
  channel: string;
  packets: number;
  bytes: number;
  rounds: number;
}

export interface PublisherInit {
  transport: Transport;
  entries: PublisherEntry[];
  /** Bits per second on the wire, all channels together. */
  rate: number;
  /** Stop each channel after this many complete rounds. */
  rounds?: number;
  /** Stop after this long, milliseconds. */
  durationMs?: number;
  signal?: AbortSignal;
  /** Called about every `progressMs` (default 250) and once at the end. */
  onProgress?: (stats: ChannelStats[], elapsedMs: number) => void;
  progressMs?: number;
}

export async function runPublisher(init: PublisherInit): Promise<ChannelStats[]> {
  if (!(init.rate > 0)) throw new RangeError('rate must be positive');
  if (init.entries.length === 0) throw new RangeError('nothing to publish');
  await init.transport.open();
  const stats: ChannelStats[] = init.entries.map((e) => ({ channel: e.channel.name, packets: 0, bytes: 0, rounds: 0 }));
  const bytesPerMs = init.rate / 8 / 1000;
  // Up to 20 ms of sending per burst; enough to ride out timer jitter.
  const maxBudget = Math.max(bytesPerMs * 20, 2 * 1500);
  const start = performance.now();
  const progressMs = init.progressMs ?? 250;
  let lastTick = start;
  let lastProgress = start;
  let budget = 0;
  let turn = 0;
  const finished = (i: number): boolean => init.rounds !== undefined && init.entries[i]!.carousel.round >= init.rounds;

  while (!init.signal?.aborted) {
    const now = performance.now();
    if (init.durationMs !== undefined && now - start >= init.durationMs) break;
    budget = Math.min(maxBudget, budget + (now - lastTick) * bytesPerMs);
    lastTick = now;
    let active = 0;
    while (budget > 0) {
      active = 0;
      for (let tries = 0; tries < init.entries.length && budget > 0; tries++) {
        const i = turn++ % init.entries.length;
        if (finished(i)) continue;
        active++;
        const { channel, carousel } = init.entries[i]!;
        const datagram = carousel.next();
        init.transport.send(channel, datagram);
        const s = stats[i]!;
        s.packets++;
        s.bytes += datagram.length;
        s.rounds = carousel.round;
        budget -= datagram.length + IPV6_UDP_HEADERS;
      }
      if (active === 0) break;
    }
    if (init.onProgress && now - lastProgress >= progressMs) {
      lastProgress = now;
      init.onProgress(stats, now - start);
    }
    if (init.entries.every((_, i) => finished(i))) break;
    await sleep(1);
  }
  init.onProgress?.(stats, performance.now() - start);
  return stats;
}
