/** Running `fwcast serve` and talking to it from inside a lab namespace. */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { join } from 'node:path';
import type { NetLab } from '../../scripts/lab/netlab.js';
import { exitCode, FWCAST, track, waitForEvent, type Tracked } from './processes.js';

export const TOKEN = 'test-token-0123456789abcdef';

/**
 * `fwcast ARGS` without blocking the event loop (tests in a file run
 * concurrently, and a synchronous `fwcast sign` would stall their timing).
 */
export async function fwcastAsync(...args: string[]): Promise<string> {
  const { stdout } = await promisify(execFile)(process.execPath, [FWCAST, ...args], { encoding: 'utf8' });
  return stdout;
}

export interface ServeSetup {
  dir: string;
  pub: string;
  models?: string[];
  rate?: string;
  listen?: string;
  extra?: Record<string, unknown>;
}

/** Writes the server's config file; returns its path. */
export function serveConfig(s: ServeSetup): string {
  const path = join(s.dir, 'serve.json');
  writeFileSync(path, JSON.stringify({
    listen: s.listen ?? '[fd00:fc::1]:8080', store: join(s.dir, 'store'), interface: 'eth0', rate: s.rate ?? '20mbit',
    trustedKeys: [s.pub], models: s.models ?? ['rpi4'], logFormat: 'json', ...s.extra,
  }, null, 2));
  return path;
}

/** Starts `fwcast serve` in a host and waits until it listens (it logs JSON, see serveConfig). */
export async function startServe(lab: NetLab, host: string, config: string): Promise<Tracked> {
  const p = track(lab.spawn(host, process.execPath, [FWCAST, 'serve', '--config', config], { env: { ...process.env, FWCAST_TOKEN: TOKEN } }));
  await waitForEvent(p, 'serve.listening', {}, 20_000);
  return p;
}

export interface PushOutcome {
  code: number | null;
  json: { ok: boolean; exitCode: number; status?: number; error?: string; message?: string; stored?: boolean; release?: { seq: number; version: string; releaseId: string } };
  stderr: string;
}

/**
 * `fwcast push FILE --json` from a host; the token (undefined: none) in
 * FWCAST_TOKEN, as users should pass it, or with `--token` (`via: 'flag'`).
 */
export async function push(lab: Pick<NetLab, 'spawn'>, host: string, file: string, token: string | undefined, server = 'http://[fd00:fc::1]:8080', opts: { via?: 'env' | 'flag'; args?: string[] } = {}): Promise<PushOutcome> {
  const env = { ...process.env };
  delete env.FWCAST_TOKEN;
  if (token && opts.via !== 'flag') env.FWCAST_TOKEN = token;
  const flag = token && opts.via === 'flag' ? ['--token', token] : [];
  const p = track(lab.spawn(host, process.execPath, [FWCAST, 'push', file, '--server', server, '--json', ...flag, ...(opts.args ?? [])], { env }));
  const code = await exitCode(p, 30_000);
  return { code, json: JSON.parse(p.stdout.trim() || '{}') as PushOutcome['json'], stderr: p.stderr };
}

/** GET a URL (or another method, with an optional bearer token) from inside a host's namespace. */
export async function httpGet(lab: Pick<NetLab, 'spawn'>, host: string, url: string, init: { method?: string; token?: string } = {}): Promise<{ status: number; body: string }> {
  const options = { method: init.method ?? 'GET', headers: init.token ? { authorization: `Bearer ${init.token}` } : {} };
  const script = `fetch(${JSON.stringify(url)}, ${JSON.stringify(options)}).then(async (r) => process.stdout.write(JSON.stringify({ status: r.status, body: await r.text() })), (e) => { console.error(e); process.exit(1); })`;
  const p = track(lab.spawn(host, process.execPath, ['-e', script]));
  const code = await exitCode(p, 15_000);
  if (code !== 0) throw new Error(`GET ${url} failed: ${p.stderr}`);
  return JSON.parse(p.stdout) as { status: number; body: string };
}
