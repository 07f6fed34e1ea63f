/**
 * An install tried before it is kept: the pure state machine, the step
 * configuration, and the agent running real step commands (sh) on releases
 * carouselled through the in-memory transport. The same over real multicast,
 * and kill -9 between install and commit: install-lifecycle-multicast.test.ts.
 */
import test from 'ava';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from '../device-agent/agent.js';
import { resolveAgentConfig } from '../device-agent/config.js';
import { healthDeadline, LifecycleTransitionError, nextAction, transition, type LifecycleEvent, type LifecycleRecord } from '../device-agent/install-lifecycle.js';
import { parseInstallSteps, type InstallSteps } from '../device-agent/install-steps.js';
import { FileInstaller } from '../device-agent/installers/file-installer.js';
import { Store } from '../device-agent/store.js';
import { Carousel } from '../carousel/carousel.js';
import { hex } from '../protocol/hex.js';
import type { Logger, LogEvent, LogFields } from '../protocol/log.js';
import { buildRelease } from '../server/release.js';
import { MemoryHub, MemoryTransport } from '../transport/memory.js';
import { signHaltWith } from '../protocol/halt.js';
import { encodeHaltPacket } from '../protocol/packet.js';
import { seedSigner } from '../protocol/signer.js';
import { makeImage, makeKey, sha256hex, type TestKey } from './helpers/fixtures.js';

const POLICY = { healthTimeoutSeconds: 60, maxRestarts: 2 };
const REL = { model: 'rpi4', version: '1.0.2', seq: 2, releaseId: 'aa'.repeat(8), imagePath: '/store/releases/rpi4/x.img', sha256: 'bb'.repeat(32) };

function run(events: LifecycleEvent[], start?: LifecycleRecord): LifecycleRecord {
  let r = start;
  let now = 1000;
  for (const e of events) r = transition(r, e, (now += 10), POLICY);
  return r!;
}

test('the state machine: received → installing → pending → committed, with the decision persisted before its step', (t) => {
  const received = run([{ kind: 'received', release: REL }]);
  t.is(received.state, 'received');
  t.is(nextAction(received), 'install');
  const installing = run([{ kind: 'install-started' }], received);
  t.is(nextAction(installing), 'install', 'an interrupted installer runs again');
  const pending = transition(installing, { kind: 'activating' }, 2000, POLICY);
  t.like(pending, { state: 'pending', checkFrom: 2000, restarts: 0 });
  t.is(nextAction(pending), 'check-health');
  t.is(healthDeadline(pending, POLICY), 2060);
  const decided = transition(pending, { kind: 'healthy' }, 2010, POLICY);
  t.like(decided, { state: 'pending', decision: 'commit' });
  t.is(nextAction(decided), 'commit', 'a restart reruns the commit step, nothing else');
  const committed = transition(decided, { kind: 'committed' }, 2020, POLICY);
  t.deepEqual(committed, { state: 'committed', release: REL, since: 2020 });
  t.is(nextAction(committed), 'none');
});

test('the state machine: unhealthy, a failed activate or commit, or too many restarts decide a rollback; terminal states stay terminal', (t) => {
  const pending = run([{ kind: 'received', release: REL }, { kind: 'install-started' }, { kind: 'activating' }]);
  for (const [event, cause] of [
    [{ kind: 'unhealthy', detail: 'exit 1' }, 'unhealthy'],
    [{ kind: 'activate-failed', detail: 'exit 2' }, 'activate-failed'],
  ] as const) {
    const r = transition(pending, event, 5000, POLICY);
    t.like(r, { state: 'pending', decision: 'rollback', cause });
    t.is(nextAction(r), 'rollback');
    t.like(transition(r, { kind: 'rolled-back' }, 5001, POLICY), { state: 'rolled-back', cause });
    t.throws(() => transition(r, { kind: 'committed' }, 5001, POLICY), { instanceOf: LifecycleTransitionError }, 'never both');
  }
  const commitFailed = run([{ kind: 'healthy' }, { kind: 'commit-failed', detail: 'mark-good failed' }], pending);
  t.like(commitFailed, { decision: 'rollback', cause: 'commit-failed' });
  // Each start while pending opens a new health window; one start too many is a crash loop.
  const once = transition(pending, { kind: 'restarted' }, 9000, POLICY);
  t.like(once, { restarts: 1, checkFrom: 9000 });
  t.is(healthDeadline(once, POLICY), 9060);
  const twice = transition(once, { kind: 'restarted' }, 9100, POLICY);
  t.is(twice.decision, undefined);
  t.like(transition(twice, { kind: 'restarted' }, 9200, POLICY), { decision: 'rollback', cause: 'restarts', restarts: 3 });
  // A pending release is not replaced; a terminal one is.
  t.throws(() => transition(pending, { kind: 'received', release: { ...REL, seq: 3 } }, 1, POLICY), { instanceOf: LifecycleTransitionError });
  t.is(transition(run([{ kind: 'rolled-back' }], commitFailed), { kind: 'received', release: { ...REL, seq: 3 } }, 1, POLICY).state, 'received');
  t.throws(() => transition(undefined, { kind: 'healthy' }, 1, POLICY), { instanceOf: LifecycleTransitionError });
  t.throws(() => transition(run([{ kind: 'received', release: REL }]), { kind: 'activating' }, 1, POLICY), { instanceOf: LifecycleTransitionError }, 'nothing is activated before its installer ran');
});

