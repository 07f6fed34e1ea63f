/**
 * Sending only while someone listens: the gate's decisions (linger, always-on,
 * an unreadable source), the pacer holding and resuming a channel, the
 * listener sources' parsers, and `fwcast publish --listeners mdb` on a real
 * bridge with MLD snooping and a querier, where nftables counts what leaves
 * the publisher.
 *
 *   [bridge host: br0, snooping + querier] fwcast publish --iface br0 --listeners mdb
 *        └── vA ── eth0 [a] fwcast-agent (joins, installs, leaves)
 */
import test from 'ava';
import { join } from 'node:path';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { resolveServeConfig } from '../server/serve/config.js';
import { ListenerGate } from '../carousel/listener-gate.js';
import { Pacer } from '../carousel/pacer.js';
import { Carousel } from '../carousel/carousel.js';
import { channelGroup } from '../protocol/channel.js';
import { canonicalGroup, parseIgmp6, parseMdb } from '../transport/listeners.js';
import type { Channel } from '../transport/transport.js';
import { LinkLab } from './helpers/links.js';
import { httpGet, push, TOKEN } from './helpers/serve.js';
import { makeKey, sha256hex } from './helpers/fixtures.js';
import { testRelease } from './helpers/releases.js';
import { events, exitCode, FWCAST, FWCAST_AGENT, signedRelease, track, waitForEvent } from './helpers/processes.js';

const rpi4: Channel = { name: 'fw/rpi4', group: 'ff1e:0:0:0:0:0:0:1234', port: 4242 };
const esp: Channel = { name: 'fw/esp', group: 'ff15::42', port: 4242 };

test('the gate sends a channel while its group has listeners and for the linger after, never before the first listener', (t) => {
  const gate = new ListenerGate({ lingerMs: 5000 });
  const chans = [rpi4, esp];
  t.false(gate.sending('fw/rpi4'), 'nothing heard yet: not sent');
  t.deepEqual(gate.observe(0, chans, new Set()), []);
  const joined = gate.observe(1000, chans, new Set(['ff1e::1234']));
  t.deepEqual(joined.map((c) => [c.channel.name, c.sending, c.listeners]), [['fw/rpi4', true, true]], 'the group matches whatever its spelling');
  t.deepEqual(gate.observe(2000, chans, new Set()), [], 'left: still sent within the linger');
  t.true(gate.sending('fw/rpi4'));
  t.like(gate.states().find((s) => s.channel === 'fw/rpi4'), { listeners: false, sending: true, lastHeard: 1000 });
  t.deepEqual(gate.observe(5999, chans, new Set()).length, 0);
  t.deepEqual(gate.observe(6000, chans, new Set()).map((c) => [c.channel.name, c.sending]), [['fw/rpi4', false]], 'linger over: stopped');
  t.false(gate.sending('fw/esp'));
});

test('always-on channels are sent with no listener; an unreadable source sends everything until it reads again', (t) => {
  const gate = new ListenerGate({ lingerMs: 0, alwaysOn: ['fw/esp'] });
  t.true(gate.sending('fw/esp'));
  t.deepEqual(gate.observe(0, [rpi4, esp], new Set()), []);
  t.deepEqual(gate.observe(1, [rpi4, esp], undefined).map((c) => [c.channel.name, c.sending]), [['fw/rpi4', true]], 'blind: fail open');
  t.deepEqual(gate.observe(2, [rpi4, esp], new Set()).map((c) => [c.channel.name, c.sending]), [['fw/rpi4', false]]);
  t.throws(() => new ListenerGate({ lingerMs: -1 }), { instanceOf: RangeError });
});

