/**
 * The configured steps of an install that is tried before it is kept
 * (a model's "steps" in the agent config), and the driver that runs them
 * through the lifecycle of install-lifecycle.ts, persisting each state in the
 * store before the step it announces runs.
 *
 *   "steps": {
 *     "activate": "rauc install \"$FWCAST_IMAGE\" && systemctl reboot",
 *     "health": "/usr/local/bin/app-healthy",
 *     "commit": "rauc status mark-good",
 *     "rollback": "rauc status mark-bad booted && systemctl reboot",
 *     "healthTimeoutSeconds": 300, "healthIntervalSeconds": 5,
 *     "stepTimeoutSeconds": 600, "maxRestarts": 3
 *   }
 *
 * Each command runs as `sh -c COMMAND` with the release in its environment
 * (stepEnvironment); its output goes to the agent's stderr.
 */
import { spawn } from 'node:child_process';
import { isJsonObject } from '../cli/config-file.js';
import { ConfigError, FwcastError } from '../protocol/errors.js';
import type { Logger, LogFields } from '../protocol/log.js';
import { healthDeadline, nextAction, transition, type LifecycleAction, type LifecycleEvent, type LifecyclePolicy, type LifecycleRecord, type LifecycleRelease } from './install-lifecycle.js';
import type { BadRelease, InstalledRecord, Store } from './store.js';

export interface InstallSteps extends LifecyclePolicy {
  activate?: string;
  health?: string;
  commit?: string;
  rollback?: string;
  /** Seconds between health checks that failed. */
  healthIntervalSeconds: number;
  /** Longest run of one activate, commit or rollback command, seconds. */
  stepTimeoutSeconds: number;
}

/** A tried release that was rolled back (the agent's `failed` event carries it). */
export class RolledBackError extends FwcastError {
  readonly reason = 'rolled-back';
}

export type StepName = 'activate' | 'health' | 'commit' | 'rollback';

const COMMANDS: readonly StepName[] = ['activate', 'health', 'commit', 'rollback'];
const NUMBERS = { healthTimeoutSeconds: 300, healthIntervalSeconds: 5, stepTimeoutSeconds: 600, maxRestarts: 3 } as const;
/** Tries of a commit or rollback command before it counts as failed. */
const STEP_TRIES = 3;

/** Parses a model's "steps" (config.ts); every error names the field. */
export function parseInstallSteps(v: unknown, where: string): InstallSteps {
  if (!isJsonObject(v)) throw new ConfigError(`${where} must be an object with at least one of ${COMMANDS.join(', ')}`);
  for (const k of Object.keys(v)) {
    if (!(COMMANDS as readonly string[]).includes(k) && !Object.hasOwn(NUMBERS, k)) throw new ConfigError(`${where}: unknown field "${k}" (known: ${[...COMMANDS, ...Object.keys(NUMBERS)].join(', ')})`);
  }
  const steps: InstallSteps = { ...NUMBERS };
  for (const name of COMMANDS) {
    const c = v[name];
    if (c === undefined) continue;
    if (typeof c !== 'string' || c.trim().length === 0) throw new ConfigError(`${where}.${name} must be a non-empty shell command`);
    steps[name] = c;
  }
  if (!COMMANDS.some((name) => steps[name] !== undefined)) throw new ConfigError(`${where} needs at least one of ${COMMANDS.join(', ')}`);
  for (const k of Object.keys(NUMBERS) as (keyof typeof NUMBERS)[]) {
    const n = v[k];
    if (n === undefined) continue;
    const integer = k === 'maxRestarts';
    if (typeof n !== 'number' || !Number.isFinite(n) || (integer ? !Number.isInteger(n) || n < 0 : !(n > 0))) {
      throw new ConfigError(`${where}.${k} must be ${integer ? 'a whole number, 0 or more' : 'a positive number of seconds'}`);
    }
    steps[k] = n;
  }
  return steps;
}

/** What a step command sees: the release, and what it replaces. */
export function stepEnvironment(step: StepName, r: LifecycleRecord, previous: InstalledRecord | undefined, extra: Record<string, string> = {}): Record<string, string> {
  const rel = r.release;
  return {
    FWCAST_STEP: step,
    FWCAST_MODEL: rel.model,
    FWCAST_VERSION: rel.version,
    FWCAST_SEQ: String(rel.seq),
    FWCAST_RELEASE: rel.releaseId,
    FWCAST_IMAGE: rel.imagePath,
    FWCAST_SHA256: rel.sha256,
    ...(previous ? { FWCAST_PREVIOUS_VERSION: previous.version, FWCAST_PREVIOUS_SEQ: String(previous.seq) } : {}),
    ...extra,
  };
}

