/**
 * Relays: a publisher sends over MQTT (mosquitto in a lab namespace), a relay
 * agent installs the release and re-multicasts it on the LAN (IPv6 multicast
 * between lab namespaces), downstream agents verify it against the original
 * publisher's key. A tampering relay is caught downstream.
 *
 *   [up]  mosquitto + fwcast publish --mqtt ──MQTT──► [relay] fwcast-agent --mqtt … --relay-iface eth0
 *                                                          │ IPv6 multicast
 *                                                          ▼
 *                                                 [a] [b] [c] fwcast-agent --iface eth0
 */
import test from 'ava';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { NetLab } from '../scripts/lab/netlab.js';
import { Broker, requireMosquitto } from './helpers/broker.js';
import { sha256hex } from './helpers/fixtures.js';
import { events, exitCode, FWCAST, FWCAST_AGENT, fwcast, ROOT, stderrMatch, track, waitForEvent, type Tracked, signedRelease } from './helpers/processes.js';

test.before(() => {
  requireMosquitto();
});

const BROKER_PORT = 18830;
/** The broker's address as the relay host sees it ("up" is the lab's first host). */
const UPSTREAM = `mqtt://[fd00:fc::1]:${BROKER_PORT}`;

function setupRelease(size: number, seed: number) {
  const r = signedRelease('fwcast-relay-', size, { seed, version: '3.0.0', seq: 3 });
  const keyId = (JSON.parse(fwcast('inspect', r.release, '--json')) as { keyId: string }).keyId;
  return { ...r, keyId };
}

async function upstream(lab: NetLab, release: string): Promise<{ broker: Broker; publisher: Tracked }> {
  const broker = await Broker.start({ port: BROKER_PORT, address: '::', spawn: (cmd, args) => lab.spawn('up', cmd, args) });
  const publisher = track(lab.spawn('up', process.execPath, [FWCAST, 'publish', release, '--mqtt', `mqtt://[::1]:${BROKER_PORT}`, '--rate', '20mbit', '--duration', '120s', '--log-format', 'json']));
  return { broker, publisher };
}

