/**
 * The pacing of several carousels, one per channel, within one rate budget:
 * a state machine with no clock and no I/O. The caller passes the time `now`
 * (milliseconds from any fixed origin) and the function that sends; `due`
 * hands it every datagram due by then and says when the next one is due.
 *
 * The budget is a token bucket that counts whole IPv6 packets (payload + 48
 * bytes of IPv6 and UDP headers), so the rate is what the link carries. A
 * datagram goes out whenever the budget is not in debt, and may overdraw it
 * by its own size: by any time, the bytes sent are the credit rounded up to a
 * whole datagram. Unspent credit is kept up to one burst: 20 ms of sending
 * (at least two 1500-byte packets), enough to ride out timer jitter, too
 * little to flood receivers when the caller was held up.
 *
 * Channels take turns: the one that has sent the fewest wire bytes goes
 * next, so each gets an equal share of the rate, within one datagram, even
 * where their mixes of full symbol and small AUTH and manifest datagrams
 * differ (plain round robin shares datagrams, not bytes). A channel that
 * comes (or is replaced) starts level with the one furthest behind, neither
 * owed the past nor owing it. Channels can be added, replaced and removed at
 * any time (the long-running server swaps in new releases this way), and held
 * (paused, keeping their carousel and counters: nobody listens) and resumed.
 *
 * A source may cap its own rate (`maxRate`): a channel that only repeats a
 * few small datagrams (halts, halt-carousel.ts) needs a few a second, not an
 * equal share; what it leaves goes to the other channels.
 */
import type { Channel } from '../transport/transport.js';
import { hex } from '../protocol/hex.js';
/** What the pacer sends from: a release's Carousel, or a HaltCarousel (halt-carousel.ts). */
export interface DatagramSource {
  readonly releaseId: Uint8Array;
  /** Completed rounds. */
  readonly round: number;
  readonly largestDatagram: number;
  /** At most this many bits per second on the wire for this channel (default: its equal share). */
  readonly maxRate?: number;
  next(): Uint8Array;
}

export const IPV6_UDP_HEADERS = 48;
/** Unspent credit is kept for this long at most... */
export const BURST_MS = 20;
/** ...but never less than this many bytes, so a burst is at least two full-size packets. */
export const MIN_BURST_BYTES = 2 * 1500;

export interface PublisherEntry {
  channel: Channel;
  carousel: DatagramSource;
}

export interface ChannelStats {
  channel: string;
  releaseId: string;
  packets: number;
  bytes: number;
  rounds: number;
}

/** A channel's counters as the log events name them (`carousel.stopped`, `publish.round`). */
export function channelCounts(s: ChannelStats): { channel: string; release: string; rounds: number; datagrams: number; bytes: number } {
  return { channel: s.channel, release: s.releaseId, rounds: s.rounds, datagrams: s.packets, bytes: s.bytes };
}

export interface PacerInit {
  /** Bits per second on the wire, all channels together. */
  rate: number;
  /** Stop each channel after this many complete rounds (it is then removed). */
  rounds?: number;
}

/** Where the pacer hands the datagrams that are due. */
export type Send = (channel: Channel, datagram: Uint8Array) => void;

interface Slot extends PublisherEntry {
  stats: ChannelStats;
  /** Wire bytes sent, on a scale shared by all channels: the turn goes to the lowest. */
  level: number;
  /** With a `maxRate`: its bytes per ms, and when it may send next. */
  cap?: { bytesPerMs: number; readyAt: number };
}

export class Pacer {
  readonly rate: number;
  readonly rounds: number | undefined;
  /** Most credit kept unspent, in wire bytes. */
  readonly burstBytes: number;
  #bytesPerMs: number;
  /** Credit in wire bytes; negative while a datagram's overdraft is being paid off. */
  #budget = 0;
  /** When the credit was last brought up to date; unset until the first `due`. */
  #last: number | undefined;
  #slots = new Map<string, Slot>();
  /** Channel names held: kept, but not sent (a name may be held before its channel comes). */
  #held = new Set<string>();
  /** The live slots that are not held (ties go to the earlier), rebuilt when a channel comes, goes, or is held or resumed. */
  #order: Slot[] = [];
  #finished: ChannelStats[] = [];

