/**
 * The device's side of staged rollout in the agent's configuration (SPEC §17):
 *
 *   "deviceId": "pi-0042",                  default: /etc/machine-id, else the host name
 *   "cohorts": ["canary", "site-berlin"],
 *   "maintenanceWindows": [{ "days": "mon-fri", "start": "02:00", "end": "04:00", "tz": "UTC" }]
 *
 * Windows: receive at any time, start an install only inside one. "days" is a
 * list of days and ranges ("mon-fri", "sat,sun", "mon,wed-fri"; default every
 * day); "start" and "end" are HH:MM, and an "end" at or before "start" closes
 * the next day ("22:00"–"02:00"); "tz" is "UTC" or a fixed offset "+01:00"
 * (default UTC): a device with no time zone database decides the same.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { isJsonObject } from '../cli/config-file.js';
import { ConfigError, InvalidManifestError } from '../protocol/errors.js';
import { checkCohortName, type DeviceRollout, type MaintenanceWindow } from '../protocol/rollout.js';

const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];
const MAX_WINDOWS = 32;

function dayIndex(name: string, where: string): number {
  const i = DAYS.indexOf(name.trim().toLowerCase().slice(0, 3));
  if (i < 0 || name.trim().length < 3) throw new ConfigError(`${where}.days: "${name}" is not a day (mon, tue, wed, thu, fri, sat, sun)`);
  return i;
}

function parseDays(v: unknown, where: string): Set<number> {
  if (v === undefined) return new Set(DAYS.keys());
  if (typeof v !== 'string' || v.trim() === '') throw new ConfigError(`${where}.days must be days and ranges such as "mon-fri" or "sat,sun"`);
  const days = new Set<number>();
  for (const part of v.split(',')) {
    const [from, to, extra] = part.split('-');
    if (extra !== undefined) throw new ConfigError(`${where}.days: "${part}" is not a day or a range of days`);
    const a = dayIndex(from!, where);
    const b = to === undefined ? a : dayIndex(to, where);
    for (let d = a; ; d = (d + 1) % 7) {
      days.add(d);
      if (d === b) break;
    }
  }
  return days;
}

function parseTime(v: unknown, where: string): number {
  const m = typeof v === 'string' ? /^([01]\d|2[0-3]):([0-5]\d)$/.exec(v) : null;
  if (!m) throw new ConfigError(`${where} must be a time HH:MM (00:00-23:59), got ${JSON.stringify(v)}`);
  return Number(m[1]) * 60 + Number(m[2]);
}

function parseOffset(v: unknown, where: string): number {
  if (v === undefined || v === 'UTC' || v === 'Z') return 0;
  const m = typeof v === 'string' ? /^([+-])(\d\d):([0-5]\d)$/.exec(v) : null;
  if (!m || Number(m[2]) > 14) throw new ConfigError(`${where}.tz must be "UTC" or an offset such as "+01:00", got ${JSON.stringify(v)}`);
  return (m[1] === '-' ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3]));
}

export function parseMaintenanceWindows(v: unknown, where = 'config.maintenanceWindows'): MaintenanceWindow[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.length > MAX_WINDOWS) throw new ConfigError(`${where} must be an array of at most ${MAX_WINDOWS} windows`);
  return v.map((w, i) => {
    const at = `${where}[${i}]`;
    if (!isJsonObject(w)) throw new ConfigError(`${at} must be an object with "start" and "end"`);
    for (const k of Object.keys(w)) if (!['days', 'start', 'end', 'tz'].includes(k)) throw new ConfigError(`${at}: unknown field "${k}" (known: days, start, end, tz)`);
    return { days: parseDays(w.days, at), start: parseTime(w.start, `${at}.start`), end: parseTime(w.end, `${at}.end`), offset: parseOffset(w.tz, at) };
  });
}

export function parseCohorts(v: unknown, where = 'config.cohorts'): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || !v.every((c) => typeof c === 'string')) throw new ConfigError(`${where} must be an array of cohort names`);
  try {
    return [...new Set((v as string[]).map(checkCohortName))];
  } catch (err) {
    if (err instanceof InvalidManifestError) throw new ConfigError(`${where}: ${err.message}`);
    throw err;
  }
}

/** The configured id, else systemd's /etc/machine-id (stable for the life of an installed system), else the host name. */
export function defaultDeviceId(machineIdPath = '/etc/machine-id'): string {
  try {
    const id = readFileSync(machineIdPath, 'utf8').trim();
    if (id !== '') return id;
  } catch {
    // no machine id: a container, or a system without systemd
  }
  return hostname();
}

export function resolveRollout(file: Record<string, unknown>, flags: { deviceId?: string; cohort?: string[] }): DeviceRollout {
  const fileId = file.deviceId;
  if (fileId !== undefined && (typeof fileId !== 'string' || fileId.trim() === '' || Buffer.byteLength(fileId) > 256)) throw new ConfigError('config.deviceId must be a non-empty string of at most 256 bytes');
  if (flags.deviceId !== undefined && (flags.deviceId.trim() === '' || Buffer.byteLength(flags.deviceId) > 256)) throw new ConfigError('--device-id must be a non-empty string of at most 256 bytes');
  return {
    deviceId: flags.deviceId ?? (fileId as string | undefined) ?? defaultDeviceId(),
    cohorts: flags.cohort ? parseCohorts(flags.cohort, '--cohort') : parseCohorts(file.cohorts),
    windows: parseMaintenanceWindows(file.maintenanceWindows),
  };
}
