/**
 * A release's published symbol set and its authentication material, computed
 * from the image and the manifest's FEC parameters alone. The publisher builds
 * it to sign and to send; a relay rebuilds it from a verified release, and the
 * result matches the signed Merkle root bit for bit.
 */
import { ChunkLayout, encodeChunkBody, leafHash, MerkleTree, symbolDigest } from './auth.js';
import { SegmentEncoder } from './fec.js';

export interface SymbolSetSegment {
  offset: number;
  length: number;
  published: number;
}

export interface SymbolSetParams {
  symbolSize: number;
  segments: readonly SymbolSetSegment[];
  digestLength: number;
  chunkSymbols: number;
}

export interface SymbolSet {
  /** symbols[segment][esi]: the symbol bytes, ESIs in RFC 6330 numbering. */
  symbols: Uint8Array[][];
  layout: ChunkLayout;
  /** Chunk bodies by leaf index. */
  chunks: Uint8Array[];
  tree: MerkleTree;
}

export function encodeSegments(image: Uint8Array, symbolSize: number, segments: readonly SymbolSetSegment[]): Uint8Array[][] {
  return segments.map((seg) => {
    const encoder = new SegmentEncoder(image.subarray(seg.offset, seg.offset + seg.length), symbolSize);
    try {
      return encoder.symbols(seg.published).map((s) => s.data);
    } finally {
      encoder.free();
    }
  });
}

/** Authentication material over already-encoded symbols. */
export function authenticate(symbols: Uint8Array[][], digestLength: number, chunkSymbols: number): Omit<SymbolSet, 'symbols'> {
  const layout = new ChunkLayout(symbols.map((s) => s.length), chunkSymbols);
  const chunks: Uint8Array[] = [];
  for (let leaf = 0; leaf < layout.leaves; leaf++) {
    const ref = layout.chunk(leaf);
    const digests = new Uint8Array(ref.count * digestLength);
    for (let i = 0; i < ref.count; i++) digests.set(symbolDigest(symbols[ref.segment]![ref.firstEsi + i]!, digestLength), i * digestLength);
    chunks.push(encodeChunkBody(ref, digests));
  }
  return { layout, chunks, tree: new MerkleTree(chunks.map(leafHash)) };
}

export function buildSymbolSet(image: Uint8Array, params: SymbolSetParams): SymbolSet {
  const symbols = encodeSegments(image, params.symbolSize, params.segments);
  return { symbols, ...authenticate(symbols, params.digestLength, params.chunkSymbols) };
}
