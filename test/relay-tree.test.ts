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
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Carousel } from '../carousel/carousel.js';
import { readReleaseFile } from '../server/release.js';
import { LinkLab } from './helpers/links.js';
import { makeImage, sha256hex } from './helpers/fixtures.js';
import { events, exitCode, FWCAST, FWCAST_AGENT, fwcast, signedRelease, track, waitForEvent, type Tracked } from './helpers/processes.js';

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

test('cutting link B\'s relay cuts link C off: a new release reaches neither link until that relay is back, then every agent below installs it', async (t) => {
  const lab = LinkLab.create({ A: {}, B: {}, C: {} }, { pub: ['A'], relay1: ['A', 'B'], b1: ['B'], relay2: ['B', 'C'], c1: ['C'] });
  t.teardown(() => lab.destroy());
  const { dir, release, pub } = signedRelease('fwcast-relay-cut-', 300_000, { seed: 52, version: '4.0.0', seq: 4 });
  const image2 = makeImage(300_000, 53);
  writeFileSync(join(dir, 'image2.bin'), image2);
  const release2 = join(dir, 'release2.fwc');
  fwcast('sign', join(dir, 'image2.bin'), '--key', join(dir, 'publisher.key'), '--model', 'rpi4', '--version', '5.0.0', '--seq', '5', '--out', release2);
  const spawnAgent = (host: string, extra: string[]): Tracked => track(lab.spawn(host, process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--key', pub, '--iface', 'eth0',
    '--store', join(dir, `store-${host}`), '--json', '--log-format', 'json', ...extra]));
  const relay = (host: string, rate: number): Tracked => spawnAgent(host, ['--relay-iface', 'eth1', '--relay-rate', String(rate)]);
  const publish = (file: string): Tracked => track(lab.spawn('pub', process.execPath, [FWCAST, 'publish', file, '--iface', 'eth0', '--rate', String(BUDGET.A), '--duration', '180s', '--no-cache', '--log-format', 'json']));
  const all: Tracked[] = [];
  t.teardown(() => {
    for (const p of all) p.child.kill('SIGKILL');
  });

  let relay1 = relay('relay1', BUDGET.B);
  const relay2 = relay('relay2', BUDGET.C);
  const [b1, c1] = ['b1', 'c1'].map((h) => spawnAgent(h, []));
  all.push(relay1, relay2, b1!, c1!);
  let publisher = publish(release);
  all.push(publisher);
  for (const a of [b1!, c1!]) await waitForEvent(a, 'release.installed', { version: '4.0.0' }, 90_000);

  // Cut link B's relay and put the next release on link A.
  relay1.child.kill('SIGKILL');
  await exitCode(relay1, 10_000);
  publisher.child.kill('SIGKILL');
  publisher = publish(release2);
  all.push(publisher);
  await waitForEvent(publisher, 'publish.round', {}, 30_000);
  const beforeB = lab.linkCount('B').packets;
  const beforeA = lab.linkCount('A').packets;
  await new Promise((r) => setTimeout(r, 6000));
  t.true(lab.linkCount('A').packets - beforeA > 1000, 'link A carries release 5.0.0');
  t.is(lab.linkCount('B').packets, beforeB, 'with its relay cut, link B carries nothing');
  for (const p of [b1!, relay2, c1!]) t.deepEqual(events(p.stderr, 'release.accepted', { version: '5.0.0' }), [], 'nobody below the cut hears of release 5.0.0');

  // The relay comes back with its kept store: release 5.0.0 flows down both links.
  relay1 = relay('relay1', BUDGET.B);
  all.push(relay1);
  await waitForEvent(relay1, 'relay.serving', { version: '5.0.0' }, 60_000);
  await waitForEvent(relay2, 'relay.serving', { version: '5.0.0' }, 60_000);
  for (const a of [b1!, c1!]) {
    const installed = await waitForEvent(a, 'release.installed', { version: '5.0.0' }, 90_000);
    t.is(sha256hex(readFileSync(String(installed.path))), sha256hex(image2), 'installed the exact new image');
  }
});
