/**
 * fwcast datagrams. Every datagram starts with the same 12-byte header,
 * big-endian:
 *
 *    0                   1                   2                   3
 *    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |   'F' 0x46    |   'W' 0x57    |  Version (1)  |     Type      |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |                     Release ID (8 bytes)                      |
 *   +                                                               +
 *   |                                                               |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *
 * Release ID = the first 8 bytes of SHA-256 over the signed manifest
 * (the whole COSE_Sign1 encoding), so it names one signed release exactly.
 *
 * Type 1, MANIFEST: a fragment of the signed manifest.
 *   | Total length (32) | Fragment offset (32) | fragment bytes ... |
 *
 * Type 2, SYMBOL: one RaptorQ encoding symbol of one segment.
 *   | Segment index (32) | FEC Payload ID: SBN (8) = 0, ESI (24) | symbol (T bytes) |
 *
 * Type 3, AUTH: one chunk of symbol digests and its Merkle path (auth.ts).
 *   | Leaf index (32) | Depth d (8) | d × 16-byte sibling hashes | chunk body |
 *
 * Type 4, ROOT: a fragment of the root chain (root.ts), laid out as MANIFEST;
 * the header's id field is the first 8 bytes of SHA-256 over the whole chain.
 *   | Total length (32) | Fragment offset (32) | fragment bytes ... |
 *
 * Type 5, HALT: a whole signed halt (halt.ts), at most MAX_HALT_SIZE bytes;
 * the header's id field is the id of the release it halts.
 *   | signed halt ... |
 */
import { MalformedPacketError, UnsupportedVersionError } from './errors.js';
import { NODE_SIZE } from './auth.js';
import { PAYLOAD_ID_SIZE, readPayloadId, writePayloadId } from './payload-id.js';

export const MAGIC_0 = 0x46;
export const MAGIC_1 = 0x57;
export const WIRE_VERSION = 1;
export const HEADER_SIZE = 12;
export const RELEASE_ID_SIZE = 8;

export const PacketType = {
  Manifest: 1,
  Symbol: 2,
  Auth: 3,
  Root: 4,
  Halt: 5,
} as const;

/** Largest signed halt a HALT datagram carries (protocol/halt.ts MAX_HALT_SIZE). */
export const MAX_HALT_BYTES = 512;

const MANIFEST_FIELDS = 8;
const SYMBOL_FIELDS = 4 + PAYLOAD_ID_SIZE;
export const SYMBOL_OVERHEAD = HEADER_SIZE + SYMBOL_FIELDS;
export const MANIFEST_OVERHEAD = HEADER_SIZE + MANIFEST_FIELDS;
/** Header and fixed fields of an AUTH datagram, before the path. */
export const AUTH_OVERHEAD = HEADER_SIZE + 5;
/** Deepest Merkle path accepted: 2^24 chunks is far beyond any limit. */
export const MAX_AUTH_DEPTH = 24;

/** Largest datagram any receiver accepts; IPv6 UDP payloads cannot be larger. */
export const MAX_DATAGRAM = 65527;

export interface ManifestFragment {
  type: typeof PacketType.Manifest;
  releaseId: Uint8Array;
  totalLength: number;
  offset: number;
  bytes: Uint8Array;
}

export interface SymbolPacket {
  type: typeof PacketType.Symbol;
  releaseId: Uint8Array;
  segment: number;
  esi: number;
  symbol: Uint8Array;
}

export interface AuthPacket {
  type: typeof PacketType.Auth;
  releaseId: Uint8Array;
  leaf: number;
  path: Uint8Array[];
  /** The chunk body: segment, first ESI, count, digests (see auth.ts). */
  body: Uint8Array;
}

/** A fragment of the root chain; `releaseId` holds the chain's id (its first 8 SHA-256 bytes). */
export interface RootFragment {
  type: typeof PacketType.Root;
  releaseId: Uint8Array;
  totalLength: number;
  offset: number;
  bytes: Uint8Array;
}

