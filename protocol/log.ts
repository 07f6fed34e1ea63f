/**
 * The logging contract. Library code logs through an injected Logger and never
 * writes to the console; the CLIs decide how lines look (text or JSON).
 *
 * A line that marks a step carries a stable event name from LOG_EVENTS, with
 * the values tools need as fields. The message is for people and may be
 * reworded at any time; tests, benchmarks, demos and log shippers match the
 * event and its fields. The README's table of events is checked against
 * LOG_EVENTS (test/log-events.test.ts).
 */
import { FwcastError } from './errors.js';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogValue = string | number | boolean | undefined;
/** Flat name → value; undefined values are left out. `time`, `level`, `scope`, `event` and `msg` are the line's own. */
export type LogFields = Record<string, LogValue> & { time?: never; level?: never; scope?: never; event?: never; msg?: never };

interface EventSpec {
  level: LogLevel;
  /** The fields every line of the event has; `name?` may be absent; `prefix.*` stands for any `prefix.<name>`. */
  fields: readonly string[];
}

const MODEL_RELEASE = ['model', 'version', 'seq', 'release'] as const;
/** What errorFields() gives. */
const ERROR = ['error', 'reason?', 'detail'] as const;
const CHANNEL_COUNTS = ['channel', 'release', 'rounds', 'datagrams', 'bytes'] as const;

