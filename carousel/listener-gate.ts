/**
 * Send only while someone listens: each channel is carouselled while its group
 * has listeners, and for a linger after the last one left (a device that
 * reboots or rejoins between runs finds the carousel still going); channels
 * named always-on are sent regardless.
 *
 * ListenerGate is the decision, with no clock and no I/O: the caller passes
 * the time and each reading of the groups that have listeners. ListenerFollower
 * is the loop that reads a ListenerSource about once a second and holds or
 * resumes the publisher's channels.
 *
 * When the source cannot be read, every channel is sent (fail open): an
 * update that reaches no one for want of a reading is worse than traffic on
 * a link nobody asked for, and it is what fwcast did before this existed.
 */
import type { Channel } from '../transport/transport.js';
import { canonicalGroup, type ListenerSource } from '../transport/listeners.js';
import { errorFields, type Logger } from '../protocol/log.js';

export const DEFAULT_LINGER_MS = 30_000;
export const DEFAULT_POLL_MS = 1000;

export interface ListenerState {
  channel: string;
  group: string;
  alwaysOn: boolean;
  /** The latest reading showed a listener of the group. */
  listeners: boolean;
  /** The channel is being carouselled now. */
  sending: boolean;
  /** When a listener was last seen (ms, caller's clock), if ever. */
  lastHeard: number | undefined;
}

export interface GateInit {
  lingerMs: number;
  /** Channel names sent whether or not anyone listens. */
  alwaysOn?: Iterable<string>;
}

export interface GateChange { channel: Channel; sending: boolean; listeners: boolean }

interface Tracked { channel: Channel; group: string; listeners: boolean; sending: boolean; lastHeard: number | undefined }

export class ListenerGate {
  readonly lingerMs: number;
  readonly #alwaysOn: Set<string>;
  #channels = new Map<string, Tracked>();
  /** The source could not be read: everything is sent until it can. */
  #blind = false;

  constructor(init: GateInit) {
    if (!(init.lingerMs >= 0) || !Number.isFinite(init.lingerMs)) throw new RangeError('linger must be a non-negative number of milliseconds');
    this.lingerMs = init.lingerMs;
    this.#alwaysOn = new Set(init.alwaysOn ?? []);
  }

  /** Whether `channel` is to be sent now; a channel never observed is not, unless always-on. */
  sending(channelName: string): boolean {
    return this.#alwaysOn.has(channelName) || this.#blind || (this.#channels.get(channelName)?.sending ?? false);
  }

  /**
   * Takes one reading: `groups` have listeners at `now` (undefined: the
   * source could not be read). Returns the channels whose sending changed.
   */
  observe(now: number, channels: readonly Channel[], groups: ReadonlySet<string> | undefined): GateChange[] {
    const changes: GateChange[] = [];
    const seen = new Set<string>();
    const wasBlind = this.#blind;
    this.#blind = groups === undefined;
    for (const channel of channels) {
      seen.add(channel.name);
      const group = canonicalGroup(channel.group);
      let t = this.#channels.get(channel.name);
      const before = this.#alwaysOn.has(channel.name) || wasBlind || (t?.sending ?? false);
      if (!t || t.group !== group) {
        t = { channel, group, listeners: false, sending: false, lastHeard: undefined };
        this.#channels.set(channel.name, t);
      }
      t.channel = channel;
      if (groups) {
        t.listeners = groups.has(group);
        if (t.listeners) t.lastHeard = now;
        t.sending = t.listeners || (t.lastHeard !== undefined && now - t.lastHeard < this.lingerMs);
      }
      const after = this.sending(channel.name);
      if (after !== before) changes.push({ channel, sending: after, listeners: t.listeners });
    }
    for (const name of [...this.#channels.keys()]) if (!seen.has(name)) this.#channels.delete(name);
    return changes;
  }

  states(): ListenerState[] {
    return [...this.#channels.values()].map((t) => ({
      channel: t.channel.name, group: t.group, alwaysOn: this.#alwaysOn.has(t.channel.name), listeners: t.listeners, sending: this.sending(t.channel.name), lastHeard: t.lastHeard,
    }));
  }
}

/** What the follower needs of a publisher (carousel/publisher.ts). */
export interface Holdable {
  /** Pauses (true) or resumes (false) a channel; a held channel keeps its carousel and place. */
  hold(channelName: string, held: boolean): void;
}

export interface FollowerInit {
  publisher: Holdable;
  source: ListenerSource;
  gate: ListenerGate;
  /** The channels to gate, read at every poll (they may change while running). */
  channels: () => readonly Channel[];
  log: Logger;
  pollMs?: number;
  now?: () => number;
}

export class ListenerFollower {
  readonly gate: ListenerGate;
  #init: FollowerInit;
  #timer: NodeJS.Timeout | undefined;
  #polling: Promise<void> | undefined;
  #stopped = false;
  #sourceFailing = false;

  constructor(init: FollowerInit) {
    this.#init = init;
    this.gate = init.gate;
  }

  /** Holds every channel that is not always-on, then reads the source at once and every pollMs. */
  start(): void {
    for (const c of this.#init.channels()) this.#init.publisher.hold(c.name, !this.gate.sending(c.name));
    const tick = (): void => {
      this.#polling = this.poll().finally(() => {
        if (!this.#stopped) this.#timer = setTimeout(tick, this.#init.pollMs ?? DEFAULT_POLL_MS);
      });
    };
    tick();
  }

  /** One reading of the source, applied to the publisher. */
  async poll(): Promise<void> {
    const { source, log } = this.#init;
    let groups: Set<string> | undefined;
    try {
      groups = await source.groups();
      if (this.#sourceFailing) log.event('listeners.source-recovered', { source: source.description }, `listeners: reading ${source.description} again`);
      this.#sourceFailing = false;
    } catch (err) {
      if (!this.#sourceFailing) {
        log.event('listeners.source-failed', { source: source.description, ...errorFields(err) },
          `listeners: cannot read ${source.description} (${(err as Error).message.split('\n')[0]}); sending every channel until it can be read`);
      }
      this.#sourceFailing = true;
    }
    if (this.#stopped) return;
    const now = (this.#init.now ?? Date.now)();
    for (const change of this.gate.observe(now, this.#init.channels(), groups)) {
      const { channel } = change;
      this.#init.publisher.hold(channel.name, !change.sending);
      if (change.sending) {
        log.event('listeners.sending', { channel: channel.name, group: channel.group, listeners: change.listeners },
          `${channel.name}: ${change.listeners ? 'listeners joined' : 'listeners unknown'}; sending`);
      } else {
        log.event('listeners.idle', { channel: channel.name, group: channel.group, lingerMs: this.gate.lingerMs },
          `${channel.name}: no listener for ${this.gate.lingerMs / 1000} s; not sending`);
      }
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#polling;
  }
}
