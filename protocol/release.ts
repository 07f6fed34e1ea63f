/**
 * Building a signed release: image → manifest (segments, FEC parameters,
 * authentication root), signature and encoded symbols. Pure: the publisher
 * (server/release.ts, which adds encoding on its codec pool and release
 * files) and the agent's capacity self-test both build releases with it.
 */
import { createHash } from 'node:crypto';
import { DEFAULT_DATAGRAM_SIZE, DEFAULT_SEGMENT_SIZE, MAX_SEGMENT_SIZE, MAX_SOURCE_SYMBOLS, SYMBOL_ALIGNMENT } from './limits.js';
import { checkFecParameters, checkModelName, planSegments, publishedSymbols, releaseIdOf, signManifest, signManifestWith, type DeltaEntry, type FecObject, type Manifest, type SegmentInfo } from './manifest.js';
import { segmentOti, sourceSymbolCount } from './fec.js';
import { AUTH_OVERHEAD, SYMBOL_OVERHEAD } from './packet.js';
import { AUTH_SCHEME_MERKLE_CHUNKS, ChunkLayout, chunkSymbolsFor, DEFAULT_CHUNK_CODING, DEFAULT_DIGEST_LENGTH, type ChunkCoding, type LayoutSegment } from './auth.js';
import { authenticate, encodeSegments, type SymbolSet, type SymbolSetSegment } from './symbol-set.js';
import { InvalidManifestError } from './errors.js';
import type { Signer } from './signer.js';
import type { RolloutPolicy } from './rollout.js';
import type { EncryptionBlock } from './encryption.js';

/** Repair symbols published per segment, as a percentage of its source symbols. */
export const DEFAULT_REPAIR_PERCENT = 200;

/** Largest symbol size whose symbol datagram fits in `datagramSize` bytes of UDP payload. */
export function symbolSizeFor(datagramSize: number): number {
  const room = datagramSize - SYMBOL_OVERHEAD;
  return room - (room % SYMBOL_ALIGNMENT);
}

/**
 * A requested segment size in whole symbols, rounded up where the format
 * allows: "1 MiB segments" then cut an image of n MiB into n segments, not
 * n + 1 (1 MiB is 868.03 symbols of 1208 bytes), so a power-of-two image
 * splits evenly over a power-of-two number of codec workers.
 */
export function segmentSizeFor(symbolSize: number, wanted: number): number {
  const limit = Math.min(MAX_SEGMENT_SIZE, MAX_SOURCE_SYMBOLS * symbolSize);
  const up = Math.ceil(wanted / symbolSize) * symbolSize;
  return up <= limit ? up : Math.max(symbolSize, wanted - (wanted % symbolSize));
}

/** What a release holds and how it is cut, whoever signs it. */
export interface ReleaseContent {
  image: Uint8Array;
  model: string;
  version: string;
  seq: number;
  /** Unix seconds; defaults to now. */
  created?: number;
  expires?: number;
  /** UDP payload size of symbol datagrams (default 1232). */
  datagramSize?: number;
  /** Segment size, bytes, in whole symbols (segmentSizeFor; default DEFAULT_SEGMENT_SIZE, 3 MiB). */
  segmentSize?: number;
  /** Repair symbols published per segment, percent of K (default 200). */
  repairPercent?: number;
  /** Bytes of each symbol digest in AUTH chunks (default 10). */
  digestLength?: number;
  /** Erasure coding of AUTH chunks (default DEFAULT_CHUNK_CODING); false sends every chunk only as itself. */
  chunkCoding?: ChunkCoding | false;
  /** Staged rollout (manifest key 10, protocol/rollout.ts); absent: every device installs at once. */
  rollout?: RolloutPolicy;
  /** Confidential firmware: `image` is the ciphertext encryptImage made, this its block (manifest key 11). */
  encryption?: EncryptionBlock;
  /** Deltas from earlier releases (server/delta-build.ts), listed in the manifest (key 12). */
  deltas?: DeltaEntry[];
}

/** A release signed with a seed in memory (tests, the agent's self-test). */
export interface ReleaseInit extends ReleaseContent {
  seed: Uint8Array;
}

/** A release signed through a Signer (a key file, an HSM, a command). */
export interface SignerReleaseInit extends ReleaseContent {
  signer: Signer;
}

export interface Release {
  manifest: Manifest;
  signed: Uint8Array;
  releaseId: Uint8Array;
  image: Uint8Array;
  /** Present when the release was just built: saves encoding it again to send it. */
  symbolSet?: SymbolSet;
  /** The delta objects the manifest lists (key 12), in its order. */
  deltaObjects?: Uint8Array[];
}

/**
 * Symbols per chunk: as many as fit in a datagram, path included. With coded
 * chunks, whose groups follow the rounds, and rounds longer than a chunk: as
 * few chunks per round of the largest segment as that allows, as equal as can
 * be. A round of 869 symbols takes 9 chunks either way, but 97 symbols each
 * instead of 104 leave no chunk mostly in the next round (whose parity would
 * go out with this one), and cut AUTH bytes by 6%.
 */
function chunkSymbolsForRelease(segments: readonly LayoutSegment[], datagramSize: number, digestLength: number, coding: ChunkCoding | undefined): number {
  const k = Math.max(...segments.map((s) => s.sourceSymbols));
  let depth = 0;
  for (;;) {
    const fit = chunkSymbolsFor(datagramSize, AUTH_OVERHEAD, digestLength, depth);
    if (fit < 1) throw new InvalidManifestError(`datagram size ${datagramSize} leaves no room for authentication chunks`);
    const c = coding && k > fit ? Math.ceil(k / Math.ceil(k / fit)) : fit;
    const needed = new ChunkLayout(segments, c, coding).depth;
    if (needed <= depth) return c;
    depth = needed;
  }
}

