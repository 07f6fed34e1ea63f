/**
 * Staged rollout without a back-channel (SPEC §17): the policy travels in the
 * signed manifest (key 10), and each device decides on its own, from its id,
 * its cohorts, its maintenance windows and the halts it has heard, when it may
 * start installing. Pure: the caller passes `now` (Unix seconds).
 *
 *   rollout = { ? 1: [start, duration],     ramp: device d installs at start + ⌊x·duration / 2^64⌋
 *               ? 2: [+ cohort],            the groups the release is for (absent: every device)
 *               ? 3: [at, jitter] }         activation: not before at + ⌊y·jitter / 2^64⌋
 *
 *   x = SHA-256("fwcast-ramp\0"   || device id || release id)[0..8) as a big-endian uint64
 *   y = SHA-256("fwcast-jitter\0" || device id || release id)[0..8) as a big-endian uint64
 *
 * The release id has a fixed length (8 bytes) at the end, so the device id
 * (UTF-8, any length) needs no length prefix. Integer arithmetic only: a C
 * device computes the same second.
 */
import { createHash } from 'node:crypto';
import { InvalidManifestError } from './errors.js';
import { RELEASE_ID_SIZE } from './packet.js';
import { quote } from './quote.js';

export const MAX_COHORTS = 32;
const COHORT_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const R = { ramp: 1, cohorts: 2, activation: 3 } as const;
const RAMP_DOMAIN = Buffer.from('fwcast-ramp\0', 'latin1');
const JITTER_DOMAIN = Buffer.from('fwcast-jitter\0', 'latin1');
const TWO_64 = 1n << 64n;

export interface RolloutPolicy {
  /** Devices install spread evenly over [start, start + duration) (Unix seconds, seconds). */
  ramp?: { start: number; duration: number };
  /** The cohorts the release is for; absent: every device. */
  cohorts?: string[];
  /** No device installs before `at`; each waits a further share of `jitter` seconds of its own. */
  activation?: { at: number; jitter: number };
}

export function checkCohortName(name: string): string {
  if (!COHORT_PATTERN.test(name)) throw new InvalidManifestError(`cohort ${quote(name)} must be 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit`);
  return name;
}

export function encodeRolloutPolicy(p: RolloutPolicy): Map<number, unknown> {
  const map = new Map<number, unknown>();
  if (p.ramp) map.set(R.ramp, [p.ramp.start, p.ramp.duration]);
  if (p.cohorts) map.set(R.cohorts, [...p.cohorts]);
  if (p.activation) map.set(R.activation, [p.activation.at, p.activation.jitter]);
  return map;
}

function seconds(value: unknown, name: string): number {
  if (typeof value === 'bigint' && value >= 0n && value <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(value);
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) throw new InvalidManifestError(`rollout field "${name}" must be an integer number of seconds, got ${quote(value)}`);
  return value;
}

function pair(value: unknown, name: string, a: string, b: string): [number, number] {
  if (!Array.isArray(value) || value.length !== 2) throw new InvalidManifestError(`rollout field "${name}" must be [${a}, ${b}]`);
  return [seconds(value[0], `${name}.${a}`), seconds(value[1], `${name}.${b}`)];
}

/** Decodes manifest key 10; unknown keys are refused, since a device that ignored a restriction would install too early. */
export function decodeRolloutPolicy(value: unknown): RolloutPolicy {
  if (!(value instanceof Map) || value.size === 0) throw new InvalidManifestError('manifest rollout policy (key 10) must be a non-empty map');
  for (const k of value.keys()) if (k !== R.ramp && k !== R.cohorts && k !== R.activation) throw new InvalidManifestError(`manifest rollout policy has unknown key ${quote(k)}`);
  const policy: RolloutPolicy = {};
  if (value.has(R.ramp)) {
    const [start, duration] = pair(value.get(R.ramp), 'ramp', 'start', 'duration');
    policy.ramp = { start, duration };
  }
  if (value.has(R.cohorts)) {
    const list: unknown = value.get(R.cohorts);
    if (!Array.isArray(list) || list.length === 0 || list.length > MAX_COHORTS) throw new InvalidManifestError(`rollout field "cohorts" must list 1..${MAX_COHORTS} cohort names`);
    const names = list.map((c) => {
      if (typeof c !== 'string') throw new InvalidManifestError(`rollout cohort ${quote(c)} is not a text string`);
      return checkCohortName(c);
    });
    if (new Set(names).size !== names.length) throw new InvalidManifestError('rollout field "cohorts" lists a cohort twice');
    policy.cohorts = names;
  }
  if (value.has(R.activation)) {
    const [at, jitter] = pair(value.get(R.activation), 'activation', 'at', 'jitter');
    policy.activation = { at, jitter };
  }
  return policy;
}

