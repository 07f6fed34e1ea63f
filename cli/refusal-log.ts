/**
 * Refusals, logged at a bounded rate. Anyone on the network can make the
 * agent refuse a release (an unsigned manifest is one datagram), and anyone
 * who reaches serve can make it refuse a request, so logging each refusal
 * hands a stranger the log's volume. Per reason, the first few refusals of
 * each interval are logged (`release.refused`; `serve.request-refused` and
 * `serve.upload-refused`); the rest are counted, and at the end of the
 * interval one summary line (`release.refusals-suppressed`,
 * `serve.refusals-suppressed`) gives the counts by reason. At most one summary
 * per interval, and none while nothing was left out. The agent still counts
 * every refusal in its drop counters (`agent.stats`), serve in its metrics.
 */
import type { LogEvent, LogFields, Logger } from '../protocol/log.js';

export interface RefusalLogLimits {
  /** Refusals logged per reason and interval. */
  perReason: number;
  intervalMs: number;
}

/**
 * 5 per reason every 10 s: enough to see what is refused and why, a few lines
 * a minute for each kind of flood, and a summary soon after one starts.
 */
export const REFUSAL_LOG_LIMITS: RefusalLogLimits = { perReason: 5, intervalMs: 10_000 };

/** Time, injectable for tests. */
export interface RefusalLogClock {
  now(): number;
  /** Runs `fn` once after `ms`; the timer must not keep the process alive. */
  after(ms: number, fn: () => void): void;
}

const realClock: RefusalLogClock = {
  now: () => Date.now(),
  after: (ms, fn) => void setTimeout(fn, ms).unref(),
};

interface Window {
  start: number;
  logged: Map<string, number>;
  suppressed: Map<string, number>;
  summaryDue: boolean;
}

/** Which events are refusals, the summary that stands for those left out, and the fields every summary carries. */
export interface RefusalEvents {
  refusals: readonly LogEvent[];
  summary: LogEvent;
  context: LogFields;
}

/** `log`, with its `release.refused` lines for `model` limited as described above; other events pass unchanged. */
export function limitRefusals(log: Logger, model: string, limits: RefusalLogLimits = REFUSAL_LOG_LIMITS, clock: RefusalLogClock = realClock): Logger {
  return limitRefusalEvents(log, { refusals: ['release.refused'], summary: 'release.refusals-suppressed', context: { model } }, limits, clock);
}

/** `log`, with the `refusals` events limited per `reason` field as described above; other events pass unchanged. */
export function limitRefusalEvents(log: Logger, kinds: RefusalEvents, limits: RefusalLogLimits = REFUSAL_LOG_LIMITS, clock: RefusalLogClock = realClock): Logger {
  let window: Window | undefined;

  const summarise = (w: Window): void => {
    if (window === w) window = undefined;
    if (w.suppressed.size === 0) return;
    const counts = [...w.suppressed].sort(([a], [b]) => a.localeCompare(b));
    const total = counts.reduce((sum, [, n]) => sum + n, 0);
    const seconds = limits.intervalMs / 1000;
    const fields: LogFields = { ...kinds.context, seconds, total };
    for (const [reason, n] of counts) fields[`suppressed.${reason}`] = n;
    log.event(kinds.summary, fields,
      `${total} more refusals in ${seconds} s not logged one by one: ${counts.map(([r, n]) => `${r} ${n}`).join(', ')}`);
  };

  const admit = (reason: string): boolean => {
    const now = clock.now();
    if (window && now - window.start >= limits.intervalMs) summarise(window);
    if (!window) window = { start: now, logged: new Map(), suppressed: new Map(), summaryDue: false };
    const w = window;
    const logged = w.logged.get(reason) ?? 0;
    if (logged < limits.perReason) {
      w.logged.set(reason, logged + 1);
      return true;
    }
    w.suppressed.set(reason, (w.suppressed.get(reason) ?? 0) + 1);
    if (!w.summaryDue) {
      w.summaryDue = true;
      // The summary comes at the end of the interval even if the flood stops; once per window.
      clock.after(Math.max(0, w.start + limits.intervalMs - now), () => {
        if (window === w) summarise(w);
      });
    }
    return false;
  };

  const limited = (inner: Logger): Logger => ({
    event(event: LogEvent, fields: LogFields, message?: string) {
      if (kinds.refusals.includes(event) && !admit(String(fields.reason))) return;
      inner.event(event, fields, message);
    },
    child: (scope) => limited(inner.child(scope)),
  });
  return limited(log);
}