/** Every event name, its level and its fields: the one place they are defined. */
export const LOG_EVENTS = {
  // fwcast-agent
  'agent.listening': { level: 'info', fields: ['model', 'channel', 'group', 'port', 'transport', 'installedVersion?', 'installedSeq?'] },
  // The optional fields are the refusal's facts (FwcastError.facts): which key, model, seq.
  'release.refused': { level: 'warn', fields: ['model', 'release', 'error', 'reason', 'detail', 'kid?', 'releaseModel?', 'seq?', 'installedSeq?', 'expires?', 'rootVersion?', 'notBefore?', 'notAfter?', 'threshold?', 'signatures?'] },
  // At most one per model every 10 s, while refusals beyond 5 per reason went unlogged (cli/refusal-log.ts).
  'release.refusals-suppressed': { level: 'warn', fields: ['model', 'seconds', 'total', 'suppressed.*'] },
  'release.accepted': { level: 'info', fields: [...MODEL_RELEASE, 'imageSize', 'segments', 'kid'] },
  'release.resumed': { level: 'info', fields: [...MODEL_RELEASE, 'segmentsDone', 'segments', 'symbolsOnDisk'] },
  'release.progress': { level: 'info', fields: ['model', 'version', 'seq', 'symbols', 'needed', 'segmentsDone', 'segments'] },
  // stallMs: the agent's longest event-loop stall while the release was received (the socket is not read meanwhile).
  'release.received': { level: 'info', fields: [...MODEL_RELEASE, 'segments', 'seconds', 'stallMs'] },
  'release.verified': { level: 'info', fields: [...MODEL_RELEASE, 'sha256', 'installer'] },
  'release.not-installed': { level: 'error', fields: [...MODEL_RELEASE, ...ERROR] },
  'release.installing': { level: 'info', fields: ['model', 'version', 'seq', 'percent', 'done', 'total'] },
  // deviceState: what a serial installer left on the device (untouched, restored, erased), when it says.
  'release.install-failed': { level: 'error', fields: [...MODEL_RELEASE, ...ERROR, 'deviceState?', 'attempt', 'retryInSeconds'] },
  'release.installed': { level: 'info', fields: [...MODEL_RELEASE, 'sha256', 'path'] },
  'release.superseded': { level: 'info', fields: [...MODEL_RELEASE, 'newerSeq'] },
  'store.failed': { level: 'error', fields: ['model', 'store', 'path', 'code', ...ERROR, 'freeBytes?'] },
  'store.recovered': { level: 'info', fields: ['model', 'store', 'failures'] },
  'agent.timeout': { level: 'error', fields: ['seconds'] },
  // The kernel capped the receive buffer below what --expected-rate needs; `fix` is the command that lifts the cap.
  'agent.receive-buffer-capped': { level: 'warn', fields: ['model?', 'channel', 'wantedBytes', 'grantedBytes', 'expectedRate', 'rmemMax?', 'fix'] },
  'agent.stats': { level: 'info', fields: ['model', 'datagrams', 'receiveBufferDrops?', 'symbolsUsed', 'duplicates', 'segmentsDecoded', 'authChunksVerified', 'decoderTraps', 'dropped.*'] },
  // Root of trust (protocol/root.ts): the root trusted at start, a newer one verified, a chain refused (once per chain).
  'root.trusted': { level: 'info', fields: ['rootVersion', 'expires', 'source'] },
  'root.updated': { level: 'info', fields: ['model', 'rootVersion', 'previousVersion', 'expires', 'applied'] },
  'root.refused': { level: 'warn', fields: ['model?', 'chain', ...ERROR, 'rootVersion?', 'trustedVersion?', 'whose?', 'signatures?', 'threshold?', 'length?', 'expires?', 'at?'] },
  // fwcast-agent relay mode
  'relay.serving': { level: 'info', fields: [...MODEL_RELEASE, 'channel', 'transport', 'rate'] },
  'relay.release-missing': { level: 'warn', fields: ['model', 'release', 'store'] },
  'relay.release-failed': { level: 'error', fields: ['model', 'release', ...ERROR] },
  'relay.failed': { level: 'error', fields: [...ERROR] },
  // fwcast publish
  'publish.release-loaded': { level: 'info', fields: ['file', ...MODEL_RELEASE, 'channel', 'group', 'port', 'symbols', 'ms'] },
  'publish.started': { level: 'info', fields: ['channels', 'rate', 'transport'] },
  'publish.progress': { level: 'info', fields: ['seconds', 'bitsPerSecond'] },
  'publish.round': { level: 'info', fields: [...CHANNEL_COUNTS] },
  'publish.send-errors': { level: 'warn', fields: ['count', 'detail?'] },
  'publish.undelivered': { level: 'error', fields: ['transport', 'datagrams', 'detail?'] },
  // fwcast publish, fwcast serve and relay mode, when they stop
  'carousel.stopped': { level: 'info', fields: [...CHANNEL_COUNTS, 'seconds?', 'datagramsPerSecond?'] },
  // MQTT transport (both CLIs)
  'mqtt.connected': { level: 'info', fields: ['url', 'reconnects'] },
  'mqtt.disconnected': { level: 'debug', fields: ['url', 'retryInMs'] },
  'mqtt.error': { level: 'warn', fields: ['url', ...ERROR] },
  'mqtt.stats': { level: 'info', fields: ['published', 'droppedOffline', 'droppedBackpressure', 'sendErrors', 'reconnects'] },
  // fwcast serve
  'serve.store-opened': { level: 'info', fields: ['store', 'releases', 'live'] },
  'serve.uploads-dropped': { level: 'warn', fields: ['count'] },
  'serve.release-ignored': { level: 'warn', fields: ['file', ...ERROR] },
  'serve.release-pruned': { level: 'info', fields: [...MODEL_RELEASE] },
  'serve.listening': { level: 'info', fields: ['url', 'rate', 'interface'] },
  'serve.on-air': { level: 'info', fields: [...MODEL_RELEASE, 'channel', 'group', 'port', 'symbols', 'ms'] },
  'serve.off-air': { level: 'info', fields: ['model', 'channel'] },
  'serve.encoding-fallback': { level: 'warn', fields: ['model', 'channel', ...ERROR] },
  'serve.publish-failed': { level: 'error', fields: ['model', ...ERROR] },
  'serve.publisher-failed': { level: 'error', fields: [...ERROR] },
  'serve.release-stored': { level: 'info', fields: [...MODEL_RELEASE, 'created', 'bytes', 'ms'] },
  'serve.release-retired': { level: 'info', fields: [...MODEL_RELEASE] },
  'serve.request-refused': { level: 'warn', fields: ['method', 'url', 'reason', 'status', 'remote?', 'detail'] },
  'serve.upload-refused': { level: 'warn', fields: ['reason', 'status', 'remote?', 'detail'] },
  // At most one every 10 s, while refusals beyond 5 per reason went unlogged (cli/refusal-log.ts).
  'serve.refusals-suppressed': { level: 'warn', fields: ['seconds', 'total', 'suppressed.*'] },
  'serve.upload-abandoned': { level: 'warn', fields: ['remote?', ...ERROR] },
  'serve.request-failed': { level: 'error', fields: ['method', 'url', ...ERROR] },
  'serve.stopping': { level: 'info', fields: [] },
  'serve.plain-http': { level: 'warn', fields: ['url'] },
  'serve.connections-refused': { level: 'warn', fields: ['limit', 'remote', 'count'] },
  'serve.tls-reloaded': { level: 'info', fields: ['cert', 'fingerprint', 'expires'] },
  'serve.tls-reload-failed': { level: 'error', fields: ['cert', ...ERROR] },
  // serve's root of trust (server/serve/root-keeper.ts): a newer root pushed or uploaded, kept roots set aside, an expiry near.
  'serve.root-adopted': { level: 'info', fields: ['rootVersion', 'previousVersion', 'applied', 'source', 'expires'] },
  'serve.root-ignored': { level: 'warn', fields: ['dir', ...ERROR] },
  'serve.root-expiring': { level: 'warn', fields: ['rootVersion', 'expires', 'warning'] },
  // Issue 19, sending only while someone listens (carousel/listener-gate.ts): publish --listeners, serve's "listeners".
  'listeners.following': { level: 'info', fields: ['source', 'lingerMs', 'alwaysOn'] },
  'listeners.warning': { level: 'warn', fields: ['source', 'detail'] },
  'listeners.sending': { level: 'info', fields: ['channel', 'group', 'listeners'] },
  'listeners.idle': { level: 'info', fields: ['channel', 'group', 'lingerMs'] },
  'listeners.source-failed': { level: 'warn', fields: ['source', ...ERROR] },
  'listeners.source-recovered': { level: 'info', fields: ['source'] },
  // An install tried before it is kept (issue 17; device-agent/install-lifecycle.ts, install-steps.ts): one event per transition, and the steps' failures.
  'lifecycle.received': { level: 'info', fields: [...MODEL_RELEASE] },
  'lifecycle.installing': { level: 'info', fields: [...MODEL_RELEASE] },
  // healthDeadline: unix seconds by which the health command must succeed.
  'lifecycle.pending': { level: 'info', fields: [...MODEL_RELEASE, 'healthDeadline', 'restarts'] },
  'lifecycle.health-failed': { level: 'warn', fields: [...MODEL_RELEASE, 'attempt', 'exitCode?', 'detail', 'retryInSeconds'] },
  'lifecycle.healthy': { level: 'info', fields: [...MODEL_RELEASE, 'checks'] },
  'lifecycle.committed': { level: 'info', fields: [...MODEL_RELEASE, 'previousVersion?', 'previousSeq?'] },
  'lifecycle.rolling-back': { level: 'warn', fields: [...MODEL_RELEASE, 'cause', 'detail'] },
  'lifecycle.rolled-back': { level: 'error', fields: [...MODEL_RELEASE, 'cause', 'detail', 'rollbackOk', 'previousVersion?', 'previousSeq?'] },
  'lifecycle.step-failed': { level: 'error', fields: [...MODEL_RELEASE, 'step', 'attempt', 'exitCode?', 'detail'] },
  'lifecycle.resumed': { level: 'info', fields: [...MODEL_RELEASE, 'state', 'action', 'restarts?'] },
  'lifecycle.bad-release': { level: 'info', fields: [...MODEL_RELEASE, 'rolledBackAt', 'cause'] },
  // Staged rollout and halt (SPEC §17): an install put off (ramp, activation, window), a release this device never installs (halted, cohort),
  // a verified halt heard (effect: dropped a waiting release, refused one not yet complete, or installed already), a halt stored or carried.
  'rollout.scheduled': { level: 'info', fields: [...MODEL_RELEASE, 'reason', 'installAt'] },
  'rollout.skipped': { level: 'info', fields: [...MODEL_RELEASE, 'reason'] },
  'halt.received': { level: 'warn', fields: ['model', 'release', 'issued', 'kid', 'effect'] },
  'serve.halt-stored': { level: 'warn', fields: ['model', 'release', 'created'] },
  'publish.halt-loaded': { level: 'info', fields: ['file', 'model', 'release', 'channel'] },
  // Confidential firmware (device-agent/decrypting-image.ts)
  'release.decrypted': { level: 'info', fields: [...MODEL_RELEASE, 'kid', 'keyKind', 'plainSize', 'sha256', 'seconds'] },
  'release.relay-only': { level: 'info', fields: [...MODEL_RELEASE, 'recipients'] },
  // Deltas (issue 19: protocol/delta.ts, device-agent/delta-lane.ts)
  'delta.joined': { level: 'debug', fields: ['model', 'channel', 'group', 'port', 'baseRelease', 'baseVersion'] },
  'delta.left': { level: 'debug', fields: ['model', 'channel'] },
  'delta.accepted': { level: 'info', fields: [...MODEL_RELEASE, 'baseRelease', 'deltaSize', 'imageSize', 'segments'] },
  'delta.applied': { level: 'info', fields: [...MODEL_RELEASE, 'baseRelease', 'deltaSize', 'imageSize', 'ms'] },
  // The full image is received instead, from the model's channel.
  'delta.failed': { level: 'warn', fields: [...MODEL_RELEASE, 'baseRelease', ...ERROR] },
  // At exit: what each joined channel delivered (the model's channel and delta sub-channels).
  'agent.channel-stats': { level: 'info', fields: ['model', 'channel', 'datagrams', 'bytes'] },
  // Relays carry deltas (issue 19: device-agent/relay-deltas.ts, relay.ts)
  'relay.delta-joined': { level: 'debug', fields: ['model', 'release', 'baseRelease', 'channel'] },
  'relay.delta-kept': { level: 'info', fields: ['model', 'release', 'baseRelease', 'channel', 'size', 'path'] },
  'relay.delta-serving': { level: 'info', fields: [...MODEL_RELEASE, 'baseRelease', 'channel', 'size'] },
  'relay.delta-failed': { level: 'warn', fields: ['model', 'release', 'baseRelease', ...ERROR] },
} as const satisfies Record<string, EventSpec>;

