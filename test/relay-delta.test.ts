/**
 * Relays carry deltas: a relay agent keeps the deltas of the release it
 * relays (received on their sub-channels upstream, checked against their
 * signed digests) and carousels each on its sub-channel downstream next to
 * the full release, so an agent behind the relay that holds the base takes
 * the delta, not the full image after the 60 s wait. Real IPv6 multicast over
 * two links; nftables counts what link B carries.
 *
 *   [pub] ── A ── [relay] ── B ── [b1] [b2]
 */
import test, { type ExecutionContext } from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readReleaseFile } from '../server/release.js';
import { holding, twoReleases } from './helpers/deltas.js';
import { LinkLab } from './helpers/links.js';
import { NetLab } from '../scripts/lab/netlab.js';
import { Broker, requireMosquitto } from './helpers/broker.js';
import { sha256hex } from './helpers/fixtures.js';
import { events, exitCode, FWCAST, FWCAST_AGENT, fwcast, track, waitForEvent, type Tracked } from './helpers/processes.js';

interface Inspected {
  imageSize: number;
  deltas: Array<{ channel: string; size: number }>;
}

function channelBytes(a: Tracked, channel: string): number {
  return events(a.stderr, 'agent.channel-stats', { channel }).reduce((n, l) => n + (l.bytes as number), 0);
}

/**
 * Two releases (seq 2 with a delta from seq 1) with `holders`' stores holding
 * seq 1, and CLIs to run in `lab` (each killed at the end of the test).
 */
function deltaReleases(t: ExecutionContext, lab: { spawn: NetLab['spawn'] }, holders: string[], seed: number) {
  const r = twoReleases(64 * 1024, seed);
  let baseId = '';
  for (const h of holders) baseId = holding(join(r.dir, `store-${h}`), r.base);
  const inspected = JSON.parse(fwcast('inspect', r.release, '--key', r.pub, '--json')) as Inspected;
  const all: Tracked[] = [];
  t.teardown(() => {
    for (const p of all) p.child.kill('SIGKILL');
  });
  const spawn = (host: string, args: string[]): Tracked => {
    const p = track(lab.spawn(host, process.execPath, args));
    all.push(p);
    return p;
  };
  return {
    ...r, baseId, inspected, deltaChannel: `fw/rpi4/delta/${baseId}`, spawn,
    /** fwcast-agent for model rpi4 with its own store, trusting the publisher, logging JSON; `extra` says how it listens. */
    agent: (host: string, extra: string[]) => spawn(host, [FWCAST_AGENT, '--model', 'rpi4', '--key', r.pub, '--store', join(r.dir, `store-${host}`), '--json', '--log-format', 'json', ...extra]),
    publish: () => spawn('pub', [FWCAST, 'publish', r.release, '--iface', 'eth0', '--rate', '8mbit', '--duration', '150s', '--log-format', 'json']),
  };
}

/** The two-link lab; the relay and agents below hold seq 1. */
function setup(t: ExecutionContext, seed: number) {
  const lab = LinkLab.create({ A: {}, B: {} }, { pub: ['A'], relay: ['A', 'B'], b1: ['B'], b2: ['B'] });
  t.teardown(() => lab.destroy());
  const s = deltaReleases(t, lab, ['relay', 'b1', 'b2'], seed);
  return {
    ...s, lab,
    relay: () => s.agent('relay', ['--iface', 'eth0', '--log-level', 'debug', '--relay-iface', 'eth1', '--relay-rate', '6mbit']),
    agent: (host: string) => s.agent(host, ['--iface', 'eth0', '--log-level', 'debug', '--once', '--timeout', '100']),
  };
}