const sha256 = (data: Uint8Array): Uint8Array => new Uint8Array(createHash('sha256').update(data).digest());

export interface ReleasePlan {
  datagramSize: number;
  symbolSize: number;
  segmentSize: number;
  repairPercent: number;
  created: number;
  segments: SegmentInfo[];
  /** What the encoder needs for each segment. */
  encoding: SymbolSetSegment[];
}

export function planRelease(init: ReleaseContent): ReleasePlan {
  checkModelName(init.model);
  if (!Number.isSafeInteger(init.seq) || init.seq < 0) throw new InvalidManifestError(`sequence number must be a non-negative integer, got ${init.seq}`);
  if (init.image.length === 0) throw new InvalidManifestError('the image is empty');
  const datagramSize = init.datagramSize ?? DEFAULT_DATAGRAM_SIZE;
  const symbolSize = symbolSizeFor(datagramSize);
  const segmentSize = segmentSizeFor(symbolSize, init.segmentSize ?? DEFAULT_SEGMENT_SIZE);
  checkFecParameters(symbolSize, segmentSize);
  const repairPercent = init.repairPercent ?? DEFAULT_REPAIR_PERCENT;
  const segments = planSegments(init.image.length, symbolSize, segmentSize).map((plan) => {
    const k = sourceSymbolCount(plan.length, symbolSize);
    return {
      index: plan.index,
      offset: plan.offset,
      oti: segmentOti(plan.length, symbolSize),
      sourceSymbols: k,
      published: publishedSymbols(k, repairPercent),
      sha256: sha256(init.image.subarray(plan.offset, plan.offset + plan.length)),
    };
  });
  return {
    datagramSize, symbolSize, segmentSize, repairPercent, segments,
    created: init.created ?? Math.floor(Date.now() / 1000),
    encoding: segments.map((seg) => ({ offset: seg.offset, length: seg.oti.transferLength, published: seg.published })),
  };
}

/** An object's FEC map (how it is cut, coded and authenticated) and its symbol set, once its symbols are encoded: an image's, or a delta's. */
export function codeObject(init: Pick<ReleaseContent, 'digestLength' | 'chunkCoding'>, plan: ReleasePlan, symbols: Uint8Array[]): { fec: FecObject; symbolSet: SymbolSet } {
  const digestLength = init.digestLength ?? DEFAULT_DIGEST_LENGTH;
  const coding = init.chunkCoding === false ? undefined : (init.chunkCoding ?? DEFAULT_CHUNK_CODING);
  const chunkSymbols = chunkSymbolsForRelease(plan.segments, plan.datagramSize, digestLength, coding);
  const auth = authenticate(symbols, plan.symbolSize, plan.segments, digestLength, chunkSymbols, coding);
  return {
    fec: {
      symbolSize: plan.symbolSize, segmentSize: plan.segmentSize, repairPercent: plan.repairPercent, segments: plan.segments,
      auth: { scheme: AUTH_SCHEME_MERKLE_CHUNKS, digestLength, chunkSymbols, root: auth.tree.root, ...(coding ? { coding } : {}) },
    },
    symbolSet: { symbolSize: plan.symbolSize, segments: symbols, ...auth },
  };
}

/** The manifest once the symbols, and so the authentication root, are known; and the symbols' authentication. */
function completeRelease(init: ReleaseContent, plan: ReleasePlan, symbols: Uint8Array[]): { manifest: Manifest; symbolSet: SymbolSet } {
  const { fec, symbolSet } = codeObject(init, plan, symbols);
  const manifest: Manifest = {
    model: init.model,
    seq: init.seq,
    version: init.version,
    created: plan.created,
    ...(init.expires !== undefined ? { expires: init.expires } : {}),
    imageSize: init.image.length,
    imageSha256: sha256(init.image),
    ...fec,
    ...(init.rollout ? { rollout: init.rollout } : {}),
    ...(init.encryption ? { encryption: init.encryption } : {}),
    ...(init.deltas ? { deltas: init.deltas } : {}),
  };
  return { manifest, symbolSet };
}

/** Signs the manifest once the symbols, and so the authentication root, are known. */
export function signRelease(init: ReleaseInit, plan: ReleasePlan, symbols: Uint8Array[]): Release {
  const { manifest, symbolSet } = completeRelease(init, plan, symbols);
  const signed = signManifest(manifest, init.seed);
  return { manifest, signed, releaseId: releaseIdOf(signed), image: init.image, symbolSet };
}

/** signRelease through a Signer: the same release, byte for byte, for the same key. */
export async function signReleaseWith(init: SignerReleaseInit, plan: ReleasePlan, symbols: Uint8Array[]): Promise<Release> {
  const { manifest, symbolSet } = completeRelease(init, plan, symbols);
  const signed = await signManifestWith(manifest, init.signer);
  return { manifest, signed, releaseId: releaseIdOf(signed), image: init.image, symbolSet };
}

/** Image → signed release, encoding on this thread. */
export function buildRelease(init: ReleaseInit): Release {
  const plan = planRelease(init);
  return signRelease(init, plan, encodeSegments(init.image, plan.symbolSize, plan.encoding));
}
