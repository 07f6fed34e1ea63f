/**
 * Staged rollout decided on each device (protocol/rollout.ts, SPEC §17), with
 * the clock injected: a fleet of simulated devices on a ramp installs at times
 * spread uniformly (Kolmogorov–Smirnov, computed here), each at the same time
 * in every run; a halt stops the rest; windows and cohorts hold.
 */
import test from 'ava';
import * as ed25519 from '../protocol/ed25519.js';
import { createHash } from 'node:crypto';
import { decodeManifest, encodeManifest } from '../protocol/manifest.js';
import { decideRollout, nextWindowOpening, rampDraw, rampFraction, type DeviceRollout, type MaintenanceWindow, type RolloutPolicy } from '../protocol/rollout.js';
import { parseMaintenanceWindows } from '../device-agent/rollout-config.js';
import { InvalidManifestError, ConfigError } from '../protocol/errors.js';
import { decodeCbor, encodeCbor } from '../protocol/cbor.js';
import { exampleRelease } from './helpers/releases.js';

const START = 1_800_000_000;

test.before(() => ed25519.ready());
const HOUR = 3600;
const FLEET = 1000;
const releaseId = createHash('sha256').update('release seq 7').digest().subarray(0, 8);
const device = (i: number, extra: Partial<DeviceRollout> = {}): DeviceRollout => ({ deviceId: `pi-${String(i).padStart(4, '0')}`, cohorts: [], windows: [], ...extra });
const ramp: RolloutPolicy = { ramp: { start: START, duration: HOUR } };

/** The install time each device decides, seen from before the ramp starts. */
function installTimes(policy: RolloutPolicy, now = START - 60): number[] {
  return Array.from({ length: FLEET }, (_, i) => {
    const d = decideRollout(policy, releaseId, device(i), false, now);
    if (!d.install) throw new Error(`device ${i} would never install`);
    return d.at;
  });
}

/** Kolmogorov–Smirnov statistic of samples in [0, 1) against the uniform distribution. */
function ksUniform(samples: number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  const n = sorted.length;
  let d = 0;
  sorted.forEach((x, i) => {
    d = Math.max(d, (i + 1) / n - x, x - i / n);
  });
  return d;
}

test('1,000 devices on a 1-hour ramp install uniformly over it (Kolmogorov–Smirnov at α = 0.01)', (t) => {
  const times = installTimes(ramp);
  t.true(times.every((x) => x >= START && x < START + HOUR), 'every install inside the ramp');
  const d = ksUniform(times.map((x) => (x - START + 0.5) / HOUR));
  // The asymptotic critical value at α = 0.01 is 1.628 / √n.
  const critical = 1.628 / Math.sqrt(FLEET);
  t.log(`KS D = ${d.toFixed(4)}, critical ${critical.toFixed(4)}`);
  t.true(d < critical, `D = ${d} ≥ ${critical}: not uniform`);
  // Not all bunched: every tenth of the hour gets between 60 and 140 devices.
  const tenths = Array.from({ length: 10 }, (_, k) => times.filter((x) => Math.floor((x - START) / 360) === k).length);
  t.true(tenths.every((n) => n >= 60 && n <= 140), `tenths: ${tenths.join(' ')}`);
});

test('each device installs at the same time in every run, whatever the time it decides at', (t) => {
  const first = installTimes(ramp);
  t.deepEqual(installTimes(ramp), first);
  t.deepEqual(installTimes(ramp, START + 10), first.map((x) => Math.max(x, START + 10)), 'deciding later changes nothing but the past');
  // The exact integer form: ⌊x · duration / 2^64⌋.
  for (const i of [0, 1, 999]) t.is(first[i], START + Number((rampDraw(device(i).deviceId, releaseId) * BigInt(HOUR)) >> 64n));
  // Another release reshuffles the fleet: the first devices of one release are not always the first.
  const other = createHash('sha256').update('release seq 8').digest().subarray(0, 8);
  const early = (id: Uint8Array): Set<number> => new Set(Array.from({ length: FLEET }, (_, i) => i).filter((i) => rampFraction(device(i).deviceId, id) < 0.1));
  const overlap = [...early(releaseId)].filter((i) => early(other).has(i)).length;
  t.true(overlap < 30, `${overlap} devices early in both releases`);
});

