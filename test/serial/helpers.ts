// Shared plumbing for the serial tests: pty pairs from socat, child processes
// that die with the test, unique temp dirs, and a clear message naming the
// Debian packages when a tool is missing.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * What these helpers need from their caller: an AVA test context, or the
 * serial bench's own scope (bench/serial.ts), which has no test around it.
 */
export interface Scope {
  teardown(fn: () => unknown): void;
  fail(message: string): void;
}

/** Everything the serial suite needs from Debian, in one line for CI. */
export const APT_PACKAGES = 'socat stm32flash avrdude libsimavr-dev libelf-dev gcc libc6-dev pkg-config arduino-core-avr';

const TOOL_PACKAGES: Record<string, string> = {
  socat: 'socat',
  stm32flash: 'stm32flash',
  avrdude: 'avrdude',
  gcc: 'gcc libc6-dev',
  'pkg-config': 'pkg-config',
};

/** Fails the test (not skips it) with the apt-get line when a tool is absent. */
export function requireTools(t: Scope, ...tools: string[]): void {
  const missing = tools.filter((tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0);
  if (missing.length) {
    t.fail(`missing ${missing.join(', ')}: apt-get install -y ${missing.map((m) => TOOL_PACKAGES[m] ?? m).join(' ')} (whole suite: apt-get install -y ${APT_PACKAGES})`);
    throw new Error(`missing tools: ${missing.join(', ')}`);
  }
}

export function tempDir(t: Scope, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `fwcast-${prefix}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Starts a child that is killed in teardown; its output is kept for failure messages. */
export function startProcess(t: Scope, command: string, args: string[], options: { cwd?: string } = {}): ChildProcess & { output: () => string } {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: options.cwd, detached: false });
  let output = '';
  child.stdout?.on('data', (d: Buffer) => { output += d.toString(); });
  child.stderr?.on('data', (d: Buffer) => { output += d.toString(); });
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); });
  return Object.assign(child, { output: () => output });
}

export async function waitForOutput(child: ChildProcess & { output: () => string }, pattern: RegExp, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(child.output())) {
    if (child.exitCode !== null) throw new Error(`${what} exited (${child.exitCode}) before ready:\n${child.output()}`);
    if (Date.now() > deadline) throw new Error(`${what} not ready within ${timeoutMs} ms:\n${child.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

export interface PtyPair { device: string; host: string; socat: ChildProcess & { output: () => string } }

/** A socat pty pair; resolves once socat has applied raw mode to both ends. */
export async function ptyPair(t: Scope, dir: string, name: string): Promise<PtyPair> {
  const device = join(dir, `${name}-dev`);
  const host = join(dir, `${name}-host`);
  const socat = startProcess(t, 'socat', ['-d', '-d', `pty,raw,echo=0,link=${device}`, `pty,raw,echo=0,link=${host}`]);
  await waitForOutput(socat, /starting data transfer loop/, 5000, 'socat');
  return { device, host, socat };
}

export const REPO = new URL('../../', import.meta.url).pathname;

/** Runs a TypeScript entry point of this repo under tsx, as a background child. */
export function startTsx(t: Scope, script: string, args: string[]): ChildProcess & { output: () => string } {
  return startProcess(t, process.execPath, ['--import', 'tsx', join(REPO, script), ...args], { cwd: REPO });
}

export interface RunResult { code: number | null; stdout: string; stderr: string }

/** Runs a command to completion (async, so the test's own ports keep working). */
export function run(command: string, args: string[], timeoutMs = 60_000, cwd = REPO): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`${command} timed out after ${timeoutMs} ms\n${stdout}\n${stderr}`)); }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }); });
  });
}

/** Deterministic pseudo-random bytes, so a failing run can be replayed. */
export function patternBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}