test('steps config: defaults, and every error names its field', (t) => {
  t.deepEqual(parseInstallSteps({ health: 'true' }, 'config.models[0].steps'), { health: 'true', healthTimeoutSeconds: 300, healthIntervalSeconds: 5, stepTimeoutSeconds: 600, maxRestarts: 3 });
  t.throws(() => parseInstallSteps({}, 'config.models[0].steps'), { message: /config\.models\[0\]\.steps needs at least one of activate, health, commit, rollback/ });
  t.throws(() => parseInstallSteps({ health: '' }, 's'), { message: /^s\.health must be a non-empty shell command$/ });
  t.throws(() => parseInstallSteps({ health: 'true', healthTimeoutSeconds: 0 }, 's'), { message: /^s\.healthTimeoutSeconds must be a positive number of seconds$/ });
  t.throws(() => parseInstallSteps({ health: 'true', maxRestarts: 1.5 }, 's'), { message: /^s\.maxRestarts must be a whole number/ });
  t.throws(() => parseInstallSteps({ health: 'true', helth: 'x' }, 's'), { message: /^s: unknown field "helth"/ });
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-steps-'));
  const file = join(dir, 'agent.json');
  writeFileSync(file, JSON.stringify({ interface: 'lo', trustedKeys: ['k'], models: [{ model: 'rpi4', steps: { commit: 'rauc status mark-good' } }, { model: 'mcu' }] }));
  const config = resolveAgentConfig({ config: file });
  t.is(config.models[0]!.steps?.commit, 'rauc status mark-good');
  t.is(config.models[1]!.steps, undefined, 'without steps, an install is kept at once');
  t.is(resolveAgentConfig({ config: file, model: 'rpi4' }).models[0]!.steps?.commit, 'rauc status mark-good', '--model takes the file\'s steps for that model');
  writeFileSync(file, JSON.stringify({ interface: 'lo', trustedKeys: ['k'], models: [{ model: 'rpi4', steps: { health: 7 } }] }));
  t.throws(() => resolveAgentConfig({ config: file }), { message: /^config\.models\[0\]\.steps\.health must be a non-empty shell command$/ });
});

/** A logger keeping events, for assertions on the stable event names. */
function recorder(onEvent?: (event: LogEvent) => void): { log: Logger; events: Array<{ event: LogEvent; fields: LogFields }> } {
  const events: Array<{ event: LogEvent; fields: LogFields }> = [];
  const log: Logger = {
    event: (event, fields) => {
      events.push({ event, fields });
      onEvent?.(event);
    },
    child: () => log,
  };
  return { log, events };
}

/**
 * Step commands that append "STEP seq" to a journal; health fails for the
 * sequence numbers in `unhealthy`, and (as on an A/B device) "the running
 * release" is the file `running`, set by activate, put back by rollback.
 */
function journalSteps(dir: string, unhealthy: number[], extra: Partial<InstallSteps> = {}): InstallSteps {
  const journal = join(dir, 'journal');
  const note = (step: string): string => `echo "${step} $FWCAST_SEQ $FWCAST_VERSION \${FWCAST_PREVIOUS_SEQ:-none}" >> ${journal}`;
  return parseInstallSteps({
    activate: `${note('activate')} && cp ${join(dir, 'running')} ${join(dir, 'previous')} 2>/dev/null; echo "$FWCAST_VERSION" > ${join(dir, 'running')}`,
    health: `${note('health')}; case " ${unhealthy.join(' ')} " in *" $FWCAST_SEQ "*) exit 1;; esac; test "$(cat ${join(dir, 'running')})" = "$FWCAST_VERSION"`,
    commit: note('commit'),
    rollback: `${note('rollback')} && echo "$FWCAST_ROLLBACK_CAUSE" > ${join(dir, 'cause')} && cp ${join(dir, 'previous')} ${join(dir, 'running')}`,
    healthTimeoutSeconds: 1.5,
    healthIntervalSeconds: 0.2,
    ...extra,
  }, 'steps');
}

