/**
 * Memory a stranger can make an agent hold, measured on the real agent process
 * (VmHWM, the kernel's peak resident set): 64 KB datagrams of releases whose
 * manifest never comes, over real multicast in the lab; 150 MB messages on the
 * release topic of a real mosquitto broker. Either used to pin tens to
 * hundreds of MB (a 512 MB board has little to spare); both must leave the
 * agent's peak within a few MB of what it needs to run, and the agent working.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { NetLab } from '../scripts/lab/netlab.js';
import { channelGroup } from '../protocol/channel.js';
import { Broker, freePort, requireMosquitto } from './helpers/broker.js';
import { sha256hex } from './helpers/fixtures.js';
import type { HostileSummary } from './helpers/hostile-sender.js';
import { events, exitCode, FWCAST, FWCAST_AGENT, ROOT, track, waitForEvent, type Tracked, signedRelease } from './helpers/processes.js';

/**
 * Growth of the agent's peak RSS the floods may cause. Bounded buffers hold at
 * most a few MB (the early backlog 1 MiB); the rest is garbage: Node receives
 * each datagram into a 64 KB buffer, which V8 frees in collections some tens of
 * MB apart (measured: +32 MB for the multicast flood, +0 for MQTT, whose
 * broker drops what we refuse). Before the bounds in bytes the multicast flood
 * added 63–81 MB, the MQTT one 328 MB.
 */
const GROWTH_BOUND_MB = 50;

/** VmHWM of a live process, kB. */
function vmHwmKb(pid: number): number {
  return Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
}

const setupRelease = (size: number, seed: number) => signedRelease('fwcast-memory-', size, { seed, version: '2.0.0', seq: 2 });

/** The agent's peak RSS once it listens and has settled (Node's start-up allocations done). */
async function settledPeakKb(agent: Tracked): Promise<number> {
  await new Promise((r) => setTimeout(r, 1500));
  return vmHwmKb(agent.child.pid!);
}

async function installedImage(t: import('ava').ExecutionContext, agent: Tracked, image: Uint8Array, installTo: string): Promise<void> {
  t.is(await exitCode(agent, 90_000), 0, agent.stderr.split('\n').slice(-20).join('\n'));
  t.is(sha256hex(readFileSync(installTo)), sha256hex(image), 'the agent still installs the genuine image afterwards');
}

test('multicast: 1,200 datagrams of 64 KB for releases never announced pin at most a bounded backlog', async (t) => {
  const lab = NetLab.create(['pub', 'agent', 'attacker']);
  t.teardown(() => lab.destroy());
  const { dir, image, release, pub } = setupRelease(1024 * 1024 + 5, 41);
  const installTo = join(dir, 'installed.img');
  // `ip netns exec` execs its command: the child's pid is the agent's own node process.
  const agent = track(lab.spawn('agent', process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--key', pub, '--iface', 'eth0', '--store', join(dir, 'store'),
    '--install-to', installTo, '--once', '--json', '--timeout', '120', '--log-format', 'json', '--progress-interval', '1']));
  await waitForEvent(agent, 'agent.listening', { channel: 'fw/rpi4' }, 60_000);
  const idleKb = await settledPeakKb(agent);
  const hostile = track(lab.spawn('attacker', process.execPath, ['--import', 'tsx', join(ROOT, 'test/helpers/hostile-sender.ts'), '--mode', 'junk', '--size', '65000',
    '--group', channelGroup('fw/rpi4'), '--iface', 'eth0', '--rate', '300', '--count', '1200', '--duration', '30'], { cwd: ROOT }));
  t.is(await exitCode(hostile, 60_000), 0, hostile.stderr);
  const summary = JSON.parse(hostile.stdout.trim()) as HostileSummary;
  t.is(summary.sent, 1200);
  t.is(summary.sendErrors, 0);
  await new Promise((r) => setTimeout(r, 1000));
  const floodedKb = vmHwmKb(agent.child.pid!);
  t.log(`agent peak RSS: ${(idleKb / 1024).toFixed(1)} MB listening, ${(floodedKb / 1024).toFixed(1)} MB after the flood`);

  // The agent heard the flood: the release afterwards shows it in its counters.
  track(lab.spawn('pub', process.execPath, [FWCAST, 'publish', release, '--iface', 'eth0', '--rate', '20mbit', '--duration', '60s', '--quiet']));
  await installedImage(t, agent, image, installTo);
  const stats = events(agent.stderr, 'agent.stats', { model: 'rpi4' })[0];
  t.true(Number(stats?.['dropped.unknown-release']) >= 1000, `the agent received the flood: ${stats?.msg}`);
  t.true(floodedKb - idleKb < GROWTH_BOUND_MB * 1024, `peak RSS grew by ${((floodedKb - idleKb) / 1024).toFixed(1)} MB (bound ${GROWTH_BOUND_MB} MB)`);
});

test('MQTT: three 150 MB messages on the release topic are never buffered by the agent', async (t) => {
  requireMosquitto();
  const broker = await Broker.start({ port: await freePort() });
  t.teardown(() => broker.stop());
  const { dir, image, release, pub } = setupRelease(1024 * 1024 + 5, 42);
  const installTo = join(dir, 'installed.img');
  const agent = track(spawn(process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--key', pub, '--mqtt', broker.url, '--store', join(dir, 'store'),
    '--install-to', installTo, '--once', '--json', '--timeout', '120', '--log-format', 'json'], { stdio: ['ignore', 'pipe', 'pipe'] }));
  t.teardown(() => agent.child.kill('SIGKILL'));
  await waitForEvent(agent, 'agent.listening', { channel: 'fw/rpi4' }, 60_000);
  const idleKb = await settledPeakKb(agent);

  // A client with publish rights (anonymous here) and a 150 MB message, three times.
  const hostile = mqtt.connect(broker.url, { clientId: 'hostile', reconnectPeriod: 0 });
  t.teardown(() => hostile.end(true));
  await new Promise<void>((resolve, reject) => {
    hostile.once('connect', () => resolve());
    hostile.once('error', reject);
  });
  const big = Buffer.alloc(150 * 1024 * 1024, 0x5a);
  for (let i = 0; i < 3; i++) {
    await new Promise<void>((resolve, reject) => hostile.publish('fwcast/fw/rpi4', big, { qos: 1 }, (err) => (err ? reject(err) : resolve())));
  }
  // QoS 1: the broker has each message; give it time to pass them on (or not).
  await new Promise((r) => setTimeout(r, 5000));
  const floodedKb = vmHwmKb(agent.child.pid!);
  t.log(`agent peak RSS: ${(idleKb / 1024).toFixed(1)} MB listening, ${(floodedKb / 1024).toFixed(1)} MB after 3 × 150 MB`);
  t.true(floodedKb - idleKb < GROWTH_BOUND_MB * 1024, `peak RSS grew by ${((floodedKb - idleKb) / 1024).toFixed(1)} MB (bound ${GROWTH_BOUND_MB} MB)`);

  const publisher = track(spawn(process.execPath, [FWCAST, 'publish', release, '--mqtt', broker.url, '--rate', '20mbit', '--duration', '60s', '--quiet'], { stdio: ['ignore', 'pipe', 'pipe'] }));
  t.teardown(() => publisher.child.kill('SIGKILL'));
  await installedImage(t, agent, image, installTo);
});