interface StepResult {
  ok: boolean;
  exitCode?: number;
  detail: string;
}

/** Runs `sh -c command`; never rejects. Output goes to stderr: stdout is the agent's --json. */
function runCommand(step: StepName, command: string, env: Record<string, string>, timeoutMs: number, signal: AbortSignal): Promise<StepResult> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve({ ok: false, detail: 'the agent is stopping' });
    const child = spawn('/bin/sh', ['-c', command], { stdio: ['ignore', 2, 2], env: { ...process.env, ...env }, timeout: Math.max(1, Math.round(timeoutMs)), signal });
    child.on('error', (err) => {
      if (err.name !== 'AbortError') resolve({ ok: false, detail: `${step} command failed to start: ${err.message}` });
    });
    child.on('exit', (code, sig) => {
      if (code === 0) resolve({ ok: true, exitCode: 0, detail: `${step} command succeeded` });
      else resolve({ ok: false, ...(code !== null ? { exitCode: code } : {}), detail: `${step} command ${sig ? `was killed by ${sig}` : `exited with status ${code}`}: ${command}` });
    });
  });
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done);
  });
}

export type SettleOutcome = 'committed' | 'rolled-back' | 'stopped';

export interface TriedInstallInit {
  model: string;
  steps: InstallSteps;
  store: Store;
  log: Logger;
  /** Aborted when the agent stops: a step in progress is ended and reruns at the next start. */
  signal: AbortSignal;
  /** Unix seconds. */
  now: () => number;
  /** Whether a verified halt names the release (the rollout gate): a halted release is rolled back before it is kept. */
  isHalted?: (releaseId: string) => boolean;
}

/** One model's install lifecycle: persisted transitions, their log events, and the steps' commands. */
export class TriedInstall {
  readonly model: string;
  readonly steps: InstallSteps;
  readonly #init: TriedInstallInit;

  constructor(init: TriedInstallInit) {
    this.#init = init;
    this.model = init.model;
    this.steps = init.steps;
  }

  get record(): LifecycleRecord | undefined {
    return this.#init.store.lifecycle(this.model);
  }

  #apply(event: LifecycleEvent, bad?: BadRelease): LifecycleRecord {
    const next = transition(this.record, event, this.#init.now(), this.steps);
    this.#init.store.saveLifecycle(next, bad);
    return next;
  }