test('a held channel sends nothing and keeps its carousel; resumed, it shares the rate again', async (t) => {
  const key = await makeKey();
  const pacer = new Pacer({ rate: 8e6 });
  const carousel = (seed: number) => new Carousel(testRelease(key, { imageSeed: seed }));
  pacer.set({ channel: rpi4, carousel: carousel(1) });
  pacer.set({ channel: esp, carousel: carousel(2) });
  const sent = new Map<string, number>();
  const bytes = new Map<string, number>();
  const send = (c: Channel, d: Uint8Array): void => {
    sent.set(c.name, (sent.get(c.name) ?? 0) + 1);
    bytes.set(c.name, (bytes.get(c.name) ?? 0) + d.length + 48);
  };
  pacer.hold('fw/rpi4', true);
  let now = 0;
  for (; now < 100; now += 5) pacer.due(now, send);
  t.is(sent.get('fw/rpi4'), undefined, 'held: not one datagram');
  t.true((sent.get('fw/esp') ?? 0) > 50);
  t.false(pacer.idle, 'a held channel is still there');
  pacer.hold('fw/esp', true);
  t.is(pacer.due(now, send), Infinity, 'all held: nothing due');
  pacer.hold('fw/rpi4', false);
  pacer.hold('fw/esp', false);
  sent.clear();
  bytes.clear();
  for (; now < 300; now += 5) pacer.due(now, send);
  const a = bytes.get('fw/rpi4') ?? 0;
  const b = bytes.get('fw/esp') ?? 0;
  // esp sent ~100 kB while rpi4 was held: a resumed rpi4 owed that would take everything for as long.
  t.true((sent.get('fw/rpi4') ?? 0) > 50 && Math.abs(a - b) <= 1500, `resumed: equal shares of the wire bytes, not a catch-up burst for the held time (${a} vs ${b})`);
  t.deepEqual(pacer.stats().map((s) => s.channel), ['fw/rpi4', 'fw/esp']);
});

test('listener sources: the bridge database and /proc/net/igmp6, groups in one spelling', (t) => {
  const mdb = JSON.stringify([{ mdb: [
    { index: 2, dev: 'br0', port: 'vA', grp: 'ff1e::1234', state: 'temp' },
    { index: 2, dev: 'br0', port: 'br0', grp: 'FF02::1:FF00:1', state: 'temp' },
    { index: 2, dev: 'br0', port: 'vB', grp: '224.0.0.251', state: 'temp' },
  ], router: {} }]);
  t.deepEqual([...parseMdb(mdb)], ['ff1e::1234', 'ff02::1:ff00:1']);
  const igmp6 = [
    '1    lo              ff020000000000000000000000000001     1 0000000C 0',
    '2    eth0            ff1e0000000000000000000000001234     1 00000004 0',
    '3    eth1            ff150000000000000000000000000042     1 00000004 0',
  ].join('\n');
  t.deepEqual([...parseIgmp6(igmp6, 'eth0')], ['ff1e::1234']);
  t.deepEqual([...parseIgmp6(igmp6)].sort(), ['ff02::1', 'ff15::42', 'ff1e::1234']);
  t.is(canonicalGroup('FF1E:0000::0:1234'), 'ff1e::1234');
  t.throws(() => canonicalGroup('not-an-address'), { message: /not an IPv6 address/ });
});