function journal(dir: string): string[] {
  return existsSync(join(dir, 'journal')) ? readFileSync(join(dir, 'journal'), 'utf8').trim().split('\n') : [];
}

async function lifecycleAgent(t: { teardown: (fn: () => void) => void }, steps: InstallSteps | undefined, dir: string, reuseKey?: TestKey, onEvent?: (event: LogEvent, store: Store) => void) {
  const key = reuseKey ?? await makeKey();
  const hub = new MemoryHub();
  const channel = { name: 'fw/rpi4', group: 'ff1e::1', port: 4242 };
  const store = new Store(join(dir, 'store'));
  const { log, events } = recorder((event) => onEvent?.(event, store));
  const installer = new FileInstaller(join(dir, 'slot.img'));
  const agent = new Agent({ models: [{ model: 'rpi4', channel, installer, ...(steps ? { steps } : {}) }], trusted: [key], store, transport: new MemoryTransport(hub), log, retryBaseMs: 100 });
  t.teardown(() => agent.stop());
  await agent.start();
  const publisher = new MemoryTransport(hub);
  await publisher.open();
  const release = (seq: number) => buildRelease({ image: makeImage(150_000, seq), seed: key.seed, model: 'rpi4', version: `1.0.${seq}`, seq, segmentSize: 64 << 10 });
  /** Carousels `r` until `until` holds, giving the agent's steps time between bursts (bounded in datagrams and time). */
  const air = async (r: ReturnType<typeof release>, until: () => boolean, ms = 20_000): Promise<number> => {
    const carousel = new Carousel({ ...r });
    const deadline = Date.now() + ms;
    let sent = 0;
    while (!until() && Date.now() < deadline && sent < 200_000) {
      publisher.send(channel, carousel.next());
      if (++sent % 100 === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    }
    return sent;
  };
  const seen = (event: LogEvent, seq?: number): boolean => events.some((e) => e.event === event && (seq === undefined || e.fields.seq === seq));
  const send = (datagram: Uint8Array): void => publisher.send(channel, datagram);
  return { agent, events, store, release, air, seen, key, send };
}

test('a healthy release: activate, health, commit run in order with the release in their environment; the sequence counts only after commit', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-tried-'));
  writeFileSync(join(dir, 'running'), '1.0.0\n');
  // What the store says is installed as health is found good: the commit step has not run yet.
  const installedWhenHealthy: Array<number | undefined> = [];
  const { agent, store, release, air, seen, events } = await lifecycleAgent(t, journalSteps(dir, []), dir, undefined, (event, s) => {
    if (event === 'lifecycle.healthy') installedWhenHealthy.push(s.installed('rpi4')?.seq);
  });
  const r1 = release(1);
  const installed: number[] = [];
  agent.on('installed', (r) => installed.push(r.seq));
  await air(r1, () => seen('lifecycle.committed', 1));
  t.deepEqual(installedWhenHealthy, [undefined], 'pending and healthy: not installed yet');
  t.deepEqual(journal(dir), ['activate 1 1.0.1 none', 'health 1 1.0.1 none', 'commit 1 1.0.1 none']);
  t.is(store.installed('rpi4')?.seq, 1);
  t.deepEqual(installed, [1]);
  t.is(store.lifecycle('rpi4')?.state, 'committed');
  t.is(sha256hex(readFileSync(join(dir, 'slot.img'))), sha256hex(r1.image));
  const order = events.map((e) => e.event).filter((e) => e.startsWith('lifecycle.') || e === 'release.installed');
  t.deepEqual(order, ['lifecycle.received', 'lifecycle.installing', 'lifecycle.pending', 'lifecycle.healthy', 'release.installed', 'lifecycle.committed']);
  // The next one sees what it replaces.
  await air(release(2), () => seen('lifecycle.committed', 2));
  t.deepEqual(journal(dir).slice(3), ['activate 2 1.0.2 1', 'health 2 1.0.2 1', 'commit 2 1.0.2 1']);
  t.deepEqual(installedWhenHealthy, [undefined, 1]);
});

