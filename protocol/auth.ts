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
 * The tree is complete: leaves are padded with 16 zero bytes up to a power of
 * two, depth = ⌈log2(leaves)⌉. Everything here derives from the image and the
 * manifest's FEC parameters alone, so any holder of a verified release (a relay)
 * can regenerate the AUTH datagrams without a signing key.
 */
import { createHash, hash } from 'node:crypto';
import { MalformedPacketError } from './errors.js';

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

/** True if `symbol`'s digest equals table[offset .. offset + digestLength); allocates nothing but the hash. */
export function symbolMatches(symbol: Uint8Array, table: Uint8Array, offset: number, digestLength: number): boolean {
  return hash('sha256', symbol, 'buffer').compare(table, offset, offset + digestLength, 0, digestLength) === 0;
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

/** The chunk layout: which ESIs of which segment each leaf covers. */
export class ChunkLayout {
  readonly leaves: number;
  readonly depth: number;
  #firstLeaf: number[];

  constructor(readonly published: readonly number[], readonly chunkSymbols: number) {
    this.#firstLeaf = [];
    let leaves = 0;
    for (const n of published) {
      this.#firstLeaf.push(leaves);
      leaves += Math.ceil(n / chunkSymbols);
    }
    this.leaves = leaves;
    this.depth = treeDepth(leaves);
  }

  leafOf(segment: number, esi: number): number {
    return this.#firstLeaf[segment]! + Math.floor(esi / this.chunkSymbols);
  }

  chunk(leaf: number): ChunkRef {
    let lo = 0;
    let hi = this.#firstLeaf.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.#firstLeaf[mid]! <= leaf) lo = mid;
      else hi = mid - 1;
    }
    const firstEsi = (leaf - this.#firstLeaf[lo]!) * this.chunkSymbols;
    return { leaf, segment: lo, firstEsi, count: Math.min(this.chunkSymbols, this.published[lo]! - firstEsi) };
  }
}

/** Largest chunk whose AUTH datagram fits in `datagramSize` for a tree over `leaves` leaves. */
export function chunkSymbolsFor(datagramSize: number, overhead: number, digestLength: number, depth: number): number {
  return Math.floor((datagramSize - overhead - 1 - depth * NODE_SIZE - CHUNK_HEADER_SIZE) / digestLength);
}

export function encodeChunkBody(ref: ChunkRef, digests: Uint8Array): Uint8Array {
  const out = new Uint8Array(CHUNK_HEADER_SIZE + digests.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, ref.segment);
  view.setUint32(4, ref.firstEsi);
  view.setUint16(8, ref.count);
  out.set(digests, CHUNK_HEADER_SIZE);
  return out;
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