/** A signed halt; `releaseId` is the id of the release it names. */
export interface HaltPacket {
  type: typeof PacketType.Halt;
  releaseId: Uint8Array;
  signed: Uint8Array;
}

export type Packet = ManifestFragment | SymbolPacket | AuthPacket | RootFragment | HaltPacket;

function writeHeader(out: Uint8Array, type: number, releaseId: Uint8Array): void {
  if (releaseId.length !== RELEASE_ID_SIZE) throw new RangeError(`release id must be ${RELEASE_ID_SIZE} bytes`);
  out[0] = MAGIC_0;
  out[1] = MAGIC_1;
  out[2] = WIRE_VERSION;
  out[3] = type;
  out.set(releaseId, 4);
}

/** A ROOT datagram: a fragment of the root chain, cut as manifests are. */
export function encodeRootFragment(f: Omit<RootFragment, 'type'>): Uint8Array {
  return encodeManifestFragment(f, PacketType.Root);
}

export function encodeManifestFragment(f: Omit<ManifestFragment, 'type'>, type: number = PacketType.Manifest): Uint8Array {
  const out = new Uint8Array(MANIFEST_OVERHEAD + f.bytes.length);
  writeHeader(out, type, f.releaseId);
  const view = new DataView(out.buffer);
  view.setUint32(HEADER_SIZE, f.totalLength);
  view.setUint32(HEADER_SIZE + 4, f.offset);
  out.set(f.bytes, MANIFEST_OVERHEAD);
  return out;
}

/** Writes a symbol packet into `out` (reused by the carousel) and returns its length. */
export function writeSymbolPacket(out: Uint8Array, p: Omit<SymbolPacket, 'type'>): number {
  const length = SYMBOL_OVERHEAD + p.symbol.length;
  if (out.length < length) throw new RangeError('buffer too small for symbol packet');
  writeHeader(out, PacketType.Symbol, p.releaseId);
  new DataView(out.buffer, out.byteOffset).setUint32(HEADER_SIZE, p.segment);
  writePayloadId(out, HEADER_SIZE + 4, { sbn: 0, esi: p.esi });
  out.set(p.symbol, SYMBOL_OVERHEAD);
  return length;
}

export function encodeSymbolPacket(p: Omit<SymbolPacket, 'type'>): Uint8Array {
  const out = new Uint8Array(SYMBOL_OVERHEAD + p.symbol.length);
  writeSymbolPacket(out, p);
  return out;
}

export function encodeAuthPacket(p: Omit<AuthPacket, 'type'>): Uint8Array {
  const out = new Uint8Array(AUTH_OVERHEAD + p.path.length * NODE_SIZE + p.body.length);
  writeHeader(out, PacketType.Auth, p.releaseId);
  new DataView(out.buffer).setUint32(HEADER_SIZE, p.leaf);
  out[HEADER_SIZE + 4] = p.path.length;
  p.path.forEach((node, i) => out.set(node, AUTH_OVERHEAD + i * NODE_SIZE));
  out.set(p.body, AUTH_OVERHEAD + p.path.length * NODE_SIZE);
  return out;
}

export function encodeHaltPacket(p: Omit<HaltPacket, 'type'>): Uint8Array {
  if (p.signed.length === 0 || p.signed.length > MAX_HALT_BYTES) throw new RangeError(`a signed halt is 1..${MAX_HALT_BYTES} bytes, got ${p.signed.length}`);
  const out = new Uint8Array(HEADER_SIZE + p.signed.length);
  writeHeader(out, PacketType.Halt, p.releaseId);
  out.set(p.signed, HEADER_SIZE);
  return out;
}

/**
 * Parses one datagram. Checks structure only; whether the release, segment and
 * ESI make sense is decided against the verified manifest. The returned byte
 * fields are views into `datagram`.
 */
