/**
 * Segment size: what it costs and what it buys, measured in one run so that
 * the codec speeds compare (these machines' absolute speed varies 2× from day
 * to day). For each size:
 *
 *  - codec speed per core, steady state, on one thread with the product's
 *    SegmentEncoder/SegmentDecoder (protocol/fec.ts): encode as `fwcast sign`
 *    does (K source + the default 200% repair symbols), and decode as an agent
 *    at 10% loss does (a tenth of the sources replaced by repair symbols).
 *    Sizes take turns pass after pass and the best pass counts, so a slow
 *    stretch of the machine does not land on one size only;
 *  - the fleet simulation (simulation.ts: 1000 agents, loss 0–30%) per seed,
 *    against its binomial bound;
 *  - optionally the agent's peak RSS receiving a 256 MiB image at 10% loss
 *    (agent-rss.ts; needs the lab).
 *
 *   bash scripts/lab.sh npx tsx bench/segment-size.ts [--sizes 1,2,3,4] [--seeds 1,2,3] [--passes 3] [--no-rss] [--no-simulation] [--out FILE]
 */
import { writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { SegmentDecoder, SegmentEncoder, sourceSymbolCount, warmUpCodec } from '../protocol/fec.js';
import { DEFAULT_DATAGRAM_SIZE } from '../protocol/limits.js';
import { publishedSymbols } from '../protocol/manifest.js';
import { DEFAULT_REPAIR_PERCENT, segmentSizeFor, symbolSizeFor } from '../server/release.js';
import { makeImage } from '../test/helpers/fixtures.js';
import { measureAgentRss, type AgentRss } from './agent-rss.js';
import { FULL as SIMULATION, simulateFleet } from './simulation.js';

const MiB = 2 ** 20;
const T = symbolSizeFor(DEFAULT_DATAGRAM_SIZE);
const LOSS = 0.1;

export interface SegmentSizeRow {
  segmentMiB: number;
  /** Bytes, rounded up to whole symbols as `fwcast sign` does. */
  segmentSize: number;
  k: number;
  /** MB/s per core: K source + repair symbols as published, and a decode at 10% loss. */
  encodeMBs: number;
  decodeMBs: number;
  /** Speed relative to 1 MiB segments in the same run: 0.8 = 20% slower. */
  encodeVs1MiB: number;
  decodeVs1MiB: number;
  simulation?: { seeds: number[]; ratios: number[]; worst: number; binomialBound: number; crossCheckAgrees: boolean };
  rss256MiB?: AgentRss;
}

export interface SegmentSizeOptions {
  sizesMiB: number[];
  seeds: number[];
  passes: number;
  simulation: boolean;
  rss: boolean;
}

const mbps = (bytes: number, ms: number): number => bytes / 1e6 / (ms / 1000);

/** One encode and one decode of a segment of `length` bytes; milliseconds each. */
function codecPass(data: Uint8Array, seed: number): { encodeMs: number; decodeMs: number } {
  const k = sourceSymbolCount(data.length, T);
  let t0 = performance.now();
  const encoder = new SegmentEncoder(data, T);
  let symbols;
  try {
    symbols = encoder.symbols(publishedSymbols(k, DEFAULT_REPAIR_PERCENT));
  } finally {
    encoder.free();
  }
  const encodeMs = performance.now() - t0;
  // Lose every source symbol whose (ESI + seed) is ≡ 0 mod 10: a tenth, spread over the segment.
  const used = symbols.filter((s) => s.esi >= k || (s.esi + seed) % Math.round(1 / LOSS) !== 0);
  const decoder = new SegmentDecoder(data.length, T);
  t0 = performance.now();
  let out: Uint8Array | undefined;
  try {
    for (const s of used) if ((out = decoder.push(s.esi, s.data))) break;
  } finally {
    decoder.free();
  }
  const decodeMs = performance.now() - t0;
  if (!out || Buffer.compare(out, data) !== 0) throw new Error(`segment of ${data.length} bytes did not decode to its data`);
  return { encodeMs, decodeMs };
}

export async function measureSegmentSizes(opts: SegmentSizeOptions): Promise<SegmentSizeRow[]> {
  const sizes = [...new Set([1, ...opts.sizesMiB])].sort((a, b) => a - b);
  warmUpCodec();
  const data = sizes.map((s, i) => makeImage(segmentSizeFor(T, Math.round(s * MiB)), 100 + i));
  const best = sizes.map(() => ({ encodeMs: Infinity, decodeMs: Infinity }));
  for (let pass = 0; pass < opts.passes; pass++) {
    sizes.forEach((_, i) => {
      const r = codecPass(data[i]!, pass);
      best[i]!.encodeMs = Math.min(best[i]!.encodeMs, r.encodeMs);
      best[i]!.decodeMs = Math.min(best[i]!.decodeMs, r.decodeMs);
    });
  }
  const rows: SegmentSizeRow[] = sizes.map((segmentMiB, i) => ({
    segmentMiB,
    segmentSize: data[i]!.length,
    k: sourceSymbolCount(data[i]!.length, T),
    encodeMBs: mbps(data[i]!.length, best[i]!.encodeMs),
    decodeMBs: mbps(data[i]!.length, best[i]!.decodeMs),
    encodeVs1MiB: 0,
    decodeVs1MiB: 0,
  }));
  const base = rows[0]!;
  for (const r of rows) {
    r.encodeVs1MiB = r.encodeMBs / base.encodeMBs;
    r.decodeVs1MiB = r.decodeMBs / base.decodeMBs;
  }
  for (const r of rows) {
    if (opts.simulation) {
      const runs = [];
      for (const seed of opts.seeds) runs.push(await simulateFleet({ ...SIMULATION, segmentSize: r.segmentSize, seed }));
      const ratios = runs.map((x) => x.ratio);
      r.simulation = {
        seeds: opts.seeds, ratios, worst: Math.max(...ratios),
        binomialBound: runs[0]!.analyticExpectation.binomial.ratio, crossCheckAgrees: runs.every((x) => x.crossCheck.agree),
      };
    }
    if (opts.rss) r.rss256MiB = await measureAgentRss(256, { lossPercent: LOSS * 100, segmentSize: r.segmentSize });
  }
  return rows;
}

export function formatSegmentSizes(rows: SegmentSizeRow[]): string {
  const f = (x: number | undefined, d = 3): string => (x === undefined ? '-' : x.toFixed(d));
  const head = ['segment', 'K', 'encode MB/s', 'vs 1 MiB', 'decode MB/s', 'vs 1 MiB', 'simulation (per seed)', 'bound', 'RSS 256 MiB, 10%'];
  const lines = rows.map((r) => [
    `${r.segmentMiB} MiB`, String(r.k), f(r.encodeMBs, 1), f(r.encodeVs1MiB, 2), f(r.decodeMBs, 1), f(r.decodeVs1MiB, 2),
    r.simulation ? r.simulation.ratios.map((x) => x.toFixed(3)).join(' ') + (r.simulation.crossCheckAgrees ? '' : ' (cross-check DIFF)') : '-',
    f(r.simulation?.binomialBound), r.rss256MiB ? `${r.rss256MiB.peakRssMiB.toFixed(1)} MiB${r.rss256MiB.verified ? '' : ' NOT VERIFIED'}` : '-',
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const fmt = (cells: string[]): string => cells.map((c, i) => c.padStart(widths[i]!)).join('  ');
  return [fmt(head), ...lines.map(fmt)].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      sizes: { type: 'string', default: '1,2,3,4' },
      seeds: { type: 'string', default: '1,2,3' },
      passes: { type: 'string', default: '3' },
      'no-rss': { type: 'boolean', default: false },
      'no-simulation': { type: 'boolean', default: false },
      out: { type: 'string' },
    },
  });
  const startedAt = new Date().toISOString();
  const loadBefore = loadavg();
  const rows = await measureSegmentSizes({
    sizesMiB: values.sizes.split(',').map(Number),
    seeds: values.seeds.split(',').map(Number),
    passes: Number(values.passes),
    simulation: !values['no-simulation'],
    rss: !values['no-rss'],
  });
  console.log(formatSegmentSizes(rows));
  const json = JSON.stringify({ startedAt, machine: { cpu: cpus()[0]?.model, cores: cpus().length, node: process.version, loadAverageAtStart: loadBefore }, rows }, null, 2);
  console.log(json);
  if (values.out) writeFileSync(values.out, json + '\n');
}
