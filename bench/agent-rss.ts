/**
 * Peak resident memory of a real agent receiving, verifying and installing an
 * image over multicast in the lab: publisher and agent in their own network
 * namespaces. The agent runs exactly as installed (bin/fwcast-agent.js and its
 * node flags); VmHWM is read from /proc while it runs.
 *
 *   bash scripts/lab.sh npx tsx bench/agent-rss.ts [--loss PERCENT] [--segment-mib N] [--runs N] [--encrypt] [SIZE_MIB...]
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { writeSampleImage } from '../firmware-samples/generate.js';
import { NetLab } from '../scripts/lab/netlab.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const FWCAST = join(ROOT, 'bin/fwcast.js');
const AGENT = join(ROOT, 'bin/fwcast-agent.js');
const KEY = join(ROOT, 'firmware-samples/demo-keys/DEMO-ONLY-publisher.key');
const PUB = join(ROOT, 'firmware-samples/demo-keys/DEMO-ONLY-publisher.pub');

/** The node flags of the agent's shebang line, so the measurement is of the agent as shipped. */
export function agentNodeFlags(): string[] {
  const shebang = readFileSync(AGENT, 'utf8').split('\n')[0]!;
  return shebang.split(/\s+/).filter((w) => w.startsWith('--'));
}

/** The environment the agent's shebang line sets (NAME=value before `node`). */
export function agentEnvironment(): Record<string, string> {
  const shebang = readFileSync(AGENT, 'utf8').split('\n')[0]!;
  return Object.fromEntries(shebang.split(/\s+/).filter((w) => /^[A-Z_]+=/.test(w)).map((w) => [w.slice(0, w.indexOf('=')), w.slice(w.indexOf('=') + 1)]));
}

/** Starts the agent in a lab host as installed: its shebang's node flags and environment. */
export function spawnAgent(lab: NetLab, host: string, args: string[]): ChildProcess {
  return lab.spawn(host, process.execPath, [...agentNodeFlags(), AGENT, ...args], { env: { ...process.env, ...agentEnvironment() } });
}

export interface AgentRssOptions {
  /** Publisher rate, tc units (default 150mbit). */
  rate?: string;
  timeoutS?: number;
  /** Loss on the agent's link, percent (default 0). */
  lossPercent?: number;
  /** `fwcast sign --segment-size` (default: the publisher's). */
  segmentSize?: number;
  /** Extra arguments for the agent (an option being measured). */
  agentArgs?: string[];
  /** Confidential firmware: the image encrypted for a group key the agent holds (`--encrypt-for`, `--decryption-key`). */
  encrypt?: boolean;
}

export interface AgentRss {
  imageMiB: number;
  lossPercent: number;
  segmentSize: number;
  peakRssMiB: number;
  seconds: number;
  verified: boolean;
}

export interface AgentRssRuns {
  imageMiB: number;
  lossPercent: number;
  segmentSize: number;
  runs: AgentRss[];
  /** The largest peak of all runs: what the cap is checked against. */
  maxPeakRssMiB: number;
  /** Every run installed the byte-identical image. */
  verified: boolean;
}

/**
 * `runs` transfers of one signed release (signed once; the publisher's symbol
 * cache is shared, so only the first run encodes), each to a fresh agent with
 * an empty store in a fresh lab: a peak that shows only in some runs (issue 14
 * saw 88–100 MiB across runs) is not missed.
 */
