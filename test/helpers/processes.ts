/** Running the real CLIs from tests: capture output, wait for lines and exits, with deadlines. */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkEventLine, type LogEvent } from '../../protocol/log.js';
import { makeImage } from './fixtures.js';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const FWCAST = `${ROOT}bin/fwcast.js`;
export const FWCAST_AGENT = `${ROOT}bin/fwcast-agent.js`;

export interface Tracked {
  child: ChildProcess;
  readonly stdout: string;
  readonly stderr: string;
  exited: Promise<number | null>;
}

export function track(child: ChildProcess): Tracked {
  const out = { stdout: '', stderr: '' };
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (out.stdout += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (out.stderr += d));
  // 'close', not 'exit': the process's last output may still be in its pipes at exit.
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return {
    child,
    get stdout() { return out.stdout; },
    get stderr() { return out.stderr; },
    exited,
  };
}

/** Waits for the process to exit; kills it and throws if it takes longer than `ms`. */
export async function exitCode(p: Tracked, ms: number): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      p.child.kill('SIGKILL');
      reject(new Error(`process did not exit within ${ms} ms\nstderr:\n${p.stderr}`));
    }, ms);
  });
  try {
    return await Promise.race([p.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits until `pattern` appears in the process's stderr. */
export async function stderrMatch(p: Tracked, pattern: RegExp, ms: number): Promise<RegExpExecArray> {
  const deadline = Date.now() + ms;
  for (;;) {
    const m = pattern.exec(p.stderr);
    if (m) return m;
    if (Date.now() > deadline) throw new Error(`no ${pattern} in stderr within ${ms} ms:\n${p.stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Runs `fwcast ARGS` to completion (for keygen, sign, inspect); throws with its stderr on failure. */
export function fwcast(...args: string[]): string {
  return execFileSync(process.execPath, [FWCAST, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * A fresh directory (under the temporary directory, named from `prefix`) with a
 * publisher key pair and one release of model rpi4, signed by `fwcast sign`
 * from a generated image of `size` bytes.
 */
export function signedRelease(prefix: string, size: number, opts: { seed?: number; version?: string; seq?: number; extra?: string[] } = {}): { dir: string; image: Uint8Array; release: string; pub: string } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  fwcast('keygen', '--out', dir);
  const image = makeImage(size, opts.seed ?? 1);
  writeFileSync(join(dir, 'image.bin'), image);
  const release = join(dir, 'release.fwc');
  fwcast('sign', join(dir, 'image.bin'), '--key', join(dir, 'publisher.key'), '--model', 'rpi4', '--version', opts.version ?? '1.0.0', '--seq', String(opts.seq ?? 1), '--out', release, ...(opts.extra ?? []));
  return { dir, image, release, pub: join(dir, 'publisher.pub') };
}

/** One JSON log line (`--log-format json`): the line's own keys and the event's fields. */
export interface LogLine {
  time: string;
  level: string;
  scope: string;
  event: LogEvent;
  msg: string;
  [field: string]: unknown;
}

/** What a line's fields must be (a value, or a RegExp its text must match), or a test of the whole line. */
export type FieldMatch = Record<string, string | number | boolean | RegExp | undefined> | ((line: LogLine) => boolean);

/**
 * The complete JSON log lines in `output` (other lines, e.g. Node warnings, are
 * skipped). Throws if a line breaks the event contract (protocol/log.ts): an
 * undocumented event, level or field fails every test that reads the log.
 */
export function logLines(output: string): LogLine[] {
  const lines: LogLine[] = [];
  for (const text of output.split('\n').slice(0, -1)) {
    if (!text.startsWith('{')) continue;
    const line = JSON.parse(text) as LogLine;
    const broken = checkEventLine(line);
    if (broken) throw new Error(`log line breaks the event contract: ${broken}\n${text}`);
    lines.push(line);
  }
  return lines;
}

function matches(line: LogLine, event: LogEvent, fields: FieldMatch): boolean {
  if (line.event !== event) return false;
  if (typeof fields === 'function') return fields(line);
  return Object.entries(fields).every(([k, want]) => (want instanceof RegExp ? typeof line[k] === 'string' && want.test(line[k]) : line[k] === want));
}

/** The lines of `event` in `output` whose fields match `fields`. */
export function events(output: string, event: LogEvent, fields: FieldMatch = {}): LogLine[] {
  return logLines(output).filter((l) => matches(l, event, fields));
}

const describe = (steps: ReadonlyArray<readonly [LogEvent, FieldMatch]>): string =>
  steps.map(([e, f]) => `${e} ${typeof f === 'function' ? f.toString() : JSON.stringify(f, (_, v: unknown) => (v instanceof RegExp ? String(v) : v))}`).join(', then ');

/** Waits until the process has logged these events on stderr, in this order; returns the lines. */
export async function waitForEvents(p: Tracked, steps: ReadonlyArray<readonly [LogEvent, FieldMatch]>, ms: number): Promise<LogLine[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const found: LogLine[] = [];
    for (const line of logLines(p.stderr)) {
      const next = steps[found.length];
      if (next && matches(line, next[0], next[1])) found.push(line);
    }
    if (found.length === steps.length) return found;
    if (Date.now() > deadline) throw new Error(`no ${describe(steps)} in stderr within ${ms} ms:\n${p.stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits until the process has logged `event` (with `fields`) on stderr; returns that line. */
export async function waitForEvent(p: Tracked, event: LogEvent, fields: FieldMatch, ms: number): Promise<LogLine> {
  return (await waitForEvents(p, [[event, fields]], ms))[0]!;
}

/**
 * Calls `callback` once, as soon as the process logs `event` (with `fields`)
 * on stderr: for measurements taken at that moment (counters, CPU time).
 */
export function onEvent(p: Tracked, event: LogEvent, fields: FieldMatch, callback: (line: LogLine) => void): void {
  // Added after track()'s own listener, so p.stderr already holds each chunk.
  const watch = (): void => {
    const line = events(p.stderr, event, fields)[0];
    if (!line) return;
    p.child.stderr!.off('data', watch);
    callback(line);
  };
  p.child.stderr!.on('data', watch);
}