test('a failing health check: rollback runs, the previous release stays, the failed one is never retried while on the air, a higher sequence then installs', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-tried-'));
  writeFileSync(join(dir, 'running'), '1.0.0\n');
  const { agent, store, release, air, seen, events } = await lifecycleAgent(t, journalSteps(dir, [2]), dir);
  const failed: Error[] = [];
  agent.on('failed', (f) => failed.push(f.error));
  await air(release(1), () => seen('lifecycle.committed', 1));
  const r2 = release(2);
  await air(r2, () => seen('lifecycle.rolled-back', 2));
  const rolledBack = events.find((e) => e.event === 'lifecycle.rolled-back')!.fields;
  t.like(rolledBack, { seq: 2, cause: 'unhealthy', rollbackOk: true, previousSeq: 1 });
  const health = journal(dir).filter((l) => l.startsWith('health 2'));
  t.true(health.length >= 3, `health was polled until the deadline (${health.length} checks)`);
  t.is(journal(dir).at(-1), 'rollback 2 1.0.2 1');
  t.is(readFileSync(join(dir, 'cause'), 'utf8').trim(), 'unhealthy');
  t.is(readFileSync(join(dir, 'running'), 'utf8').trim(), '1.0.1', 'the rollback step put the previous release back');
  t.is(store.installed('rpi4')?.seq, 1, 'the previous release stays recorded');
  t.like(store.lifecycle('rpi4'), { state: 'rolled-back', cause: 'unhealthy' });
  t.deepEqual(store.badReleases('rpi4').map((b) => b.releaseId), [hex(r2.releaseId)]);
  t.false(existsSync(store.keptRelease('rpi4', hex(r2.releaseId)).image), 'the rolled-back image is not kept');
  t.true(existsSync(store.keptRelease('rpi4', store.installed('rpi4')!.releaseId).image), 'the installed one is');
  t.is(failed.at(-1)?.name, 'RolledBackError');
  // Still on the air: thousands more datagrams of it, and nothing runs again.
  const linesBefore = journal(dir).length;
  await air(r2, () => false, 1500);
  t.is(journal(dir).length, linesBefore, 'no step ran again for the rolled-back release');
  t.true((agent.stats().rpi4!.dropped['rolled-back'] ?? 0) > 0, 'its datagrams are refused as rolled-back');
  t.is(events.filter((e) => e.event === 'lifecycle.received' && e.fields.seq === 2).length, 1, 'tried once');
  // A higher sequence is tried, and kept.
  await air(release(3), () => seen('lifecycle.committed', 3));
  t.is(store.installed('rpi4')?.seq, 3);
  t.deepEqual(journal(dir).slice(-3), ['activate 3 1.0.3 1', 'health 3 1.0.3 1', 'commit 3 1.0.3 1']);
});

test('a halt heard while a release is pending (activated, health not yet good) rolls it back at once, cause halted; it is never tried again', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-tried-'));
  writeFileSync(join(dir, 'running'), '1.0.0\n');
  // Health fails for seq 2 until a deadline far away: without the halt it would stay pending for 60 s.
  const { store, release, air, seen, events, key, send } = await lifecycleAgent(t, journalSteps(dir, [2], { healthTimeoutSeconds: 60 }), dir);
  await air(release(1), () => seen('lifecycle.committed', 1));
  const r2 = release(2);
  await air(r2, () => seen('lifecycle.health-failed', 2));
  const halt = encodeHaltPacket({ releaseId: r2.releaseId, signed: await signHaltWith({ model: 'rpi4', releaseId: r2.releaseId, issued: Math.floor(Date.now() / 1000) }, seedSigner(key.seed)) });
  const deadline = Date.now() + 10_000;
  while (!seen('lifecycle.rolled-back', 2) && Date.now() < deadline) {
    send(halt);
    await new Promise((r) => setTimeout(r, 100));
  }
  t.like(events.find((e) => e.event === 'halt.received')?.fields, { release: hex(r2.releaseId), effect: 'rolling-back' });
  t.like(events.find((e) => e.event === 'lifecycle.rolled-back')?.fields, { seq: 2, cause: 'halted', rollbackOk: true });
  t.is(readFileSync(join(dir, 'cause'), 'utf8').trim(), 'halted', 'the rollback step was told why');
  t.is(readFileSync(join(dir, 'running'), 'utf8').trim(), '1.0.1');
  t.is(store.installed('rpi4')?.seq, 1);
  t.deepEqual(store.badReleases('rpi4').map((b) => [b.releaseId, b.cause]), [[hex(r2.releaseId), 'halted']]);
  t.false(journal(dir).includes('commit 2 1.0.2 1'), 'never committed');
});