export type LogEvent = keyof typeof LOG_EVENTS;

export interface Logger {
  /**
   * Logs one step: its stable event name (the level is the event's), the
   * fields tools read, and a line for people (the event name if none).
   */
  event(event: LogEvent, fields: LogFields, message?: string): void;
  /** A logger whose lines are tagged with `scope` (e.g. "agent:rpi4"). */
  child(scope: string): Logger;
}

export const nullLogger: Logger = {
  event() {},
  child() {
    return nullLogger;
  },
};

/** An error as fields: its class name, its typed reason (a FwcastError's drop counter name) if any, and its message. */
export function errorFields(err: unknown): { error: string; reason?: string; detail: string } {
  if (!(err instanceof Error)) return { error: typeof err, detail: String(err) };
  return { error: err.name, ...(err instanceof FwcastError ? { reason: err.reason } : {}), detail: err.message };
}

/**
 * Why `line` (one parsed JSON log line) breaks the contract, or undefined if
 * it keeps it: an unknown event, a level other than the event's, a missing or
 * undocumented field.
 */
export function checkEventLine(line: Record<string, unknown>): string | undefined {
  const name = line.event;
  if (typeof name !== 'string' || !Object.hasOwn(LOG_EVENTS, name)) return `unknown event ${JSON.stringify(name)}`;
  const spec: EventSpec = LOG_EVENTS[name as LogEvent];
  if (line.level !== spec.level) return `${name}: level ${String(line.level)}, the event's is ${spec.level}`;
  const own = new Set(['time', 'level', 'scope', 'event', 'msg']);
  const documented = (key: string): boolean => spec.fields.some((f) => f === key || f === `${key}?` || (f.endsWith('.*') && key.startsWith(f.slice(0, -1))));
  for (const key of Object.keys(line)) if (!own.has(key) && !documented(key)) return `${name}: undocumented field ${key}`;
  for (const f of spec.fields) if (!f.endsWith('?') && !f.endsWith('.*') && line[f] === undefined) return `${name}: missing field ${f}`;
  return undefined;
}
