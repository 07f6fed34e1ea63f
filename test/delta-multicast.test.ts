/**
 * Delta updates over real IPv6 multicast in lab namespaces: a release signed
 * with --delta-from goes out on the model's channel (full image) and on its
 * base's delta sub-channel. Agents holding the base take the delta, agents
 * holding nothing take the full image and never hear a delta byte; a kill -9
 * during the delta's transfer resumes it.
 */
import test from 'ava';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NetLab } from '../scripts/lab/netlab.js';
import { holding, twoReleases } from './helpers/deltas.js';
import { prng, sha256hex } from './helpers/fixtures.js';
import { events, exitCode, FWCAST, FWCAST_AGENT, fwcast, track, waitForEvent, type Tracked } from './helpers/processes.js';
import { push, serveConfig, startServe, TOKEN } from './helpers/serve.js';

function agentArgs(store: string, pub: string): string[] {
  return [FWCAST_AGENT, '--model', 'rpi4', '--key', pub, '--iface', 'eth0', '--store', store, '--once', '--json', '--timeout', '90', '--log-format', 'json', '--log-level', 'debug'];
}

interface ChannelStat {
  channel: string;
  bytes: number;
  datagrams: number;
}

function channelStats(a: Tracked): ChannelStat[] {
  return events(a.stderr, 'agent.channel-stats').map((l) => ({ channel: l.channel as string, bytes: l.bytes as number, datagrams: l.datagrams as number }));
}

test('3 agents, two holding the base (one losing 20%), one holding nothing: all install the new image; only the holders hear the delta', async (t) => {
  const lab = NetLab.create(['pub', 'a', 'b', 'c']);
  t.teardown(() => lab.destroy());
  const { dir, next, base, release, pub } = twoReleases(64 * 1024, 3);
  const baseId = holding(join(dir, 'store-a'), base);
  holding(join(dir, 'store-b'), base);
  const deltaChannel = `fw/rpi4/delta/${baseId}`;
  const inspected = JSON.parse(fwcast('inspect', release, '--key', pub, '--json')) as { deltas: Array<{ channel: string; size: number }>; imageSize: number };
  t.is(inspected.deltas.length, 1);
  t.is(inspected.deltas[0]!.channel, deltaChannel);
  t.true(inspected.deltas[0]!.size < inspected.imageSize / 10, `delta of ${inspected.deltas[0]!.size} bytes for a ${inspected.imageSize}-byte image`);

  lab.setLoss('b', 20);
  const agents = ['a', 'b', 'c'].map((h) => track(lab.spawn(h, process.execPath, agentArgs(join(dir, `store-${h}`), pub))));
  await Promise.all(agents.map((a) => waitForEvent(a, 'agent.listening', { channel: 'fw/rpi4' }, 20_000)));
  await Promise.all(agents.slice(0, 2).map((a) => waitForEvent(a, 'delta.joined', { channel: deltaChannel }, 20_000)));
  const publisher = track(lab.spawn('pub', process.execPath, [FWCAST, 'publish', release, '--iface', 'eth0', '--rate', '20mbit', '--duration', '120s', '--log-format', 'json']));
  t.teardown(() => publisher.child.kill('SIGKILL'));
  const codes = await Promise.all(agents.map((a) => exitCode(a, 100_000)));
  t.deepEqual(codes, [0, 0, 0], agents.map((a) => a.stderr.slice(-3000)).join('\n'));
  for (const [i, a] of agents.entries()) {
    const result = JSON.parse(a.stdout.trim()) as { sha256: string; path: string; seq: number };
    t.is(result.seq, 2);
    t.is(result.sha256, sha256hex(next), `agent ${i} reported digest`);
    t.is(sha256hex(readFileSync(result.path)), sha256hex(next), `agent ${i} installed file`);
  }
  const [a, b, c] = agents as [Tracked, Tracked, Tracked];
  for (const holder of [a, b]) {
    t.is(events(holder.stderr, 'delta.applied', { seq: 2, baseRelease: baseId }).length, 1, 'a holder rebuilt the image from the delta');
    const sub = channelStats(holder).find((s) => s.channel === deltaChannel);
    t.true((sub?.bytes ?? 0) > inspected.deltas[0]!.size, `a holder heard the delta: ${sub?.bytes} bytes`);
    t.true(events(holder.stderr, 'agent.stats', (l) => (l['dropped.delta-chosen'] as number) > 0).length === 1, 'a holder refused the full image while it took the delta');
  }
  // Once it has installed the new release it holds a base, and may join that one's sub-channel, where nothing is sent.
  t.false(events(c.stderr, 'delta.joined').some((l) => l.channel === deltaChannel), "the agent holding nothing never joined the base's sub-channel");
  t.is(events(c.stderr, 'delta.applied').length, 0);
  t.is(channelStats(c).find((s) => s.channel === deltaChannel), undefined);
  t.true(channelStats(c).filter((s) => s.channel !== 'fw/rpi4').every((s) => s.bytes === 0), 'it heard no delta byte');
  t.true(channelStats(c).find((s) => s.channel === 'fw/rpi4')!.bytes > next.length, 'it took the full image');
  t.true((lab.dropped().b ?? 0) > 50, `loss rule dropped ${lab.dropped().b} packets towards b`);
  publisher.child.kill('SIGTERM');
  t.is(await exitCode(publisher, 10_000), 0);
  const sent = events(publisher.stderr, 'carousel.stopped').map((l) => l.channel);
  t.deepEqual(sent.sort(), ['fw/rpi4', deltaChannel].sort(), 'the publisher sent the image and the delta, each on its channel');
});

