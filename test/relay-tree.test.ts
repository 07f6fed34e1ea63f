/**
 * A relay tree across three links, where no multicast router joins them (this
 * kernel has no IPv6 multicast routing): each relay agent installs a release
 * from the link above and carousels it on the link below at that link's own
 * rate budget. nftables counts every fwcast datagram entering each link.
 *
 *   [pub] ── A (8 Mbit/s) ── [relay1] ── B (6 Mbit/s) ── [relay2] ── C (4 Mbit/s)
 *                                          [b1] [b2]                    [c1] [c2]
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Carousel } from '../carousel/carousel.js';
import { readReleaseFile } from '../server/release.js';
import { LinkLab } from './helpers/links.js';
import { sha256hex } from './helpers/fixtures.js';
import { events, exitCode, FWCAST, FWCAST_AGENT, signedRelease, track, waitForEvent, type Tracked } from './helpers/processes.js';

const BUDGET = { A: 8e6, B: 6e6, C: 4e6 };

/** Datagrams in one steady carousel round of the release (the first round also has early manifest copies). */
function roundDatagrams(file: string): number {
  const carousel = new Carousel(readReleaseFile(file));
  while (carousel.round < 1) carousel.next();
  let n = 0;
  while (carousel.round < 2) {
    carousel.next();
    n++;
  }
  return n;
}

test('relay tree over three links: every agent installs, each link carries the release once per carousel round within its budget, and nothing reaches link C without link B\'s relay', async (t) => {
  const lab = LinkLab.create({ A: {}, B: {}, C: {} }, {
    pub: ['A'], relay1: ['A', 'B'], b1: ['B'], b2: ['B'], relay2: ['B', 'C'], c1: ['C'], c2: ['C'],
  });
  t.teardown(() => lab.destroy());
  const { dir, image, release, pub } = signedRelease('fwcast-relay-tree-', 600_000, { seed: 51, version: '4.0.0', seq: 4 });
  const agent = (host: string): Tracked => track(lab.spawn(host, process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--key', pub, '--iface', 'eth0',
    '--store', join(dir, `store-${host}`), '--once', '--json', '--timeout', '120', '--log-format', 'json']));
  const relay = (host: string, rate: number): Tracked => track(lab.spawn(host, process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--key', pub, '--iface', 'eth0',
    '--store', join(dir, `store-${host}`), '--json', '--relay-iface', 'eth1', '--relay-rate', String(rate), '--log-format', 'json']));

  // Everything but link B's relay.
  const relay2 = relay('relay2', BUDGET.C);
  t.teardown(() => relay2.child.kill('SIGKILL'));
  const agents = ['b1', 'b2', 'c1', 'c2'].map(agent);
  await Promise.all([relay2, ...agents].map((p) => waitForEvent(p, 'agent.listening', { channel: 'fw/rpi4' }, 60_000)));
  const publisher = track(lab.spawn('pub', process.execPath, [FWCAST, 'publish', release, '--iface', 'eth0', '--rate', String(BUDGET.A), '--duration', '180s', '--no-cache', '--log-format', 'json']));
  t.teardown(() => publisher.child.kill('SIGKILL'));
  await waitForEvent(publisher, 'publish.round', {}, 30_000);
  await new Promise((r) => setTimeout(r, 2000));
  t.true(lab.linkCount('A').packets > 1000, 'link A carries the carousel');
  t.deepEqual([lab.linkCount('B').packets, lab.linkCount('C').packets], [0, 0], 'without relay1, links B and C carry nothing');
  for (const p of [relay2, ...agents]) t.deepEqual(events(p.stderr, 'release.accepted'), [], 'nor does anyone below link A hear of the release');

  const relay1 = relay('relay1', BUDGET.B);
  t.teardown(() => relay1.child.kill('SIGKILL'));
  await waitForEvent(relay1, 'relay.serving', { model: 'rpi4', version: '4.0.0', transport: 'udp6 multicast on eth1', rate: BUDGET.B }, 60_000);
  await waitForEvent(relay2, 'relay.serving', { model: 'rpi4', version: '4.0.0', transport: 'udp6 multicast on eth1', rate: BUDGET.C }, 60_000);
  const codes = await Promise.all(agents.map((a) => exitCode(a, 120_000)));
  t.deepEqual(codes, [0, 0, 0, 0], agents.map((a) => a.stderr).join('\n'));
  for (const a of agents) {
    const r = JSON.parse(a.stdout.trim().split('\n').pop()!) as { path: string };
    t.is(sha256hex(readFileSync(r.path)), sha256hex(image), 'installed the exact image, verified against the publisher key');
  }

  // Each link's rate over 5 s of steady carouselling, within its budget. Each
  // counter is read with the time around it (reads are slow on a loaded machine).
  const links = ['A', 'B', 'C'] as const;
  const sample = (l: typeof links[number]) => {
    const before = performance.now();
    const c = lab.linkCount(l);
    return { ...c, at: (before + performance.now()) / 2 };
  };
  const first = links.map(sample);
  await new Promise((r) => setTimeout(r, 5000));
  const window = links.map((l, i) => {
    const last = sample(l);
    return { packets: last.packets - first[i]!.packets, bytes: last.bytes - first[i]!.bytes, seconds: (last.at - first[i]!.at) / 1000 };
  });

  // The senders stop; each link carried exactly what its one sender sent, one round of the release per carousel round.
  const perRound = roundDatagrams(release);
  const senders = [[publisher, 'A'], [relay1, 'B'], [relay2, 'C']] as const;
  for (const [p] of senders) p.child.kill('SIGTERM');
  for (const [i, [p, link]] of senders.entries()) {
    t.is(await exitCode(p, 30_000), 0, p.stderr);
    const stopped = events(p.stderr, 'carousel.stopped', { channel: 'fw/rpi4' })[0]!;
    const datagrams = Number(stopped.datagrams);
    const rounds = Number(stopped.rounds);
    const counted = lab.linkCount(link);
    t.is(counted.packets, datagrams, `link ${link} carried each datagram its sender sent once, whatever the listeners on it`);
    t.true(rounds >= 2, `link ${link}: ${rounds} rounds`);
    t.true(datagrams >= rounds * perRound && datagrams < (rounds + 1) * perRound + 64,
      `link ${link}: ${datagrams} datagrams in ${rounds} rounds of ${perRound}: one copy of the release per carousel round`);
    // The budget counts IPv6 packets (payload + 48 bytes of IPv6 and UDP); the bridge's counter
    // may include the link layer too: take that away, as measured over the whole run.
    const linkLayer = (counted.bytes - Number(stopped.bytes)) / datagrams - 48;
    t.true(linkLayer >= 0 && linkLayer <= 18, `link ${link}: ${linkLayer} bytes a packet beyond IPv6 (an Ethernet header at most)`);
    t.log(`link ${link}: ${linkLayer.toFixed(1)} link-layer bytes a packet`);
    const w = window[i]!;
    const bits = ((w.bytes - linkLayer * w.packets) * 8) / w.seconds;
    t.true(bits <= BUDGET[link] * 1.1 && bits >= BUDGET[link] * 0.6, `link ${link}: ${(bits / 1e6).toFixed(2)} Mbit/s over ${w.seconds.toFixed(2)} s for a budget of ${BUDGET[link] / 1e6} (link layer ${linkLayer.toFixed(1)} bytes a packet)`);
  }
});