/** The agent installed seq 2 by its delta, heard on the delta sub-channel from the relay, and never took the full image. */
function installedByDelta(t: ExecutionContext, a: Tracked, s: Pick<ReturnType<typeof deltaReleases>, 'next' | 'baseId' | 'deltaChannel' | 'inspected'>): void {
  const result = JSON.parse(a.stdout.trim()) as { seq: number; sha256: string; path: string };
  t.is(result.seq, 2);
  t.is(sha256hex(readFileSync(result.path)), sha256hex(s.next), 'installed the exact new image');
  t.is(events(a.stderr, 'delta.applied', { seq: 2, baseRelease: s.baseId }).length, 1, 'rebuilt from the delta');
  t.deepEqual(events(a.stderr, 'delta.failed'), [], 'never gave up waiting for the delta (the 60 s fallback)');
  t.deepEqual(events(a.stderr, 'release.received', { seq: 2 }), [], 'never received the full image');
  const sub = channelBytes(a, s.deltaChannel);
  t.true(sub > s.inspected.deltas[0]!.size, `heard the delta on ${s.deltaChannel}: ${sub} bytes`);
}

test('an agent behind a relay, holding the base, installs the new release by the delta the relay keeps and carousels on link B', async (t) => {
  const s = setup(t, 31);
  t.is(s.inspected.deltas[0]!.channel, s.deltaChannel);
  const b1 = s.agent('b1');
  const relay = s.relay();
  await waitForEvent(b1, 'delta.joined', { channel: s.deltaChannel }, 30_000);
  await waitForEvent(relay, 'agent.listening', { channel: 'fw/rpi4' }, 30_000);
  const started = performance.now();
  const publisher = s.publish();

  // The relay takes release 2 itself (by the delta: it holds the base), relays it, and receives and keeps its delta upstream.
  await waitForEvent(relay, 'relay.serving', { seq: 2 }, 60_000);
  const kept = await waitForEvent(relay, 'relay.delta-kept', { baseRelease: s.baseId, channel: s.deltaChannel }, 60_000);
  t.is(kept.size, s.inspected.deltas[0]!.size);
  t.is(sha256hex(readFileSync(kept.path as string)), sha256hex(readReleaseFile(s.release).deltaObjects![0]!), 'the kept delta is the one signed');
  await waitForEvent(relay, 'relay.delta-serving', { seq: 2, baseRelease: s.baseId, channel: s.deltaChannel }, 10_000);

  t.is(await exitCode(b1, 100_000), 0, b1.stderr.slice(-3000));
  const seconds = (performance.now() - started) / 1000;
  t.log(`b1 installed ${seconds.toFixed(1)} s after the publisher started`);
  t.true(seconds < 50, `b1 installed ${seconds.toFixed(1)} s after the publisher started: well before a 60 s wait for a silent sub-channel`);
  installedByDelta(t, b1, s);

  // The relay's carousels of release 2 at exit: the full release and its delta, each on its channel. Link B carried them
  // (and, before, the relay's carousel of release 1, whose counts the replacing carousel does not carry on).
  publisher.child.kill('SIGTERM');
  relay.child.kill('SIGTERM');
  t.is(await exitCode(relay, 30_000), 0, relay.stderr.slice(-3000));
  const stopped = events(relay.stderr, 'carousel.stopped');
  t.deepEqual(stopped.map((l) => l.channel).sort(), ['fw/rpi4', s.deltaChannel].sort());
  t.true(stopped.every((l) => (l.datagrams as number) > 0));
  const sent = stopped.reduce((n, l) => n + (l.datagrams as number), 0);
  t.true(s.lab.linkCount('B').packets >= sent, `link B carried the ${sent} datagrams of both carousels`);
});