test('a halt at 30% of the ramp stops the remaining 70%', (t) => {
  const halted = new Set<number>();
  const installed = new Map<number, number>();
  const haltAt = START + 0.3 * HOUR;
  // The injected clock walks the ramp in 10 s steps; each device looks at its release every step, as the agent's timer does.
  let lastLook = START;
  for (let now = START - 10; now <= START + 2 * HOUR; now += 10) {
    if (now < haltAt) lastLook = now;
    for (let i = 0; i < FLEET; i++) {
      if (installed.has(i)) continue;
      if (now >= haltAt) halted.add(i);
      const d = decideRollout(ramp, releaseId, device(i), halted.has(i), now);
      if (d.install && d.at <= now) installed.set(i, now);
    }
  }
  const share = installed.size / FLEET;
  t.log(`${installed.size} installed before the halt`);
  t.true(share > 0.25 && share < 0.35, `${installed.size} of ${FLEET} installed`);
  t.true([...installed.values()].every((at) => at < haltAt), 'nothing installed after the halt');
  // Exactly the devices whose ramp point came by their last look before the halt.
  for (let i = 0; i < FLEET; i++) t.is(installed.has(i), START + Number((rampDraw(device(i).deviceId, releaseId) * BigInt(HOUR)) >> 64n) <= lastLook, `device ${i}`);
  t.is(decideRollout(ramp, releaseId, device(0), true, START).install, false);
});

test('cohorts: a release for canary installs on canary devices only; without cohorts, on every device', (t) => {
  const policy: RolloutPolicy = { cohorts: ['canary', 'lab'] };
  t.deepEqual(decideRollout(policy, releaseId, device(1, { cohorts: ['canary'] }), false, START), { install: true, at: START, reason: 'now' });
  t.deepEqual(decideRollout(policy, releaseId, device(2, { cohorts: ['site-a', 'lab'] }), false, START), { install: true, at: START, reason: 'now' });
  t.deepEqual(decideRollout(policy, releaseId, device(3, { cohorts: ['site-a'] }), false, START), { install: false, reason: 'cohort' });
  t.deepEqual(decideRollout(policy, releaseId, device(4), false, START), { install: false, reason: 'cohort' });
  t.deepEqual(decideRollout(undefined, releaseId, device(5, { cohorts: ['canary'] }), false, START), { install: true, at: START, reason: 'now' });
  // A cohort and a ramp: the ramp applies to the cohort's devices.
  const both = decideRollout({ ...ramp, cohorts: ['canary'] }, releaseId, device(6, { cohorts: ['canary'] }), false, START - 1);
  t.true(both.install && both.at >= START && both.reason === 'ramp');
});

test('maintenance windows: installs start only inside a window, on its days, at its offset', (t) => {
  const windows = parseMaintenanceWindows([{ days: 'mon-fri', start: '02:00', end: '04:00', tz: 'UTC' }]);
  // 1800000000 is Friday 2027-01-15 08:00:00 UTC.
  const friday8 = 1_800_000_000;
  t.is(new Date(friday8 * 1000).getUTCDay(), 5);
  const next = nextWindowOpening(windows, friday8);
  t.is(new Date(next * 1000).toISOString(), '2027-01-18T02:00:00.000Z', 'Friday after the window: Monday 02:00');
  const inside = Date.UTC(2027, 0, 18, 3, 59, 59) / 1000;
  t.is(nextWindowOpening(windows, inside), inside);
  t.is(new Date(nextWindowOpening(windows, inside + 1) * 1000).toISOString(), '2027-01-19T02:00:00.000Z', 'the window closes at 04:00');
  // Over midnight, at an offset: 22:00-02:00 at +02:00 is 20:00-00:00 UTC.
  const night = parseMaintenanceWindows([{ start: '22:00', end: '02:00', tz: '+02:00' }]);
  t.is(new Date(nextWindowOpening(night, Date.UTC(2027, 0, 18, 12) / 1000) * 1000).toISOString(), '2027-01-18T20:00:00.000Z');
  const lateNight = Date.UTC(2027, 0, 18, 23, 30) / 1000;
  t.is(nextWindowOpening(night, lateNight), lateNight, '01:30 local is still inside');
  // The fleet on a ramp with a window: every device installs inside the window, and says why.
  const d = decideRollout(ramp, releaseId, device(7, { windows }), false, friday8 - 3600 * 6);
  t.true(d.install && d.reason === 'window');
  const times = Array.from({ length: FLEET }, (_, i) => decideRollout({ ramp: { start: friday8, duration: 3 * 86400 } }, releaseId, device(i, { windows }), false, friday8));
  for (const x of times) {
    if (!x.install) return t.fail('a device never installs');
    const at = new Date(x.at * 1000);
    if (!(at.getUTCDay() >= 1 && at.getUTCDay() <= 5 && at.getUTCHours() >= 2 && at.getUTCHours() < 4)) return t.fail(`installs at ${at.toISOString()}`);
  }
  t.pass();
});

