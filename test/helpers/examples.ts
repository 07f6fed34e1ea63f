/** What the tests of examples/ share: their JSON lines, and a type check as an application would do it. */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { ROOT, type Tracked } from './processes.js';

/** The JSON lines an example printed so far. */
export const jsonLines = (p: Tracked): Array<Record<string, unknown>> =>
  p.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);

/** Type-checks an example against the package's published declarations (fwcast/channels): tsc's status and output. */
export function typeCheckExample(file: string): { status: number | null; output: string } {
  const tsc = spawnSync(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--types', 'node', '--skipLibCheck', file], { cwd: ROOT, encoding: 'utf8' });
  return { status: tsc.status, output: tsc.stdout + tsc.stderr };
}
