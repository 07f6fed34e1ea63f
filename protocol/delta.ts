/**
 * Delta updates (SPEC §19): a delta object rebuilds a release's image from
 * the image of an earlier release (the base) a device holds, as a sequence of
 * copies from the base and literal runs, so a one-package change costs the
 * changed bytes, not the image.
 *
 *   delta object = "FWCDLT" 00 01 | base size (u64 BE) | new size (u64 BE) | Brotli stream of ops
 *   op           = 01 | base offset (varint) | length (varint)      copy from the base
 *                | 02 | length (varint) | length bytes              literal bytes
 *                | 00                                              end (the new image is complete)
 *   varint       = unsigned LEB128, at most 8 bytes (< 2^56)
 *
 * The ops write the new image front to back: it is applied streaming, the
 * base read at the offsets the copies name, in memory bounded by the Brotli
 * window (at most 16 MiB) and a few buffers, whatever the image size. Digests
 * are not in the object: the signed manifest lists the delta (key 12) with the
 * base image's SHA-256 and the delta's own, and the new image's is the
 * manifest's.
 *
 * Each delta goes on a sub-channel of the model's channel named for its base,
 * `fw/<model>/delta/<base release id hex>`: only a device holding that base
 * joins it, and a device holding nothing never hears a delta's bytes.
 *
 * Pure: the parser takes the decompressed op stream in pieces of any size.
 */
import { InvalidDeltaError } from './errors.js';
import { hex } from './hex.js';
import { modelChannelName } from './channel.js';
import type { DeltaEntry, Manifest, VerifiedManifest } from './manifest.js';

export const DELTA_MAGIC = Uint8Array.from([0x46, 0x57, 0x43, 0x44, 0x4c, 0x54, 0x00, 0x01]);
export const DELTA_HEADER_SIZE = DELTA_MAGIC.length + 16;

export const OP_END = 0x00;
export const OP_COPY = 0x01;
export const OP_LITERAL = 0x02;
/** Longest varint: 8 bytes carry 56 bits, beyond any image. */
const MAX_VARINT_BYTES = 8;

/** The sub-channel carrying the deltas of `model`'s releases from base release `baseReleaseId`. */
export function deltaChannelName(model: string, baseReleaseId: Uint8Array): string {
  return `${modelChannelName(model)}/delta/${hex(baseReleaseId)}`;
}

export interface DeltaHeader {
  baseSize: number;
  newSize: number;
}

export function encodeDeltaHeader(h: DeltaHeader): Uint8Array {
  const out = new Uint8Array(DELTA_HEADER_SIZE);
  out.set(DELTA_MAGIC);
  const view = new DataView(out.buffer);
  view.setBigUint64(DELTA_MAGIC.length, BigInt(h.baseSize));
  view.setBigUint64(DELTA_MAGIC.length + 8, BigInt(h.newSize));
  return out;
}

/** Parses the header and checks it against what the manifest says of the base and the new image. */
export function decodeDeltaHeader(bytes: Uint8Array, expect?: DeltaHeader): DeltaHeader {
  if (bytes.length < DELTA_HEADER_SIZE || !DELTA_MAGIC.every((b, i) => bytes[i] === b)) throw new InvalidDeltaError('not an fwcast delta (bad magic)');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const baseSize = view.getBigUint64(DELTA_MAGIC.length);
  const newSize = view.getBigUint64(DELTA_MAGIC.length + 8);
  if (baseSize > BigInt(Number.MAX_SAFE_INTEGER) || newSize > BigInt(Number.MAX_SAFE_INTEGER) || newSize === 0n) throw new InvalidDeltaError(`delta declares sizes ${baseSize} → ${newSize}`);
  const h = { baseSize: Number(baseSize), newSize: Number(newSize) };
  if (expect && (h.baseSize !== expect.baseSize || h.newSize !== expect.newSize)) {
    throw new InvalidDeltaError(`delta is from ${h.baseSize} to ${h.newSize} bytes; the base is ${expect.baseSize} and the new image ${expect.newSize}`);
  }
  return h;
}

export function encodeVarint(value: number, out: number[]): void {
  let v = value;
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
}

export type DeltaOp =
  | { kind: 'copy'; offset: number; length: number }
  /** `bytes` is a view into the piece given to push(): valid until the next push. */
  | { kind: 'literal'; bytes: Uint8Array };