test('a rolled-back release stays refused after a restart (the store lists it); the lifecycle resumes nothing', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-tried-'));
  writeFileSync(join(dir, 'running'), '1.0.0\n');
  const steps = journalSteps(dir, [2]);
  const first = await lifecycleAgent(t, steps, dir);
  const r2 = first.release(2);
  await first.air(r2, () => first.seen('lifecycle.rolled-back', 2));
  await first.agent.stop();
  // A new agent on the same store, as after a reboot.
  const second = await lifecycleAgent(t, steps, dir, first.key);
  const lines = journal(dir).length;
  await second.air(r2, () => false, 1500);
  t.is(journal(dir).length, lines);
  t.true((second.agent.stats().rpi4!.dropped['rolled-back'] ?? 0) > 0);
  t.false(second.seen('lifecycle.resumed'));
});

test('a power cut after the installed record was written but before committed was: the restart runs the commit step again and ends committed', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-tried-'));
  const store = new Store(join(dir, 'store'));
  writeFileSync(join(dir, 'received.img'), 'the kept image');
  const image = store.keepRelease('rpi4', 'cd'.repeat(8), join(dir, 'received.img'), new Uint8Array([1]));
  const release = { model: 'rpi4', version: '1.0.7', seq: 7, releaseId: 'cd'.repeat(8), imagePath: image, sha256: sha256hex(readFileSync(image)) };
  store.recordInstalled({ model: 'rpi4', seq: 7, version: '1.0.7', sha256: release.sha256, releaseId: release.releaseId, installedAt: new Date().toISOString(), path: image });
  store.saveLifecycle({ state: 'pending', release, since: 100, checkFrom: 100, restarts: 0, decision: 'commit' });
  const { seen, events } = await lifecycleAgent(t, journalSteps(dir, []), dir);
  const deadline = Date.now() + 10_000;
  while (!seen('lifecycle.committed', 7) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.deepEqual(journal(dir), ['commit 7 1.0.7 7'], 'only the commit step ran again');
  t.like(events.find((e) => e.event === 'lifecycle.resumed')?.fields, { state: 'pending', action: 'commit' });
  t.is(new Store(join(dir, 'store')).lifecycle('rpi4')?.state, 'committed');
});

test('an agent that keeps restarting while a release is pending (a crash loop) rolls it back after maxRestarts starts', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-tried-'));
  const store = new Store(join(dir, 'store'));
  writeFileSync(join(dir, 'received.img'), 'the kept image');
  const image = store.keepRelease('rpi4', 'ef'.repeat(8), join(dir, 'received.img'), new Uint8Array([1]));
  const release = { model: 'rpi4', version: '1.0.8', seq: 8, releaseId: 'ef'.repeat(8), imagePath: image, sha256: sha256hex(readFileSync(image)) };
  store.saveLifecycle({ state: 'pending', release, since: 100, checkFrom: 100, restarts: 2 });
  writeFileSync(join(dir, 'previous'), '1.0.0\n');
  const { seen, events } = await lifecycleAgent(t, journalSteps(dir, [], { maxRestarts: 2 }), dir);
  const deadline = Date.now() + 10_000;
  while (!seen('lifecycle.rolled-back', 8) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.like(events.find((e) => e.event === 'lifecycle.rolling-back')?.fields, { seq: 8, cause: 'restarts' });
  t.deepEqual(journal(dir), ['rollback 8 1.0.8 none'], 'no health check: straight to the rollback step');
  t.like(new Store(join(dir, 'store')).lifecycle('rpi4'), { state: 'rolled-back', cause: 'restarts' });
});

test('without steps, an install is kept at once, as before: no lifecycle is written', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-tried-'));
  const { store, release, air, seen, events } = await lifecycleAgent(t, undefined, dir);
  await air(release(1), () => seen('release.installed', 1));
  t.is(store.installed('rpi4')?.seq, 1);
  t.false(existsSync(join(dir, 'store', 'lifecycle.json')));
  t.false(events.some((e) => e.event.startsWith('lifecycle.')));
});
