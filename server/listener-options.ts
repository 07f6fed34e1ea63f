/**
 * `fwcast publish --listeners SOURCE [--linger D] [--always-on MODEL…]`: send
 * each channel only while it has listeners (carousel/listener-gate.ts).
 *
 * Off by default: `fwcast publish` sends what it is told to, now, as it always
 * has. A user who runs it expects traffic, and on a switch without a snooping
 * querier the listener sources see nobody, so a default gate would send
 * nothing at all without an error.
 */
import { Option, type Command } from 'commander';
import { UsageError } from '../cli/fail.js';
import { parseDuration } from '../cli/units.js';
import { DEFAULT_LINGER_MS, ListenerFollower, ListenerGate, type Holdable } from '../carousel/listener-gate.js';
import { modelChannelName } from '../protocol/channel.js';
import type { Logger } from '../protocol/log.js';
import { LISTENER_SOURCES, openListenerSource, type ListenerSourceKind } from '../transport/listeners.js';
import type { Channel } from '../transport/transport.js';

export interface ListenerFlags {
  listeners?: ListenerSourceKind;
  linger: number;
  alwaysOn?: string[];
}

function lingerFlag(value: string): number {
  try {
    return parseDuration(value);
  } catch (err) {
    throw new UsageError(`--linger: ${(err as Error).message}`);
  }
}

export function addListenerOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--listeners <source>', 'send each channel only while it has listeners, seen in: mdb (the multicast database of the bridge --iface, with MLD snooping and a querier), local (joins on this host, /proc/net/igmp6)')
      .choices([...LISTENER_SOURCES]))
    .option('--linger <duration>', 'with --listeners: go on sending this long after the last listener left', lingerFlag, DEFAULT_LINGER_MS)
    .option('--always-on <model...>', 'with --listeners: send these models\' channels whether or not anyone listens');
}

/**
 * Checks the flags and opens the listener source, before any release is
 * encoded (a mistyped flag fails at once): usage errors for flags that make no
 * sense. Undefined without --listeners.
 */
export function openListeners(publishOpts: object): ReturnType<typeof openListenerSource> | undefined {
  const opts = publishOpts as ListenerFlags & { iface?: string; mqtt?: string };
  if (!opts.listeners) {
    if (opts.alwaysOn) throw new UsageError('--always-on needs --listeners (without it every channel is always on)');
    return undefined;
  }
  // Agents on a broker send no MLD: a gate would starve them.
  if (opts.mqtt) throw new UsageError('--listeners follows multicast listeners; it cannot be combined with --mqtt (run a second publish for the broker)');
  if (!opts.iface) throw new UsageError('--listeners needs --iface');
  try {
    return openListenerSource(opts.listeners, opts.iface);
  } catch (err) {
    throw new UsageError(`--listeners ${opts.listeners}: ${(err as Error).message}`);
  }
}

/**
 * Starts following listeners for `publisher` (before the publisher runs, so a
 * channel nobody listens to never sends its first datagram); undefined
 * without --listeners.
 */
export function followListeners(opened: ReturnType<typeof openListenerSource> | undefined, publishOpts: object, publisher: Holdable, channels: readonly Channel[], log: Logger): ListenerFollower | undefined {
  if (!opened) return undefined;
  const opts = publishOpts as ListenerFlags;
  const models = new Set(channels.map((c) => c.name));
  const alwaysOn = (opts.alwaysOn ?? []).map((m) => modelChannelName(m));
  for (const name of alwaysOn) if (!models.has(name)) throw new UsageError(`--always-on: no release published on ${name}`);
  const llog = log.child('listeners');
  for (const w of opened.warnings) llog.event('listeners.warning', { source: opened.source.description, detail: w }, w);
  const follower = new ListenerFollower({
    publisher, source: opened.source, gate: new ListenerGate({ lingerMs: opts.linger, alwaysOn }), channels: () => channels, log: llog,
  });
  llog.event('listeners.following', { source: opened.source.description, lingerMs: opts.linger, alwaysOn: alwaysOn.join(' ') },
    `sending each channel only while ${opened.source.description} shows listeners (linger ${opts.linger / 1000} s${alwaysOn.length ? `; always on: ${alwaysOn.join(', ')}` : ''})`);
  follower.start();
  return follower;
}
