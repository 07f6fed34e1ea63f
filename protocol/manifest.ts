/**
 * The release manifest: what a receiver needs to accept, decode and verify one
 * image. Fields are modelled on IETF SUIT (class id, sequence number, image
 * digest and size) and carried as a CBOR map with integer keys, the payload of
 * a COSE_Sign1 (see cose-sign1.ts). Key numbers are listed in protocol/SPEC.md.
 */
import { createHash } from 'node:crypto';
import { decodeCbor, encodeCbor } from './cbor.js';
import { decodeCoseSign1, signCoseSign1, signCoseSign1With, verifyCoseSign1, verifyCountersignature } from './cose-sign1.js';
import type { Signer } from './signer.js';
import { InvalidManifestError, InvalidSignatureError, LimitExceededError, UnknownKeyError } from './errors.js';
import { paddedBlockSize, segmentOti, sourceSymbolCount } from './fec.js';
import type { PublicKey } from './keys.js';
import { DEFAULT_LIMITS, MAX_SEGMENT_SIZE, MAX_SOURCE_SYMBOLS, SYMBOL_ALIGNMENT, type ReceiverLimits } from './limits.js';
import { decodeOti, encodeOti, type Oti } from './oti.js';
import { AUTH_SCHEME_MERKLE_CHUNKS, ChunkLayout, NODE_SIZE, type AuthParams, type ChunkCoding } from './auth.js';
import { maxDataPieces } from './reed-solomon.js';
import { RELEASE_ID_SIZE } from './packet.js';
import { hexCut, quote } from './quote.js';
import { decodeRolloutPolicy, encodeRolloutPolicy, type RolloutPolicy } from './rollout.js';
import { decodeEncryptionBlock, encodeEncryptionBlock, type EncryptionBlock } from './encryption.js';

export const MANIFEST_FORMAT = 1;
/** RaptorQ's FEC Encoding ID (RFC 6330 §3.1). */
export const FEC_RAPTORQ = 6;
/** SHA-256 in the COSE algorithms registry. */
export const DIGEST_SHA256 = -16;

const K = {
  format: 1, model: 2, seq: 3, version: 4, created: 5, expires: 6, size: 7, digest: 8, fec: 9,
  rollout: 10,
  encryption: 11,
  deltas: 12,
} as const;
const F = { encoding: 1, symbolSize: 2, segmentSize: 3, repair: 4, segments: 5, auth: 6 } as const;
const A = { scheme: 1, digestLength: 2, chunkSymbols: 3, root: 4, groupChunks: 5, parityPerChunk: 6 } as const;

export interface SegmentInfo {
  index: number;
  /** Byte offset of the segment in the image. */
  offset: number;
  oti: Oti;
  /** K: source symbols in the segment. */
  sourceSymbols: number;
  /** Encoding symbols published for the segment: ESIs 0 .. published − 1. */
  published: number;
  sha256: Uint8Array;
}

export interface Manifest {
  model: string;
  seq: number;
  version: string;
  /** Unix time, seconds. */
  created: number;
  expires?: number;
  imageSize: number;
  imageSha256: Uint8Array;
  symbolSize: number;
  segmentSize: number;
  /** Repair symbols published per segment, as a percentage of K. */
  repairPercent: number;
  segments: SegmentInfo[];
  /** Per-packet authentication: every symbol's digest is rooted here. */
  auth: AuthParams;
  /** Who installs when (key 10, protocol/rollout.ts); absent: every device, at once. */
  rollout?: RolloutPolicy;
  /** Key 11, confidential firmware (encryption.ts): the image, its size and digests are ciphertext. */
  encryption?: EncryptionBlock;
  /** Deltas from earlier releases (key 12, protocol/delta.ts), each sent on its base's sub-channel. */
  deltas?: DeltaEntry[];
}

/** What the FEC map (key 9) says: how an object is cut, coded and authenticated. */
export type FecObject = Pick<Manifest, 'symbolSize' | 'segmentSize' | 'repairPercent' | 'segments' | 'auth'>;

const MODEL_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$/;

export function checkModelName(model: string): string {
  if (!MODEL_PATTERN.test(model)) {
    throw new InvalidManifestError(`model ${quote(model)} must be 1-64 characters of letters, digits, ".", "_", "/" or "-", starting with a letter or digit`);
  }
  return model;
}

export function publishedSymbols(k: number, repairPercent: number): number {
  return k + Math.ceil((k * repairPercent) / 100);
}

export interface SegmentPlan {
  index: number;
  offset: number;
  length: number;
}

