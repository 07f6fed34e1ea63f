/**
 * Cost of per-packet authentication against the cost of decoding, on the same
 * symbols in the same run. A receiver's authentication work is one digest per
 * symbol plus one Merkle path per chunk (and, for chunks whose own AUTH
 * datagram was lost, as many parity pieces and a Reed–Solomon rebuild of
 * their group); its decode work is RaptorQ decoding
 * of K symbols per segment, here a receiver that lost `loss` of the source
 * symbols and made up for them with repair symbols.
 *
 *   npx tsx bench/auth-cost.ts [SIZE_MIB]
 */
import { codedChunk, decodeChunkBody, decodeParityBody, leafHash, MerkleVerifier, symbolMatches } from '../protocol/auth.js';
import { recoverData } from '../protocol/reed-solomon.js';
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

/**
 * What a receiver verifies: every chunk whose own AUTH datagram it heard; for
 * a coded group that lost some, as many parity pieces as chunks are missing,
 * and the Reed–Solomon rebuild; then one digest per symbol.
 */
function authenticateAll(m: Manifest, set: SymbolSet, paths: Uint8Array[][], inputs: number[][], lostChunks: ReadonlySet<number>): void {
  const l = m.auth.digestLength;
  const c = m.auth.chunkSymbols;
  const layout = set.layout;
  const merkle = new MerkleVerifier(m.auth.root, layout.depth);
  const verify = (leaf: number): void => {
    if (!merkle.verify(leafHash(set.bodies[leaf]!), leaf, paths[leaf]!)) throw new Error('proof failed');
  };
  for (let leaf = 0; leaf < layout.chunkLeaves; leaf++) if (!lostChunks.has(leaf)) verify(leaf);
  for (let first = 0; first < layout.chunkLeaves;) {
    const { size } = layout.group(first);
    const lost = Array.from({ length: size }, (_, i) => first + i).filter((leaf) => lostChunks.has(leaf)).length;
    if (lost > 0) {
      const pieces = new Map<number, Uint8Array>();
      for (let i = 0; i < size; i++) {
        if (!lostChunks.has(first + i)) pieces.set(i, codedChunk(decodeChunkBody(set.bodies[first + i]!, l).digests, c, l));
      }
      for (let j = 0; j < lost; j++) {
        const leaf = layout.parityLeaf(first, j);
        verify(leaf);
        pieces.set(size + j, decodeParityBody(set.bodies[leaf]!, c, l).parity);
      }
      recoverData(size, size * layout.parityPerChunk, pieces);
    }
    first += size;
  }
  const tables = set.bodies.slice(0, layout.chunkLeaves).map((body) => decodeChunkBody(body, l).digests);
  for (const [s, esis] of inputs.entries()) {
    for (const esi of esis) {
      const leaf = layout.leafOf(s, esi);
      if (!symbolMatches(symbolOf(set, s, esi), tables[leaf]!, (esi % c) * l, l)) throw new Error('digest mismatch');
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
  const paths = set.bodies.map((_, leaf) => set.tree.proof(leaf));
  return losses.map((loss) => {
    const lose = prng(99);
    const inputs = m.segments.map((seg) => {
      const esis: number[] = [];
      for (let esi = 0; esi < seg.sourceSymbols; esi++) if (lose() >= loss) esis.push(esi);
      for (let esi = seg.sourceSymbols; esis.length < seg.sourceSymbols + 2; esi++) esis.push(esi);
      return esis;
    });
    const lostChunks = new Set<number>();
    for (let leaf = 0; leaf < set.layout.chunkLeaves; leaf++) if (lose() < loss) lostChunks.add(leaf);
    // The machine is shared and noisy: the best of nine runs of each, interleaved.
    let authMs = Infinity;
    let decodeMs = Infinity;
    for (let run = 0; run < 9; run++) {
      let t0 = performance.now();
      authenticateAll(m, set, paths, inputs, lostChunks);
      authMs = Math.min(authMs, performance.now() - t0);
      t0 = performance.now();
      decodeAll(m, set, inputs);
      decodeMs = Math.min(decodeMs, performance.now() - t0);
    }
    const symbols = inputs.reduce((n, e) => n + e.length, 0);
    return { loss, imageBytes: image.length, symbols, chunks: set.layout.chunkLeaves, decodeMs, authMs, ratio: authMs / decodeMs };
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  for (const r of await measureAuthCost(Number(process.argv[2] ?? 16), [0.05, 0.1, 0.3])) console.log(JSON.stringify(r));
}