test('activation with jitter: no device before the time, spread over the jitter', (t) => {
  const policy: RolloutPolicy = { activation: { at: START, jitter: 1800 } };
  const times = installTimes(policy);
  t.true(times.every((x) => x >= START && x < START + 1800));
  t.true(ksUniform(times.map((x) => (x - START + 0.5) / 1800)) < 1.628 / Math.sqrt(FLEET));
  const d = decideRollout(policy, releaseId, device(1), false, START + 3600);
  t.deepEqual(d, { install: true, at: START + 3600, reason: 'now' });
});

test('manifest key 10: round trip, optional, and hostile policies refused', (t) => {
  const release = exampleRelease();
  const policy: RolloutPolicy = { ramp: { start: START, duration: HOUR }, cohorts: ['canary'], activation: { at: START + 60, jitter: 600 } };
  const withPolicy = { ...release.manifest, rollout: policy };
  t.deepEqual(decodeManifest(encodeManifest(withPolicy)).rollout, policy);
  t.is(decodeManifest(encodeManifest(release.manifest)).rollout, undefined);
  t.is(Buffer.compare(encodeManifest({ ...release.manifest }), encodeManifest(release.manifest)), 0);
  const withKey10 = (value: unknown): Uint8Array => {
    const map = new Map(decodeCbor(encodeManifest(release.manifest), 'manifest') as Map<number, unknown>);
    map.set(10, value);
    return encodeCbor(map);
  };
  for (const bad of [new Map(), new Map([[1, [START]]]), new Map([[1, [START, -1]]]), new Map([[2, []]]), new Map([[2, ['ok', 'ok']]]), new Map([[2, ['bad name']]]),
    new Map([[2, Array.from({ length: 33 }, (_, i) => `c${i}`)]]), new Map([[9, 1]]), [1, 2], 'x']) {
    t.throws(() => decodeManifest(withKey10(bad)), { instanceOf: InvalidManifestError }, JSON.stringify(bad, (_k, v: unknown) => (v instanceof Map ? [...v] : v)));
  }
});

test('maintenance window configuration errors name the field', (t) => {
  t.throws(() => parseMaintenanceWindows([{ start: '25:00', end: '04:00' }]), { instanceOf: ConfigError, message: /maintenanceWindows\[0\]\.start/ });
  t.throws(() => parseMaintenanceWindows([{ days: 'mon-funday', start: '01:00', end: '04:00' }]), { instanceOf: ConfigError, message: /days/ });
  t.throws(() => parseMaintenanceWindows([{ start: '01:00', end: '04:00', tz: 'Europe/Berlin' }]), { instanceOf: ConfigError, message: /tz/ });
  t.throws(() => parseMaintenanceWindows([{ start: '01:00', end: '04:00', when: 'now' }]), { instanceOf: ConfigError, message: /unknown field "when"/ });
  const w: MaintenanceWindow[] = parseMaintenanceWindows([{ days: 'sat,sun', start: '00:00', end: '00:00' }]);
  t.deepEqual([...w[0]!.days].sort(), [0, 6]);
});
