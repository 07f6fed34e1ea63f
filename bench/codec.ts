/**
 * Codec throughput: fwcast's segmented RaptorQ on a worker pool against the
 * plain single-block `raptorq` codec, same image, same loss pattern, same run.
 * Encode = the K source symbols plus 10% repair symbols; decode = a receiver
 * that lost 10% of the source symbols and uses repair symbols instead.
 *
 *   npx tsx bench/codec.ts [SIZE_MIB]
 */
import { loadRaptorq, sourceSymbolCount } from '../protocol/fec.js';
import { planSegments } from '../protocol/manifest.js';
import { CodecPool } from '../server/codec-pool.js';
import { makeImage, prng } from '../test/helpers/fixtures.js';

export interface CodecResult {
  imageMiB: number;
  workers: number;
  baselineEncodeMBs: number;
  baselineDecodeMBs: number;
  encodeMBs: number;
  decodeMBs: number;
  encodeSpeedup: number;
  decodeSpeedup: number;
}

const T = 1208;
const LOSS = 0.1;
const mbps = (bytes: number, ms: number): number => bytes / 1e6 / (ms / 1000);

/** Which ESIs a receiver uses: 90% of the sources, then repairs up to K + 2. */
function received(k: number, seed: number): number[] {
  const lose = prng(seed);
  const esis: number[] = [];
  for (let esi = 0; esi < k; esi++) if (lose() >= LOSS) esis.push(esi);
  for (let esi = k; esis.length < k + 2; esi++) esis.push(esi);
  return esis;
}

function baseline(image: Uint8Array): { encodeMs: number; decodeMs: number } {
  const rq = loadRaptorq();
  const k = sourceSymbolCount(image.length, T);
  let t0 = performance.now();
  const encoder = rq.Encoder.with_defaults(image, T);
  const packets = encoder.encode(Math.ceil(k / 10));
  encoder.free();
  const encodeMs = performance.now() - t0;
  // The crate numbers repair symbols from K' (see protocol/fec.ts); pick by position instead.
  const bySource = packets.slice(0, k);
  const repairs = packets.slice(k);
  const esis = received(k, 7);
  const decoder = rq.Decoder.with_defaults(BigInt(image.length), T);
  t0 = performance.now();
  let out: Uint8Array | undefined;
  for (const esi of esis) {
    out = decoder.decode(esi < k ? bySource[esi]! : repairs[esi - k]!);
    if (out) break;
  }
  const decodeMs = performance.now() - t0;
  decoder.free();
  if (!out) throw new Error('baseline did not decode');
  return { encodeMs, decodeMs };
}

export async function measureCodec(imageMiB: number, workers = 2): Promise<CodecResult> {
  const image = makeImage(imageMiB * 1024 * 1024, 42);
  const plans = planSegments(image.length, T, 1 << 20);
  const pool = new CodecPool(workers);
  try {
    // Warm every worker's WASM instance up.
    await Promise.all(Array.from({ length: workers }, () => pool.encode(image.slice(0, 1 << 16), T, 60)));
    let t0 = performance.now();
    const encoded = await Promise.all(plans.map((p) => {
      const k = sourceSymbolCount(p.length, T);
      return pool.encode(image.slice(p.offset, p.offset + p.length), T, k + Math.ceil(k / 10));
    }));
    const encodeMs = performance.now() - t0;
    const inputs = plans.map((p, n) => {
      const esis = received(sourceSymbolCount(p.length, T), 7 + n);
      const symbols = new Uint8Array(esis.length * T);
      esis.forEach((esi, i) => symbols.set(encoded[n]!.subarray(esi * T, (esi + 1) * T), i * T));
      return { length: p.length, esis: Uint32Array.from(esis), symbols };
    });
    t0 = performance.now();
    await Promise.all(inputs.map((x) => pool.decode(x.length, T, x.esis, x.symbols)));
    const decodeMs = performance.now() - t0;
    const base = baseline(image);
    const encodeMBs = mbps(image.length, encodeMs);
    const decodeMBs = mbps(image.length, decodeMs);
    const baselineEncodeMBs = mbps(image.length, base.encodeMs);
    const baselineDecodeMBs = mbps(image.length, base.decodeMs);
    return {
      imageMiB, workers, baselineEncodeMBs, baselineDecodeMBs, encodeMBs, decodeMBs,
      encodeSpeedup: encodeMBs / baselineEncodeMBs, decodeSpeedup: decodeMBs / baselineDecodeMBs,
    };
  } finally {
    await pool.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(JSON.stringify(await measureCodec(Number(process.argv[2] ?? 16))));
}