  constructor(init: PacerInit) {
    if (!(init.rate > 0) || !Number.isFinite(init.rate)) throw new RangeError('rate must be a positive number of bits per second');
    if (init.rounds !== undefined && !(Number.isInteger(init.rounds) && init.rounds > 0)) throw new RangeError('rounds must be a positive integer');
    this.rate = init.rate;
    this.rounds = init.rounds;
    this.#bytesPerMs = init.rate / 8 / 1000;
    this.burstBytes = Math.max(this.#bytesPerMs * BURST_MS, MIN_BURST_BYTES);
  }

  /** Starts (or replaces) the carousel on a channel, keyed by channel name. */
  set(entry: PublisherEntry): void {
    const name = entry.channel.name;
    const level = this.#furthestBehind(name);
    const stats = { channel: name, releaseId: hex(entry.carousel.releaseId), packets: 0, bytes: 0, rounds: 0 };
    const { maxRate } = entry.carousel;
    if (maxRate !== undefined && !(maxRate > 0 && Number.isFinite(maxRate))) throw new RangeError(`maxRate must be a positive number of bits per second, got ${maxRate}`);
    const cap = maxRate === undefined ? undefined : { bytesPerMs: maxRate / 8 / 1000, readyAt: -Infinity };
    this.#slots.set(name, { channel: entry.channel, carousel: entry.carousel, stats, level: level === Infinity ? 0 : level, ...(cap ? { cap } : {}) });
    this.#rebuild();
  }

  /**
   * Holds (pauses) or resumes a channel. A resumed channel starts level with
   * the one furthest behind, like a channel that comes: it is not owed the
   * time it was held.
   */
  hold(channelName: string, held: boolean): void {
    if (held === this.#held.has(channelName)) return;
    if (held) {
      this.#held.add(channelName);
    } else {
      this.#held.delete(channelName);
      const slot = this.#slots.get(channelName);
      const level = this.#furthestBehind(channelName);
      if (slot && level !== Infinity) slot.level = level;
    }
    this.#rebuild();
  }

  held(channelName: string): boolean {
    return this.#held.has(channelName);
  }

  /**
   * The lowest level of the sending channels other than `except`, Infinity if
   * none. Capped channels lag by design and do not count while others send.
   */
  #furthestBehind(except: string): number {
    const others = this.#order.filter((s) => s.channel.name !== except);
    const uncapped = others.filter((s) => !s.cap);
    return Math.min(...(uncapped.length > 0 ? uncapped : others).map((s) => s.level));
  }

  #rebuild(): void {
    this.#order = [...this.#slots.values()].filter((s) => !this.#held.has(s.channel.name));
  }

  remove(channelName: string): void {
    const slot = this.#slots.get(channelName);
    if (!slot) return;
    this.#slots.delete(channelName);
    this.#rebuild();
    this.#finished.push(slot.stats);
  }

  /** Live channels' stats, then those of channels that finished or were removed. */
  stats(): ChannelStats[] {
    return [...[...this.#slots.values()].map((s) => s.stats), ...this.#finished];
  }

  /** No channel left (held channels are still there: they resume when listened to). */
  get idle(): boolean {
    return this.#slots.size === 0;
  }

  /**
   * Hands `send` every datagram due at `now`, channel by channel in turn.
   * Returns when the next one is due (`Infinity` when no channel is left or
   * all are held): nothing is due before then, unless a channel is added or resumed.
   */
  due(now: number, send: Send): number {
    const last = this.#last ?? now;
    if (!(now >= last)) throw new RangeError(`time went backwards: ${now} after ${last}`);
    this.#budget = Math.min(this.burstBytes, this.#budget + (now - last) * this.#bytesPerMs);
    this.#last = now;
    for (let slot; this.#budget >= 0 && (slot = this.#turn(now)); ) this.#budget -= this.#sendOne(slot, send, now);
    if (this.#order.length === 0) return Infinity;
    // The budget's time, or later if every channel is capped and waiting.
    let ready = Infinity;
    for (const s of this.#order) ready = Math.min(ready, s.cap ? s.cap.readyAt : -Infinity);
    return Math.max(now - this.#budget / this.#bytesPerMs, ready);
  }

  /** The channel whose turn it is at `now`: the lowest level among those not waiting on their own cap. */
  #turn(now: number): Slot | undefined {
    let turn: Slot | undefined;
    for (const slot of this.#order) {
      if (slot.cap && slot.cap.readyAt > now) continue;
      if (!turn || slot.level < turn.level) turn = slot;
    }
    return turn;
  }

  /** Sends the next datagram of `slot`; returns its cost in wire bytes. */
  #sendOne(slot: Slot, send: Send, now: number): number {
    const datagram = slot.carousel.next();
    send(slot.channel, datagram);
    const cost = datagram.length + IPV6_UDP_HEADERS;
    slot.level += cost;
    if (slot.cap) slot.cap.readyAt = Math.max(slot.cap.readyAt, now) + cost / slot.cap.bytesPerMs;
    slot.stats.packets++;
    slot.stats.bytes += datagram.length;
    slot.stats.rounds = slot.carousel.round;
    if (this.rounds !== undefined && slot.carousel.round >= this.rounds) this.remove(slot.channel.name);
    return cost;
  }
}
