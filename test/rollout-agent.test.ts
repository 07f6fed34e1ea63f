/**
 * The agent's rollout gate (device-agent/rollout-gate.ts) with an in-memory
 * transport and an injected clock: a complete release waits for its ramp
 * point and installs when the clock gets there; a halt drops a waiting
 * release, and the device still refuses it after a restart; a release for
 * other cohorts is not even received. Seconds, not the ramp's hour.
 */
import test from 'ava';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from '../device-agent/agent.js';
import { rolloutStatus } from '../device-agent/rollout-gate.js';
import { Store, type InstalledRecord } from '../device-agent/store.js';
import { Carousel } from '../carousel/carousel.js';
import { signHaltWith } from '../protocol/halt.js';
import { hex } from '../protocol/hex.js';
import type { LogEvent, LogFields, Logger } from '../protocol/log.js';
import { encodeHaltPacket } from '../protocol/packet.js';
import { decideRollout, type DeviceRollout, type RolloutPolicy } from '../protocol/rollout.js';
import { seedSigner } from '../protocol/signer.js';
import { buildRelease, type Release } from '../server/release.js';
import { MemoryHub, MemoryTransport } from '../transport/memory.js';
import { makeImage, makeKey, type TestKey } from './helpers/fixtures.js';

const T = 1_800_000_000;
const channel = { name: 'fw/cam', group: 'ff1e::7', port: 4242 };

function recorder(): { lines: Array<{ event: LogEvent; fields: LogFields }>; log: Logger } {
  const lines: Array<{ event: LogEvent; fields: LogFields }> = [];
  const log: Logger = { event: (event, fields) => void lines.push({ event, fields }), child: () => log };
  return { lines, log };
}

class RecordingInstaller {
  readonly description = 'recording test installer';
  readonly installs: Array<{ seq: number; at: number }> = [];
  constructor(private readonly clock: () => number) {}
  async install(req: { seq: number }): Promise<void> {
    this.installs.push({ seq: req.seq, at: this.clock() });
  }
}

interface Rig {
  agent: Agent;
  installer: RecordingInstaller;
  lines: Array<{ event: LogEvent; fields: LogFields }>;
  clock: { now: number };
  send: (d: Uint8Array) => void;
  store: string;
}

async function rig(t: { teardown: (fn: () => unknown) => void }, key: TestKey, device: DeviceRollout, store = join(mkdtempSync(join(tmpdir(), 'fwcast-rollout-')), 'store'), clock = { now: T }): Promise<Rig> {
  const hub = new MemoryHub();
  const installer = new RecordingInstaller(() => clock.now);
  const { lines, log } = recorder();
  const agent = new Agent({
    models: [{ model: 'cam', channel, installer }], trusted: [key], store: new Store(store), transport: new MemoryTransport(hub), log,
    now: () => clock.now, rollout: device, rolloutRecheckSeconds: 0.02,
  });
  t.teardown(() => agent.stop());
  await agent.start();
  const publisher = new MemoryTransport(hub);
  await publisher.open();
  return { agent, installer, lines, clock, send: (d) => publisher.send(channel, d), store };
}

/** Sends the carousel until `done`, yielding to timers and the store now and then; bounded. */
async function pump(carousel: Carousel | undefined, send: (d: Uint8Array) => void, done: () => boolean, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (let i = 0; !done() && Date.now() < deadline; i++) {
    if (carousel) send(carousel.next());
    if (!carousel || i % 100 === 0) await new Promise((r) => setTimeout(r, carousel ? 2 : 10));
  }
}

function release(key: TestKey, seq: number, rollout?: RolloutPolicy, expires?: number): Release {
  return buildRelease({ image: makeImage(60_000, seq), seed: key.seed, model: 'cam', version: `1.${seq}`, seq, created: T - 100, ...(rollout ? { rollout } : {}), ...(expires !== undefined ? { expires } : {}) });
}

test('a complete release waits for its ramp point, then installs as the clock reaches it', async (t) => {
  const key = await makeKey();
  const device = { deviceId: 'pi-0001', cohorts: [], windows: [] };
  const rel = release(key, 1, { ramp: { start: T, duration: 3600 } });
  const planned = decideRollout(rel.manifest.rollout, rel.releaseId, device, false, T);
  if (!planned.install) return t.fail();
  t.true(planned.at > T, `this device's point is ${planned.at - T} s into the ramp`);
  const r = await rig(t, key, device);
  await pump(new Carousel({ ...rel }), r.send, () => r.lines.some((l) => l.event === 'rollout.scheduled' && l.fields.reason === 'ramp' && l.fields.installAt !== undefined && r.agent.progress().length === 0));
  const scheduled = r.lines.find((l) => l.event === 'rollout.scheduled')!;
  t.is(scheduled.fields.installAt, new Date(planned.at * 1000).toISOString());
  t.like(rolloutStatus(r.store).scheduled.cam, { release: hex(rel.releaseId), reason: 'ramp', installAt: new Date(planned.at * 1000).toISOString() });
  // Received, complete, and waiting: nothing installs while the clock stays short of the point.
  r.clock.now = planned.at - 1;
  await new Promise((res) => setTimeout(res, 200));
  t.deepEqual(r.installer.installs, []);
  const installed = new Promise<InstalledRecord>((res) => r.agent.once('installed', res));
  r.clock.now = planned.at;
  t.is((await installed).seq, 1);
  t.deepEqual(r.installer.installs, [{ seq: 1, at: planned.at }]);
  t.is(rolloutStatus(r.store).scheduled.cam, undefined, 'the schedule is over once it installs');
});