test('publish --listeners mdb on a snooping bridge: nothing leaves without a listener; data within seconds of a join; none after the linger', async (t) => {
  const lab = LinkLab.create({ A: { snooping: true, querier: true } }, { a: ['A'] });
  t.teardown(() => lab.destroy());
  const { dir, image, release, pub } = signedRelease('fwcast-listeners-', 300_000, { seed: 41 });
  const lingerMs = 2000;
  const publisher = track(lab.spawnOnBridge('A', process.execPath, [FWCAST, 'publish', release, '--iface', 'br0', '--rate', '5mbit', '--duration', '120s',
    '--listeners', 'mdb', '--linger', `${lingerMs / 1000}s`, '--no-cache', '--log-format', 'json']));
  t.teardown(() => publisher.child.kill('SIGKILL'));
  await waitForEvent(publisher, 'publish.started', {}, 30_000);
  t.like(events(publisher.stderr, 'listeners.following')[0], { source: 'multicast database of bridge br0', lingerMs });
  // 3 s of nobody: not one datagram to the fwcast port left the publisher.
  await new Promise((r) => setTimeout(r, 3000));
  t.is(lab.bridgeHostSent('A').packets, 0, 'no listener: nothing sent');
  t.deepEqual(events(publisher.stderr, 'listeners.sending'), []);

  const agent = track(lab.spawn('a', process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--key', pub, '--iface', 'eth0', '--store', join(dir, 'store-a'),
    '--once', '--json', '--timeout', '60', '--log-format', 'json']));
  await waitForEvent(agent, 'agent.listening', { channel: 'fw/rpi4' }, 30_000);
  const joinedAt = Date.now();
  await waitForEvent(publisher, 'listeners.sending', { channel: 'fw/rpi4', group: channelGroup('fw/rpi4'), listeners: true }, 10_000);
  const startedAfter = Date.now() - joinedAt;
  t.true(startedAfter < 5000, `sending began ${startedAfter} ms after the join`);
  t.is(await exitCode(agent, 60_000), 0, agent.stderr + publisher.stderr);
  const leftAt = Date.now();
  const result = JSON.parse(agent.stdout.trim().split('\n').pop()!) as { path: string };
  t.is(sha256hex(readFileSync(result.path)), sha256hex(image), 'the listener installed');
  t.true(lab.bridgeHostSent('A').packets > 100);

  // The agent left (it exited): the bridge forgets it after its last-member
  // queries (about 2 s), the publisher polls each second, then lingers.
  await waitForEvent(publisher, 'listeners.idle', { channel: 'fw/rpi4', lingerMs }, 15_000);
  const stoppedAfter = Date.now() - leftAt;
  t.true(stoppedAfter <= lingerMs + 5000, `stopped ${stoppedAfter} ms after the leave (linger ${lingerMs} ms)`);
  t.true(stoppedAfter >= lingerMs, `not before the linger (${stoppedAfter} ms)`);
  const atIdle = lab.bridgeHostSent('A').packets;
  await new Promise((r) => setTimeout(r, 2000));
  t.is(lab.bridgeHostSent('A').packets, atIdle, 'no listener again: nothing sent');
  t.deepEqual(lab.mdbGroups('A').filter((g) => g.startsWith('ff1e')), [], 'the bridge forgot the group too');
  publisher.child.kill('SIGTERM');
  t.is(await exitCode(publisher, 20_000), 0, publisher.stderr);
});

