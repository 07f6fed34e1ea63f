/**
 * Runs commands under a CPU limit, as a slower board would: a child cgroup
 * with a CFS quota, e.g. a quarter of a core. cgroup v2 (`cpu.max`) where the
 * cpu controller is there, else cgroup v1 (`cpu.cfs_quota_us` /
 * `cpu.cfs_period_us` under /sys/fs/cgroup/cpu). Needs root (the lab maps it).
 *
 *   tsx scripts/lab/cpu-limit.ts 0.25 -- node bin/fwcast-agent.js capacity
 *
 * As a module: CpuLimit.create(0.25), then `wrap(command, args)` gives a
 * command that joins the cgroup before it execs (so nothing runs unlimited,
 * also inside `ip netns exec`), `stats()` how often the quota bit, and
 * `remove()` the cgroup once its processes are gone.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const PERIOD_US = 100_000;
const V2_ROOT = '/sys/fs/cgroup';
const V1_ROOTS = ['/sys/fs/cgroup/cpu', '/sys/fs/cgroup/cpu,cpuacct'];
let counter = 0;

export interface CpuLimitStats {
  /** Scheduling periods in which the cgroup ran out of quota, and for how long it waited in all. */
  throttledPeriods: number;
  throttledMs: number;
}

export class CpuLimit {
  private constructor(readonly path: string, readonly version: 1 | 2, readonly cpus: number) {}

  /** A new cgroup limited to `cpus` CPUs (0.25: a quarter of one). */
  static create(cpus: number): CpuLimit {
    if (!(cpus > 0)) throw new RangeError(`cpus must be positive, got ${cpus}`);
    const quota = Math.round(cpus * PERIOD_US);
    const name = `fwcast-cpu-${process.pid}-${counter++}`;
    const v2 = readOr(join(V2_ROOT, 'cgroup.controllers'))?.split(/\s+/).includes('cpu');
    if (v2) {
      // The controller must be enabled for the root's children; the child holds only our processes.
      if (!readOr(join(V2_ROOT, 'cgroup.subtree_control'))?.split(/\s+/).includes('cpu')) writeFileSync(join(V2_ROOT, 'cgroup.subtree_control'), '+cpu');
      const path = join(V2_ROOT, name);
      mkdirSync(path);
      writeFileSync(join(path, 'cpu.max'), `${quota} ${PERIOD_US}`);
      return new CpuLimit(path, 2, cpus);
    }
    const root = V1_ROOTS.find((r) => existsSync(join(r, 'cpu.cfs_quota_us')));
    if (!root) throw new Error('no cgroup cpu controller: neither cgroup v2 cpu.max nor v1 cpu.cfs_quota_us is available');
    const path = join(root, name);
    mkdirSync(path);
    writeFileSync(join(path, 'cpu.cfs_period_us'), String(PERIOD_US));
    writeFileSync(join(path, 'cpu.cfs_quota_us'), String(quota));
    return new CpuLimit(path, 1, cpus);
  }

  /** `command args` as a shell that moves itself into the cgroup and then execs it (children inherit the cgroup). */
  wrap(command: string, args: readonly string[]): [string, string[]] {
    return ['sh', ['-c', `echo $$ > '${join(this.path, 'cgroup.procs')}' && exec "$@"`, 'sh', command, ...args]];
  }

  stats(): CpuLimitStats {
    const fields = Object.fromEntries((readOr(join(this.path, 'cpu.stat')) ?? '').split('\n').map((l) => l.split(' ')).map(([k, v]) => [k, Number(v)]));
    return {
      throttledPeriods: fields.nr_throttled ?? 0,
      throttledMs: this.version === 2 ? (fields.throttled_usec ?? 0) / 1000 : (fields.throttled_time ?? 0) / 1e6,
    };
  }

  /** Removes the cgroup; its processes must have exited (retried briefly while the kernel lets go of them). */
  async remove(): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        rmdirSync(this.path);
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        if (attempt >= 50) throw new Error(`cannot remove ${this.path}: ${(err as Error).message} (processes still in ${readOr(join(this.path, 'cgroup.procs'))?.replace(/\n/g, ' ')})`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
}

function readOr(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** Runs `command args` under `cpus` CPUs with inherited stdio; returns its exit code. The cgroup is removed afterwards. */
export async function runUnderCpuLimit(cpus: number, command: string, args: readonly string[]): Promise<number> {
  const limit = CpuLimit.create(cpus);
  try {
    const [sh, shArgs] = limit.wrap(command, args);
    const child = spawn(sh, shArgs, { stdio: 'inherit' });
    const code = await new Promise<number>((resolve) => child.on('close', (c, signal) => resolve(c ?? (signal ? 128 : 1))));
    const s = limit.stats();
    process.stderr.write(`cpu-limit: ${cpus} CPU (cgroup v${limit.version}); throttled in ${s.throttledPeriods} periods, ${Math.round(s.throttledMs)} ms in all\n`);
    return code;
  } finally {
    await limit.remove();
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [cpus, dashes, command, ...args] = process.argv.slice(2);
  if (!cpus || dashes !== '--' || !command) {
    process.stderr.write('usage: tsx scripts/lab/cpu-limit.ts CPUS -- COMMAND [ARGS...]   (e.g. 0.25 -- node bin/fwcast-agent.js capacity)\n');
    process.exit(2);
  }
  process.exit(await runUnderCpuLimit(Number(cpus), command, args));
}
