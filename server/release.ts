/**
 * Building and reading signed release files: image → manifest + signature.
 * The pure part, shared with the agent's capacity self-test, is protocol/release.ts.
 */
import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { DEFAULT_LIMITS } from '../protocol/limits.js';
import { decodeManifest, releaseIdOf } from '../protocol/manifest.js';
import { decodeCoseSign1 } from '../protocol/cose-sign1.js';
import { planRelease, signRelease, signReleaseWith, type Release, type ReleaseInit, type SignerReleaseInit } from '../protocol/release.js';
import type { SymbolSetSegment } from '../protocol/symbol-set.js';
import type { CodecPool } from './codec-pool.js';
import { decodeReleaseHeader, encodeReleaseHeader, RELEASE_HEADER_SIZE } from '../protocol/release-file.js';
import { ConfigError, MalformedPacketError } from '../protocol/errors.js';
import { replaceFile, writeAll } from '../storage/durable-file.js';

export { buildRelease, DEFAULT_REPAIR_PERCENT, segmentSizeFor, symbolSizeFor, type Release, type ReleaseInit, type SignerReleaseInit } from '../protocol/release.js';

const sha256 = (data: Uint8Array): Uint8Array => new Uint8Array(createHash('sha256').update(data).digest());

/** Image → signed release, encoding segments on a worker pool (all cores); signed with a seed or through a Signer. */
export async function buildReleaseParallel(init: ReleaseInit | SignerReleaseInit, pool: CodecPool): Promise<Release> {
  const plan = planRelease(init);
  const symbols = await encodeOnPool(pool, init.image, plan.symbolSize, plan.encoding);
  return 'signer' in init ? signReleaseWith(init, plan, symbols) : signRelease(init, plan, symbols);
}

export function encodeOnPool(pool: CodecPool, image: Uint8Array, symbolSize: number, segments: readonly SymbolSetSegment[]): Promise<Uint8Array[]> {
  return Promise.all(segments.map((seg) => pool.encode(image.slice(seg.offset, seg.offset + seg.length), symbolSize, seg.published)));
}

/** Writes a release file durably: it replaces `path` whole or not at all (storage/durable-file.ts). */
export function writeReleaseFile(path: string, release: Pick<Release, 'signed' | 'image' | 'deltaObjects'>): void {
  replaceFile(path, (fd) => {
    writeAll(fd, encodeReleaseHeader(release.signed.length));
    writeAll(fd, release.signed);
    writeAll(fd, release.image);
    // The deltas the manifest lists (key 12), in its order, after the image.
    for (const d of release.deltaObjects ?? []) writeAll(fd, d);
  });
}

/**
 * Reads a release file and checks its own consistency (manifest parses, image
 * size and digest match). Signature trust is the receiver's decision, not this one's.
 */
export function readReleaseFile(path: string): Release {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(readFileSync(path));
  } catch (err) {
    throw new ConfigError(`cannot read release file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const manifestLength = decodeReleaseHeader(bytes, DEFAULT_LIMITS.maxManifestSize);
  const signed = bytes.slice(RELEASE_HEADER_SIZE, RELEASE_HEADER_SIZE + manifestLength);
  if (signed.length !== manifestLength) throw new MalformedPacketError(`${path}: truncated release file (manifest cut short)`);
  const manifest = decodeManifest(decodeCoseSign1(signed).payload);
  const deltaBytes = (manifest.deltas ?? []).reduce((n, d) => n + d.size, 0);
  const image = bytes.subarray(RELEASE_HEADER_SIZE + manifestLength, bytes.length - deltaBytes);
  if (bytes.length - RELEASE_HEADER_SIZE - manifestLength - deltaBytes !== manifest.imageSize) {
    throw new MalformedPacketError(`${path}: image is ${bytes.length - RELEASE_HEADER_SIZE - manifestLength - deltaBytes} bytes, manifest says ${manifest.imageSize}`);
  }
  if (Buffer.compare(sha256(image), manifest.imageSha256) !== 0) throw new MalformedPacketError(`${path}: image does not match the manifest's SHA-256`);
  const deltaObjects: Uint8Array[] = [];
  let at = RELEASE_HEADER_SIZE + manifestLength + image.length;
  for (const [i, d] of (manifest.deltas ?? []).entries()) {
    const object = bytes.subarray(at, at + d.size);
    at += d.size;
    if (Buffer.compare(sha256(object), d.sha256) !== 0) throw new MalformedPacketError(`${path}: delta ${i} does not match the manifest's SHA-256`);
    deltaObjects.push(object);
  }
  return { manifest, signed, releaseId: releaseIdOf(signed), image, ...(manifest.deltas ? { deltaObjects } : {}) };
}

/** Reads only the signed manifest of a release file (for inspect on large files). */
export function readReleaseManifest(path: string): Uint8Array {
  const fd = openSync(path, 'r');
  try {
    const header = new Uint8Array(RELEASE_HEADER_SIZE);
    readSync(fd, header, 0, header.length, 0);
    const length = decodeReleaseHeader(header, DEFAULT_LIMITS.maxManifestSize);
    const signed = new Uint8Array(length);
    if (readSync(fd, signed, 0, length, RELEASE_HEADER_SIZE) !== length) throw new MalformedPacketError(`${path}: truncated release file`);
    return signed;
  } finally {
    closeSync(fd);
  }
}
