/**
 * An install tried before it is kept, end to end: `fwcast publish` and
 * `fwcast-agent` over real IPv6 multicast in the lab, the agent's steps as
 * shell commands in its config. A failing health check rolls back and the
 * release is never retried while on the air; and kill -9 at seeded random
 * moments between install and commit always ends in exactly one of
 * committed and rolled-back.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetLab } from '../scripts/lab/netlab.js';
import { makeImage, prng, sha256hex } from './helpers/fixtures.js';
import type { LogEvent } from '../protocol/log.js';
import { events, exitCode, FWCAST, FWCAST_AGENT, fwcast, track, waitForEvent, type Tracked } from './helpers/processes.js';

interface Setup {
  dir: string;
  pub: string;
  release: (seq: number, size?: number) => { file: string; image: Uint8Array };
}

function setup(prefix: string): Setup {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  fwcast('keygen', '--out', dir);
  return {
    dir,
    pub: join(dir, 'publisher.pub'),
    release: (seq, size = 600_000) => {
      const image = makeImage(size, 40 + seq);
      writeFileSync(join(dir, `image-${seq}`), image);
      const file = join(dir, `release-${seq}.fwc`);
      fwcast('sign', join(dir, `image-${seq}`), '--key', join(dir, 'publisher.key'), '--model', 'rpi4', '--version', `2.0.${seq}`, '--seq', String(seq), '--out', file);
      return { file, image };
    },
  };
}

/** An agent config with steps: each appends to `journal`; health passes unless FWCAST_SEQ is listed in `unhealthy`. */
function agentConfig(s: Setup, name: string, steps: Record<string, unknown>, installer: Record<string, unknown> = { type: 'file', path: join(s.dir, `slot-${name}.img`) }): string {
  const file = join(s.dir, `${name}.json`);
  writeFileSync(file, JSON.stringify({
    interface: 'eth0', store: join(s.dir, `store-${name}`), trustedKeys: [s.pub],
    models: [{ model: 'rpi4', installer, steps }],
  }));
  return file;
}

function journal(file: string): string[] {
  return existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n') : [];
}

function statusJson(store: string): Array<Record<string, unknown>> {
  return JSON.parse(execFileSync(process.execPath, [FWCAST_AGENT, 'status', '--store', store, '--json'], { encoding: 'utf8' })) as Array<Record<string, unknown>>;
}

