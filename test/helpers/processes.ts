/** Running the real CLIs from tests: capture output, wait for lines and exits, with deadlines. */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

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