/** Its last stdout line as JSON; waits a little, as 'exit' can come before the last stdout data. */
async function lastJson<T>(p: Tracked): Promise<T> {
  const deadline = Date.now() + 3000;
  while (p.stdout.trim() === '' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  return JSON.parse(p.stdout.trim().split('\n').pop()!) as T;
}

function downstream(lab: NetLab, host: string, dir: string, pub: string, timeout: number, extra: string[] = []): Tracked {
  return track(lab.spawn(host, process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--key', pub, '--iface', 'eth0', '--store', join(dir, `store-${host}`), '--once', '--json', '--timeout', String(timeout), '--log-format', 'json', ...extra]));
}

function relayAgent(lab: NetLab, dir: string, pub: string): Tracked {
  // Holds the publisher's public key only, like any agent: nothing to sign with.
  return track(lab.spawn('relay', process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--key', pub, '--mqtt', UPSTREAM, '--store', join(dir, 'store-relay'),
    '--json', '--relay-iface', 'eth0', '--relay-rate', '20mbit', '--log-format', 'json']));
}

test('publisher → MQTT → relay agent → IPv6 multicast → 2 agents, verified against the original key; a restarted relay re-serves its kept release', async (t) => {
  const lab = NetLab.create(['up', 'relay', 'a', 'b', 'c']);
  t.teardown(() => lab.destroy());
  const { dir, image, release, pub, keyId } = setupRelease(1024 * 1024 + 5, 31);
  // b listens on multicast and on the broker at once, and merges what it hears.
  const agents = [downstream(lab, 'a', dir, pub, 120), downstream(lab, 'b', dir, pub, 120, ['--mqtt', UPSTREAM])];
  await waitForEvent(agents[0]!, 'agent.listening', { channel: 'fw/rpi4' }, 60_000);
  const { broker, publisher } = await upstream(lab, release);
  await waitForEvent(agents[1]!, 'agent.listening', { channel: 'fw/rpi4', transport: /^udp6 multicast on eth0 \+ MQTT mqtt:\/\/\[fd00:fc::1\]/ }, 60_000);
  t.teardown(() => broker.stop());
  let relay = relayAgent(lab, dir, pub);
  await waitForEvent(relay, 'relay.serving', { model: 'rpi4', version: '3.0.0', seq: 3, channel: 'fw/rpi4', transport: 'udp6 multicast on eth0' }, 60_000);
  t.is((await lastJson<{ sha256: string }>(relay)).sha256, sha256hex(image), 'the relay installed (verified) the release first');

  const codes = await Promise.all(agents.map((a) => exitCode(a, 120_000)));
  t.deepEqual(codes, [0, 0], agents.map((a) => a.stderr).join('\n'));
  for (const a of agents) {
    const r = await lastJson<{ sha256: string; path: string }>(a);
    t.is(sha256hex(readFileSync(r.path)), sha256hex(image));
    t.like(events(a.stderr, 'release.accepted')[0], { version: '3.0.0', kid: keyId }, 'verified against the original publisher key');
  }

  // Upstream gone, relay restarted: it serves what it kept, to an agent that joins now.
  publisher.child.kill('SIGTERM');
  await exitCode(publisher, 30_000);
  await broker.stop();
  relay.child.kill('SIGTERM');
  t.is(await exitCode(relay, 30_000), 0, relay.stderr);
  t.true(Number(events(relay.stderr, 'carousel.stopped', { channel: 'fw/rpi4' })[0]?.datagrams) > 0, 'the relay logs what it sent at exit');
  relay = relayAgent(lab, dir, pub);
  t.teardown(() => relay.child.kill('SIGKILL'));
  await waitForEvent(relay, 'relay.serving', { model: 'rpi4', version: '3.0.0', seq: 3 }, 60_000);
  const late = downstream(lab, 'c', dir, pub, 120);
  t.is(await exitCode(late, 120_000), 0, late.stderr + relay.stderr);
  t.is(sha256hex(readFileSync((await lastJson<{ path: string }>(late)).path)), sha256hex(image));
  relay.child.kill('SIGTERM');
  await exitCode(relay, 30_000);
});

test('a tampering relay (bytes flipped in symbols and AUTH) is detected downstream: drops counted, nothing installed', async (t) => {
  const lab = NetLab.create(['up', 'relay', 'a', 'b']);
  t.teardown(() => lab.destroy());
  const { dir, release, pub } = setupRelease(512 * 1024, 32);
  const agents = ['a', 'b'].map((h) => downstream(lab, h, dir, pub, 120));
  await Promise.all(agents.map((a) => waitForEvent(a, 'agent.listening', { channel: 'fw/rpi4' }, 60_000)));
  const { broker } = await upstream(lab, release);
  t.teardown(() => broker.stop());
  const tamper = track(lab.spawn('relay', process.execPath, ['--import', 'tsx', join(ROOT, 'test/helpers/tamper-relay.ts'), '--mqtt', UPSTREAM, '--iface', 'eth0'], { cwd: ROOT }));
  await stderrMatch(tamper, /tamper-relay: ready/, 60_000);

  // The genuine manifest gets through; then 4 s of flipped symbols and AUTH (many rounds of a 512 KiB image).
  await Promise.all(agents.map((a) => waitForEvent(a, 'release.accepted', { model: 'rpi4', version: '3.0.0' }, 60_000)));
  await new Promise((r) => setTimeout(r, 4000));
  for (const a of agents) a.child.kill('SIGTERM');
  const codes = await Promise.all(agents.map((a) => exitCode(a, 30_000)));
  tamper.child.kill('SIGTERM');
  t.is(await exitCode(tamper, 30_000), 0, tamper.stderr);
  const summary = JSON.parse(tamper.stdout.trim()) as { symbolsFlipped: number; authFlipped: number };
  t.true(summary.symbolsFlipped > 1000 && summary.authFlipped > 10, JSON.stringify(summary));
  t.deepEqual(codes, [0, 0], 'both agents stopped cleanly on SIGTERM, with their stats');
  for (const [i, a] of agents.entries()) {
    t.true(events(a.stderr, 'release.accepted', { model: 'rpi4', version: '3.0.0' }).length > 0, 'the genuine manifest was accepted');
    const stats = events(a.stderr, 'agent.stats', { model: 'rpi4' })[0];
    const symbolDrops = Number(stats?.['dropped.bad-symbol-digest'] ?? 0);
    const authDrops = Number(stats?.['dropped.bad-auth'] ?? 0);
    t.true(symbolDrops > 100, `agent ${i}: forged symbols dropped as bad-symbol-digest (${symbolDrops})\n${a.stderr}`);
    t.true(authDrops > 0, `agent ${i}: forged AUTH dropped as bad-auth (${authDrops})`);
    t.is(a.stdout, '');
    t.deepEqual([...events(a.stderr, 'release.installed'), ...events(a.stderr, 'release.verified')], []);
    t.false(existsSync(join(dir, `store-${['a', 'b'][i]}`, 'state.json')), 'no install recorded');
  }
});

test('the other way round: multicast in, relayed to an MQTT broker (--relay-mqtt), an MQTT-only agent installs', async (t) => {
  const lab = NetLab.create(['up', 'relay', 'd']);
  t.teardown(() => lab.destroy());
  const { dir, image, release, pub } = setupRelease(400_000, 33);
  // The site broker runs on the relay host; the agent on "d" reaches it over the bridge.
  const broker = await Broker.start({ port: BROKER_PORT, address: '::', spawn: (cmd, args) => lab.spawn('relay', cmd, args) });
  t.teardown(() => broker.stop());
  const d = track(lab.spawn('d', process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--key', pub, '--mqtt', `mqtt://[fd00:fc::2]:${BROKER_PORT}`,
    '--store', join(dir, 'store-d'), '--once', '--json', '--timeout', '120', '--log-format', 'json']));
  await waitForEvent(d, 'agent.listening', { channel: 'fw/rpi4' }, 60_000);
  const relay = track(lab.spawn('relay', process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--key', pub, '--iface', 'eth0', '--store', join(dir, 'store-relay'),
    '--relay-mqtt', `mqtt://[::1]:${BROKER_PORT}`, '--relay-rate', '20mbit', '--log-format', 'json']));
  t.teardown(() => relay.child.kill('SIGKILL'));
  await waitForEvent(relay, 'agent.listening', { channel: 'fw/rpi4' }, 60_000);
  const publisher = track(lab.spawn('up', process.execPath, [FWCAST, 'publish', release, '--iface', 'eth0', '--rate', '20mbit', '--duration', '120s', '--log-format', 'json']));
  t.teardown(() => publisher.child.kill('SIGKILL'));
  await waitForEvent(relay, 'relay.serving', { model: 'rpi4', version: '3.0.0', seq: 3, channel: 'fw/rpi4', transport: /^MQTT mqtt:\/\/\[::1\]/ }, 60_000);
  t.is(await exitCode(d, 120_000), 0, d.stderr + relay.stderr);
  t.is(sha256hex(readFileSync((await lastJson<{ path: string }>(d)).path)), sha256hex(image));
  publisher.child.kill('SIGTERM');
  relay.child.kill('SIGTERM');
  t.is(await exitCode(relay, 30_000), 0, relay.stderr);
});