test('kill -9 during a delta transfer: the restarted agent resumes the delta and installs the new image', async (t) => {
  const lab = NetLab.create(['pub', 'dev']);
  t.teardown(() => lab.destroy());
  // A delta of about 1.5 MiB at 2 Mbit/s: several seconds of transfer to kill in.
  const { dir, next, base, release, pub } = twoReleases(1536 * 1024, 7);
  const store = join(dir, 'store');
  holding(store, base);
  const publisher = track(lab.spawn('pub', process.execPath, [FWCAST, 'publish', release, '--iface', 'eth0', '--rate', '4mbit', '--duration', '150s', '--log-format', 'json']));
  t.teardown(() => publisher.child.kill('SIGKILL'));
  const random = prng(19);
  let resumed = 0;
  let finished: Tracked | undefined;
  for (let kill = 0; kill < 3; kill++) {
    const agent = track(lab.spawn('dev', process.execPath, agentArgs(store, pub)));
    await waitForEvent(agent, 'delta.accepted', { seq: 2 }, 60_000);
    await new Promise((r) => setTimeout(r, 700 + random() * 800));
    if (agent.child.exitCode !== null) {
      finished = agent;
      break;
    }
    agent.child.kill('SIGKILL');
    await agent.exited;
    t.is(agent.stdout, '', 'a killed agent never reported an install');
    if (events(agent.stderr, 'release.resumed', { seq: 2 }).length > 0) resumed++;
  }
  const last = finished ?? track(lab.spawn('dev', process.execPath, agentArgs(store, pub)));
  t.is(await exitCode(last, 120_000), 0, last.stderr.slice(-3000));
  t.true(events(last.stderr, 'release.resumed', { seq: 2 }).length + resumed >= 2, 'restarts resumed the delta from the store');
  t.is(events(last.stderr, 'delta.applied', { seq: 2 }).length, 1);
  const result = JSON.parse(last.stdout.trim()) as { sha256: string; path: string };
  t.is(result.sha256, sha256hex(next));
  t.is(sha256hex(readFileSync(result.path)), sha256hex(next));
  t.deepEqual(readdirSync(join(store, 'deltas', 'rpi4')), [], 'no delta transfer left behind');
});

test('a kept base that no longer matches its digest: the delta is refused after it arrives and the full image is installed', async (t) => {
  const lab = NetLab.create(['pub', 'dev']);
  t.teardown(() => lab.destroy());
  const { dir, next, base, release, pub } = twoReleases(64 * 1024, 13);
  const store = join(dir, 'store');
  const baseId = holding(store, base);
  // A bit flipped on the device's disk since it was installed.
  const kept = join(store, 'releases', 'rpi4', `${baseId}.img`);
  const bytes = readFileSync(kept);
  bytes[12345]! ^= 0x01;
  writeFileSync(kept, bytes);
  const publisher = track(lab.spawn('pub', process.execPath, [FWCAST, 'publish', release, '--iface', 'eth0', '--rate', '20mbit', '--duration', '90s', '--log-format', 'json']));
  t.teardown(() => publisher.child.kill('SIGKILL'));
  const agent = track(lab.spawn('dev', process.execPath, agentArgs(store, pub)));
  t.is(await exitCode(agent, 80_000), 0, agent.stderr.slice(-3000));
  t.is(events(agent.stderr, 'delta.failed', { seq: 2, reason: 'digest-mismatch', baseRelease: baseId }).length, 1, 'the base was checked before the delta was applied');
  t.is(events(agent.stderr, 'delta.applied').length, 0);
  t.is(events(agent.stderr, 'release.received', { seq: 2 }).length, 1, 'the full image was received on the model channel');
  const result = JSON.parse(agent.stdout.trim()) as { sha256: string; path: string };
  t.is(result.sha256, sha256hex(next));
  t.is(sha256hex(readFileSync(result.path)), sha256hex(next));
});

test('fwcast serve sends the deltas of a pushed release on their sub-channels: an agent holding the base takes the delta, one holding nothing the full image', async (t) => {
  const lab = NetLab.create(['srv', 'a', 'c']);
  t.teardown(() => lab.destroy());
  const { dir, next, base, release, pub } = twoReleases(64 * 1024, 9);
  const baseId = holding(join(dir, 'store-a'), base);
  const server = await startServe(lab, 'srv', serveConfig({ dir, pub }));
  t.teardown(() => server.child.kill('SIGKILL'));
  const pushed = await push(lab, 'srv', release, TOKEN);
  t.is(pushed.code, 0, pushed.stderr);
  const agents = ['a', 'c'].map((h) => track(lab.spawn(h, process.execPath, agentArgs(join(dir, `store-${h}`), pub))));
  const codes = await Promise.all(agents.map((a) => exitCode(a, 100_000)));
  t.deepEqual(codes, [0, 0], agents.map((a) => a.stderr.slice(-2000)).join('\n'));
  for (const a of agents) t.is(sha256hex(readFileSync((JSON.parse(a.stdout.trim()) as { path: string }).path)), sha256hex(next));
  const [holder, empty] = agents as [Tracked, Tracked];
  t.like(events(holder.stderr, 'delta.applied')[0], { seq: 2, baseRelease: baseId });
  t.deepEqual(events(empty.stderr, 'delta.applied'), []);
  t.false(channelStats(empty).some((c) => c.channel.startsWith('fw/rpi4/delta/') && c.bytes > 0), 'the agent holding nothing heard no delta byte');
});
