/**
 * An install that is tried before it is kept: the pure state machine of one
 * model's install, from a verified release to committed or rolled back.
 *
 *   received ──> installing ──> pending ──(healthy, commit ran)──> committed
 *      ^             │             └──(unhealthy, deadline, restarts, a failed
 *      └─(installer  │                 activate or commit; rollback ran)──> rolled-back
 *         failed)────┘
 *
 * `pending` means activated, not yet confirmed. While pending, `decision`
 * records what was decided before its step runs (commit or rollback), so a
 * power cut during the step reruns that step and nothing else: steps must be
 * idempotent (RAUC's mark-good and mark-bad are). A record is persisted before
 * the step it announces runs; so after a restart each state says exactly what
 * to do next (resumeAction). Time comes from the caller (unix seconds).
 */

export type LifecycleState = 'received' | 'installing' | 'pending' | 'committed' | 'rolled-back';

export const LIFECYCLE_STATES: readonly LifecycleState[] = ['received', 'installing', 'pending', 'committed', 'rolled-back'];

/** Why a release was rolled back. */
export type RollbackCause =
  /** The health command did not succeed before the deadline. */
  | 'unhealthy'
  /** The activate command failed. */
  | 'activate-failed'
  /** The commit command kept failing: a release that cannot be kept is not left half-kept. */
  | 'commit-failed'
  /** The agent restarted more than `maxRestarts` times while the release was pending (a crash loop). */
  | 'restarts'
  /** A signed halt (SPEC §17.5) named the release before it was committed: the fleet's emergency stop. */
  | 'halted';

/** The release a lifecycle is about: what the steps get in their environment. */
export interface LifecycleRelease {
  model: string;
  version: string;
  seq: number;
  releaseId: string;
  /** The verified image kept in the store. */
  imagePath: string;
  sha256: string;
}

export interface LifecycleRecord {
  state: LifecycleState;
  release: LifecycleRelease;
  /** When the state was entered (unix seconds). */
  since: number;
  /** pending: when the current health window began (activation, or the agent's latest start). */
  checkFrom?: number;
  /** pending: agent starts seen while pending. */
  restarts?: number;
  /** pending: decided, its step not yet done. */
  decision?: 'commit' | 'rollback';
  /** A rollback decided or done: why, and what failed. */
  cause?: RollbackCause;
  detail?: string;
}

/** The time limits of the pending state. */
export interface LifecyclePolicy {
  /** Seconds after activation (or a restart) by which the health command must succeed. */
  healthTimeoutSeconds: number;
  /** Agent starts while pending after which the release is rolled back. */
  maxRestarts: number;
}

export type LifecycleEvent =
  | { kind: 'received'; release: LifecycleRelease }
  | { kind: 'install-started' }
  | { kind: 'install-failed' }
  | { kind: 'activating' }
  | { kind: 'activate-failed'; detail: string }
  | { kind: 'healthy' }
  | { kind: 'unhealthy'; detail: string }
  | { kind: 'halted'; detail: string }
  | { kind: 'restarted' }
  | { kind: 'commit-failed'; detail: string }
  | { kind: 'committed' }
  | { kind: 'rolled-back' };

/** What the agent does next for a record. */
export type LifecycleAction = 'install' | 'check-health' | 'commit' | 'rollback' | 'none';

export class LifecycleTransitionError extends Error {
  override readonly name = 'LifecycleTransitionError';
}

function refuse(record: LifecycleRecord | undefined, event: LifecycleEvent): never {
  const where = record ? `${record.state}${record.decision ? ` (${record.decision} decided)` : ''}` : 'no lifecycle';
  throw new LifecycleTransitionError(`lifecycle: "${event.kind}" cannot happen in ${where}`);
}

function pendingUndecided(r: LifecycleRecord | undefined): r is LifecycleRecord {
  return r?.state === 'pending' && r.decision === undefined;
}

function decideRollback(r: LifecycleRecord, cause: RollbackCause, detail: string, now: number): LifecycleRecord {
  return { ...r, decision: 'rollback', cause, detail, since: now };
}

/**
 * The record after `event` at `now`. A new release may start a lifecycle
 * unless one is pending (activated): a release not yet activated is
 * replaced; anything out of order throws.
 */
export function transition(record: LifecycleRecord | undefined, event: LifecycleEvent, now: number, policy: LifecyclePolicy): LifecycleRecord {
  const r = record;
  switch (event.kind) {
    case 'received':
      // A newer release replaces one not yet activated; an interrupted installer's write is overwritten.
      if (r && r.state === 'pending') refuse(r, event);
      return { state: 'received', release: event.release, since: now };
    case 'install-started':
      if (r?.state !== 'received' && r?.state !== 'installing') refuse(r, event);
      return { state: 'installing', release: r.release, since: now };
    case 'install-failed':
      if (r?.state !== 'installing') refuse(r, event);
      return { state: 'received', release: r.release, since: now };
    case 'activating':
      if (r?.state !== 'installing') refuse(r, event);
      return { state: 'pending', release: r.release, since: now, checkFrom: now, restarts: 0 };
    case 'activate-failed':
      if (!pendingUndecided(r)) refuse(r, event);
      return decideRollback(r, 'activate-failed', event.detail, now);
    case 'healthy':
      if (!pendingUndecided(r)) refuse(r, event);
      return { ...r, decision: 'commit', since: now };
    case 'unhealthy':
      if (!pendingUndecided(r)) refuse(r, event);
      return decideRollback(r, 'unhealthy', event.detail, now);
    case 'halted':
      if (!pendingUndecided(r)) refuse(r, event);
      return decideRollback(r, 'halted', event.detail, now);
    case 'restarted': {
      if (!pendingUndecided(r)) refuse(r, event);
      const restarts = (r.restarts ?? 0) + 1;
      if (restarts > policy.maxRestarts) return decideRollback({ ...r, restarts }, 'restarts', `the agent started ${restarts} times while ${r.release.version} was pending (at most ${policy.maxRestarts})`, now);
      // Activation may have been a reboot: the health window starts again with this start.
      return { ...r, restarts, checkFrom: now };
    }
    case 'commit-failed':
      if (r?.state !== 'pending' || r.decision !== 'commit') refuse(r, event);
      return decideRollback(r, 'commit-failed', event.detail, now);
    case 'committed':
      if (r?.state !== 'pending' || r.decision !== 'commit') refuse(r, event);
      return { state: 'committed', release: r.release, since: now };
    case 'rolled-back':
      if (r?.state !== 'pending' || r.decision !== 'rollback') refuse(r, event);
      return { state: 'rolled-back', release: r.release, since: now, cause: r.cause!, ...(r.detail !== undefined ? { detail: r.detail } : {}) };
  }
}

export function isTerminal(r: LifecycleRecord): boolean {
  return r.state === 'committed' || r.state === 'rolled-back';
}

/** What to do with a record as it stands (in particular after a restart, once `restarted` is applied to a pending one). */
export function nextAction(r: LifecycleRecord | undefined): LifecycleAction {
  if (!r) return 'none';
  switch (r.state) {
    case 'received':
    case 'installing':
      // The installer writes the whole image again: an interrupted write is never activated.
      return 'install';
    case 'pending':
      return r.decision ?? 'check-health';
    default:
      return 'none';
  }
}

/** When the health command must have succeeded by (unix seconds), for a pending record. */
export function healthDeadline(r: LifecycleRecord, policy: LifecyclePolicy): number {
  return (r.checkFrom ?? r.since) + policy.healthTimeoutSeconds;
}