  #fields(r: LifecycleRecord): LogFields & { model: string; version: string; seq: number; release: string } {
    return { model: r.release.model, version: r.release.version, seq: r.release.seq, release: r.release.releaseId };
  }

  received(release: LifecycleRelease): void {
    const r = this.#apply({ kind: 'received', release });
    this.#init.log.event('lifecycle.received', this.#fields(r), `${release.version} (seq ${release.seq}) is verified and kept; it is tried before it is kept`);
  }

  installStarted(): void {
    const r = this.#apply({ kind: 'install-started' });
    this.#init.log.event('lifecycle.installing', this.#fields(r), `installing ${r.release.version} (seq ${r.release.seq})`);
  }

  installFailed(): void {
    this.#apply({ kind: 'install-failed' });
  }

  /**
   * At the agent's start: what to do for the record left by the last run.
   * A pending release without a decision counts the start (a reboot into
   * the new slot is one) and gets a new health window.
   */
  resume(): LifecycleAction {
    let r = this.record;
    if (!r) return 'none';
    const state = r.state;
    if (r.state === 'pending' && r.decision === undefined) {
      r = this.#apply({ kind: 'restarted' });
      if (r.decision === 'rollback') this.#rollingBack(r);
    }
    const action = nextAction(r);
    if (action !== 'none') {
      this.#init.log.event('lifecycle.resumed', { ...this.#fields(r), state, action, restarts: r.restarts },
        `resuming the install of ${r.release.version} (seq ${r.release.seq}), ${state} when the agent stopped: next, ${action}`);
    }
    return action;
  }

  /**
   * From an install just done (or a pending record after a restart): runs
   * activate, polls health until the deadline, then commit or rollback.
   * `keep` records the release as installed; it runs after the commit
   * command succeeded and before `committed` is persisted.
   */
  async settle(keep: () => void, previous: InstalledRecord | undefined): Promise<SettleOutcome> {
    const { signal } = this.#init;
    let r = this.record!;
    if (r.state === 'installing') {
      r = this.#apply({ kind: 'activating' });
      this.#init.log.event('lifecycle.pending', { ...this.#fields(r), healthDeadline: healthDeadline(r, this.steps), restarts: 0 },
        `activating ${r.release.version} (seq ${r.release.seq}); it must be healthy by ${new Date(healthDeadline(r, this.steps) * 1000).toISOString()}`);
      // Halted while its installer ran: never activated, rolled back.
      const halted = this.#haltedNow();
      if (halted) r = halted;
      else if (this.steps.activate) {
        const res = await runCommand('activate', this.steps.activate, stepEnvironment('activate', r, previous), this.steps.stepTimeoutSeconds * 1000, signal);
        if (signal.aborted) return 'stopped';
        // A halt may have decided the rollback while activate ran.
        if (!res.ok && this.record?.decision === undefined) {
          this.#stepFailed(r, 'activate', 1, res);
          r = this.#decideRollback({ kind: 'activate-failed', detail: res.detail });
        }
      }
    }
    // Activation may have taken a while: a halt heard meanwhile decided a rollback already.
    r = this.record!;
    if (r.state === 'pending' && r.decision === undefined) {
      const checked = await this.#checkHealth(r, previous);
      if (checked === 'stopped') return 'stopped';
      r = checked;
    }
    if (r.decision === 'commit') {
      const res = await this.#runTries('commit', r, previous);
      if (signal.aborted) return 'stopped';
      if (res.ok) {
        keep();
        r = this.#apply({ kind: 'committed' });
        this.#init.log.event('lifecycle.committed', { ...this.#fields(r), previousVersion: previous?.version, previousSeq: previous?.seq },
          `committed ${r.release.version} (seq ${r.release.seq})`);
        return 'committed';
      }
      r = this.#decideRollback({ kind: 'commit-failed', detail: res.detail });
    }
    const res = await this.#runTries('rollback', r, previous, { FWCAST_ROLLBACK_CAUSE: r.cause ?? 'unhealthy' });
    if (signal.aborted) return 'stopped';
    const cause = r.cause ?? 'unhealthy';
    const bad: BadRelease = { releaseId: r.release.releaseId, seq: r.release.seq, version: r.release.version, at: new Date(this.#init.now() * 1000).toISOString(), cause };
    r = this.#apply({ kind: 'rolled-back' }, bad);
    this.#init.log.event('lifecycle.rolled-back', { ...this.#fields(r), cause, detail: r.detail ?? '', rollbackOk: res.ok, previousVersion: previous?.version, previousSeq: previous?.seq },
      `rolled back ${r.release.version} (seq ${r.release.seq}): ${r.detail}` + (res.ok ? '' : `; the rollback command failed too: ${res.detail}`) + '; this release is never tried again on this device');
    return 'rolled-back';
  }

  #decideRollback(event: LifecycleEvent): LifecycleRecord {
    const r = this.#apply(event);
    this.#rollingBack(r);
    return r;
  }

  #rollingBack(r: LifecycleRecord): void {
    this.#init.log.event('lifecycle.rolling-back', { ...this.#fields(r), cause: r.cause!, detail: r.detail ?? '' },
      `rolling back ${r.release.version} (seq ${r.release.seq}): ${r.detail}`);
  }

  /** Runs health until it succeeds or the deadline passes; persists the decision. */
  async #checkHealth(r: LifecycleRecord, previous: InstalledRecord | undefined): Promise<LifecycleRecord | 'stopped'> {
    const { signal, now } = this.#init;
    const command = this.steps.health;
    if (!command) return this.#healthy(r, 0);
    const deadline = healthDeadline(r, this.steps);
    let last = 'no health check ran';
    for (let attempt = 1; ; attempt++) {
      // A halt decides the rollback, heard now or while the last check or wait ran.
      const halted = this.#haltedNow() ?? (this.record?.decision !== undefined ? this.record : undefined);
      if (halted) return halted;
      const remaining = deadline - now();
      if (remaining <= 0) {
        return this.#decideRollback({ kind: 'unhealthy', detail: `not healthy within ${this.steps.healthTimeoutSeconds} s after activation (${attempt - 1} checks; last: ${last})` });
      }
      const res = await runCommand('health', command, stepEnvironment('health', r, previous, { FWCAST_HEALTH_ATTEMPT: String(attempt), FWCAST_HEALTH_DEADLINE: String(Math.floor(deadline)) }), remaining * 1000, signal);
      if (signal.aborted) return 'stopped';
      // A halt heard while the check ran decided already.
      const decided = this.record;
      if (decided?.decision !== undefined) return decided;
      if (res.ok) return this.#healthy(r, attempt);
      last = res.detail;
      const wait = Math.max(0, Math.min(this.steps.healthIntervalSeconds, deadline - now()));
      this.#init.log.event('lifecycle.health-failed', { ...this.#fields(r), attempt, exitCode: res.exitCode, detail: res.detail, retryInSeconds: wait },
        `health check ${attempt} of ${r.release.version} failed (${res.detail}); next in ${wait} s, until ${new Date(deadline * 1000).toISOString()}`);
      await sleep(wait * 1000, signal);
    }
  }

  /**
   * A halt heard for the release being tried: it is rolled back, before it is
   * committed (from pending), whatever its health. Returns the record with
   * the decision, or undefined if nothing is halted.
   */
  #haltedNow(): LifecycleRecord | undefined {
    const r = this.record;
    if (!r || r.state !== 'pending' || r.decision !== undefined || !this.#init.isHalted?.(r.release.releaseId)) return undefined;
    return this.#decideRollback({ kind: 'halted', detail: `a signed halt named ${r.release.version} (release ${r.release.releaseId}) before it was committed` });
  }

  /** A halt heard now for the release being tried: decided at once when it waits for health; else at the next check. */
  halted(releaseId: string): boolean {
    const r = this.record;
    if (!r || r.release.releaseId !== releaseId || r.state === 'committed' || r.state === 'rolled-back' || r.decision === 'commit') return false;
    this.#haltedNow();
    return true;
  }

  #healthy(r: LifecycleRecord, checks: number): LifecycleRecord {
    const next = this.#apply({ kind: 'healthy' });
    this.#init.log.event('lifecycle.healthy', { ...this.#fields(r), checks }, `${r.release.version} (seq ${r.release.seq}) is healthy; committing`);
    return next;
  }

  /** A commit or rollback command, tried up to STEP_TRIES times (healthIntervalSeconds apart). */
  async #runTries(step: 'commit' | 'rollback', r: LifecycleRecord, previous: InstalledRecord | undefined, extra: Record<string, string> = {}): Promise<StepResult> {
    const command = this.steps[step];
    if (!command) return { ok: true, detail: `no ${step} command` };
    let res: StepResult = { ok: false, detail: '' };
    for (let attempt = 1; attempt <= STEP_TRIES && !this.#init.signal.aborted; attempt++) {
      res = await runCommand(step, command, stepEnvironment(step, r, previous, extra), this.steps.stepTimeoutSeconds * 1000, this.#init.signal);
      if (res.ok || this.#init.signal.aborted) return res;
      this.#stepFailed(r, step, attempt, res);
      if (attempt < STEP_TRIES) await sleep(this.steps.healthIntervalSeconds * 1000, this.#init.signal);
    }
    return res;
  }

  #stepFailed(r: LifecycleRecord, step: StepName, attempt: number, res: StepResult): void {
    this.#init.log.event('lifecycle.step-failed', { ...this.#fields(r), step, attempt, exitCode: res.exitCode, detail: res.detail }, `${step} of ${r.release.version} failed (try ${attempt}): ${res.detail}`);
  }
}

