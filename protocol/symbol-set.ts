/**
 * A release's published symbol set and its authentication material, computed
 * from the image and the manifest's FEC parameters alone. The publisher builds
 * it to sign and to send; a relay rebuilds it from a verified release, and the
 * result matches the signed Merkle root bit for bit.
 *
 * Each segment's symbols are one contiguous buffer (ESI order, T bytes each):
 * a 256 MiB release is a few hundred buffers, not hundreds of thousands.
 */
import { ChunkLayout, encodeChunkBody, groupParityBodies, leafHash, MerkleTree, symbolDigest, type ChunkCoding, type LayoutSegment } from './auth.js';
import { SegmentEncoder, sourceSymbolCount } from './fec.js';

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
  coding?: ChunkCoding;
}

export interface SymbolAuth {
  layout: ChunkLayout;
  /** Leaf bodies by leaf index: the chunks, then (with coding) the parity pieces. */
  bodies: Uint8Array[];
  tree: MerkleTree;
}

export interface SymbolSet extends SymbolAuth {
  symbolSize: number;
  /** Per segment: its published symbols in ESI order (RFC 6330 numbering), T bytes each. */
  segments: Uint8Array[];
}

export function symbolOf(set: Pick<SymbolSet, 'segments' | 'symbolSize'>, segment: number, esi: number): Uint8Array {
  return set.segments[segment]!.subarray(esi * set.symbolSize, (esi + 1) * set.symbolSize);
}

/** Encodes one segment's published symbols into one buffer. */
export function encodeSegment(data: Uint8Array, symbolSize: number, published: number): Uint8Array {
  const encoder = new SegmentEncoder(data, symbolSize);
  try {
    const out = new Uint8Array(published * symbolSize);
    for (const { esi, data: symbol } of encoder.symbols(published)) out.set(symbol, esi * symbolSize);
    return out;
  } finally {
    encoder.free();
  }
}

export function encodeSegments(image: Uint8Array, symbolSize: number, segments: readonly SymbolSetSegment[]): Uint8Array[] {
  return segments.map((seg) => encodeSegment(image.subarray(seg.offset, seg.offset + seg.length), symbolSize, seg.published));
}

/** Authentication material over already-encoded symbols (`shape`: each segment's K and published count). */
export function authenticate(segments: Uint8Array[], symbolSize: number, shape: readonly LayoutSegment[], digestLength: number, chunkSymbols: number, coding?: ChunkCoding): SymbolAuth {
  if (shape.length !== segments.length || shape.some((seg, i) => seg.published * symbolSize !== segments[i]!.length)) {
    throw new RangeError('the segments\' K and published counts do not match their encoded symbols');
  }
  const layout = new ChunkLayout(shape, chunkSymbols, coding);
  const bodies: Uint8Array[] = [];
  const digestLists: Uint8Array[] = [];
  for (let leaf = 0; leaf < layout.chunkLeaves; leaf++) {
    const ref = layout.chunk(leaf);
    const digests = new Uint8Array(ref.count * digestLength);
    for (let i = 0; i < ref.count; i++) {
      digests.set(symbolDigest(symbolOf({ segments, symbolSize }, ref.segment, ref.firstEsi + i), digestLength), i * digestLength);
    }
    digestLists.push(digests);
    bodies.push(encodeChunkBody(ref, digests));
  }
  for (let first = 0; layout.parityPerChunk > 0 && first < layout.chunkLeaves;) {
    const group = layout.group(first);
    bodies.push(...groupParityBodies(layout, group, digestLists.slice(first, first + group.size), digestLength));
    first += group.size;
  }
  return { layout, bodies, tree: new MerkleTree(bodies.map(leafHash)) };
}

export function buildSymbolSet(image: Uint8Array, params: SymbolSetParams): SymbolSet {
  const segments = encodeSegments(image, params.symbolSize, params.segments);
  return { symbolSize: params.symbolSize, segments, ...authenticate(segments, params.symbolSize, params.segments.map((s) => ({ sourceSymbols: sourceSymbolCount(s.length, params.symbolSize), published: s.published })), params.digestLength, params.chunkSymbols, params.coding) };
}
