/**
 * Tried installs on the Raspberry Pi's own A/B boot (tryboot and
 * autoboot.txt), end to end: `fwcast publish` over real multicast in the lab,
 * `fwcast-agent` with hardware/raspberry-pi/hooks/tryboot-steps.sh as
 * installer and steps, against a stand-in for the firmware
 * (test/helpers/tryboot.ts: a boot partition directory, partitions as files,
 * the device-tree cells, and `reboot "0 tryboot"`'s one-shot flag). A reboot
 * is a power cut of the agent and a boot by the stand-in firmware.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetLab } from '../scripts/lab/netlab.js';
import { hookAgentConfig, startHookedAgent } from './helpers/hooked-agent.js';
import { makeImage, sha256hex } from './helpers/fixtures.js';
import { events, exitCode, FWCAST, FWCAST_AGENT, fwcast, ROOT, track, waitForEvent, type Tracked } from './helpers/processes.js';
import { TrybootBoard } from './helpers/tryboot.js';

const HOOK = join(ROOT, 'hardware/raspberry-pi/hooks/tryboot-steps.sh');

test('tryboot: a healthy image boots once from the other partition and becomes the default; an unhealthy one, or a power cut before commit, leaves the default as it was', async (t) => {
  const lab = NetLab.create(['pub', 'dev']);
  t.teardown(() => lab.destroy());
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-tryboot-'));
  const SIZE = 64 << 10;
  const board = new TrybootBoard(join(dir, 'board'), makeImage(SIZE, 1));
  t.deepEqual(board.powerOn(), { partition: 2, tryboot: false });

  fwcast('keygen', '--out', dir);
  const images: Record<number, Uint8Array> = {};
  const release = (seq: number): string => {
    images[seq] = makeImage(SIZE, seq);
    writeFileSync(join(dir, `boot-${seq}.img`), images[seq]!);
    const file = join(dir, `release-${seq}.fwc`);
    fwcast('sign', join(dir, `boot-${seq}.img`), '--key', join(dir, 'publisher.key'), '--model', 'rpi4', '--version', `3.0.${seq}`, '--seq', String(seq), '--out', file);
    return file;
  };
  // The application's check: 3.0.3 never comes up healthy; 3.0.4 takes 2 s to.
  const config = hookAgentConfig(dir, HOOK, 'test "$FWCAST_VERSION" != 3.0.3 && { test "$FWCAST_VERSION" != 3.0.4 || sleep 2; }', { healthTimeoutSeconds: 4, healthIntervalSeconds: 0.3 });
  const env = { ...process.env, ...board.env };
  const startAgent = (): Promise<Tracked> => startHookedAgent(lab, config, env);
  /** Power goes (the agent dies as at a power cut) and comes back: the firmware boots. */
  const powerCycle = async (agent: Tracked): Promise<Tracked> => {
    agent.child.kill('SIGKILL');
    await agent.exited;
    board.powerOn();
    return startAgent();
  };
  const rebooted = async (agent: Tracked): Promise<Tracked> => {
    const deadline = Date.now() + 30_000;
    while (!existsSync(board.rebootRequested)) {
      if (Date.now() > deadline) throw new Error(`no reboot was requested:\n${agent.stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    return powerCycle(agent);
  };
  const publish = async (file: string, until: () => Promise<unknown>): Promise<void> => {
    const publisher = track(lab.spawn('pub', process.execPath, [FWCAST, 'publish', file, '--iface', 'eth0', '--rate', '20mbit', '--duration', '90s', '--log-format', 'json']));
    await until();
    publisher.child.kill('SIGTERM');
    await exitCode(publisher, 10_000);
  };
  const lifecycle = (): { state: string; release: { seq: number } } => (JSON.parse(readFileSync(join(dir, 'store', 'lifecycle.json'), 'utf8')) as { models: { rpi4: { record: { state: string; release: { seq: number } } } } }).models.rpi4.record;

  // 3.0.2, healthy: written to partition 3, tried once, committed: partition 3 is the default.
  let agent = await startAgent();
  await publish(release(2), () => waitForEvent(agent, 'lifecycle.pending', { seq: 2 }, 60_000));
  t.is(sha256hex(board.partition(3)), sha256hex(images[2]!), 'the image went to the [tryboot] partition');
  t.is(sha256hex(board.partition(2)), sha256hex(makeImage(SIZE, 1)), 'the running partition is untouched');
  agent = await rebooted(agent);
  t.deepEqual(board.boots.at(-1), { partition: 3, tryboot: true });
  await waitForEvent(agent, 'lifecycle.committed', { seq: 2 }, 30_000);
  t.deepEqual([board.section('all'), board.section('tryboot')], [3, 2], 'autoboot.txt: partition 3 is the default now');
  agent = await powerCycle(agent);
  t.deepEqual(board.boots.at(-1), { partition: 3, tryboot: false }, 'a plain boot after commit runs the new partition');

  // 3.0.3, unhealthy: written to partition 2, tried, rolled back with a reboot into partition 3.
  await publish(release(3), () => waitForEvent(agent, 'lifecycle.pending', { seq: 3 }, 60_000));
  t.is(sha256hex(board.partition(2)), sha256hex(images[3]!));
  agent = await rebooted(agent);
  t.deepEqual(board.boots.at(-1), { partition: 2, tryboot: true });
  await waitForEvent(agent, 'lifecycle.rolling-back', { seq: 3, cause: 'unhealthy' }, 30_000);
  agent = await rebooted(agent);
  t.deepEqual(board.boots.at(-1), { partition: 3, tryboot: false }, 'back on the committed partition');
  t.deepEqual([board.section('all'), board.section('tryboot')], [3, 2], 'autoboot.txt unchanged');
  const deadline = Date.now() + 20_000;
  while (lifecycle().state !== 'rolled-back' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  t.like(lifecycle(), { state: 'rolled-back', release: { seq: 3 } });

  // 3.0.4, healthy, but the power goes while it is tried: the firmware's one-shot tryboot boots the default, and the agent rolls back.
  await publish(release(4), () => waitForEvent(agent, 'lifecycle.pending', { seq: 4 }, 60_000));
  agent = await rebooted(agent);
  t.deepEqual(board.boots.at(-1), { partition: 2, tryboot: true });
  await waitForEvent(agent, 'lifecycle.resumed', { seq: 4 }, 30_000);
  agent = await powerCycle(agent);
  t.deepEqual(board.boots.at(-1), { partition: 3, tryboot: false }, 'tryboot lasted one boot');
  const rolledBack = await waitForEvent(agent, 'lifecycle.rolled-back', { seq: 4 }, 30_000);
  t.like(rolledBack, { cause: 'unhealthy', rollbackOk: true });
  t.true(events(agent.stderr, 'lifecycle.health-failed', { seq: 4 }).length > 0);
  t.false(existsSync(board.rebootRequested), 'no reboot: the committed partition runs');
  t.deepEqual([board.section('all'), board.section('tryboot')], [3, 2]);
  agent.child.kill('SIGTERM');
  t.is(await exitCode(agent, 15_000), 0);
  const status = JSON.parse(execFileSync(process.execPath, [FWCAST_AGENT, 'status', '--store', join(dir, 'store'), '--json'], { encoding: 'utf8' })) as Array<{ seq: number; rolledBack: Array<{ seq: number }> }>;
  t.is(status[0]!.seq, 2, 'the committed release stays installed');
  t.deepEqual(status[0]!.rolledBack.map((b) => b.seq), [3, 4]);
});