/** The lifecycle part of `fwcast-agent status`: per model, the install being tried or last tried, and the releases rolled back. */
export function lifecycleStatus(store: Store, model: string): { json: Record<string, unknown>; text: string } | undefined {
  const r = store.lifecycle(model);
  const bad = store.badReleases(model);
  if (!r && bad.length === 0) return undefined;
  const json: Record<string, unknown> = {};
  const lines: string[] = [];
  if (r) {
    json.lifecycle = { state: r.state, version: r.release.version, seq: r.release.seq, releaseId: r.release.releaseId, since: new Date(r.since * 1000).toISOString(), ...(r.decision ? { decision: r.decision } : {}), ...(r.cause ? { cause: r.cause } : {}), ...(r.detail ? { detail: r.detail } : {}) };
    lines.push(`  lifecycle: ${r.state}${r.decision ? ` (${r.decision} decided)` : ''} ${r.release.version} (seq ${r.release.seq}) since ${new Date(r.since * 1000).toISOString()}${r.cause ? `, ${r.cause}` : ''}`);
  }
  if (bad.length > 0) {
    json.rolledBack = bad;
    lines.push(`  rolled back, never retried: ${bad.map((b) => `${b.version} (seq ${b.seq}, ${b.cause})`).join(', ')}`);
  }
  return { json, text: lines.join('\n') + '\n' };
}