test('serve with "listeners": status and /metrics show each channel\'s listeners; held until an agent joins', async (t) => {
  const lab = LinkLab.create({ A: { snooping: true, querier: true } }, { a: ['A'], ci: ['A'] });
  t.teardown(() => lab.destroy());
  const { dir, image, release, pub } = signedRelease('fwcast-listeners-serve-', 200_000, { seed: 42 });
  const config = join(dir, 'serve.json');
  writeFileSync(config, JSON.stringify({
    listen: '[fd00:fc:1::ff]:8080', store: join(dir, 'store'), interface: 'br0', rate: '5mbit', trustedKeys: [pub], models: ['rpi4', 'esp'], logFormat: 'json',
    listeners: { source: 'mdb', linger: '1s', alwaysOn: ['esp'] },
  }));
  const server = track(lab.spawnOnBridge('A', process.execPath, [FWCAST, 'serve', '--config', config], { env: { ...process.env, FWCAST_TOKEN: TOKEN } }));
  t.teardown(() => server.child.kill('SIGKILL'));
  await waitForEvent(server, 'serve.listening', {}, 20_000);
  t.is((await push(lab, 'ci', release, TOKEN, 'http://[fd00:fc:1::ff]:8080')).code, 0);
  await waitForEvent(server, 'serve.on-air', { model: 'rpi4' }, 20_000);
  const status = async () => (JSON.parse((await httpGet(lab, 'ci', 'http://[fd00:fc:1::ff]:8080/api/v1/status')).body) as { channels: Array<{ channel: string; listeners: unknown }> }).channels;
  const metrics = async () => (await httpGet(lab, 'ci', 'http://[fd00:fc:1::ff]:8080/metrics')).body;
  await new Promise((r) => setTimeout(r, 1500));
  t.like((await status()).find((c) => c.channel === 'fw/rpi4')?.listeners, { present: false, sending: false, alwaysOn: false, lastHeard: null });
  t.like((await status()).find((c) => c.channel === 'fw/esp')?.listeners, { present: false, sending: true, alwaysOn: true });
  const before = await metrics();
  t.regex(before, /^fwcast_channel_listeners\{channel="fw\/rpi4"\} 0$/m);
  t.regex(before, /^fwcast_channel_sending\{channel="fw\/rpi4"\} 0$/m);
  t.regex(before, /^fwcast_channel_sending\{channel="fw\/esp"\} 1$/m);
  t.is(lab.bridgeHostSent('A').packets, 0, 'on the air but nobody listens: nothing sent');

  // An agent that stays (no --once): it listens until it is stopped.
  const agent = track(lab.spawn('a', process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--key', pub, '--iface', 'eth0', '--store', join(dir, 'store-a'),
    '--json', '--log-format', 'json']));
  t.teardown(() => agent.child.kill('SIGKILL'));
  await waitForEvent(server, 'listeners.sending', { channel: 'fw/rpi4', listeners: true }, 20_000);
  t.like((await status()).find((c) => c.channel === 'fw/rpi4')?.listeners, { present: true, sending: true });
  const during = await metrics();
  t.regex(during, /^fwcast_channel_listeners\{channel="fw\/rpi4"\} 1$/m);
  t.regex(during, /^fwcast_channel_sending\{channel="fw\/rpi4"\} 1$/m);
  const installed = await waitForEvent(agent, 'release.installed', { model: 'rpi4' }, 60_000);
  t.is(sha256hex(readFileSync(String(installed.path))), sha256hex(image));
  agent.child.kill('SIGTERM');
  t.is(await exitCode(agent, 30_000), 0, agent.stderr);
  await waitForEvent(server, 'listeners.idle', { channel: 'fw/rpi4' }, 15_000);
  const after = (await status()).find((c) => c.channel === 'fw/rpi4')?.listeners as { present: boolean; sending: boolean; lastHeard: string };
  t.like(after, { present: false, sending: false });
  t.regex(after.lastHeard, /^20\d\d-\d\d-\d\dT/, 'when a listener was last seen');
  server.child.kill('SIGTERM');
  t.is(await exitCode(server, 20_000), 0, server.stderr);
});

