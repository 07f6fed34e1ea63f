/**
 * `npm run demo`: a publisher and three device agents on a private network
 * (namespaces on one bridge, inside scripts/lab.sh: nothing leaves it), one
 * agent's link losing 25% of packets. Shows live progress and ends with each
 * agent's verified SHA-256.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { writeSampleImage } from '../firmware-samples/generate.js';
import type { LogEvent } from '../protocol/log.js';
import { NetLab } from './lab/netlab.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const FWCAST = join(ROOT, 'bin/fwcast.js');
const AGENT = join(ROOT, 'bin/fwcast-agent.js');
const KEY = join(ROOT, 'firmware-samples/demo-keys/DEMO-ONLY-publisher.key');
const PUB = join(ROOT, 'firmware-samples/demo-keys/DEMO-ONLY-publisher.pub');
const IMAGE_SIZE = 8 * 1024 * 1024;
const RATE = '20mbit';
const LOSSY = 'agent-3';
const LOSS = 25;
const DEADLINE_MS = 120_000;

interface AgentView {
  host: string;
  state: 'starting' | 'listening' | 'receiving' | 'installed' | 'failed';
  symbols: number;
  needed: number;
  segments: string;
  sha256?: string;
  lastError?: string;
}

const tty = process.stdout.isTTY;
const sha256 = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

function bar(fraction: number, width = 30): string {
  const full = Math.round(Math.min(1, fraction) * width);
  return '█'.repeat(full) + '░'.repeat(width - full);
}

async function main(): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-demo-'));
  const imagePath = join(dir, 'rpi4-2.0.0.img');
  const releasePath = join(dir, 'rpi4-2.0.0.fwc');
  await writeSampleImage(imagePath, IMAGE_SIZE, 2024);
  const source = sha256(readFileSync(imagePath));
  execFileSync(process.execPath, [FWCAST, 'sign', imagePath, '--key', KEY, '--model', 'rpi4', '--version', '2.0.0', '--seq', '2', '--out', releasePath], { stdio: 'inherit' });

  const hosts = ['agent-1', 'agent-2', LOSSY];
  const lab = NetLab.create(['publisher', ...hosts]);
  lab.setLoss(LOSSY, LOSS);
  console.log(`private network: publisher + ${hosts.join(', ')} on one bridge; ${LOSSY} loses ${LOSS}% of packets (nftables)`);
  console.log(`channel fw/rpi4 → ${execFileSync(process.execPath, [FWCAST, 'channel', 'rpi4'], { encoding: 'utf8' }).trim()}\n`);

  const views = new Map<string, AgentView>();
  const exits: Promise<void>[] = [];
  for (const host of hosts) {
    const view: AgentView = { host, state: 'starting', symbols: 0, needed: 1, segments: '' };
    views.set(host, view);
    const child = lab.spawn(host, process.execPath, [AGENT, '--model', 'rpi4', '--key', PUB, '--iface', 'eth0', '--store', join(dir, host), '--once', '--json', '--log-format', 'json', '--progress-interval', '0.2', '--timeout', String(DEADLINE_MS / 1000)]);
    let buffered = '';
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      buffered += chunk;
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        try {
          const entry = JSON.parse(line) as { event: LogEvent; msg: string; level: string; symbols?: number; needed?: number; segmentsDone?: number; segments?: number };
          if (entry.event === 'agent.listening') view.state = 'listening';
          else if (entry.event === 'release.progress') Object.assign(view, { state: 'receiving', symbols: entry.symbols, needed: entry.needed, segments: `${entry.segmentsDone}/${entry.segments}` });
          else if (entry.level === 'error' || entry.level === 'warn') view.lastError = entry.msg;
        } catch {
          view.lastError = line;
        }
      }
    });
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      const result = JSON.parse(chunk.trim().split('\n').pop()!) as { sha256: string };
      const total = view.segments.split('/')[1] ?? '';
      Object.assign(view, { state: 'installed', sha256: result.sha256, symbols: view.needed, segments: `${total}/${total}` });
    });
    exits.push(new Promise((resolve) => child.on('exit', (code) => {
      if (code !== 0) view.state = 'failed';
      resolve();
    })));
  }
  // Give the agents a moment to join before the carousel starts.
  await new Promise((r) => setTimeout(r, 1500));
  const publisher = lab.spawn('publisher', process.execPath, [FWCAST, 'publish', releasePath, '--iface', 'eth0', '--rate', RATE, '--duration', `${DEADLINE_MS / 1000}s`, '--quiet']);
  publisher.stderr!.resume();
  const started = Date.now();

  let drawn = 0;
  const draw = (): void => {
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    const lines = [`publisher: carousel at ${RATE}, ${seconds} s`];
    for (const v of views.values()) {
      const pct = v.state === 'installed' ? 1 : v.symbols / v.needed;
      const note = v.host === LOSSY ? ` (${LOSS}% loss, ${lab.dropped()[LOSSY] ?? 0} dropped)` : '';
      lines.push(`${v.host.padEnd(8)} ${bar(pct)} ${(pct * 100).toFixed(0).padStart(3)}% ${v.state.padEnd(9)} ${v.segments ? `segments ${v.segments}` : ''}${note}`);
    }
    if (tty) {
      if (drawn) process.stdout.write(`\x1b[${drawn}A`);
      process.stdout.write(lines.map((l) => `\x1b[2K${l}\n`).join(''));
      drawn = lines.length;
    } else {
      process.stdout.write(lines.join('\n') + '\n\n');
    }
  };
  const timer = setInterval(draw, tty ? 200 : 1000);
  await Promise.race([Promise.all(exits), new Promise((r) => setTimeout(r, DEADLINE_MS))]);
  clearInterval(timer);
  draw();
  publisher.kill('SIGTERM');
  lab.destroy();

  console.log(`\nsource image   sha256 ${source}`);
  let ok = true;
  for (const v of views.values()) {
    const match = v.sha256 === source;
    ok &&= match;
    console.log(`${v.host.padEnd(14)} sha256 ${v.sha256 ?? '(none)'} ${match ? 'verified, installed' : `FAILED ${v.lastError ?? ''}`}`);
  }
  rmSync(dir, { recursive: true, force: true });
  console.log(ok ? '\nall agents installed the signed image.' : '\ndemo failed.');
  return ok ? 0 : 1;
}

process.exit(await main());
