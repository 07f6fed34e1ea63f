/**
 * Per-packet authentication: every symbol is checked against a digest before
 * it reaches the decoder, and every digest is rooted in the signed manifest.
 *
 * For each segment, the published symbols (ESIs 0 .. published − 1) are cut
 * into chunks of C consecutive ESIs. A chunk lists the truncated SHA-256 of
 * each of its symbols. One Merkle tree over all chunks of the release (leaves
 * in segment order, then ESI order) has its root in the manifest. An AUTH
 * datagram carries one chunk and its Merkle path, so a receiver verifies it on
 * its own, with no other AUTH datagram, and then each symbol of the chunk with
 * one hash.
 *
 *   symbol digest = SHA-256(symbol)[0..L)                 L = digestLength (10 by default)
 *   leaf          = SHA-256(0x00 || chunk body)[0..16)
 *   node          = SHA-256(0x01 || left || right)[0..16)
 *   chunk body    = segment (u32) | first ESI (u32) | count (u16) | count × digest
 *
 * Chunks may also be erasure-coded, so that losing an AUTH datagram rarely
 * costs a chunk: the chunks of a segment form groups of consecutive chunks,
 * and a group of s chunks gets r·s parity pieces (protocol/reed-solomon.ts
 * over the chunks' digest lists, each padded to C digests); any s of its
 * (r + 1)·s pieces give back all its chunks. Groups follow the carousel's
 * rounds: the chunks that start in ESIs [ρ·K, (ρ + 1)·K) are split into
 * ⌈n / g⌉ groups as equal as can be (the first ones one chunk larger), so the
 * carousel sends each group, parity included, within one round. Parity pieces
 * are leaves of the same tree, after all chunks, so each is verified on its
 * own before it is used:
 *
 *   parity body   = segment (u32) | group's first ESI (u32) | index (u16) | C × digest bytes
 *
 * The tree is complete: leaves are padded with 16 zero bytes up to a power of
 * two, depth = ⌈log2(leaves)⌉. Everything here derives from the image and the
 * manifest's FEC parameters alone, so any holder of a verified release (a relay)
 * can regenerate the AUTH datagrams without a signing key.
 */
import { createHash, hash } from 'node:crypto';
import { MalformedPacketError } from './errors.js';
import { parityPiece } from './reed-solomon.js';

export const AUTH_SCHEME_MERKLE_CHUNKS = 1;
export const NODE_SIZE = 16;
/**
 * 80-bit symbol digests: forging one symbol means a second preimage (2^80
 * work) for a release's lifetime, and 105 of them fit in one AUTH datagram,
 * so three copies of every chunk cost under 3% of the bytes.
 */
export const DEFAULT_DIGEST_LENGTH = 10;
export const CHUNK_HEADER_SIZE = 10;

export interface AuthParams {
  scheme: number;
  digestLength: number;
  /** Symbols per chunk (C). */
  chunkSymbols: number;
  root: Uint8Array;
  /** Erasure coding of chunks: groups of at most g chunks, r parity pieces per chunk; absent, chunks are not coded. */
  coding?: ChunkCoding;
}

export interface ChunkCoding {
  groupChunks: number;
  parityPerChunk: number;
}

/**
 * The publisher's default: groups of up to 12 chunks with 2 parity pieces per
 * chunk, the same 3 AUTH datagrams per chunk as 3 plain copies. A round of a
 * 1 MiB segment (869 symbols, 9 chunks of 97) is one group: any 9 of its 27
 * pieces rebuild it, and at 30% loss it is lost with probability 10⁻⁶ (3
 * copies of a chunk: 2.7·10⁻²; a group of 4, as rounds cut into groups of at
 * most 6 make: 1.7·10⁻³, and 1000 simulated agents needed 1.28–1.39× the
 * ideal). See carousel/carousel.ts for when the pieces go out.
 */
export const DEFAULT_CHUNK_CODING: ChunkCoding = { groupChunks: 12, parityPerChunk: 2 };

