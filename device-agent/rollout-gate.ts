/**
 * The agent's staged-rollout gate (SPEC §17): for a complete release it says
 * install now, wait until T, or never (halted, or for other cohorts), and it
 * keeps what must survive a restart in STORE/rollout.json, written atomically:
 *
 *   { "format": 1,
 *     "halts": { "<model>": [{ "release": "<id>", "issued": 1765000000, "kid": "…", "signed": "<hex>" }, …] },
 *     "scheduled": { "<model>": { "release": "<id>", "version": "…", "seq": 7, "installAt": "<ISO>", "reason": "ramp" } } }
 *
 * The halts are the device's memory of what it must never install; the
 * schedule is what `fwcast-agent status` shows. The decision itself is
 * protocol/rollout.ts's, a pure function of the signed policy and the device.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, StoreError } from '../protocol/errors.js';
import type { VerifiedHalt } from '../protocol/halt.js';
import { encodeHaltPacket } from '../protocol/packet.js';
import { hex } from '../protocol/hex.js';
import { errorFields, type Logger } from '../protocol/log.js';
import type { VerifiedManifest } from '../protocol/manifest.js';
import { decideRollout, type DeviceRollout, type RolloutDecision, type RolloutReason } from '../protocol/rollout.js';
import { writeFileAtomic } from '../storage/durable-file.js';

/** Halts kept per model: older ones name releases long superseded. */
export const MAX_HALTS_PER_MODEL = 64;
/** A waiting release is looked at again at least this often (the clock may jump; a window may be configured anew). */
export const RECHECK_SECONDS = 60;

export interface HaltRecord {
  release: string;
  issued: number;
  kid: string;
  /** The signed halt (hex): what a relay carries onward (haltDatagrams). */
  signed: string;
}

export interface ScheduleRecord {
  release: string;
  version: string;
  seq: number;
  /** ISO 8601; absent when the release will never be installed here. */
  installAt?: string;
  reason: RolloutReason;
}

interface RolloutFile {
  format: 1;
  halts: Record<string, HaltRecord[]>;
  scheduled: Record<string, ScheduleRecord>;
}

const FILE = 'rollout.json';

function readRolloutFile(storeDir: string): RolloutFile {
  const path = join(storeDir, FILE);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return { format: 1, halts: {}, scheduled: {} };
  }
  let parsed: Partial<RolloutFile> | null;
  try {
    parsed = JSON.parse(text) as Partial<RolloutFile> | null;
  } catch (err) {
    throw new ConfigError(`${path} is corrupt (${(err as Error).message}); remove it to forget halts and schedules`);
  }
  if (typeof parsed !== 'object' || parsed === null || parsed.format !== 1 || typeof parsed.halts !== 'object' || typeof parsed.scheduled !== 'object') {
    throw new ConfigError(`${path} is corrupt (unknown format); remove it to forget halts and schedules`);
  }
  return parsed as RolloutFile;
}

export class RolloutGate {
  #file: RolloutFile;

  constructor(readonly storeDir: string, readonly device: DeviceRollout, private readonly log: Logger) {
    this.#file = readRolloutFile(storeDir);
  }