test('over multicast: a failing health check rolls back; the release, still on the air, is never tried again; a higher sequence installs', async (t) => {
  const lab = NetLab.create(['pub', 'dev']);
  t.teardown(() => lab.destroy());
  const s = setup('fwcast-tried-mc-');
  const log = join(s.dir, 'journal');
  const note = (step: string): string => `echo "${step} $FWCAST_SEQ" >> ${log}`;
  const config = agentConfig(s, 'dev', {
    activate: note('activate'),
    health: `${note('health')}; test "$FWCAST_SEQ" != 2`,
    commit: note('commit'),
    rollback: `${note('rollback')}; echo "$FWCAST_ROLLBACK_CAUSE $FWCAST_PREVIOUS_SEQ" > ${join(s.dir, 'rollback-env')}`,
    healthTimeoutSeconds: 2,
    healthIntervalSeconds: 0.25,
  });
  const agent = track(lab.spawn('dev', process.execPath, [FWCAST_AGENT, '--config', config, '--log-format', 'json']));
  t.teardown(() => agent.child.kill('SIGKILL'));
  await waitForEvent(agent, 'agent.listening', { model: 'rpi4' }, 30_000);
  const publish = (file: string): Tracked => track(lab.spawn('pub', process.execPath, [FWCAST, 'publish', file, '--iface', 'eth0', '--rate', '20mbit', '--duration', '90s', '--log-format', 'json']));
  const stop = async (p: Tracked): Promise<void> => {
    p.child.kill('SIGTERM');
    await exitCode(p, 10_000);
  };

  const r1 = s.release(1);
  let publisher = publish(r1.file);
  await waitForEvent(agent, 'lifecycle.committed', { seq: 1 }, 60_000);
  await stop(publisher);
  t.is(sha256hex(readFileSync(join(s.dir, 'slot-dev.img'))), sha256hex(r1.image));

  const r2 = s.release(2);
  publisher = publish(r2.file);
  const rolledBack = await waitForEvent(agent, 'lifecycle.rolled-back', { seq: 2 }, 60_000);
  t.like(rolledBack, { cause: 'unhealthy', rollbackOk: true, previousSeq: 1 });
  t.is(readFileSync(join(s.dir, 'rollback-env'), 'utf8').trim(), 'unhealthy 1');
  // Ten more rounds of it on the air (600 kB at 20 Mbit/s: a round is about a quarter of a second).
  const roundsBefore = Math.max(0, ...events(publisher.stderr, 'publish.round').map((l) => Number(l.rounds)));
  await waitForEvent(publisher, 'publish.round', (l) => Number(l.rounds) >= roundsBefore + 10, 30_000);
  t.is(events(agent.stderr, 'lifecycle.received', { seq: 2 }).length, 1, 'tried once, never again while on the air');
  t.deepEqual(journal(log).filter((l) => l.endsWith(' 2') && !l.startsWith('health')), ['activate 2', 'rollback 2']);
  t.true(journal(log).filter((l) => l === 'health 2').length >= 2, 'health was polled until its deadline');
  await stop(publisher);

  const r3 = s.release(3);
  publisher = publish(r3.file);
  await waitForEvent(agent, 'lifecycle.committed', { seq: 3 }, 60_000);
  await stop(publisher);
  t.is(sha256hex(readFileSync(join(s.dir, 'slot-dev.img'))), sha256hex(r3.image));
  t.deepEqual(journal(log).filter((l) => !l.startsWith('health')), ['activate 1', 'commit 1', 'activate 2', 'rollback 2', 'activate 3', 'commit 3']);

  agent.child.kill('SIGTERM');
  t.is(await exitCode(agent, 15_000), 0);
  const stats = events(agent.stderr, 'agent.stats', { model: 'rpi4' })[0]!;
  t.true(Number(stats['dropped.rolled-back']) > 0, `datagrams of the rolled-back release were refused: ${stats['dropped.rolled-back']}`);
  const [status] = statusJson(join(s.dir, 'store-dev'));
  t.like(status, { model: 'rpi4', seq: 3, lifecycle: { state: 'committed', seq: 3 } });
  t.deepEqual((status!.rolledBack as Array<{ seq: number; cause: string }>).map((b) => [b.seq, b.cause]), [[2, 'unhealthy']]);
});

