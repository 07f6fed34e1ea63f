/**
 * Power-loss resilience: an agent killed with SIGKILL at 20 random moments of
 * a transfer resumes from what it had stored each time, and the image it
 * finally installs is the signed one.
 */
import test from 'ava';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetLab } from '../scripts/lab/netlab.js';
import { makeImage, prng, sha256hex } from './helpers/fixtures.js';
import { events, exitCode, FWCAST, FWCAST_AGENT, fwcast, track, waitForEvent } from './helpers/processes.js';

test('kill -9 at 20 random points, restart each time (storage thread or not, by turns): the transfer resumes and the image verifies', async (t) => {
  const lab = NetLab.create(['pub', 'dev']);
  t.teardown(() => lab.destroy());
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-resume-'));
  fwcast('keygen', '--out', dir);
  const image = makeImage(12 * 1024 * 1024 + 99, 31);
  writeFileSync(join(dir, 'img'), image);
  fwcast('sign', join(dir, 'img'), '--key', join(dir, 'publisher.key'), '--model', 'rpi4', '--version', '3.0.0', '--seq', '3', '--out', join(dir, 'rel.fwc'));
  // 12 MiB at 4 Mbit/s: about 26 s of carousel per round, more than 20 kills of at most 1.3 s of receiving each.
  const publisher = track(lab.spawn('pub', process.execPath, [FWCAST, 'publish', join(dir, 'rel.fwc'), '--iface', 'eth0', '--rate', '4mbit', '--duration', '170s']));
  t.teardown(() => publisher.child.kill('SIGKILL'));
  const store = join(dir, 'store');
  const args = [FWCAST_AGENT, '--model', 'rpi4', '--key', join(dir, 'publisher.pub'), '--iface', 'eth0', '--store', store, '--once', '--json', '--timeout', '120', '--log-format', 'json'];
  const random = prng(2026);
  let resumed = 0;
  let killedMidTransfer = 0;
  let finished: ReturnType<typeof track> | undefined;
  let kills = 0;
  for (; kills < 20 && !finished; kills++) {
    // Every other start stores and decodes in its storage thread: both resume what either left on disk.
    const agent = track(lab.spawn('dev', process.execPath, kills % 2 === 1 ? [...args, '--storage-thread'] : args));
    // Kill at a random moment after the transfer (re)started, however slow start-up is under load.
    await waitForEvent(agent, 'release.accepted', { model: 'rpi4', version: '3.0.0' }, 60_000);
    await new Promise((r) => setTimeout(r, 400 + random() * 900));
    if (agent.child.exitCode !== null) {
      finished = agent;
      break;
    }
    agent.child.kill('SIGKILL');
    await agent.exited;
    if (events(agent.stderr, 'release.resumed', { version: '3.0.0' }).length > 0) resumed++;
    t.is(agent.stdout, '', 'a killed agent never reported an install');
    if (events(agent.stderr, 'release.installed', { model: 'rpi4' }).length === 0) killedMidTransfer++;
  }
  const last = finished ?? track(lab.spawn('dev', process.execPath, args));
  t.is(await exitCode(last, 130_000), 0, last.stderr);
  const result = JSON.parse(last.stdout.trim()) as { sha256: string; path: string };
  t.is(result.sha256, sha256hex(image));
  t.is(sha256hex(readFileSync(result.path)), sha256hex(image), 'installed file is the signed image');
  t.is(kills, 20, 'the transfer outlasted 20 kills');
  t.is(killedMidTransfer, 20, 'every kill landed while receiving');
  t.true(resumed >= 18, `${resumed} of 19 restarts resumed stored progress`);
  t.deepEqual(readdirSync(join(store, 'incoming')), [], 'no transfer left behind');
  t.true(existsSync(join(store, 'state.json')));
});