  /** Writes the file; a store that cannot be written is logged, and what was decided holds in memory until a restart. */
  #save(model: string): void {
    const path = join(this.storeDir, FILE);
    try {
      writeFileAtomic(path, JSON.stringify(this.#file, null, 2) + '\n');
    } catch (err) {
      const error = StoreError.wrap(err, path, 'write');
      this.log.event('store.failed', { model, store: this.storeDir, path, code: error instanceof StoreError ? String(error.facts.code) : 'unknown', ...errorFields(error) },
        `${path} could not be written (${(error as Error).message}): halts and schedules hold until the agent restarts`);
    }
  }

  /** Release ids (hex) halted for `model`. */
  halts(model: string): string[] {
    return (this.#file.halts[model] ?? []).map((h) => h.release);
  }

  isHalted(model: string, releaseId: string): boolean {
    return this.halts(model).includes(releaseId);
  }

  /** The HALT datagrams of the halts kept for `model`, for a relay to carry onward with its release. */
  haltDatagrams(model: string): Uint8Array[] {
    return (this.#file.halts[model] ?? []).filter((h) => typeof h.signed === 'string')
      .map((h) => encodeHaltPacket({ releaseId: Buffer.from(h.release, 'hex'), signed: Buffer.from(h.signed, 'hex') }));
  }

  /** Keeps a verified halt; false if it was known already. */
  recordHalt(v: VerifiedHalt): boolean {
    const { halt } = v;
    const release = hex(halt.releaseId);
    const list = this.#file.halts[halt.model] ?? [];
    if (list.some((h) => h.release === release)) return false;
    const record: HaltRecord = { release, issued: halt.issued, kid: hex(v.kid), signed: hex(v.signed) };
    this.#file = { ...this.#file, halts: { ...this.#file.halts, [halt.model]: [...list, record].slice(-MAX_HALTS_PER_MODEL) } };
    this.#save(halt.model);
    return true;
  }

  /** The decision for a complete release at `now` (Unix seconds); a changed one is kept for `status` and logged. */
  decide(release: { manifest: Pick<VerifiedManifest['manifest'], 'model' | 'version' | 'seq' | 'rollout'>; releaseId: Uint8Array }, now: number): RolloutDecision {
    const m = release.manifest;
    const id = hex(release.releaseId);
    const d = decideRollout(m.rollout, release.releaseId, this.device, this.isHalted(m.model, id), now);
    // Only what puts an install off is kept: "at once" is what happens without a policy.
    if (d.install && d.at <= now) return d;
    const record: ScheduleRecord = { release: id, version: m.version, seq: m.seq, reason: d.reason, ...(d.install ? { installAt: new Date(d.at * 1000).toISOString() } : {}) };
    const before = this.#file.scheduled[m.model];
    if (before?.release === record.release && before.reason === record.reason && before.installAt === record.installAt) return d;
    this.#file = { ...this.#file, scheduled: { ...this.#file.scheduled, [m.model]: record } };
    this.#save(m.model);
    const fields = { model: m.model, version: m.version, seq: m.seq, release: id, reason: d.reason };
    if (!d.install) {
      this.log.event('rollout.skipped', fields, `${m.model} ${m.version} (seq ${m.seq}) will not be installed on this device: ${d.reason === 'halted' ? 'a signed halt stopped it' : `it is for cohorts ${m.rollout!.cohorts!.join(', ')}, this device is in ${this.device.cohorts.join(', ') || 'none'}`}`);
    } else {
      this.log.event('rollout.scheduled', { ...fields, installAt: record.installAt }, `${m.model} ${m.version} (seq ${m.seq}) will be installed at ${record.installAt} (${d.reason})`);
    }
    return d;
  }

  /** A release of `model` starts installing: the schedule shown for it is over. */
  started(model: string): void {
    if (!(model in this.#file.scheduled)) return;
    const scheduled = { ...this.#file.scheduled };
    delete scheduled[model];
    this.#file = { ...this.#file, scheduled };
    this.#save(model);
  }
}

/** Each model's scheduled install and the halts this device keeps, as `fwcast-agent status` shows them. */
export function rolloutStatus(storeDir: string): { scheduled: Record<string, ScheduleRecord>; halts: Record<string, HaltRecord[]> } {
  const file = readRolloutFile(storeDir);
  return { scheduled: file.scheduled, halts: file.halts };
}

/**
 * `status --json`: the installed records, each with its model's `scheduled` and
 * `halts` where there are any, then `{ model, scheduled?, halts? }` for models
 * with nothing installed yet.
 */
export function withRolloutStatus<R extends { model: string }>(storeDir: string, records: R[]): Array<R | { model: string; scheduled?: ScheduleRecord; halts?: HaltRecord[] }> {
  const { scheduled, halts } = rolloutStatus(storeDir);
  const of = (model: string): { scheduled?: ScheduleRecord; halts?: HaltRecord[] } => ({
    ...(scheduled[model] ? { scheduled: scheduled[model] } : {}), ...(halts[model]?.length ? { halts: halts[model] } : {}),
  });
  const models = new Set(records.map((r) => r.model));
  const others = [...new Set([...Object.keys(scheduled), ...Object.keys(halts)])].filter((m) => !models.has(m)).sort();
  return [...records.map((r) => ({ ...r, ...of(r.model) })), ...others.map((model) => ({ model, ...of(model) }))];
}

export function rolloutStatusText(storeDir: string): string {
  const { scheduled, halts } = rolloutStatus(storeDir);
  const lines: string[] = [];
  for (const [model, s] of Object.entries(scheduled)) {
    const when = s.installAt === undefined ? 'never' : `at ${s.installAt}`;
    lines.push(`${model} ${s.version} (seq ${s.seq}, release ${s.release}): install ${when}, because: ${s.reason}`);
  }
  for (const [model, list] of Object.entries(halts)) for (const h of list) lines.push(`${model}: release ${h.release} halted (issued ${new Date(h.issued * 1000).toISOString()})`);
  return lines.map((l) => l + '\n').join('');
}