test('a relay restarted (kill -9) after keeping a delta serves it from its store: with the publisher gone, an agent behind it installs by the delta', async (t) => {
  const s = setup(t, 33);
  let relay = s.relay();
  await waitForEvent(relay, 'agent.listening', { channel: 'fw/rpi4' }, 30_000);
  const publisher = s.publish();
  const kept = await waitForEvent(relay, 'relay.delta-kept', { baseRelease: s.baseId }, 90_000);
  relay.child.kill('SIGKILL');
  await relay.exited;
  publisher.child.kill('SIGKILL');
  await publisher.exited;
  t.true(existsSync(kept.path as string), 'the delta is kept in the store');

  // Nothing upstream now: whatever reaches link B comes from the relay's store.
  relay = s.relay();
  await waitForEvent(relay, 'relay.delta-serving', { seq: 2, baseRelease: s.baseId, channel: s.deltaChannel }, 30_000);
  const b2 = s.agent('b2');
  t.is(await exitCode(b2, 100_000), 0, b2.stderr.slice(-3000));
  installedByDelta(t, b2, s);
  t.deepEqual(events(relay.stderr, 'relay.delta-joined'), [], 'the restarted relay received nothing: it served what it kept');
  t.deepEqual(events(relay.stderr, 'relay.delta-failed'), []);
});

test('a relay tree carries the delta down two relays: the second relay keeps it from the first relay\'s sub-channel, and an agent on link C installs by it', async (t) => {
  const lab = LinkLab.create({ A: {}, B: {}, C: {} }, { pub: ['A'], relay1: ['A', 'B'], relay2: ['B', 'C'], c1: ['C'] });
  t.teardown(() => lab.destroy());
  const s = deltaReleases(t, lab, ['relay1', 'relay2', 'c1'], 35);
  const relays = [s.agent('relay1', ['--iface', 'eth0', '--relay-iface', 'eth1', '--relay-rate', '6mbit']), s.agent('relay2', ['--iface', 'eth0', '--relay-iface', 'eth1', '--relay-rate', '4mbit'])];
  const c1 = s.agent('c1', ['--iface', 'eth0', '--once', '--timeout', '100']);
  for (const p of [...relays, c1]) await waitForEvent(p, 'agent.listening', { channel: 'fw/rpi4' }, 30_000);
  s.publish();

  for (const relay of relays) {
    const kept = await waitForEvent(relay, 'relay.delta-kept', { baseRelease: s.baseId, channel: s.deltaChannel }, 90_000);
    t.is(sha256hex(readFileSync(kept.path as string)), sha256hex(readReleaseFile(s.release).deltaObjects![0]!), 'each relay keeps the signed delta');
    await waitForEvent(relay, 'relay.delta-serving', { seq: 2, baseRelease: s.baseId, channel: s.deltaChannel }, 10_000);
  }
  t.is(await exitCode(c1, 100_000), 0, c1.stderr.slice(-3000));
  installedByDelta(t, c1, s);
  // Link C is reached only through relay2, which heard the delta only through relay1.
  t.true(lab.linkCount('C').packets > 0 && lab.linkCount('B').packets > 0);
});

test('a relay onto an MQTT broker (--relay-mqtt) carries the delta too: an MQTT-only agent holding the base installs by it', async (t) => {
  requireMosquitto();
  const lab = NetLab.create(['pub', 'relay', 'd']);
  t.teardown(() => lab.destroy());
  const s = deltaReleases(t, lab, ['relay', 'd'], 37);
  // The site broker runs on the relay host; the agent on "d" reaches it over the bridge.
  const port = 18850;
  const broker = await Broker.start({ port, address: '::', spawn: (cmd, args) => lab.spawn('relay', cmd, args) });
  t.teardown(() => broker.stop());
  const d = s.agent('d', ['--mqtt', `mqtt://[fd00:fc::2]:${port}`, '--once', '--timeout', '100']);
  const relay = s.agent('relay', ['--iface', 'eth0', '--relay-mqtt', `mqtt://[::1]:${port}`, '--relay-rate', '8mbit']);
  for (const p of [d, relay]) await waitForEvent(p, 'agent.listening', { channel: 'fw/rpi4' }, 60_000);
  s.publish();

  await waitForEvent(relay, 'relay.delta-serving', { seq: 2, baseRelease: s.baseId, channel: s.deltaChannel }, 90_000);
  t.is(await exitCode(d, 100_000), 0, d.stderr.slice(-3000));
  installedByDelta(t, d, s);
});