/**
 * Splits an image into segments the way RFC 6330 §4.4.1.2 partitions an object
 * into source blocks: Kt = ⌈F/T⌉ symbols into Z = ⌈Kt/Kmax⌉ segments of KL or KS
 * symbols (Partition[Kt, Z]: the first ZL segments get KL = ⌈Kt/Z⌉, the rest
 * KS = ⌊Kt/Z⌋), so all segments are nearly the same size and finish together.
 * Only the last segment can end in a partial symbol.
 */
export function planSegments(imageSize: number, symbolSize: number, maxSegmentSize: number): SegmentPlan[] {
  const kt = Math.ceil(imageSize / symbolSize);
  const z = Math.ceil(kt / Math.floor(maxSegmentSize / symbolSize));
  const kl = Math.ceil(kt / z);
  const ks = Math.floor(kt / z);
  const zl = kt - ks * z;
  const plans: SegmentPlan[] = [];
  let offset = 0;
  for (let index = 0; index < z; index++) {
    const length = Math.min((index < zl ? kl : ks) * symbolSize, imageSize - offset);
    plans.push({ index, offset, length });
    offset += length;
  }
  return plans;
}

export function checkFecParameters(symbolSize: number, segmentSize: number): void {
  if (!Number.isInteger(symbolSize) || symbolSize < SYMBOL_ALIGNMENT || symbolSize % SYMBOL_ALIGNMENT !== 0 || symbolSize > 65535) {
    throw new InvalidManifestError(`symbol size ${symbolSize} must be a multiple of ${SYMBOL_ALIGNMENT} between ${SYMBOL_ALIGNMENT} and 65528`);
  }
  if (!Number.isInteger(segmentSize) || segmentSize < symbolSize || segmentSize % symbolSize !== 0 || segmentSize / symbolSize > MAX_SOURCE_SYMBOLS || segmentSize > MAX_SEGMENT_SIZE) {
    throw new InvalidManifestError(`segment size ${segmentSize} must be a multiple of the symbol size ${symbolSize}, at most ${MAX_SOURCE_SYMBOLS} symbols and ${MAX_SEGMENT_SIZE} bytes`);
  }
}

/** The FEC map (key 9, and a delta's key 5): how an object of `imageSize` bytes is cut, coded and authenticated. */
export function encodeFec(m: FecObject): Map<number, unknown> {
  return new Map<number, unknown>([
    [F.encoding, FEC_RAPTORQ],
    [F.symbolSize, m.symbolSize],
    [F.segmentSize, m.segmentSize],
    [F.repair, m.repairPercent],
    [F.segments, m.segments.map((s) => [encodeOti(s.oti), s.sha256])],
    [F.auth, new Map<number, unknown>([
      [A.scheme, m.auth.scheme],
      [A.digestLength, m.auth.digestLength],
      [A.chunkSymbols, m.auth.chunkSymbols],
      [A.root, m.auth.root],
      ...(m.auth.coding ? [[A.groupChunks, m.auth.coding.groupChunks], [A.parityPerChunk, m.auth.coding.parityPerChunk]] as const : []),
    ])],
  ]);
}

export function encodeManifest(m: Manifest): Uint8Array {
  const fields = new Map<number, unknown>([
    [K.format, MANIFEST_FORMAT],
    [K.model, m.model],
    [K.seq, m.seq],
    [K.version, m.version],
    [K.created, m.created],
  ]);
  if (m.expires !== undefined) fields.set(K.expires, m.expires);
  fields.set(K.size, m.imageSize);
  fields.set(K.digest, [DIGEST_SHA256, m.imageSha256]);
  fields.set(K.fec, encodeFec(m));
  if (m.rollout) fields.set(K.rollout, encodeRolloutPolicy(m.rollout));
  if (m.encryption) fields.set(K.encryption, encodeEncryptionBlock(m.encryption));
  if (m.deltas) fields.set(K.deltas, m.deltas.map(encodeDeltaEntry));
  return encodeCbor(fields);
}

function uint(value: unknown, name: string, max = Number.MAX_SAFE_INTEGER): number {
  // cbor-x gives 8-byte integers as BigInt.
  if (typeof value === 'bigint' && value >= 0n && value <= BigInt(max)) return Number(value);
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) {
    throw new InvalidManifestError(`manifest field "${name}" must be an integer in 0..${max}, got ${quote(value)}`);
  }
  return value;
}

function text(value: unknown, name: string, maxBytes: number): string {
  // Counted in UTF-8 bytes, as a C receiver counts them.
  if (typeof value !== 'string' || value.length === 0 || Buffer.byteLength(value, 'utf8') > maxBytes) {
    throw new InvalidManifestError(`manifest field "${name}" must be a text string of 1..${maxBytes} bytes (UTF-8)`);
  }
  return value;
}

