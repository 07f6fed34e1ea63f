/**
 * The main path over real IPv6 multicast through the kernel: a publisher and
 * agents in their own network namespaces on one bridge, loss injected by
 * nftables on the bridge.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readTrustedKey } from '../cli/key-files.js';
import { hex } from '../protocol/hex.js';
import { NetLab } from '../scripts/lab/netlab.js';
import { makeImage, sha256hex } from './helpers/fixtures.js';
import { events, exitCode, FWCAST, FWCAST_AGENT, fwcast, track, waitForEvent, type Tracked } from './helpers/processes.js';

function workdir(): string {
  return mkdtempSync(join(tmpdir(), 'fwcast-mc-'));
}

function setupRelease(dir: string, size: number, opts: { model?: string; seq?: number; extra?: string[]; seed?: number; keyDir?: string } = {}) {
  const keyDir = opts.keyDir ?? dir;
  try {
    readFileSync(join(keyDir, 'publisher.key'));
  } catch {
    fwcast('keygen', '--out', keyDir);
  }
  const image = makeImage(size, opts.seed ?? 11);
  const imagePath = join(dir, `image-${opts.seq ?? 1}-${opts.model ?? 'rpi4'}.bin`);
  writeFileSync(imagePath, image);
  const release = join(dir, `release-${opts.seq ?? 1}-${opts.model ?? 'rpi4'}.fwc`);
  fwcast('sign', imagePath, '--key', join(keyDir, 'publisher.key'), '--model', opts.model ?? 'rpi4', '--version', `1.0.${opts.seq ?? 1}`, '--seq', String(opts.seq ?? 1), '--out', release, ...(opts.extra ?? []));
  return { image, release, pub: join(keyDir, 'publisher.pub') };
}

function agent(lab: NetLab, host: string, dir: string, pub: string, extra: string[] = []): Tracked {
  return track(lab.spawn(host, process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--key', pub, '--iface', 'eth0', '--store', join(dir, `store-${host}`), '--once', '--json', '--timeout', '60', '--log-format', 'json', ...extra]));
}

function publish(lab: NetLab, releases: string[], extra: string[] = []): Tracked {
  return track(lab.spawn('pub', process.execPath, [FWCAST, 'publish', ...releases, '--iface', 'eth0', '--rate', '40mbit', '--duration', '90s', '--log-format', 'json', ...extra]));
}

test('publisher and 3 agents, one losing 20%: all install byte-identical images', async (t) => {
  const lab = NetLab.create(['pub', 'a', 'b', 'c']);
  t.teardown(() => lab.destroy());
  const dir = workdir();
  const { image, release, pub } = setupRelease(dir, 4 * 1024 * 1024 + 333);
  lab.setLoss('c', 20);
  const agents = ['a', 'b', 'c'].map((h) => agent(lab, h, dir, pub));
  await Promise.all(agents.map((a) => waitForEvent(a, 'agent.listening', { channel: 'fw/rpi4' }, 20_000)));
  const publisher = publish(lab, [release]);
  const codes = await Promise.all(agents.map((a) => exitCode(a, 60_000)));
  publisher.child.kill('SIGTERM');
  t.deepEqual(codes, [0, 0, 0], agents.map((a) => a.stderr).join('\n'));
  for (const [i, a] of agents.entries()) {
    const result = JSON.parse(a.stdout.trim().split('\n').pop()!) as { sha256: string; path: string; seq: number; model: string };
    t.is(result.model, 'rpi4');
    t.is(result.seq, 1);
    t.is(result.sha256, sha256hex(image), `agent ${i} reported digest`);
    t.is(sha256hex(readFileSync(result.path)), sha256hex(image), `agent ${i} installed file`);
  }
  const dropped = lab.dropped();
  t.true((dropped.c ?? 0) > 500, `loss rule dropped ${dropped.c} packets towards c`);
  t.is(await exitCode(publisher, 10_000), 0, 'publisher stops cleanly on SIGTERM');
});

test('an agent started after the carousel began still completes', async (t) => {
  const lab = NetLab.create(['pub', 'late']);
  t.teardown(() => lab.destroy());
  const dir = workdir();
  const { image, release, pub } = setupRelease(dir, 3 * 1024 * 1024, { seed: 5 });
  // 3 MiB at 10 Mbit/s: one round takes about 2.6 s.
  const publisher = publish(lab, [release], ['--rate', '10mbit']);
  await new Promise((r) => setTimeout(r, 4000));
  t.is(publisher.child.exitCode, null, 'carousel still running when the agent joins');
  const late = agent(lab, 'late', dir, pub);
  t.is(await exitCode(late, 60_000), 0, late.stderr);
  publisher.child.kill('SIGTERM');
  const result = JSON.parse(late.stdout.trim()) as { sha256: string; path: string };
  t.is(sha256hex(readFileSync(result.path)), sha256hex(image));
});

test('wrong key, wrong model, lower sequence and expired manifests are each rejected with a clear line, nothing installed', async (t) => {
  const lab = NetLab.create(['pub', 'wrongkey', 'wrongmodel', 'rollback', 'expired']);
  t.teardown(() => lab.destroy());
  const dir = workdir();
  const trustedDir = join(dir, 'trusted');
  const otherDir = join(dir, 'other');
  for (const d of [trustedDir, otherDir]) fwcast('keygen', '--out', d);
  const image = makeImage(200_000, 9);
  writeFileSync(join(dir, 'img.bin'), image);
  const keyIdOf = (keyDir: string): string => hex(readTrustedKey(join(keyDir, 'publisher.pub')).kid);
  const sign = (name: string, keyDir: string, model: string, seq: number, extra: string[] = []): string => {
    const out = join(dir, `${name}.fwc`);
    fwcast('sign', join(dir, 'img.bin'), '--key', join(keyDir, 'publisher.key'), '--model', model, '--version', name, '--seq', String(seq), '--out', out, ...extra);
    return out;
  };
  // Each bad release goes out on its own port so each agent sees exactly one of them.
  const cases = [
    { host: 'wrongkey', release: sign('wrongkey', otherDir, 'rpi4', 5), refusal: { reason: 'unknown-key', error: 'UnknownKeyError', kid: keyIdOf(otherDir) } },
    { host: 'wrongmodel', release: sign('wrongmodel', trustedDir, 'other-board', 5), refusal: { reason: 'wrong-model', error: 'WrongModelError', releaseModel: 'other-board' } },
    { host: 'rollback', release: sign('rollback', trustedDir, 'rpi4', 3), refusal: { reason: 'rollback', error: 'RollbackError', seq: 3, installedSeq: 7 } },
    { host: 'expired', release: sign('expired', trustedDir, 'rpi4', 9, ['--expires', '1s']), refusal: { reason: 'expired', error: 'ExpiredManifestError', seq: 9 } },
  ];
  // The rollback agent already has seq 7 installed.
  const rollbackStore = join(dir, 'store-rollback');
  mkdirSync(rollbackStore, { recursive: true });
  writeFileSync(join(rollbackStore, 'state.json'), JSON.stringify({ format: 1, models: { rpi4: { model: 'rpi4', seq: 7, version: '1.0.7', sha256: sha256hex(image), releaseId: '00', installedAt: new Date().toISOString(), path: '/nonexistent' } } }));
  await new Promise((r) => setTimeout(r, 1500)); // let the expiring release expire
  const group = 'ff1e:2bd7:ec2e:cb43:283:3ede:32a4:d45f';
  // Publishers first, each on the air before its agent starts: the agent's 6 s are for refusing
  // what it hears, not for waiting on a publisher that a loaded machine is slow to start.
  // --force-expired: publish refuses an expired release otherwise, and this test is about the agent's refusal.
  const publishers = cases.map((c, i) => publish(lab, [c.release], ['--port', String(5000 + i), '--rate', '5mbit', '--duration', '30s', '--group', `other-board=${group}`, '--force-expired']));
  await Promise.all(publishers.map((p) => waitForEvent(p, 'publish.started', {}, 20_000)));
  const runs = cases.map((c, i) => ({ c, p: publishers[i]!, a: agent(lab, c.host, dir, join(trustedDir, 'publisher.pub'), ['--port', String(5000 + i), '--timeout', '6']) }));
  for (const { c, a, p } of runs) {
    const code = await exitCode(a, 30_000);
    p.child.kill('SIGTERM');
    t.is(code, 5, `${c.host}: the agent gives up without installing (exit 5: timed out)`);
    const refused = events(a.stderr, 'release.refused');
    t.is(refused.length, 1, `${c.host}: rejected once, repeats counted silently\n${a.stderr}`);
    t.like(refused[0], { model: 'rpi4', ...c.refusal }, `${c.host}: log line names the reason`);
    t.is(a.stdout, '', `${c.host}: nothing reported installed`);
    t.deepEqual(events(a.stderr, 'release.installed'), []);
    t.true(Number(events(a.stderr, 'agent.stats')[0]?.[`dropped.${c.refusal.reason}`]) >= 2, `${c.host}: repeats counted in the stats at exit`);
  }
});

/** `fwcast publish` with only the arguments given (no --iface, rate or duration of publish() above). */
function publishOnly(lab: NetLab, releases: string[], args: string[]): Tracked {
  return track(lab.spawn('pub', process.execPath, [FWCAST, 'publish', ...releases, '--log-format', 'json', ...args]));
}

