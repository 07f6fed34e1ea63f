/**
 * The release file that `fwcast sign` writes and `fwcast publish` reads: a
 * signed manifest followed by the image, streamable, the image at a known offset.
 *
 *   "FWCREL" 00 01 | manifest length (u32 BE) | signed manifest | image
 */
import { MalformedPacketError } from './errors.js';

export const RELEASE_MAGIC = Uint8Array.from([0x46, 0x57, 0x43, 0x52, 0x45, 0x4c, 0x00, 0x01]);
export const RELEASE_HEADER_SIZE = RELEASE_MAGIC.length + 4;

export function encodeReleaseHeader(manifestLength: number): Uint8Array {
  const out = new Uint8Array(RELEASE_HEADER_SIZE);
  out.set(RELEASE_MAGIC);
  new DataView(out.buffer).setUint32(RELEASE_MAGIC.length, manifestLength);
  return out;
}

/** Parses the header; returns the signed manifest's length (it starts at RELEASE_HEADER_SIZE). */
export function decodeReleaseHeader(bytes: Uint8Array, maxManifest: number): number {
  if (bytes.length < RELEASE_HEADER_SIZE || !RELEASE_MAGIC.every((b, i) => bytes[i] === b)) {
    throw new MalformedPacketError('not an fwcast release file (bad magic); make one with `fwcast sign`');
  }
  const length = new DataView(bytes.buffer, bytes.byteOffset).getUint32(RELEASE_MAGIC.length);
  if (length === 0 || length > maxManifest) throw new MalformedPacketError(`release file declares a ${length}-byte manifest (limit ${maxManifest})`);
  return length;
}
