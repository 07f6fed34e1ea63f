/**
 * `npm run bench`: every fwcast benchmark in one run, each compared with a
 * baseline measured in the same run (these machines are shared and noisy).
 * Prints a table and writes bench/results/<time>.json with the machine.
 *
 *   npm run bench            the full benchmark (several minutes)
 *   npm run bench -- --smoke small sizes, for CI (about a minute)
 *   options: --rss-runs N (agent RSS transfers of the large image; default 5, 1 with --smoke)
 *            --only codec,wireEfficiency,… (those sections only; the file is then named partial-…)
 *            --agent-arg=ARG (repeatable: every fwcast-agent of wireEfficiency, maxRate and agentRss gets it, e.g. --agent-arg=--storage-thread)
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import { measureAgentRssRuns } from './agent-rss.js';
import { measureAuthCost } from './auth-cost.js';
import { measureCodec } from './codec.js';
import { measureEncryptionCost } from './encryption-cost.js';
import { measureDeltas } from './delta.js';
import { measureSegmentSizes } from './segment-size.js';
import { DEFAULT_DATAGRAM_SIZE, DEFAULT_SEGMENT_SIZE } from '../protocol/limits.js';
import { segmentSizeFor, symbolSizeFor } from '../server/release.js';
import { FULL as SERIAL_FULL, lineCapacity, measureSerial, SMOKE as SERIAL_SMOKE } from './serial.js';
import { ESP_FULL, ESP_SMOKE, measureEspSerial } from './esp-serial.js';
import { FULL as SIMULATION_FULL, SMOKE as SIMULATION_SMOKE, simulateFleet } from './simulation.js';
import { formatMaxRate, MAX_RATE_FULL, MAX_RATE_SMOKE, MAX_RATE_TARGET, measureThroughput, searchMaxRate } from './throughput.js';
import { checkTargets, FULL as WIRE_FULL, runWireBenchmark, SMOKE as WIRE_SMOKE } from './wire-efficiency.js';

const { values: args } = parseArgs({ options: { smoke: { type: 'boolean', default: false }, 'rss-runs': { type: 'string' }, only: { type: 'string' }, 'agent-arg': { type: 'string', multiple: true } } });
const agentArgs = args['agent-arg'] ? { agentArgs: args['agent-arg'] } : {};
const smoke = args.smoke!;
const rssRuns = args['rss-runs'] ? Number(args['rss-runs']) : smoke ? 1 : 5;
const only = args.only?.split(',');
const SECTIONS = ['codec', 'segmentSize', 'authCost', 'encryption', 'wireEfficiency', 'maxRate', 'simulation', 'throughput', 'agentRss', 'serial', 'espSerial', 'delta'];
for (const name of only ?? []) if (!SECTIONS.includes(name)) throw new Error(`--only: no section "${name}" (sections: ${SECTIONS.join(', ')})`);
if (!(rssRuns >= 1 && Number.isInteger(rssRuns))) throw new Error(`--rss-runs: a positive integer, got ${args['rss-runs']}`);
const outDir = new URL('./results/', import.meta.url);

interface Row {
  benchmark: string;
  measured: string;
  baseline: string;
  ratio: string;
  target: string;
  pass: boolean | null;
}

const rows: Row[] = [];
const fixed = (n: number, d = 2): string => n.toFixed(d);

function machine(): Record<string, unknown> {
  return {
    cpu: cpus()[0]?.model,
    cores: cpus().length,
    memoryGiB: +(totalmem() / 2 ** 30).toFixed(1),
    kernel: execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim(),
    node: process.version,
    loadAverageAtStart: execFileSync('cat', ['/proc/loadavg'], { encoding: 'utf8' }).trim(),
    rmemMax: Number(execFileSync('cat', ['/proc/sys/net/core/rmem_max'], { encoding: 'utf8' })),
  };
}

const results: Record<string, unknown> = { smoke, ...(only ? { only } : {}), ...agentArgs, startedAt: new Date().toISOString(), machine: machine() };

async function section<T>(name: string, run: () => Promise<T>, report: (r: T) => void): Promise<void> {
  if (only && !only.includes(name)) return;
  process.stderr.write(`bench: ${name}…\n`);
  const started = performance.now();
  try {
    const r = await run();
    results[name] = r;
    report(r);
  } catch (err) {
    results[name] = { error: (err as Error).message };
    rows.push({ benchmark: name, measured: `error: ${(err as Error).message}`, baseline: '', ratio: '', target: '', pass: false });
  }
  process.stderr.write(`bench: ${name} done in ${((performance.now() - started) / 1000).toFixed(0)} s\n`);
}

await section('codec', () => measureCodec(smoke ? 4 : 16, 2, smoke ? 1 : 3), (r) => {
  // Bandwidth first (issue 12): the ratio to a single block is reported, no longer a target.
  rows.push({ benchmark: `codec encode ${r.imageMiB} MiB (${r.workers} workers)`, measured: `${fixed(r.encodeMBs, 1)} MB/s warm (cold ${fixed(r.coldEncodeMBs, 1)})`, baseline: `${fixed(r.baselineEncodeMBs, 1)} MB/s single block, warm`, ratio: `${fixed(r.encodeSpeedup)}×`, target: '≥100 MB/s', pass: r.encodeMBs >= 100 });
  rows.push({ benchmark: `codec decode ${r.imageMiB} MiB (${r.workers} workers)`, measured: `${fixed(r.decodeMBs, 1)} MB/s warm (cold ${fixed(r.coldDecodeMBs, 1)})`, baseline: `${fixed(r.baselineDecodeMBs, 1)} MB/s single block, warm`, ratio: `${fixed(r.decodeSpeedup)}×`, target: '≥100 MB/s', pass: r.decodeMBs >= 100 });
});

await section('segmentSize', () => measureSegmentSizes({ sizesMiB: [DEFAULT_SEGMENT_SIZE / 2 ** 20], seeds: [], passes: smoke ? 1 : 3, simulation: false, rss: false }), (list) => {
  const chosen = list.find((r) => r.segmentSize === segmentSizeFor(symbolSizeFor(DEFAULT_DATAGRAM_SIZE), DEFAULT_SEGMENT_SIZE)) ?? list.at(-1)!;
  const base = list[0]!;
  for (const [what, mine, theirs, ratio] of [['encode', chosen.encodeMBs, base.encodeMBs, chosen.encodeVs1MiB], ['decode', chosen.decodeMBs, base.decodeMBs, chosen.decodeVs1MiB]] as const) {
    rows.push({ benchmark: `codec ${what} per core, ${chosen.segmentMiB} MiB segments (the default)`, measured: `${fixed(mine, 1)} MB/s`, baseline: `${fixed(theirs, 1)} MB/s with 1 MiB segments`, ratio: `${fixed(ratio)}×`, target: '≥0.75× (≤25% slower)', pass: ratio >= 0.75 });
  }
});

await section('authCost', () => measureAuthCost(smoke ? 2 : 16, [0.1, 0.3]), (list) => {
  for (const r of list) {
    rows.push({ benchmark: `auth CPU vs decode CPU, ${fixed(r.loss * 100, 0)}% loss`, measured: `${fixed(r.authMs, 1)} ms`, baseline: `${fixed(r.decodeMs, 1)} ms decode`, ratio: fixed(r.ratio, 3), target: '≤0.15', pass: r.ratio <= 0.15 });
  }
});

// Confidential firmware (issue 18): what recipients cost the manifest and the carousel, and the agent's decryption pass.
await section('encryption', () => measureEncryptionCost(smoke ? 8 : 64), (r) => {
  for (const c of r.recipients) {
    const who = c.recipients === 'group' ? 'one group key' : `${c.recipients} device recipients`;
    rows.push({
      benchmark: `encrypted manifest, ${who}`, measured: `${c.signedManifestBytes} B (${fixed(c.bytesPerRecipient, 1)} B/recipient), ${c.manifestFragments} fragments, ${fixed(c.secondsBetweenCopiesAt20Mbit, 1)} s between copies at 20 Mbit/s`,
      baseline: `+${c.extraBytes} B over plain`, ratio: `${fixed(c.roundShare * 100, 2)}% of a round`,
      // Beyond the receivers' bounds the row says so: that is where cohorts must replace per-device recipients.
      target: c.accepted ? 'accepted by receivers' : 'refused by receivers: use cohort keys', pass: null,
    });
  }
  rows.push({ benchmark: `agent decryption pass, ${r.imageMiB} MiB`, measured: `${fixed(r.decryptMsPerMiB)} ms/MiB`, baseline: `${fixed(r.hashMsPerMiB)} ms/MiB SHA-256 pass (every agent)`, ratio: `${fixed(r.decryptMsPerMiB / r.hashMsPerMiB)}×`, target: 'comparison', pass: null });
  rows.push({ benchmark: 'publisher key wrap per device recipient', measured: `${fixed(r.wrapMicrosPerDevice, 0)} µs`, baseline: '', ratio: '', target: 'comparison', pass: null });
});

await section('wireEfficiency', async () => {
  const run = await runWireBenchmark({ ...(smoke ? WIRE_SMOKE : WIRE_FULL), ...agentArgs });
  return { release: run.facts, rows: run.rows, targets: checkTargets(run.rows), details: run.details };
}, (r) => {
  // Issue 14: one table row per transfer, fwcast's with its targets (drops, bytes, and against uftp where it ran alongside).
  for (const w of r.rows) {
    if (w.tool === 'ideal') continue;
    const where = `${w.agents} agents, ${fixed(w.loss * 100, 0)}% loss, ${w.agentsOk} ok`;
    const measured = `${fixed(w.ratioToIdeal, 3)}× ideal, ${fixed(w.seconds)} s, drops ${w.drops?.join(',') ?? '?'}${w.dropsUntilReceived ? ` (${w.dropsUntilReceived.join(',')} until received)` : ''}`;
    if (w.tool === 'uftp') {
      rows.push({ benchmark: `wire uftp, ${where}`, measured, baseline: 'ideal K/(1−p)·(T+48)', ratio: `${fixed(w.ratioToImage, 3)}× image`, target: 'comparison', pass: null });
      continue;
    }
    const mine = r.targets.filter((t) => t.agents === w.agents && Math.abs(t.loss - w.loss) < 1e-9);
    const uftp = r.rows.find((x) => x.tool === 'uftp' && x.agents === w.agents && Math.abs(x.loss - w.loss) < 1e-9);
    rows.push({
      benchmark: `wire fwcast, ${where}`, measured, baseline: uftp ? `uftp ${fixed(uftp.ratioToIdeal, 3)}× ideal, ${fixed(uftp.seconds)} s` : 'ideal K/(1−p)·(T+48)',
      ratio: `${fixed(w.ratioToImage, 3)}× image`, target: mine.map((t) => t.target).join(', '), pass: mine.every((t) => t.pass),
    });
  }
});

await section('maxRate', () => searchMaxRate({ ...(smoke ? MAX_RATE_SMOKE : MAX_RATE_FULL), ...agentArgs }), (list) => {
  process.stderr.write(formatMaxRate(list) + '\n');
  for (const m of list) {
    const targeted = Math.abs(m.loss - MAX_RATE_TARGET.loss) < 1e-9;
    const bracket = m.failedMbit === undefined ? 'none failed' : `failed at ${fixed(m.failedMbit, 0)}`;
    rows.push({
      benchmark: `one agent's highest rate with 0 drops, ${fixed(m.loss * 100, 0)}% loss, ${m.trials.length} transfers`, measured: `${fixed(m.ceilingMbit, 0)} Mbit/s (${bracket})${m.publisherLimited ? ', publisher-limited' : ''}`,
      baseline: '', ratio: '', target: targeted ? `≥${MAX_RATE_TARGET.mbit} Mbit/s` : '-', pass: targeted ? m.ceilingMbit >= MAX_RATE_TARGET.mbit : null,
    });
  }
});

await section('simulation', () => simulateFleet(smoke ? SIMULATION_SMOKE : SIMULATION_FULL), (r) => {
  rows.push({ benchmark: `simulation ${r.agents} agents, loss 0–${fixed(r.maxLoss * 100, 0)}%`, measured: `${r.symbolsSent} symbols`, baseline: `${fixed(r.ideal, 0)} ideal`, ratio: `${fixed(r.ratio, 3)}×`, target: '≤1.03×', pass: r.ratio <= 1.03 });
});

await section('throughput', () => measureThroughput(smoke ? 10_000 : 30_000, smoke ? 8 : 48), (r) => {
  rows.push({ benchmark: `publisher pacing to a real agent`, measured: `${fixed(r.achievedPps, 0)} datagrams/s, ${r.receiveBufferDrops} receiver drops until received (${r.receiveBufferDropsUntilExit} until exit)`, baseline: `${r.targetPps} target`, ratio: fixed(r.achievedPps / r.targetPps), target: `≥${r.targetPps}/s, 0 drops`, pass: r.achievedPps >= r.targetPps * 0.97 && r.receiveBufferDrops === 0 && r.installed });
});

await section('agentRss', async () => {
  // The large image at 10% loss, where every segment is decoded from repair symbols: the
  // agent's largest working set (issue 12's cap), `rssRuns` times, since its peak varies
  // between runs (issue 14); the small one as issue 4 set its cap, lossless.
  const cases = smoke ? [{ size: 4, loss: 0, runs: rssRuns }] : [{ size: 16, loss: 0, runs: 1 }, { size: 256, loss: 10, runs: rssRuns }];
  const out = [];
  for (const c of cases) out.push(await measureAgentRssRuns(c.size, c.runs, { lossPercent: c.loss, ...agentArgs }));
  return out;
}, (list) => {
  for (const r of list) {
    const cap = r.imageMiB <= 16 ? 64 : 96;
    const each = r.runs.length > 1 ? ` (runs: ${r.runs.map((x) => fixed(x.peakRssMiB, 1)).join(', ')})` : '';
    rows.push({ benchmark: `agent peak RSS, ${r.imageMiB} MiB image, ${r.lossPercent}% loss, ${r.runs.length === 1 ? '1 run' : `max of ${r.runs.length} runs`}`, measured: `${fixed(r.maxPeakRssMiB, 1)} MiB${each}`, baseline: '', ratio: '', target: `≤${cap} MiB${r.verified ? '' : ', NOT VERIFIED'}`, pass: r.verified && r.maxPeakRssMiB <= cap });
  }
});

await section('serial', () => measureSerial(smoke ? SERIAL_SMOKE : SERIAL_FULL), (r) => {
  for (const p of r.protocols) {
    const name = `serial ${p.protocol} ${fixed(p.imageBytes / 1024, 0)} KiB to ${p.device}`;
    const baseline = `${fixed(lineCapacity(p.bitsPerChar), 0)} B/s line ${p.framing}`;
    rows.push({ benchmark: `${name}, write`, measured: `${fixed(p.projectedWriteBps, 0)} B/s at ${r.baud}, ${p.write.roundTrips} round trips`, baseline, ratio: fixed(p.write.efficiency, 3), target: '-', pass: null });
    rows.push({ benchmark: `${name}, write+verify`, measured: `${fixed(p.projectedBps, 0)} B/s at ${r.baud}, ${p.total.roundTrips} round trips, ${fixed(p.measuredBps, 0)} B/s wall on ${p.line}`, baseline, ratio: fixed(p.total.efficiency, 3), target: '-', pass: null });
  }
});

await section('espSerial', () => measureEspSerial(smoke ? ESP_SMOKE : ESP_FULL), (runs) => {
  for (const r of runs) {
    rows.push({
      benchmark: `serial esp ${fixed(r.imageBytes / 1024, 0)} KiB ${r.content}${r.compressed ? ', deflated' : ''}, to the ESP32 emulator`,
      measured: `${fixed(r.lineBps, 0)} B/s at ${r.baud}, ${r.roundTrips} round trips, ${fixed(r.wallBps, 0)} B/s wall on pty`,
      baseline: `${fixed(r.baud / 10, 0)} B/s line 8N1`, ratio: fixed(r.efficiency, 3), target: '-', pass: null,
    });
  }
});

results.finishedAt = new Date().toISOString();
results.rows = rows;
const widths = ['benchmark', 'measured', 'baseline', 'ratio', 'target'].map((k) => Math.max(k.length, ...rows.map((r) => String(r[k as keyof Row]).length)));
const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ');
console.log(line(['benchmark', 'measured', 'baseline', 'ratio', 'target']) + '  pass');
for (const r of rows) console.log(line([r.benchmark, r.measured, r.baseline, r.ratio, r.target]) + '  ' + (r.pass === null ? '-' : r.pass ? 'yes' : 'NO'));
mkdirSync(outDir, { recursive: true });
await section('delta', () => measureDeltas({ smoke }), (list) => {
  const mib = (n: number): string => `${fixed(n / 2 ** 20, 2)} MiB`;
  for (const r of list) {
    // Issue 19's goal: a one-package change costs at most 10% of the full image's wire bytes; the MCU pair and the large image are reported.
    const target = r.name === 'rootfs' ? '≤10% of full' : r.name === 'large' ? 'apply ≤96 MiB RSS' : '-';
    const pass = r.name === 'rootfs' ? r.ratio <= 0.1 : r.name === 'large' ? r.applyPeakRssMiB <= 96 : null;
    const apply = `apply ${fixed(r.applyMs / 1000)} s, peak RSS ${fixed(r.applyPeakRssMiB, 1)} MiB (idle node ${fixed(r.idleRssMiB, 1)})`;
    rows.push(r.fullWireBytes > 0
      ? { benchmark: `delta ${r.what} (${mib(r.imageBytes)})`, measured: `${r.deltaWireBytes} B on the wire (delta ${r.deltaBytes} B); ${apply}`, baseline: `${r.fullWireBytes} B full image`, ratio: `${fixed(r.ratio * 100, 2)}%`, target, pass }
      : { benchmark: `delta apply, ${r.what}`, measured: `delta ${r.deltaBytes} B; ${apply}`, baseline: '', ratio: '', target, pass });
  }
});

const file = new URL(`${smoke ? 'smoke-' : ''}${only ? 'partial-' : ''}${(results.startedAt as string).replace(/[:.]/g, '-')}.json`, outDir);
writeFileSync(file, JSON.stringify(results, null, 2) + '\n');
console.log(`\nwritten: bench/results/${file.pathname.split('/').pop()}`);