/** A group of consecutive chunks of one segment, by chunk leaf. */
export interface ChunkGroup {
  /** Leaf of its first chunk. */
  first: number;
  /** Chunks in the group: at most g, fewer where a round's chunks do not divide evenly. */
  size: number;
}

export interface ParityRef extends ChunkGroup {
  leaf: number;
  /** Which parity piece of the group, 0 … r·size − 1. */
  index: number;
}

export interface ChunkRef {
  leaf: number;
  segment: number;
  firstEsi: number;
  count: number;
}

function sha256(...parts: Uint8Array[]): Buffer {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
}

const LEAF = Uint8Array.of(0);
const NODE = Uint8Array.of(1);

/**
 * The hot path: one call per received symbol. Leaves and nodes carry domain
 * prefixes; symbol digests need none, as they are only ever compared with
 * chunk entries at a fixed position.
 */
export function symbolDigest(symbol: Uint8Array, digestLength: number): Uint8Array {
  return hash('sha256', symbol, 'buffer').subarray(0, digestLength);
}

/**
 * True if `symbol`'s digest equals table[offset .. offset + digestLength);
 * allocates nothing but the hash. The loop beats Buffer#compare's call into
 * C++ for 10 bytes: 18 against 24 ms for 14,000 symbols.
 */
export function symbolMatches(symbol: Uint8Array, table: Uint8Array, offset: number, digestLength: number): boolean {
  const digest = hash('sha256', symbol, 'buffer');
  for (let i = 0; i < digestLength; i++) if (digest[i] !== table[offset + i]) return false;
  return true;
}

export function leafHash(chunkBody: Uint8Array): Uint8Array {
  return sha256(LEAF, chunkBody).subarray(0, NODE_SIZE);
}

export function nodeHash(left: Uint8Array, right: Uint8Array): Uint8Array {
  return sha256(NODE, left, right).subarray(0, NODE_SIZE);
}

export function treeDepth(leaves: number): number {
  return leaves <= 1 ? 0 : Math.ceil(Math.log2(leaves));
}

/** What the leaf layout needs of a segment (a manifest's SegmentInfo has both). */
export interface LayoutSegment {
  /** K: a carousel round sends K symbols of the segment. */
  sourceSymbols: number;
  /** Encoding symbols published: ESIs 0 .. published − 1. */
  published: number;
}

/**
 * The leaf layout: which ESIs of which segment each chunk leaf covers, and,
 * with coding, which group each chunk and parity leaf belongs to. Chunk leaves
 * come first (segment order, then ESI order); the parity leaves of the group
 * whose first chunk is leaf a are chunkLeaves + r·a + 0 … r·size − 1.
 */
export class ChunkLayout {
  /** Chunk leaves; parity leaves follow them. */
  readonly chunkLeaves: number;
  readonly leaves: number;
  readonly depth: number;
  /** g: the largest group. */
  readonly groupChunks: number;
  readonly parityPerChunk: number;
  #firstLeaf: number[];
  #segments: readonly LayoutSegment[];

  constructor(segments: readonly LayoutSegment[], readonly chunkSymbols: number, coding?: ChunkCoding) {
    this.#segments = segments;
    this.#firstLeaf = [];
    let leaves = 0;
    for (const { published } of segments) {
      this.#firstLeaf.push(leaves);
      leaves += Math.ceil(published / chunkSymbols);
    }
    this.chunkLeaves = leaves;
    this.groupChunks = coding?.groupChunks ?? 0;
    this.parityPerChunk = coding ? coding.parityPerChunk : 0;
    this.leaves = leaves * (1 + this.parityPerChunk);
    this.depth = treeDepth(this.leaves);
  }

  leafOf(segment: number, esi: number): number {
    return this.#firstLeaf[segment]! + Math.floor(esi / this.chunkSymbols);
  }

