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
import { decodeReleaseLayout, encodeReleaseHeader, MAX_RELEASE_HEADER_SIZE, type ReleaseLayout } from '../protocol/release-file.js';
import { decodeRootChain, decodeSignedRoot, MAX_ROOT_CHAIN_SIZE } from '../protocol/root.js';
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

/** A release as read from its file: with the root chain the file carries, if any. */
export type ReleaseFile = Release & { rootChain?: Uint8Array };

/** Writes a release file durably: it replaces `path` whole or not at all (storage/durable-file.ts). */
export function writeReleaseFile(path: string, release: Pick<ReleaseFile, 'signed' | 'image' | 'rootChain' | 'deltaObjects'>): void {
  const chain = release.rootChain;
  replaceFile(path, (fd) => {
    writeAll(fd, encodeReleaseHeader(release.signed.length, chain?.length ?? 0));
    writeAll(fd, release.signed);
    if (chain) writeAll(fd, chain);
    writeAll(fd, release.image);
    // The deltas the manifest lists (key 12), in its order, after the image.
    for (const d of release.deltaObjects ?? []) writeAll(fd, d);
  });
}

const layoutOf = (header: Uint8Array): ReleaseLayout => decodeReleaseLayout(header, DEFAULT_LIMITS.maxManifestSize, MAX_ROOT_CHAIN_SIZE);

/** A root chain section must at least be a chain of signed roots; whether it is trusted is the reader's decision. */
function checkRootChainShape(path: string, chain: Uint8Array): void {
  try {
    for (const root of decodeRootChain(chain)) decodeSignedRoot(root);
  } catch (err) {
    if (err instanceof Error) err.message = `${path}: the root chain it carries is malformed: ${err.message}`;
    throw err;
  }
}

/**
 * Reads a release file and checks its own consistency (manifest parses, image
 * size and digest match, the root chain is well formed). Signature trust is
 * the receiver's decision, not this one's.
 */
export function readReleaseFile(path: string): ReleaseFile {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(readFileSync(path));
  } catch (err) {
    throw new ConfigError(`cannot read release file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const layout = layoutOf(bytes);
  const signed = bytes.slice(layout.manifestOffset, layout.manifestOffset + layout.manifestLength);
  if (signed.length !== layout.manifestLength) throw new MalformedPacketError(`${path}: truncated release file (manifest cut short)`);
  const rootChain = layout.rootChainLength > 0 ? bytes.slice(layout.rootChainOffset, layout.imageOffset) : undefined;
  if (rootChain && rootChain.length !== layout.rootChainLength) throw new MalformedPacketError(`${path}: truncated release file (root chain cut short)`);
  const manifest = decodeManifest(decodeCoseSign1(signed).payload);
  if (rootChain) checkRootChainShape(path, rootChain);
  // The deltas the manifest lists (key 12) follow the image, in its order.
  const deltaBytes = (manifest.deltas ?? []).reduce((n, d) => n + d.size, 0);
  const imageLength = bytes.length - layout.imageOffset - deltaBytes;
  if (imageLength !== manifest.imageSize) throw new MalformedPacketError(`${path}: image is ${imageLength} bytes, manifest says ${manifest.imageSize}`);
  const image = bytes.subarray(layout.imageOffset, layout.imageOffset + imageLength);
  if (Buffer.compare(sha256(image), manifest.imageSha256) !== 0) throw new MalformedPacketError(`${path}: image does not match the manifest's SHA-256`);
  const deltaObjects: Uint8Array[] = [];
  let at = layout.imageOffset + image.length;
  for (const [i, d] of (manifest.deltas ?? []).entries()) {
    const object = bytes.subarray(at, at + d.size);
    at += d.size;
    if (Buffer.compare(sha256(object), d.sha256) !== 0) throw new MalformedPacketError(`${path}: delta ${i} does not match the manifest's SHA-256`);
    deltaObjects.push(object);
  }
  return { manifest, signed, releaseId: releaseIdOf(signed), image, ...(rootChain ? { rootChain } : {}), ...(manifest.deltas ? { deltaObjects } : {}) };
}

/** Reads only the signed manifest of a release file, and the root chain it carries (for inspect and serve, on large files). */
export function readReleaseHead(path: string): { signed: Uint8Array; rootChain?: Uint8Array; layout: ReleaseLayout } {
  const fd = openSync(path, 'r');
  try {
    const header = new Uint8Array(MAX_RELEASE_HEADER_SIZE);
    const layout = layoutOf(header.subarray(0, readSync(fd, header, 0, header.length, 0)));
    const signed = new Uint8Array(layout.manifestLength);
    if (readSync(fd, signed, 0, signed.length, layout.manifestOffset) !== signed.length) throw new MalformedPacketError(`${path}: truncated release file`);
    if (layout.rootChainLength === 0) return { signed, layout };
    const rootChain = new Uint8Array(layout.rootChainLength);
    if (readSync(fd, rootChain, 0, rootChain.length, layout.rootChainOffset) !== rootChain.length) throw new MalformedPacketError(`${path}: truncated release file`);
    checkRootChainShape(path, rootChain);
    return { signed, rootChain, layout };
  } finally {
    closeSync(fd);
  }
}

/** Reads only the signed manifest of a release file (for inspect on large files). */
export function readReleaseManifest(path: string): Uint8Array {
  return readReleaseHead(path).signed;
}
