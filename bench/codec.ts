/**
 * Codec throughput: fwcast's segmented RaptorQ on a worker pool against the
 * plain single-block `raptorq` codec, same image, same loss pattern, same run.
 * Encode = the K source symbols plus 10% (+2) repair symbols; decode = a
 * receiver that lost 10% of the source symbols and uses repair symbols
 * instead, checked against the image.
 *
 * Steady state, like any throughput benchmark: every WASM instance (each
 * worker's, and the main thread's that runs the baseline) first goes through
 * warmUpCodec, then the best of `passes` runs counts. The pool's first pass,
 * in freshly started workers, is reported too as `cold`: a one-shot
 * `fwcast sign` sees that speed for its first few MiB per worker.
 *
 *   npx tsx bench/codec.ts [SIZE_MIB] [PASSES]
 */
import { defaultCodec, sourceSymbolCount, warmUpCodec } from '../protocol/fec.js';
import { planSegments } from '../protocol/manifest.js';
import { DEFAULT_SEGMENT_SIZE } from '../protocol/limits.js';
import { CodecPool } from '../server/codec-pool.js';
import { segmentSizeFor } from '../server/release.js';
import { makeImage, shuffle } from '../test/helpers/fixtures.js';

export interface CodecResult {
  imageMiB: number;
  workers: number;
  baselineEncodeMBs: number;
  baselineDecodeMBs: number;
  encodeMBs: number;
  decodeMBs: number;
  encodeSpeedup: number;
  decodeSpeedup: number;
  /** The pool's first pass in fresh workers, before any warm-up. */
  coldEncodeMBs: number;
  coldDecodeMBs: number;
  passes: number;
}

const T = 1208;
const LOSS = 0.1;
const mbps = (bytes: number, ms: number): number => bytes / 1e6 / (ms / 1000);

/** Repair symbols encoded per K source symbols: the 10% lost, and 2 more for a first-try decode. */
const repairsFor = (k: number): number => Math.round(k * LOSS) + 2;

/** Which ESIs a receiver uses: all sources but a seeded 10%, then the repairs, K + 2 in all. */
function received(k: number, seed: number): number[] {
  const lost = new Set(shuffle([...Array(k).keys()], seed).slice(0, Math.round(k * LOSS)));
  const esis: number[] = [];
  for (let esi = 0; esi < k; esi++) if (!lost.has(esi)) esis.push(esi);
  for (let esi = k; esis.length < k + 2; esi++) esis.push(esi);
  return esis;
}

function baseline(image: Uint8Array): { encodeMs: number; decodeMs: number } {
  // The raw binding, in the instance warmUpCodec warmed: no ESI renumbering, no checks.
  const wasm = defaultCodec.wasm;
  const k = sourceSymbolCount(image.length, T);
  let t0 = performance.now();
  const encoder = wasm.encoderNew(image, T);
  const packets = wasm.encoderEncode(encoder, repairsFor(k));
  wasm.encoderFree(encoder);
  const encodeMs = performance.now() - t0;
  // The crate numbers repair symbols from K' (see protocol/fec.ts); pick by position instead.
  const bySource = packets.slice(0, k);
  const repairs = packets.slice(k);
  const esis = received(k, 7);
  const decoder = wasm.decoderNew(image.length, T);
  t0 = performance.now();
  let out: Uint8Array | undefined;
  for (const esi of esis) {
    out = wasm.decoderDecode(decoder, esi < k ? bySource[esi]! : repairs[esi - k]!);
    if (out) break;
  }
  const decodeMs = performance.now() - t0;
  wasm.decoderFree(decoder);
  if (!out || Buffer.compare(out, image) !== 0) throw new Error('baseline did not decode the image');
  return { encodeMs, decodeMs };
}

async function passOnPool(pool: CodecPool, image: Uint8Array): Promise<{ encodeMs: number; decodeMs: number }> {
  const plans = planSegments(image.length, T, segmentSizeFor(T, DEFAULT_SEGMENT_SIZE));
  let t0 = performance.now();
  const encoded = await Promise.all(plans.map((p) => {
    const k = sourceSymbolCount(p.length, T);
    return pool.encode(image.slice(p.offset, p.offset + p.length), T, k + repairsFor(k));
  }));
  const encodeMs = performance.now() - t0;
  const inputs = plans.map((p, n) => {
    const esis = received(sourceSymbolCount(p.length, T), 7 + n);
    const symbols = new Uint8Array(esis.length * T);
    esis.forEach((esi, i) => symbols.set(encoded[n]!.subarray(esi * T, (esi + 1) * T), i * T));
    return { length: p.length, esis: Uint32Array.from(esis), symbols };
  });
  t0 = performance.now();
  const decoded = await Promise.all(inputs.map((x) => pool.decode(x.length, T, x.esis, x.symbols)));
  const decodeMs = performance.now() - t0;
  decoded.forEach((bytes, n) => {
    const p = plans[n]!;
    if (Buffer.compare(bytes, image.subarray(p.offset, p.offset + p.length)) !== 0) throw new Error(`segment ${n} decoded to different bytes`);
  });
  return { encodeMs, decodeMs };
}

function best(runs: Array<{ encodeMs: number; decodeMs: number }>): { encodeMs: number; decodeMs: number } {
  return { encodeMs: Math.min(...runs.map((r) => r.encodeMs)), decodeMs: Math.min(...runs.map((r) => r.decodeMs)) };
}

export async function measureCodec(imageMiB: number, workers = 2, passes = 3): Promise<CodecResult> {
  const image = makeImage(imageMiB * 1024 * 1024, 42);
  const pool = new CodecPool(workers);
  try {
    // Wait until every worker has loaded its module (a tiny job each), so start-up is not counted.
    await Promise.all(Array.from({ length: workers }, () => pool.encode(image.slice(0, 4096), T, 10)));
    const cold = await passOnPool(pool, image);
    await pool.warmUp();
    const runs = [];
    for (let i = 0; i < passes; i++) runs.push(await passOnPool(pool, image));
    const ours = best(runs);
    warmUpCodec();
    const baselineRuns = [];
    for (let i = 0; i < passes; i++) baselineRuns.push(baseline(image));
    const base = best(baselineRuns);
    const encodeMBs = mbps(image.length, ours.encodeMs);
    const decodeMBs = mbps(image.length, ours.decodeMs);
    const baselineEncodeMBs = mbps(image.length, base.encodeMs);
    const baselineDecodeMBs = mbps(image.length, base.decodeMs);
    return {
      imageMiB, workers, baselineEncodeMBs, baselineDecodeMBs, encodeMBs, decodeMBs,
      encodeSpeedup: encodeMBs / baselineEncodeMBs, decodeSpeedup: decodeMBs / baselineDecodeMBs,
      coldEncodeMBs: mbps(image.length, cold.encodeMs), coldDecodeMBs: mbps(image.length, cold.decodeMs), passes,
    };
  } finally {
    await pool.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(JSON.stringify(await measureCodec(Number(process.argv[2] ?? 16), 2, Number(process.argv[3] ?? 3))));
}