export function decodePacket(datagram: Uint8Array): Packet {
  if (datagram.length < HEADER_SIZE) throw new MalformedPacketError(`datagram of ${datagram.length} bytes is shorter than the ${HEADER_SIZE}-byte header`);
  if (datagram.length > MAX_DATAGRAM) throw new MalformedPacketError(`datagram of ${datagram.length} bytes is too large`);
  if (datagram[0] !== MAGIC_0 || datagram[1] !== MAGIC_1) throw new MalformedPacketError('not an fwcast datagram (bad magic)');
  if (datagram[2] !== WIRE_VERSION) throw new UnsupportedVersionError(`wire version ${datagram[2]} is not supported (this receiver speaks ${WIRE_VERSION})`);
  const releaseId = datagram.subarray(4, HEADER_SIZE);
  const view = new DataView(datagram.buffer, datagram.byteOffset, datagram.byteLength);
  switch (datagram[3]) {
    case PacketType.Manifest:
    case PacketType.Root: {
      const type = datagram[3] as typeof PacketType.Manifest | typeof PacketType.Root;
      const what = type === PacketType.Root ? 'root' : 'manifest';
      if (datagram.length <= MANIFEST_OVERHEAD) throw new MalformedPacketError(`${what} fragment is empty or truncated`);
      const totalLength = view.getUint32(HEADER_SIZE);
      const offset = view.getUint32(HEADER_SIZE + 4);
      const bytes = datagram.subarray(MANIFEST_OVERHEAD);
      if (offset + bytes.length > totalLength) throw new MalformedPacketError(`${what} fragment [${offset}, ${offset + bytes.length}) lies beyond its total length ${totalLength}`);
      return type === PacketType.Root
        ? { type: PacketType.Root, releaseId, totalLength, offset, bytes }
        : { type: PacketType.Manifest, releaseId, totalLength, offset, bytes };
    }
    case PacketType.Symbol: {
      if (datagram.length <= SYMBOL_OVERHEAD) throw new MalformedPacketError('symbol packet is empty or truncated');
      const { sbn, esi } = readPayloadId(datagram, HEADER_SIZE + 4);
      if (sbn !== 0) throw new MalformedPacketError(`source block number ${sbn} is not 0 (each segment is one source block)`);
      return { type: PacketType.Symbol, releaseId, segment: view.getUint32(HEADER_SIZE), esi, symbol: datagram.subarray(SYMBOL_OVERHEAD) };
    }
    case PacketType.Auth: {
      if (datagram.length < AUTH_OVERHEAD) throw new MalformedPacketError('auth packet truncated');
      const depth = datagram[HEADER_SIZE + 4]!;
      if (depth > MAX_AUTH_DEPTH) throw new MalformedPacketError(`auth path of depth ${depth} exceeds ${MAX_AUTH_DEPTH}`);
      const bodyStart = AUTH_OVERHEAD + depth * NODE_SIZE;
      if (datagram.length <= bodyStart) throw new MalformedPacketError('auth packet truncated in its path');
      const path: Uint8Array[] = [];
      for (let i = 0; i < depth; i++) path.push(datagram.subarray(AUTH_OVERHEAD + i * NODE_SIZE, AUTH_OVERHEAD + (i + 1) * NODE_SIZE));
      return { type: PacketType.Auth, releaseId, leaf: view.getUint32(HEADER_SIZE), path, body: datagram.subarray(bodyStart) };
    }
    case PacketType.Halt: {
      const signed = datagram.subarray(HEADER_SIZE);
      if (signed.length === 0) throw new MalformedPacketError('halt datagram is empty');
      if (signed.length > MAX_HALT_BYTES) throw new MalformedPacketError(`halt of ${signed.length} bytes exceeds ${MAX_HALT_BYTES}`);
      return { type: PacketType.Halt, releaseId, signed };
    }
    default:
      throw new MalformedPacketError(`unknown packet type ${datagram[3]}`);
  }
}