  #segmentOf(chunkLeaf: number): number {
    let lo = 0;
    let hi = this.#firstLeaf.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.#firstLeaf[mid]! <= chunkLeaf) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  chunk(leaf: number): ChunkRef {
    const segment = this.#segmentOf(leaf);
    const firstEsi = (leaf - this.#firstLeaf[segment]!) * this.chunkSymbols;
    return { leaf, segment, firstEsi, count: Math.min(this.chunkSymbols, this.#segments[segment]!.published - firstEsi) };
  }

  /** The group of a chunk leaf (with coding). */
  group(chunkLeaf: number): ChunkGroup {
    const segment = this.#segmentOf(chunkLeaf);
    const { sourceSymbols: k, published } = this.#segments[segment]!;
    const c = this.chunkSymbols;
    const base = this.#firstLeaf[segment]!;
    const index = chunkLeaf - base;
    // The chunks that start in the same round as this one: a … b − 1, in `groups` groups.
    const round = Math.floor((index * c) / k);
    const a = Math.ceil((round * k) / c);
    const b = Math.min(Math.ceil(((round + 1) * k) / c), Math.ceil(published / c));
    const groups = Math.ceil((b - a) / this.groupChunks);
    const small = Math.floor((b - a) / groups);
    const large = (b - a) % groups;
    const i = index - a;
    const inLarge = i < large * (small + 1);
    const first = inLarge ? i - (i % (small + 1)) : i - ((i - large * (small + 1)) % small);
    return { first: base + a + first, size: inLarge ? small + 1 : small };
  }

  /** A parity leaf's group and index (leaf ≥ chunkLeaves). */
  parity(leaf: number): ParityRef {
    const group = this.group(Math.floor((leaf - this.chunkLeaves) / this.parityPerChunk));
    return { leaf, ...group, index: leaf - this.parityLeaf(group.first, 0) };
  }

  parityLeaf(groupFirst: number, index: number): number {
    return this.chunkLeaves + this.parityPerChunk * groupFirst + index;
  }
}

/** A chunk's digests as one piece of its group's code: padded with zeros to C digests. */
export function codedChunk(digests: Uint8Array, chunkSymbols: number, digestLength: number): Uint8Array {
  if (digests.length === chunkSymbols * digestLength) return digests;
  const out = new Uint8Array(chunkSymbols * digestLength);
  out.set(digests);
  return out;
}

/** The parity bodies of one group, in index order, from its chunks' digest lists. */
export function groupParityBodies(layout: ChunkLayout, group: ChunkGroup, digests: readonly Uint8Array[], digestLength: number): Uint8Array[] {
  const data = digests.map((d) => codedChunk(d, layout.chunkSymbols, digestLength));
  const ref = layout.chunk(group.first);
  const count = layout.parityPerChunk * group.size;
  return Array.from({ length: count }, (_, index) => encodeParityBody(ref.segment, ref.firstEsi, index, parityPiece(data, index, count)));
}

export function encodeParityBody(segment: number, firstEsi: number, index: number, parity: Uint8Array): Uint8Array {
  return leafBody(segment, firstEsi, index, parity);
}

/** Both kinds of leaf body: segment (u32) ‖ first ESI (u32) ‖ count or index (u16) ‖ bytes. */
function leafBody(segment: number, firstEsi: number, n: number, bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(CHUNK_HEADER_SIZE + bytes.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, segment);
  view.setUint32(4, firstEsi);
  view.setUint16(8, n);
  out.set(bytes, CHUNK_HEADER_SIZE);
  return out;
}

export function decodeParityBody(body: Uint8Array, chunkSymbols: number, digestLength: number): { segment: number; firstEsi: number; index: number; parity: Uint8Array } {
  if (body.length !== CHUNK_HEADER_SIZE + chunkSymbols * digestLength) throw new MalformedPacketError(`auth parity piece of ${body.length} bytes, expected ${CHUNK_HEADER_SIZE + chunkSymbols * digestLength}`);
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  return { segment: view.getUint32(0), firstEsi: view.getUint32(4), index: view.getUint16(8), parity: body.subarray(CHUNK_HEADER_SIZE) };
}

/** Largest chunk whose AUTH datagram fits in `datagramSize` for a tree over `leaves` leaves. */
export function chunkSymbolsFor(datagramSize: number, overhead: number, digestLength: number, depth: number): number {
  return Math.floor((datagramSize - overhead - 1 - depth * NODE_SIZE - CHUNK_HEADER_SIZE) / digestLength);
}

export function encodeChunkBody(ref: ChunkRef, digests: Uint8Array): Uint8Array {
  return leafBody(ref.segment, ref.firstEsi, ref.count, digests);
}

export function decodeChunkBody(body: Uint8Array, digestLength: number): { segment: number; firstEsi: number; count: number; digests: Uint8Array } {
  if (body.length < CHUNK_HEADER_SIZE) throw new MalformedPacketError('auth chunk shorter than its header');
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const count = view.getUint16(8);
  if (body.length !== CHUNK_HEADER_SIZE + count * digestLength) throw new MalformedPacketError(`auth chunk of ${count} digests has ${body.length - CHUNK_HEADER_SIZE} digest bytes`);
  return { segment: view.getUint32(0), firstEsi: view.getUint32(4), count, digests: body.subarray(CHUNK_HEADER_SIZE) };
}

/** A complete Merkle tree over chunk leaves; levels[0] are the leaves, padded. */
export class MerkleTree {
  readonly levels: Uint8Array[][];

  constructor(leaves: Uint8Array[]) {
    const depth = treeDepth(leaves.length);
    const zero = new Uint8Array(NODE_SIZE);
    let level = [...leaves];
    while (level.length < 2 ** depth) level.push(zero);
    this.levels = [level];
    while (level.length > 1) {
      const next: Uint8Array[] = [];
      for (let i = 0; i < level.length; i += 2) next.push(nodeHash(level[i]!, level[i + 1]!));
      this.levels.push(next);
      level = next;
    }
  }

  get root(): Uint8Array {
    return this.levels[this.levels.length - 1]![0]!;
  }

  /** Sibling hashes from the leaf up to (not including) the root. */
  proof(leaf: number): Uint8Array[] {
    const path: Uint8Array[] = [];
    for (let d = 0, i = leaf; d < this.levels.length - 1; d++, i >>= 1) path.push(this.levels[d]![i ^ 1]!);
    return path;
  }
}

/**
 * Verifies Merkle paths against a root, remembering every node it has proven,
 * so a later path stops as soon as it meets a proven node: over a whole
 * release this costs about two hashes per chunk instead of depth + 1.
 */
export class MerkleVerifier {
  #proven = new Map<number, Uint8Array>();

  constructor(readonly root: Uint8Array, readonly depth: number) {}

  verify(leaf: Uint8Array, index: number, path: readonly Uint8Array[]): boolean {
    if (path.length !== this.depth || !Number.isInteger(index) || index < 0 || index >= 2 ** this.depth) return false;
    const computed: Array<[key: number, node: Uint8Array]> = [];
    let node = leaf;
    for (let d = 0, i = index; d <= this.depth; d++, i >>= 1) {
      const key = d * 2 ** 25 + i;
      const known = d === this.depth ? this.root : this.#proven.get(key);
      if (known) {
        if (Buffer.compare(known, node) !== 0) return false;
        for (const [k, n] of computed) this.#proven.set(k, n);
        return true;
      }
      computed.push([key, node]);
      node = i & 1 ? nodeHash(path[d]!, node) : nodeHash(node, path[d]!);
    }
    return false;
  }
}

/** Recomputes the root from a leaf and its path; true if it equals `root`. */
export function verifyProof(leaf: Uint8Array, index: number, path: readonly Uint8Array[], root: Uint8Array): boolean {
  if (!Number.isInteger(index) || index < 0 || index >= 2 ** path.length) return false;
  let node = leaf;
  for (let d = 0, i = index; d < path.length; d++, i >>= 1) {
    node = i & 1 ? nodeHash(path[d]!, node) : nodeHash(node, path[d]!);
  }
  return Buffer.compare(node, root) === 0;
}