export async function measureAgentRssRuns(imageMiB: number, runs: number, opts: AgentRssOptions = {}): Promise<AgentRssRuns> {
  if (!(runs >= 1 && Number.isInteger(runs))) throw new RangeError(`runs must be a positive integer, got ${runs}`);
  const { rate = '150mbit', timeoutS = 240, lossPercent = 0 } = opts;
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-rss-'));
  try {
    const image = join(dir, 'image');
    await writeSampleImage(image, imageMiB * 1024 * 1024, imageMiB);
    const release = join(dir, 'release.fwc');
    if (opts.encrypt) execFileSync(process.execPath, [FWCAST, 'keygen', '--group', '--out', dir, '--name', 'group']);
    const encryption = opts.encrypt ? ['--encrypt-for', join(dir, 'group.key')] : [];
    execFileSync(process.execPath, [FWCAST, 'sign', image, '--key', KEY, '--model', 'bench', '--version', '1', '--seq', '1', '--out', release,
      ...(opts.segmentSize ? ['--segment-size', String(opts.segmentSize)] : []), ...encryption]);
    const inspected = JSON.parse(execFileSync(process.execPath, [FWCAST, 'inspect', release, '--json'], { encoding: 'utf8' })) as { sha256: string; fec: { segmentSize: number }; encryption?: { plainSha256: string } };
    // What the agent reports installing: the plaintext's digest.
    const expected = { ...inspected, sha256: inspected.encryption?.plainSha256 ?? inspected.sha256 };
    const agentArgs = [...(opts.agentArgs ?? []), ...(opts.encrypt ? ['--decryption-key', join(dir, 'group.key')] : [])];
    const list: AgentRss[] = [];
    for (let i = 0; i < runs; i++) {
      const r = await oneRun(dir, release, join(dir, `store-${i}`), rate, timeoutS, lossPercent, agentArgs);
      list.push({ imageMiB, lossPercent, segmentSize: expected.fec.segmentSize, peakRssMiB: r.peakKiB / 1024, seconds: r.seconds, verified: r.sha256 === expected.sha256 });
    }
    return {
      imageMiB, lossPercent, segmentSize: expected.fec.segmentSize, runs: list,
      maxPeakRssMiB: Math.max(...list.map((r) => r.peakRssMiB)), verified: list.every((r) => r.verified),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function measureAgentRss(imageMiB: number, opts: AgentRssOptions = {}): Promise<AgentRss> {
  return (await measureAgentRssRuns(imageMiB, 1, opts)).runs[0]!;
}

async function oneRun(dir: string, release: string, store: string, rate: string, timeoutS: number, lossPercent: number, agentArgs: string[]): Promise<{ peakKiB: number; seconds: number; sha256?: string }> {
  const lab = NetLab.create(['pub', 'dev']);
  try {
    if (lossPercent > 0) lab.setLoss('dev', lossPercent);
    const agent = spawnAgent(lab, 'dev', ['--model', 'bench', '--key', PUB, '--iface', 'eth0', '--store', store, '--once', '--json', '--timeout', String(timeoutS), ...agentArgs]);
    let stdout = '';
    agent.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    agent.stderr!.resume();
    const exited = new Promise<number | null>((resolve) => agent.on('exit', resolve));
    await new Promise((r) => setTimeout(r, 1000));
    const publisher = lab.spawn('pub', process.execPath, [FWCAST, 'publish', release, '--iface', 'eth0', '--rate', rate, '--duration', `${timeoutS}s`, '--quiet', '--cache', join(dir, 'cache')]);
    publisher.stderr!.resume();
    const started = performance.now();
    let peakKiB = 0;
    const poll = setInterval(() => {
      try {
        const m = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${agent.pid}/status`, 'utf8'));
        if (m) peakKiB = Math.max(peakKiB, Number(m[1]));
      } catch {
        // The agent has just exited.
      }
    }, 100);
    const code = await exited;
    clearInterval(poll);
    publisher.kill('SIGTERM');
    const result = code === 0 ? (JSON.parse(stdout.trim().split('\n').pop()!) as { sha256: string }) : undefined;
    return { peakKiB, seconds: (performance.now() - started) / 1000, ...(result ? { sha256: result.sha256 } : {}) };
  } finally {
    lab.destroy();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { loss: { type: 'string' }, 'segment-mib': { type: 'string' }, runs: { type: 'string', default: '1' }, encrypt: { type: 'boolean', default: false } } });
  const opts: AgentRssOptions = {
    encrypt: values.encrypt!,
    ...(values.loss ? { lossPercent: Number(values.loss) } : {}),
    ...(values['segment-mib'] ? { segmentSize: Math.round(Number(values['segment-mib']) * 2 ** 20) } : {}),
  };
  const sizes = positionals.map(Number);
  for (const size of sizes.length ? sizes : [16, 256]) console.log(JSON.stringify(await measureAgentRssRuns(size, Number(values.runs), opts)));
}
