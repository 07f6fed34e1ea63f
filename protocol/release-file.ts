/**
 * The release file that `fwcast sign` writes and `fwcast publish` reads: a
 * signed manifest followed by the image, streamable, the image at a known offset.
 *
 *   version 1: "FWCREL" 00 01 | manifest length (u32 BE) | signed manifest | image
 *   version 2: "FWCREL" 00 02 | manifest length (u32 BE) | root chain length (u32 BE)
 *              | signed manifest | root chain | image
 *
 * Version 2 carries the root chain the release's signer is delegated under, so
 * whoever publishes the file (CI, serve, a relay) carries that chain on the
 * channel. A file without a chain is written as version 1, as before.
 */
import { MalformedPacketError } from './errors.js';

const MAGIC_PREFIX = [0x46, 0x57, 0x43, 0x52, 0x45, 0x4c, 0x00] as const;
export const RELEASE_MAGIC = Uint8Array.from([...MAGIC_PREFIX, 0x01]);
export const RELEASE_MAGIC_V2 = Uint8Array.from([...MAGIC_PREFIX, 0x02]);
/** Version 1's header; also the least a reader must have to know the version. */
export const RELEASE_HEADER_SIZE = RELEASE_MAGIC.length + 4;
/** The longest header of any version: read this much (or the whole file, if shorter) before decoding. */
export const MAX_RELEASE_HEADER_SIZE = RELEASE_MAGIC.length + 8;

export interface ReleaseLayout {
  version: 1 | 2;
  manifestOffset: number;
  manifestLength: number;
  rootChainOffset: number;
  /** 0: the file carries no root chain. */
  rootChainLength: number;
  imageOffset: number;
}

/** The header of a release file; with a root chain, version 2. */
export function encodeReleaseHeader(manifestLength: number, rootChainLength = 0): Uint8Array {
  const v2 = rootChainLength > 0;
  const out = new Uint8Array(v2 ? MAX_RELEASE_HEADER_SIZE : RELEASE_HEADER_SIZE);
  out.set(v2 ? RELEASE_MAGIC_V2 : RELEASE_MAGIC);
  const view = new DataView(out.buffer);
  view.setUint32(RELEASE_MAGIC.length, manifestLength);
  if (v2) view.setUint32(RELEASE_MAGIC.length + 4, rootChainLength);
  return out;
}

/** Parses a header (the file's first MAX_RELEASE_HEADER_SIZE bytes, or all of a shorter file). */
export function decodeReleaseLayout(bytes: Uint8Array, maxManifest: number, maxRootChain: number): ReleaseLayout {
  const magic = bytes.length >= RELEASE_HEADER_SIZE && MAGIC_PREFIX.every((b, i) => bytes[i] === b) ? bytes[MAGIC_PREFIX.length] : undefined;
  if (magic !== 1 && magic !== 2) {
    throw new MalformedPacketError('not an fwcast release file (bad magic); make one with `fwcast sign`');
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const manifestLength = view.getUint32(RELEASE_MAGIC.length);
  if (manifestLength === 0 || manifestLength > maxManifest) throw new MalformedPacketError(`release file declares a ${manifestLength}-byte manifest (limit ${maxManifest})`);
  if (magic === 1) {
    return { version: 1, manifestOffset: RELEASE_HEADER_SIZE, manifestLength, rootChainOffset: RELEASE_HEADER_SIZE + manifestLength, rootChainLength: 0, imageOffset: RELEASE_HEADER_SIZE + manifestLength };
  }
  if (bytes.length < MAX_RELEASE_HEADER_SIZE) throw new MalformedPacketError('truncated release file (header cut short)');
  const rootChainLength = view.getUint32(RELEASE_MAGIC.length + 4);
  if (rootChainLength === 0 || rootChainLength > maxRootChain) throw new MalformedPacketError(`release file declares a ${rootChainLength}-byte root chain (limit ${maxRootChain})`);
  const manifestOffset = MAX_RELEASE_HEADER_SIZE;
  const rootChainOffset = manifestOffset + manifestLength;
  return { version: 2, manifestOffset, manifestLength, rootChainOffset, rootChainLength, imageOffset: rootChainOffset + rootChainLength };
}