function sha256Bytes(value: unknown, name: string): Uint8Array {
  if (!(value instanceof Uint8Array) || value.length !== 32) throw new InvalidManifestError(`manifest field "${name}" must be a 32-byte SHA-256 digest`);
  return new Uint8Array(value);
}

/** Decodes and validates a manifest payload against the receiver's limits. */
export function decodeManifest(payload: Uint8Array, limits: ReceiverLimits = DEFAULT_LIMITS): Manifest {
  const map = decodeCbor(payload, 'manifest');
  if (!(map instanceof Map)) throw new InvalidManifestError('manifest is not a CBOR map');
  const format = map.get(K.format);
  if (format !== MANIFEST_FORMAT) throw new InvalidManifestError(`manifest format ${quote(format)} is not supported (expected ${MANIFEST_FORMAT})`);
  const model = checkModelName(text(map.get(K.model), 'model', 64));
  const seq = uint(map.get(K.seq), 'seq');
  const version = text(map.get(K.version), 'version', 64);
  const created = uint(map.get(K.created), 'created');
  const expires = map.has(K.expires) ? uint(map.get(K.expires), 'expires') : undefined;
  const imageSize = uint(map.get(K.size), 'size');
  if (imageSize === 0) throw new InvalidManifestError('manifest declares an empty image');
  if (imageSize > limits.maxImageSize) throw new LimitExceededError(`image of ${imageSize} bytes exceeds the limit of ${limits.maxImageSize}`);
  const digest = map.get(K.digest);
  if (!Array.isArray(digest) || digest.length !== 2 || digest[0] !== DIGEST_SHA256) {
    throw new InvalidManifestError('manifest digest must be [-16 (SHA-256), digest]');
  }
  const imageSha256 = sha256Bytes(digest[1], 'digest');

  // SPEC §8.3's order: `expires > created` is checked between the segments and the auth map.
  const fec = decodeFec(map.get(K.fec), imageSize, limits, 'fec', () => {
    if (expires !== undefined && expires <= created) throw new InvalidManifestError('manifest expires before it was created');
  });
  const rollout = map.has(K.rollout) ? decodeRolloutPolicy(map.get(K.rollout)) : undefined;
  const encryption = map.has(K.encryption) ? decodeEncryptionBlock(map.get(K.encryption), imageSize) : undefined;
  const deltas = map.has(K.deltas) ? decodeDeltaList(map.get(K.deltas), limits) : undefined;
  return {
    model, seq, version, created, ...(expires !== undefined ? { expires } : {}), imageSize, imageSha256, ...fec,
    ...(rollout ? { rollout } : {}), ...(encryption ? { encryption } : {}), ...(deltas ? { deltas } : {}),
  };
}

/** Decodes and checks an FEC map (`name` says where it is, in errors) for an object of `imageSize` bytes. */
export function decodeFec(fec: unknown, imageSize: number, limits: ReceiverLimits, name: string, beforeAuth?: () => void): FecObject {
  if (!(fec instanceof Map)) throw new InvalidManifestError(name === 'fec' ? 'manifest has no FEC parameters' : `${name} has no FEC parameters`);
  if (fec.get(F.encoding) !== FEC_RAPTORQ) throw new InvalidManifestError(`FEC encoding ${quote(fec.get(F.encoding))} is not RaptorQ (${FEC_RAPTORQ})`);
  const symbolSize = uint(fec.get(F.symbolSize), `${name}.symbol-size`, 65535);
  if (symbolSize > limits.maxSymbolSize) throw new LimitExceededError(`symbol size ${symbolSize} exceeds the limit of ${limits.maxSymbolSize}`);
  const segmentSize = uint(fec.get(F.segmentSize), `${name}.segment-size`);
  checkFecParameters(symbolSize, segmentSize);
  const repairPercent = uint(fec.get(F.repair), `${name}.repair`, 10000);
  const list = fec.get(F.segments);
  const segmentCount = Math.ceil(Math.ceil(imageSize / symbolSize) / (segmentSize / symbolSize));
  if (segmentCount > limits.maxSegments) throw new LimitExceededError(`${segmentCount} segments exceed the limit of ${limits.maxSegments}`);
  const plans = planSegments(imageSize, symbolSize, segmentSize);
  if (!Array.isArray(list) || list.length !== plans.length) {
    throw new InvalidManifestError(`manifest must list ${plans.length} segments for ${imageSize} bytes in segments of at most ${segmentSize}`);
  }
  const segments = plans.map((plan, i): SegmentInfo => {
    const entry: unknown = list[i];
    if (!Array.isArray(entry) || entry.length !== 2 || !(entry[0] instanceof Uint8Array)) {
      throw new InvalidManifestError(`segment ${i} must be [OTI, SHA-256]`);
    }
    const oti = decodeOti(entry[0]);
    const expected = segmentOti(plan.length, symbolSize);
    if (oti.transferLength !== expected.transferLength || oti.symbolSize !== expected.symbolSize || oti.sourceBlocks !== 1 || oti.subBlocks !== 1 || oti.alignment !== SYMBOL_ALIGNMENT) {
      throw new InvalidManifestError(`segment ${i} OTI must describe ${plan.length} bytes as one source block of ${symbolSize}-byte symbols`);
    }
    const k = sourceSymbolCount(plan.length, symbolSize);
    paddedBlockSize(k);
    return { index: i, offset: plan.offset, oti, sourceSymbols: k, published: publishedSymbols(k, repairPercent), sha256: sha256Bytes(entry[1], `segment ${i} digest`) };
  });
  beforeAuth?.();
  const auth = decodeAuthParams(fec.get(F.auth), segments);
  return { symbolSize, segmentSize, repairPercent, segments, auth };
}