test('a network interface that does not exist stops publish and the agent at start, naming it; one without addresses is fine', async (t) => {
  const lab = NetLab.create(['pub']);
  t.teardown(() => lab.destroy());
  const dir = workdir();
  const { release, pub } = setupRelease(dir, 50_000, { seed: 21 });
  // An interface with no address at all still exists: multicast may go out on it.
  execFileSync('ip', ['-n', lab.ns('pub'), 'link', 'add', 'bare0', 'type', 'veth', 'peer', 'name', 'bare1']);
  execFileSync('ip', ['-n', lab.ns('pub'), 'link', 'set', 'bare0', 'up']);

  const mistyped = publishOnly(lab, [release], ['--iface', 'eth9', '--rounds', '1', '--no-cache']);
  t.is(await exitCode(mistyped, 20_000), 2, mistyped.stderr); // usage: the flag names no interface
  t.regex(mistyped.stderr, /^fwcast: error: --iface "eth9" does not exist on this host \(it has: .*eth0.*\)$/m);
  t.deepEqual(events(mistyped.stderr, 'publish.started'), [], 'nothing sent, not even by the default route');

  const agentRun = track(lab.spawn('pub', process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--key', pub, '--iface', 'eth9', '--store', join(dir, 'store-eth9'), '--timeout', '10', '--log-format', 'json']));
  t.is(await exitCode(agentRun, 20_000), 2, agentRun.stderr);
  t.regex(agentRun.stderr, /^fwcast-agent: error: network interface "eth9" does not exist on this host/m);
  t.deepEqual(events(agentRun.stderr, 'agent.listening'), []);

  const bare = publishOnly(lab, [release], ['--iface', 'bare0', '--rounds', '1', '--no-cache']);
  t.is(await exitCode(bare, 20_000), 0, bare.stderr);
  t.is(events(bare.stderr, 'publish.started').length, 1);
});

test('publish exits non-zero when a path delivered nothing: broker down for the whole run, or every multicast send failing', async (t) => {
  const lab = NetLab.create(['pub']);
  t.teardown(() => lab.destroy());
  const dir = workdir();
  const { release } = setupRelease(dir, 50_000, { seed: 22 });
  // Nothing listens on port 1: the broker is down for the whole run. Multicast on eth0 works.
  const both = publishOnly(lab, [release], ['--iface', 'eth0', '--mqtt', 'mqtt://[::1]:1', '--duration', '2s', '--no-cache']);
  t.is(await exitCode(both, 30_000), 1, both.stderr);
  const undelivered = events(both.stderr, 'publish.undelivered');
  t.is(undelivered.length, 1, both.stderr);
  t.regex(String(undelivered[0]?.transport), /^MQTT mqtt:\/\/\[::1\]:1 /);
  t.true(Number(undelivered[0]?.datagrams) > 0);

  // eth0 down: every multicast send fails.
  execFileSync('ip', ['-n', lab.ns('pub'), 'link', 'set', 'eth0', 'down']);
  const down = publishOnly(lab, [release], ['--iface', 'eth0', '--duration', '2s', '--no-cache']);
  t.is(await exitCode(down, 30_000), 1, down.stderr);
  t.like(events(down.stderr, 'publish.undelivered')[0], { transport: 'udp6 multicast on eth0' }, down.stderr);

  // A path that delivered is not reported: exit 0.
  execFileSync('ip', ['-n', lab.ns('pub'), 'link', 'set', 'eth0', 'up']);
  const ok = publishOnly(lab, [release], ['--iface', 'eth0', '--rounds', '1', '--no-cache']);
  t.is(await exitCode(ok, 30_000), 0, ok.stderr);
  t.deepEqual(events(ok.stderr, 'publish.undelivered'), []);
});

test('publish refuses an expired release unless --force-expired', async (t) => {
  const lab = NetLab.create(['pub']);
  t.teardown(() => lab.destroy());
  const dir = workdir();
  const { release } = setupRelease(dir, 50_000, { seed: 23, extra: ['--expires', '1s'] });
  await new Promise((r) => setTimeout(r, 1500));
  const refused = publishOnly(lab, [release], ['--iface', 'eth0', '--rounds', '1', '--no-cache']);
  t.is(await exitCode(refused, 20_000), 3, refused.stderr); // refused: agents would refuse it
  t.regex(refused.stderr, /^fwcast: error: .*release-1-rpi4\.fwc: rpi4 1\.0\.1 \(seq 1\) expired at \d{4}-.*--force-expired/m);
  t.deepEqual(events(refused.stderr, 'publish.started'), []);
  const forced = publishOnly(lab, [release], ['--iface', 'eth0', '--rounds', '1', '--no-cache', '--force-expired']);
  t.is(await exitCode(forced, 20_000), 0, forced.stderr);
  t.is(events(forced.stderr, 'publish.started').length, 1);
});