function draw(domain: Uint8Array, deviceId: string, releaseId: Uint8Array): bigint {
  if (releaseId.length !== RELEASE_ID_SIZE) throw new RangeError(`release id must be ${RELEASE_ID_SIZE} bytes`);
  const digest = createHash('sha256').update(domain).update(deviceId, 'utf8').update(releaseId).digest();
  return digest.readBigUInt64BE(0);
}

/** x of SPEC §17.3: this device's place in the release's ramp, a uint64. */
export function rampDraw(deviceId: string, releaseId: Uint8Array): bigint {
  return draw(RAMP_DOMAIN, deviceId, releaseId);
}

/** y of SPEC §17.3: this device's share of the activation jitter, a uint64. */
export function jitterDraw(deviceId: string, releaseId: Uint8Array): bigint {
  return draw(JITTER_DOMAIN, deviceId, releaseId);
}

/** u = x / 2^64 in [0, 1), for tests and display; decisions use the exact integer form. */
export function rampFraction(deviceId: string, releaseId: Uint8Array): number {
  return Number(rampDraw(deviceId, releaseId)) / 2 ** 64;
}

/** ⌊draw · span / 2^64⌋: exact, and below span. */
const share = (x: bigint, span: number): number => Number((x * BigInt(span)) / TWO_64);

/** A daily time range on some weekdays, at a fixed offset from UTC. */
export interface MaintenanceWindow {
  /** Weekdays the window opens on, 0 = Sunday … 6 = Saturday. */
  days: ReadonlySet<number>;
  /** Minutes after local midnight the window opens and closes; end ≤ start: it closes the next day. */
  start: number;
  end: number;
  /** Minutes east of UTC. */
  offset: number;
}

const DAY = 86_400;

/**
 * The first moment at or after `t` inside one of `windows` (Unix seconds);
 * `t` itself when there are no windows or it is inside one.
 */
export function nextWindowOpening(windows: readonly MaintenanceWindow[], t: number): number {
  if (windows.length === 0) return t;
  let best = Infinity;
  for (const w of windows) {
    const local = t + w.offset * 60;
    const today = Math.floor(local / DAY);
    const length = ((w.end - w.start + 24 * 60 - 1) % (24 * 60) + 1) * 60;
    // An opening up to a day before may still be open; one within a week after is the next.
    for (let d = today - 1; d <= today + 7; d++) {
      const weekday = (((d + 4) % 7) + 7) % 7; // 1970-01-01 was a Thursday
      if (!w.days.has(weekday)) continue;
      const opens = d * DAY + w.start * 60 - w.offset * 60;
      const closes = opens + length;
      if (t >= opens && t < closes) return t;
      if (opens > t) {
        best = Math.min(best, opens);
        break;
      }
    }
  }
  return best;
}

/** Why a device installs when it does: the constraint that set the time, or why it never will. */
export type RolloutReason = 'now' | 'ramp' | 'activation' | 'window' | 'cohort' | 'halted';

export type RolloutDecision =
  | { install: true; at: number; reason: Exclude<RolloutReason, 'cohort' | 'halted'> }
  | { install: false; reason: 'cohort' | 'halted' };

export interface DeviceRollout {
  deviceId: string;
  cohorts: readonly string[];
  windows: readonly MaintenanceWindow[];
}

/** Whether a release with this policy is for a device in `cohorts` at all. */
export function inCohort(policy: RolloutPolicy | undefined, cohorts: readonly string[]): boolean {
  return !policy?.cohorts || policy.cohorts.some((c) => cohorts.includes(c));
}

/**
 * When this device may start installing the release (SPEC §17.4): never if it
 * was halted or is for other cohorts; otherwise at the latest of its ramp
 * point and its activation point, moved to the next maintenance window. `at`
 * ≤ now means at once, with reason "now".
 */
export function decideRollout(policy: RolloutPolicy | undefined, releaseId: Uint8Array, device: DeviceRollout, halted: boolean, now: number): RolloutDecision {
  if (halted) return { install: false, reason: 'halted' };
  if (!inCohort(policy, device.cohorts)) return { install: false, reason: 'cohort' };
  let at = now;
  let reason: 'now' | 'ramp' | 'activation' | 'window' = 'now';
  if (policy?.ramp) {
    const t = policy.ramp.start + share(rampDraw(device.deviceId, releaseId), policy.ramp.duration);
    if (t > at) [at, reason] = [t, 'ramp'];
  }
  if (policy?.activation) {
    const t = policy.activation.at + share(jitterDraw(device.deviceId, releaseId), policy.activation.jitter);
    if (t > at) [at, reason] = [t, 'activation'];
  }
  const opening = nextWindowOpening(device.windows, at);
  if (opening > at) [at, reason] = [opening, 'window'];
  return { install: true, at, reason };
}