function decodeAuthParams(value: unknown, segments: SegmentInfo[]): AuthParams {
  if (!(value instanceof Map)) throw new InvalidManifestError('manifest has no per-packet authentication parameters (fec key 6)');
  const scheme = value.get(A.scheme);
  if (scheme !== AUTH_SCHEME_MERKLE_CHUNKS) throw new InvalidManifestError(`authentication scheme ${quote(scheme)} is not supported (expected ${AUTH_SCHEME_MERKLE_CHUNKS})`);
  const digestLength = uint(value.get(A.digestLength), 'fec.auth.digest-length', 32);
  if (digestLength < 8) throw new InvalidManifestError(`symbol digests of ${digestLength} bytes are too short (at least 8)`);
  const chunkSymbols = uint(value.get(A.chunkSymbols), 'fec.auth.chunk-symbols', 65535);
  if (chunkSymbols === 0) throw new InvalidManifestError('fec.auth.chunk-symbols must be at least 1');
  const root = value.get(A.root);
  if (!(root instanceof Uint8Array) || root.length !== NODE_SIZE) throw new InvalidManifestError(`fec.auth.root must be ${NODE_SIZE} bytes`);
  const coding = decodeChunkCoding(value);
  const layout = new ChunkLayout(segments, chunkSymbols, coding);
  if (layout.depth > 24) throw new LimitExceededError(`${layout.leaves} authentication leaves are too many`);
  return { scheme, digestLength, chunkSymbols, root: new Uint8Array(root), ...(coding ? { coding } : {}) };
}

/** Keys 5 and 6 together, or neither (chunks not erasure-coded). */
function decodeChunkCoding(value: Map<unknown, unknown>): ChunkCoding | undefined {
  if (!value.has(A.groupChunks) && !value.has(A.parityPerChunk)) return undefined;
  const groupChunks = uint(value.get(A.groupChunks), 'fec.auth.group-chunks', 128);
  const parityPerChunk = uint(value.get(A.parityPerChunk), 'fec.auth.parity-per-chunk', 255);
  if (groupChunks === 0 || parityPerChunk === 0) throw new InvalidManifestError('fec.auth.group-chunks and fec.auth.parity-per-chunk must both be at least 1');
  if (groupChunks > maxDataPieces(parityPerChunk)) {
    throw new InvalidManifestError(`groups of ${groupChunks} chunks with ${parityPerChunk} parity pieces each do not fit GF(256): at most ${maxDataPieces(parityPerChunk)} chunks per group`);
  }
  return { groupChunks, parityPerChunk };
}

export function releaseIdOf(signedManifest: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(signedManifest).digest().subarray(0, RELEASE_ID_SIZE));
}

export function signManifest(m: Manifest, seed: Uint8Array): Uint8Array {
  return signCoseSign1(encodeManifest(m), seed);
}

export function signManifestWith(m: Manifest, signer: Signer): Promise<Uint8Array> {
  return signCoseSign1With(encodeManifest(m), signer);
}

export interface VerifiedManifest {
  manifest: Manifest;
  /** Key id of the trusted key that signed it. */
  kid: Uint8Array;
  /** Key ids of the other trusted keys whose co-signatures verify (distinct; unknown or bad ones do not count). */
  cosigners: Uint8Array[];
  releaseId: Uint8Array;
  signed: Uint8Array;
}

/**
 * Verifies a signed manifest against trusted keys, then decodes its payload.
 * The signature is checked over the received bytes before the payload is parsed.
 */