test('regression: a release that expires while it waits for its ramp point is not installed when the point comes', async (t) => {
  const key = await makeKey();
  const device = { deviceId: 'pi-0003', cohorts: [], windows: [] };
  // The ramp starts in a day; the release expires in an hour.
  const rel = release(key, 4, { ramp: { start: T + 86400, duration: 3600 } }, T + 3600);
  const r = await rig(t, key, device);
  await pump(new Carousel({ ...rel }), r.send, () => r.lines.some((l) => l.event === 'rollout.scheduled') && r.agent.progress().length === 0);
  r.clock.now = T + 86400 + 3600;
  await pump(undefined, r.send, () => r.lines.some((l) => l.event === 'rollout.skipped'), 5000);
  t.like(r.lines.find((l) => l.event === 'rollout.skipped')!.fields, { release: hex(rel.releaseId), reason: 'expired' });
  await new Promise((res) => setTimeout(res, 200));
  t.deepEqual(r.installer.installs, []);
});

test('a halt drops a waiting release, and after a restart the device still refuses it', async (t) => {
  const key = await makeKey();
  const device = { deviceId: 'pi-0002', cohorts: [], windows: [] };
  // A ramp that starts in a day: every device waits.
  const rel = release(key, 2, { ramp: { start: T + 86400, duration: 3600 } });
  const r = await rig(t, key, device);
  const carousel = new Carousel({ ...rel });
  await pump(carousel, r.send, () => r.lines.some((l) => l.event === 'rollout.scheduled') && r.agent.progress().length === 0);
  const halt = encodeHaltPacket({ releaseId: rel.releaseId, signed: await signHaltWith({ model: 'cam', releaseId: rel.releaseId, issued: T }, seedSigner(key.seed)) });
  r.send(halt);
  await pump(undefined, r.send, () => r.lines.some((l) => l.event === 'halt.received'), 5000);
  t.like(r.lines.find((l) => l.event === 'halt.received')!.fields, { release: hex(rel.releaseId), effect: 'dropped' });
  t.like(r.lines.find((l) => l.event === 'rollout.skipped')!.fields, { release: hex(rel.releaseId), reason: 'halted' });
  t.like(rolloutStatus(r.store).scheduled.cam, { reason: 'halted' });
  t.deepEqual(rolloutStatus(r.store).halts.cam!.map((h) => h.release), [hex(rel.releaseId)]);
  t.deepEqual(r.agent.rollout.haltDatagrams('cam').map(hex), [hex(halt)], 'the signed halt is kept, for a relay to carry onward');
  // Past the ramp: nothing installs.
  r.clock.now = T + 2 * 86400;
  for (let i = 0; i < 300; i++) r.send(carousel.next());
  await new Promise((res) => setTimeout(res, 200));
  t.deepEqual(r.installer.installs, []);
  await r.agent.stop();

  // A restart with the same store, past the ramp, hearing the release and no halt.
  const again = await rig(t, key, device, r.store, { now: T + 2 * 86400 });
  await pump(carousel, again.send, () => (again.agent.stats().cam!.dropped.halted ?? 0) > 50, 5000);
  t.true((again.agent.stats().cam!.dropped.halted ?? 0) > 50, 'its datagrams are dropped as halted');
  t.deepEqual(again.installer.installs, []);
  t.is(again.agent.progress().length, 0, 'it is not received');
  // A newer release, not halted, installs.
  const next = release(key, 3);
  const installed = new Promise<InstalledRecord>((res) => again.agent.once('installed', res));
  await pump(new Carousel({ ...next }), again.send, () => again.installer.installs.length > 0);
  t.is((await installed).seq, 3);
});

test('a release for other cohorts is not received; the cohort\'s device installs it', async (t) => {
  const key = await makeKey();
  const rel = release(key, 4, { cohorts: ['canary'] });
  const outsider = await rig(t, key, { deviceId: 'pi-0003', cohorts: ['site-a'], windows: [] });
  const canary = await rig(t, key, { deviceId: 'pi-0004', cohorts: ['canary'], windows: [] });
  const c1 = new Carousel({ ...rel });
  const c2 = new Carousel({ ...rel });
  await pump(c2, canary.send, () => canary.installer.installs.length > 0);
  t.deepEqual(canary.installer.installs.map((i) => i.seq), [4]);
  await pump(c1, outsider.send, () => (outsider.agent.stats().cam!.dropped['not-in-cohort'] ?? 0) > 100);
  t.deepEqual(outsider.installer.installs, []);
  t.like(outsider.lines.find((l) => l.event === 'rollout.skipped')!.fields, { reason: 'cohort' });
  t.is(outsider.agent.stats().cam!.segmentsDecoded, 0, 'nothing of it was decoded');
});
