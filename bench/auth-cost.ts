/**
 * Cost of per-packet authentication against the cost of decoding, on the same
 * symbols in the same run. A receiver's authentication work is one digest per
 * symbol plus one Merkle path per chunk; its decode work is RaptorQ decoding
 * of K symbols per segment, here a receiver that lost `loss` of the source
 * symbols and made up for them with repair symbols.
 *
 *   npx tsx bench/auth-cost.ts [SIZE_MIB]
 */
import { leafHash, MerkleVerifier, symbolMatches } from '../protocol/auth.js';
import { SegmentDecoder } from '../protocol/fec.js';
import { symbolOf, type SymbolSet } from '../protocol/symbol-set.js';
import type { Manifest } from '../protocol/manifest.js';
import { buildRelease } from '../server/release.js';
import { makeImage, makeKey, prng } from '../test/helpers/fixtures.js';

export interface AuthCost {
  loss: number;
  imageBytes: number;
  symbols: number;
  chunks: number;
  decodeMs: number;
  authMs: number;
  /** authMs / decodeMs: the target is ≤ 0.15. */
  ratio: number;
}

function authenticateAll(m: Manifest, set: SymbolSet, paths: Uint8Array[][], inputs: number[][]): void {
  const l = m.auth.digestLength;
  const merkle = new MerkleVerifier(m.auth.root, set.layout.depth);
  for (let leaf = 0; leaf < set.layout.leaves; leaf++) {
    if (!merkle.verify(leafHash(set.chunks[leaf]!), leaf, paths[leaf]!)) throw new Error('proof failed');
  }
  const tables = set.chunks.map((c) => c.subarray(10));
  for (const [s, esis] of inputs.entries()) {
    for (const esi of esis) {
      const leaf = set.layout.leafOf(s, esi);
      if (!symbolMatches(symbolOf(set, s, esi), tables[leaf]!, (esi % m.auth.chunkSymbols) * l, l)) throw new Error('digest mismatch');
    }
  }
}

function decodeAll(m: Manifest, set: SymbolSet, inputs: number[][]): void {
  for (const [s, esis] of inputs.entries()) {
    const seg = m.segments[s]!;
    const decoder = new SegmentDecoder(seg.oti.transferLength, m.symbolSize);
    let out: Uint8Array | undefined;
    for (const esi of esis) out = decoder.push(esi, symbolOf(set, s, esi));
    decoder.free();
    if (!out) throw new Error(`segment ${s} did not decode`);
  }
}

export async function measureAuthCost(sizeMiB: number, losses: number[]): Promise<AuthCost[]> {
  const key = await makeKey();
  const image = makeImage(sizeMiB * 1024 * 1024, 77);
  const release = buildRelease({ image, seed: key.seed, model: 'bench', version: '1', seq: 1 });
  const set = release.symbolSet!;
  const m = release.manifest;
  const paths = set.chunks.map((_, leaf) => set.tree.proof(leaf));
  return losses.map((loss) => {
    const lose = prng(99);
    const inputs = m.segments.map((seg) => {
      const esis: number[] = [];
      for (let esi = 0; esi < seg.sourceSymbols; esi++) if (lose() >= loss) esis.push(esi);
      for (let esi = seg.sourceSymbols; esis.length < seg.sourceSymbols + 2; esi++) esis.push(esi);
      return esis;
    });
    // The machine is shared and noisy: the best of several runs of each, interleaved.
    let authMs = Infinity;
    let decodeMs = Infinity;
    for (let run = 0; run < 5; run++) {
      let t0 = performance.now();
      authenticateAll(m, set, paths, inputs);
      authMs = Math.min(authMs, performance.now() - t0);
      t0 = performance.now();
      decodeAll(m, set, inputs);
      decodeMs = Math.min(decodeMs, performance.now() - t0);
    }
    const symbols = inputs.reduce((n, e) => n + e.length, 0);
    return { loss, imageBytes: image.length, symbols, chunks: set.layout.leaves, decodeMs, authMs, ratio: authMs / decodeMs };
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  for (const r of await measureAuthCost(Number(process.argv[2] ?? 16), [0.05, 0.1, 0.3])) console.log(JSON.stringify(r));
}