test('kill -9 at seeded random moments between install and commit: each restart finishes into committed or rolled-back, never both, never neither', async (t) => {
  const lab = NetLab.create(['pub', 'dev']);
  t.teardown(() => lab.destroy());
  const s = setup('fwcast-tried-kill-');
  const r1 = s.release(1, 300_000);
  const publisher = track(lab.spawn('pub', process.execPath, [FWCAST, 'publish', r1.file, '--iface', 'eth0', '--rate', '20mbit', '--duration', '170s', '--log-format', 'json']));
  t.teardown(() => publisher.child.kill('SIGKILL'));
  const random = prng(1717);
  const SCENARIOS = 8;
  const outcomes: string[] = [];
  const killedIn: string[] = [];
  let kills = 0;
  for (let n = 0; n < SCENARIOS; n++) {
    // Half the devices find the release healthy, half do not; every step takes a while, so kills land inside them.
    const healthy = n % 2 === 0;
    const log = join(s.dir, `journal-${n}`);
    const note = (what: string): string => `echo ${what} >> ${log}`;
    const config = agentConfig(s, `dev${n}`, {
      activate: `${note('activate-start')}; sleep 0.3; ${note('activate-end')}`,
      health: `${note('health')}; sleep 0.2; ${healthy ? 'true' : 'false'}`,
      // Long enough that a kill up to 0.4 s after `lifecycle.healthy` (or `rolling-back`) lands in it even when that line is read late.
      commit: `${note('commit-start')}; sleep 1.5; ${note('commit-end')}`,
      rollback: `${note('rollback-start')}; sleep 1.5; ${note('rollback-end')}`,
      healthTimeoutSeconds: 1.5,
      healthIntervalSeconds: 0.2,
      maxRestarts: 10,
    }, { type: 'command', command: `sleep 0.3; cp "$FWCAST_IMAGE" ${join(s.dir, `slot-dev${n}.img`)}` });
    const store = join(s.dir, `store-dev${n}`);
    const lifecycle = (): { state: string } | undefined => {
      try {
        return (JSON.parse(readFileSync(join(store, 'lifecycle.json'), 'utf8')) as { models: Record<string, { record?: { state: string } }> }).models.rpi4?.record;
      } catch {
        return undefined;
      }
    };
    const start = (): Tracked => track(lab.spawn('dev', process.execPath, [FWCAST_AGENT, '--config', config, '--log-format', 'json']));
    const terminal = (): boolean => ['committed', 'rolled-back'].includes(lifecycle()?.state ?? '');
    // The first run receives the release; it and up to two more runs are killed at random moments of the steps.
    let agent = start();
    await waitForEvent(agent, 'lifecycle.received', { seq: 1 }, 60_000);
    const killsHere = 1 + Math.floor(random() * 3);
    for (let k = 0; k < killsHere && !terminal(); k++) {
      if (k === 0) {
        // The first kill lands in a step the seed picks, at a random moment of it: every state gets its kills.
        const points: LogEvent[] = ['lifecycle.installing', 'lifecycle.pending', healthy ? 'lifecycle.healthy' : 'lifecycle.rolling-back'];
        await waitForEvent(agent, points[Math.floor(random() * points.length)]!, { seq: 1 }, 30_000);
        await new Promise((r) => setTimeout(r, random() * 400));
      } else {
        agent = start();
        await waitForEvent(agent, 'agent.listening', { model: 'rpi4' }, 30_000);
        // What is left takes at most about 2 s when healthy (activate 0.3 s, health 0.2 s, commit 1.5 s), 3.3 s when not (health times out at 1.5 s, rollback 1.5 s).
        await new Promise((r) => setTimeout(r, random() * (healthy ? 2000 : 3300)));
      }
      const before = lifecycle();
      agent.child.kill('SIGKILL');
      await agent.exited;
      kills++;
      killedIn.push(`${before?.state ?? 'none'}${(before as { decision?: string } | undefined)?.decision ? `/${(before as { decision?: string }).decision}` : ''}`);
      t.log(`device ${n} (${healthy ? 'healthy' : 'unhealthy'}): killed in ${killedIn.at(-1)}; journal: ${journal(log).join(' ')}`);
    }
    // The last start runs to the end by itself, from whatever was on disk.
    agent = start();
    await waitForEvent(agent, 'agent.listening', { model: 'rpi4' }, 30_000);
    const deadline = Date.now() + 30_000;
    while (!terminal() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    agent.child.kill('SIGTERM');
    t.is(await exitCode(agent, 15_000), 0, agent.stderr);
    const state = lifecycle()?.state;
    const steps = journal(log);
    outcomes.push(`${n}:${state}`);
    t.true(state === 'committed' || state === 'rolled-back', `device ${n} finished (state ${state}), never neither`);
    t.false(steps.includes('commit-start') && steps.includes('rollback-start'), `device ${n}: never both (${steps.join(' ')})`);
    const status = statusJson(store);
    if (healthy) {
      t.is(state, 'committed', `device ${n} was healthy`);
      t.true(steps.includes('commit-end'));
      t.like(status[0], { model: 'rpi4', seq: 1, lifecycle: { state: 'committed' } });
      t.is(sha256hex(readFileSync(join(s.dir, `slot-dev${n}.img`))), sha256hex(r1.image));
    } else {
      t.is(state, 'rolled-back', `device ${n} was unhealthy`);
      t.true(steps.includes('rollback-end'));
      t.like(status[0], { model: 'rpi4', lifecycle: { state: 'rolled-back' } });
      t.is(status[0]!.seq, undefined, 'nothing counts as installed');
    }
  }
  t.log(`${kills} kills, in ${killedIn.join(', ')}; outcomes ${outcomes.join(', ')}`);
  t.true(kills >= SCENARIOS);
  for (const state of ['installing', 'pending', 'pending/commit', 'pending/rollback']) t.true(killedIn.includes(state), `a kill landed in ${state}`);
});