test('publish --listeners local follows this host\'s own joins; flags that cannot work are usage errors', async (t) => {
  const lab = LinkLab.create({ A: {}, S: { snooping: false } }, { a: ['A'] });
  t.teardown(() => lab.destroy());
  const { dir, image, release, pub } = signedRelease('fwcast-listeners-local-', 100_000, { seed: 43 });
  const run = (args: string[], where: 'a' | 'S' = 'a') => {
    const argv = [FWCAST, 'publish', release, '--rate', '5mbit', '--no-cache', '--log-format', 'json', ...args];
    return track(where === 'a' ? lab.spawn('a', process.execPath, argv) : lab.spawnOnBridge('S', process.execPath, argv));
  };
  const refusals: Array<[string[], RegExp, 'a' | 'S']> = [
    [['--iface', 'eth0', '--listeners', 'mdb'], /--listeners mdb: eth0 is not a Linux bridge/, 'a'],
    [['--iface', 'br0', '--listeners', 'mdb'], /--listeners mdb: bridge br0 has MLD snooping off.*mcast_snooping 1/, 'S'],
    [['--iface', 'eth0', '--listeners', 'local', '--mqtt', 'mqtt://[::1]:1'], /--listeners .* cannot be combined with --mqtt/, 'a'],
    [['--iface', 'eth0', '--always-on', 'rpi4'], /--always-on needs --listeners/, 'a'],
    [['--iface', 'eth0', '--listeners', 'local', '--always-on', 'esp'], /--always-on: no release published on fw\/esp/, 'a'],
  ];
  for (const [args, message, where] of refusals) {
    const p = run([...args, '--rounds', '1'], where);
    t.is(await exitCode(p, 30_000), 2, `${args.join(' ')}: usage error\n${p.stderr}`);
    t.regex(p.stderr, message);
    t.deepEqual(events(p.stderr, 'publish.started'), [], 'nothing sent');
  }
  const config = join(dir, 'serve.json');
  writeFileSync(config, JSON.stringify({ store: join(dir, 'store'), interface: 'eth0', trustedKeys: [pub], models: ['rpi4'], listeners: 'mdb' }));
  const server = track(lab.spawn('a', process.execPath, [FWCAST, 'serve', '--config', config], { env: { ...process.env, FWCAST_TOKEN: TOKEN } }));
  t.is(await exitCode(server, 30_000), 2, server.stderr);
  t.regex(server.stderr, /^fwcast: error: eth0 is not a Linux bridge/m, 'serve refuses it at start too');
  t.deepEqual(events(server.stderr, 'serve.listening'), []);

  const publisher = run(['--iface', 'eth0', '--listeners', 'local', '--linger', '1s', '--duration', '90s', '--json']);
  t.teardown(() => publisher.child.kill('SIGKILL'));
  await waitForEvent(publisher, 'listeners.following', { source: "this host's joins on eth0 (/proc/net/igmp6)" }, 30_000);
  await new Promise((r) => setTimeout(r, 1500));
  t.deepEqual(events(publisher.stderr, 'listeners.sending'), []);
  // An agent on the publisher's own host: it hears the carousel through multicast loopback.
  const agent = track(lab.spawn('a', process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--key', pub, '--iface', 'eth0', '--store', join(dir, 'store-a'),
    '--once', '--json', '--timeout', '60', '--log-format', 'json']));
  await waitForEvent(publisher, 'listeners.sending', { channel: 'fw/rpi4', listeners: true }, 15_000);
  t.is(await exitCode(agent, 60_000), 0, agent.stderr);
  t.is(sha256hex(readFileSync((JSON.parse(agent.stdout.trim().split('\n').pop()!) as { path: string }).path)), sha256hex(image));
  await waitForEvent(publisher, 'listeners.idle', { channel: 'fw/rpi4', lingerMs: 1000 }, 15_000);
  publisher.child.kill('SIGTERM');
  t.is(await exitCode(publisher, 20_000), 0, publisher.stderr);
});

test('serve\'s "listeners" setting: a source name, or source, linger and always-on models; every mistake named', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-listeners-config-'));
  const resolve = (listeners: unknown, env: Record<string, string> = {}) => {
    const path = join(dir, `c${Math.random().toString(36).slice(2)}.json`);
    writeFileSync(path, JSON.stringify({ interface: 'br0', trustedKeys: ['/etc/fwcast/publisher.pub'], models: ['rpi4', 'esp'], ...(listeners === undefined ? {} : { listeners }) }));
    return resolveServeConfig({ config: path }, { FWCAST_TOKEN: 'a-token-of-enough-length', ...env }).listeners;
  };
  t.is(resolve(undefined), undefined, 'off unless set');
  t.deepEqual(resolve('mdb'), { source: 'mdb', lingerMs: 30_000, alwaysOn: [] });
  t.deepEqual(resolve({ source: 'local', linger: '5s', alwaysOn: ['esp'] }), { source: 'local', lingerMs: 5000, alwaysOn: ['fw/esp'] });
  t.deepEqual(resolve(undefined, { FWCAST_LISTENERS: 'mdb' }), { source: 'mdb', lingerMs: 30_000, alwaysOn: [] });
  t.throws(() => resolve('igmp'), { message: /config\.listeners\.source must be one of mdb, local, got "igmp"/ });
  t.throws(() => resolve({ source: 'mdb', linger: 'soon' }), { message: /config\.listeners\.linger: duration "soon"/ });
  t.throws(() => resolve({ source: 'mdb', alwaysOn: ['stm32'] }), { message: /config\.listeners\.alwaysOn: "stm32" is not a served model/ });
  t.throws(() => resolve({ source: 'mdb', lingr: '1s' }), { message: /config\.listeners: unknown field "lingr"/ });
});