export function openSignedManifest(signed: Uint8Array, trusted: readonly PublicKey[], limits: ReceiverLimits = DEFAULT_LIMITS): VerifiedManifest {
  if (signed.length > limits.maxManifestSize) throw new LimitExceededError(`signed manifest of ${signed.length} bytes exceeds the limit of ${limits.maxManifestSize}`);
  const cose = decodeCoseSign1(signed);
  // A key id from the wire may be any length: cut, so no message or log field carries kilobytes of it.
  const kid = hexCut(cose.kid);
  const key = trusted.find((k) => Buffer.compare(k.kid, cose.kid) === 0);
  if (!key) throw new UnknownKeyError(`manifest is signed by key ${kid}, which is not trusted`, { kid });
  if (!verifyCoseSign1(cose, key.publicKey)) throw new InvalidSignatureError(`manifest signature does not verify with trusted key ${kid}`);
  const cosigners: Uint8Array[] = [];
  for (const c of cose.countersignatures) {
    const co = trusted.find((k) => Buffer.compare(k.kid, c.kid) === 0);
    const counted = [cose.kid, ...cosigners].some((k) => Buffer.compare(k, c.kid) === 0);
    if (co && !counted && verifyCountersignature(cose, c, co.publicKey)) cosigners.push(c.kid);
  }
  return { manifest: decodeManifest(cose.payload, limits), kid: cose.kid, cosigners, releaseId: releaseIdOf(signed), signed };
}

/** Keys of a delta entry in the manifest's list of deltas (key 12). */
const D = { baseRelease: 1, baseDigest: 2, size: 3, digest: 4, fec: 5 } as const;
/** Deltas one manifest may list: each is a sub-channel the publisher sends. */
export const MAX_DELTAS = 16;

/**
 * A delta from an earlier release (protocol/delta.ts): an object of its own,
 * cut, coded and authenticated as an image is, whose bytes rebuild this
 * release's image from the base release's image.
 */
export interface DeltaEntry extends FecObject {
  /** The base release's id (8 bytes): its sub-channel's name is derived from it. */
  baseReleaseId: Uint8Array;
  /** SHA-256 of the base release's image: the base a device holds must match it exactly. */
  baseSha256: Uint8Array;
  /** The delta object's size and SHA-256. */
  size: number;
  sha256: Uint8Array;
}

function encodeDeltaEntry(d: DeltaEntry): Map<number, unknown> {
  return new Map<number, unknown>([
    [D.baseRelease, d.baseReleaseId],
    [D.baseDigest, [DIGEST_SHA256, d.baseSha256]],
    [D.size, d.size],
    [D.digest, [DIGEST_SHA256, d.sha256]],
    [D.fec, encodeFec(d)],
  ]);
}

function digestField(value: unknown, name: string): Uint8Array {
  if (!Array.isArray(value) || value.length !== 2 || value[0] !== DIGEST_SHA256) throw new InvalidManifestError(`${name} must be [-16 (SHA-256), digest]`);
  return sha256Bytes(value[1], name);
}

function decodeDeltaList(value: unknown, limits: ReceiverLimits): DeltaEntry[] {
  if (!Array.isArray(value) || value.length === 0 || value.length > MAX_DELTAS) throw new InvalidManifestError(`manifest field "deltas" must be a list of 1..${MAX_DELTAS} delta entries`);
  const seen = new Set<string>();
  return value.map((entry: unknown, i): DeltaEntry => {
    const name = `deltas[${i}]`;
    if (!(entry instanceof Map)) throw new InvalidManifestError(`${name} is not a CBOR map`);
    const base = entry.get(D.baseRelease);
    if (!(base instanceof Uint8Array) || base.length !== RELEASE_ID_SIZE) throw new InvalidManifestError(`${name}.base-release must be a ${RELEASE_ID_SIZE}-byte release id`);
    const key = Buffer.from(base).toString('hex');
    if (seen.has(key)) throw new InvalidManifestError(`${name} repeats the base release ${key}: one delta per base`);
    seen.add(key);
    const size = uint(entry.get(D.size), `${name}.size`);
    if (size === 0) throw new InvalidManifestError(`${name} declares an empty delta`);
    if (size > limits.maxImageSize) throw new LimitExceededError(`delta of ${size} bytes exceeds the limit of ${limits.maxImageSize}`);
    return {
      baseReleaseId: new Uint8Array(base), baseSha256: digestField(entry.get(D.baseDigest), `${name}.base-digest`),
      size, sha256: digestField(entry.get(D.digest), `${name}.digest`), ...decodeFec(entry.get(D.fec), size, limits, `${name}.fec`),
    };
  });
}
