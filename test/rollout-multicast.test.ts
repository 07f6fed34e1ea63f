/**
 * Staged rollout and halt end to end over real IPv6 multicast in the lab
 * (network namespaces on one bridge), through the CLIs an operator uses:
 * `fwcast sign --cohort/--ramp-*`, `fwcast halt`, `fwcast publish --halt`,
 * `fwcast-agent --cohort`, `fwcast-agent status`.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetLab } from '../scripts/lab/netlab.js';
import { makeImage, sha256hex } from './helpers/fixtures.js';
import { events, exitCode, FWCAST, FWCAST_AGENT, fwcast, track, waitForEvent, type Tracked } from './helpers/processes.js';

function sign(dir: string, model: string, seed: number, extra: string[]): { image: Uint8Array; release: string; id: string } {
  const image = makeImage(1024 * 1024 + seed, seed);
  const imagePath = join(dir, `${model}.bin`);
  writeFileSync(imagePath, image);
  const release = join(dir, `${model}.fwc`);
  const out = JSON.parse(fwcast('sign', imagePath, '--key', join(dir, 'publisher.key'), '--model', model, '--version', '2.0', '--seq', '2', '--out', release, '--json', ...extra)) as { releaseId: string };
  return { image, release, id: out.releaseId };
}

function agent(lab: NetLab, host: string, dir: string, model: string, extra: string[]): Tracked {
  return track(lab.spawn(host, process.execPath, [FWCAST_AGENT, '--model', model, '--key', join(dir, 'publisher.pub'), '--iface', 'eth0', '--store', join(dir, `store-${host}`), '--device-id', `dev-${host}`, '--json', '--log-format', 'json', ...extra]));
}

function publish(lab: NetLab, args: string[]): Tracked {
  return track(lab.spawn('pub', process.execPath, [FWCAST, 'publish', ...args, '--iface', 'eth0', '--rate', '20mbit', '--duration', '90s', '--log-format', 'json']));
}

function status(dir: string, host: string): Array<{ model: string; sha256?: string; scheduled?: { reason: string; installAt?: string; release: string }; halts?: Array<{ release: string }> }> {
  return JSON.parse(execFileSync(process.execPath, [FWCAST_AGENT, 'status', '--store', join(dir, `store-${host}`), '--json'], { encoding: 'utf8' })) as ReturnType<typeof status>;
}

test('a release for the canary cohort installs on canary agents only; a halt stops an agent waiting on its ramp', async (t) => {
  const lab = NetLab.create(['pub', 'canary', 'plain', 'waiter']);
  t.teardown(() => lab.destroy());
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-rollout-mc-'));
  fwcast('keygen', '--out', dir);
  const canaryRelease = sign(dir, 'rpi4', 3, ['--cohort', 'canary']);
  // The ramp starts in a day: every device waits.
  const ramped = sign(dir, 'cam', 4, ['--ramp-start', '1d', '--ramp-duration', '1h']);
  const inspected = JSON.parse(fwcast('inspect', ramped.release, '--json')) as { rollout: { ramp: { durationSeconds: number }; cohorts: string } };
  t.is(inspected.rollout.ramp.durationSeconds, 3600);
  t.is(inspected.rollout.cohorts, 'all');

  const canary = agent(lab, 'canary', dir, 'rpi4', ['--cohort', 'canary', '--once', '--timeout', '80']);
  const plain = agent(lab, 'plain', dir, 'rpi4', ['--cohort', 'site-a']);
  const waiter = agent(lab, 'waiter', dir, 'cam', ['--cohort', 'canary']);
  t.teardown(() => [plain, waiter].forEach((a) => a.child.kill('SIGTERM')));
  await Promise.all([canary, plain, waiter].map((a) => waitForEvent(a, 'agent.listening', {}, 20_000)));
  const first = publish(lab, [canaryRelease.release, ramped.release]);
  t.teardown(() => first.child.kill('SIGTERM'));

  t.is(await exitCode(canary, 80_000), 0, canary.stderr);
  t.is((JSON.parse(canary.stdout.trim()) as { sha256: string }).sha256, sha256hex(canaryRelease.image));
  await waitForEvent(plain, 'rollout.skipped', { release: canaryRelease.id, reason: 'cohort' }, 20_000);
  const scheduled = await waitForEvent(waiter, 'rollout.scheduled', { release: ramped.id, reason: 'ramp' }, 60_000);
  t.true(Date.parse(scheduled.installAt as string) > Date.now() + 23 * 3600_000, `installs at ${String(scheduled.installAt)}`);
  first.child.kill('SIGTERM');
  t.is(await exitCode(first, 10_000), 0);

  // The operator halts the ramped release; the halt alone goes out on its channel.
  const haltFile = join(dir, 'cam.halt');
  fwcast('halt', ramped.release, '--key', join(dir, 'publisher.key'), '--out', haltFile);
  const shown = JSON.parse(fwcast('inspect', haltFile, '--key', join(dir, 'publisher.pub'), '--json')) as { releaseId: string; model: string; signature: string };
  t.like(shown, { releaseId: ramped.id, model: 'cam', signature: 'valid' });
  const second = publish(lab, ['--halt', haltFile]);
  t.teardown(() => second.child.kill('SIGTERM'));
  await waitForEvent(waiter, 'halt.received', { release: ramped.id, effect: 'dropped' }, 30_000);
  await waitForEvent(waiter, 'rollout.skipped', { release: ramped.id, reason: 'halted' }, 5_000);
  second.child.kill('SIGTERM');
  plain.child.kill('SIGTERM');
  waiter.child.kill('SIGTERM');
  t.is(await exitCode(waiter, 10_000), 0);
  t.is(await exitCode(plain, 10_000), 0);

  t.is(events(plain.stderr, 'release.installed').length, 0, 'the device outside the cohort installed nothing');
  t.is(events(waiter.stderr, 'release.installed').length, 0, 'the halted release was not installed');
  t.deepEqual(status(dir, 'plain'), [{ model: 'rpi4', scheduled: { release: canaryRelease.id, version: '2.0', seq: 2, reason: 'cohort' } }]);
  const waiterStatus = status(dir, 'waiter');
  t.like(waiterStatus[0], { model: 'cam', scheduled: { release: ramped.id, reason: 'halted' } });
  t.deepEqual(waiterStatus[0]!.halts!.map((h) => h.release), [ramped.id]);
  const text = execFileSync(process.execPath, [FWCAST_AGENT, 'status', '--store', join(dir, 'store-waiter')], { encoding: 'utf8' });
  t.regex(text, /^cam 2\.0 \(seq 2, release [0-9a-f]{16}\): install never, because: halted$/m);
});