/**
 * Parses the op stream incrementally and checks every op against the sizes:
 * a copy inside the base, no byte written past the new size, nothing after
 * the end op, the end only once the new image is complete. A literal longer
 * than a piece comes out in several literal ops.
 */
export class DeltaOpParser {
  /** Bytes of the new image the ops so far have written. */
  written = 0;
  ended = false;
  #state: 'op' | 'copy-offset' | 'copy-length' | 'literal-length' | 'literal' = 'op';
  #varint = 0;
  #scale = 1;
  #varintBytes = 0;
  #offset = 0;
  #literalLeft = 0;

  constructor(readonly header: DeltaHeader) {}

  /** The ops in `piece`, in order. Throws InvalidDeltaError at the first byte that breaks the format. */
  push(piece: Uint8Array): DeltaOp[] {
    const ops: DeltaOp[] = [];
    let i = 0;
    while (i < piece.length) {
      if (this.ended) throw new InvalidDeltaError('bytes after the end of the delta');
      if (this.#state === 'literal') {
        const n = Math.min(this.#literalLeft, piece.length - i);
        ops.push({ kind: 'literal', bytes: piece.subarray(i, i + n) });
        i += n;
        this.#literalLeft -= n;
        if (this.#literalLeft === 0) this.#state = 'op';
        continue;
      }
      const byte = piece[i++]!;
      if (this.#state === 'op') {
        if (byte === OP_END) {
          if (this.written !== this.header.newSize) throw new InvalidDeltaError(`delta ends after ${this.written} of ${this.header.newSize} bytes`);
          this.ended = true;
        } else if (byte === OP_COPY) this.#startVarint('copy-offset');
        else if (byte === OP_LITERAL) this.#startVarint('literal-length');
        else throw new InvalidDeltaError(`unknown delta op 0x${byte.toString(16).padStart(2, '0')} at output byte ${this.written}`);
        continue;
      }
      if (++this.#varintBytes > MAX_VARINT_BYTES) throw new InvalidDeltaError('delta varint longer than 8 bytes');
      this.#varint += (byte & 0x7f) * this.#scale;
      this.#scale *= 0x80;
      if (byte & 0x80) continue;
      const value = this.#varint;
      switch (this.#state) {
        case 'copy-offset':
          this.#offset = value;
          this.#startVarint('copy-length');
          break;
        case 'copy-length':
          if (value === 0 || this.#offset + value > this.header.baseSize) throw new InvalidDeltaError(`copy of ${value} bytes at base offset ${this.#offset} is outside the ${this.header.baseSize}-byte base`);
          this.#grow(value);
          ops.push({ kind: 'copy', offset: this.#offset, length: value });
          this.#state = 'op';
          break;
        case 'literal-length':
          if (value === 0) throw new InvalidDeltaError('empty literal in delta');
          this.#grow(value);
          this.#literalLeft = value;
          this.#state = 'literal';
          break;
      }
    }
    return ops;
  }

  /** Throws unless the op stream ended exactly (call once it has all been pushed). */
  finish(): void {
    if (!this.ended) throw new InvalidDeltaError(`delta is cut short after ${this.written} of ${this.header.newSize} bytes`);
  }

  #startVarint(state: 'copy-offset' | 'copy-length' | 'literal-length'): void {
    this.#state = state;
    this.#varint = 0;
    this.#scale = 1;
    this.#varintBytes = 0;
  }

  #grow(length: number): void {
    if (this.written + length > this.header.newSize) throw new InvalidDeltaError(`delta writes past the ${this.header.newSize}-byte image`);
    this.written += length;
  }
}

/** The delta of `release` from base release `baseReleaseId`, if it lists one. */
export function deltaFrom(m: Manifest, baseReleaseId: Uint8Array): DeltaEntry | undefined {
  return m.deltas?.find((d) => Buffer.compare(d.baseReleaseId, baseReleaseId) === 0);
}

/**
 * A release as its delta's sub-channel carries it: the same signed manifest,
 * release id and key, with the delta object in place of the image. A receiver
 * on the sub-channel receives, authenticates and decodes this view exactly as
 * it would an image.
 */
export function deltaView(release: VerifiedManifest, delta: DeltaEntry): VerifiedManifest {
  const { deltas: _, ...m } = release.manifest;
  const manifest: Manifest = {
    ...m, imageSize: delta.size, imageSha256: delta.sha256,
    symbolSize: delta.symbolSize, segmentSize: delta.segmentSize, repairPercent: delta.repairPercent, segments: delta.segments, auth: delta.auth,
  };
  return { ...release, manifest };
}
