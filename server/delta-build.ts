/**
 * Making deltas (protocol/delta.ts) for `fwcast sign --delta-from`: the new
 * image as copies from the base and literal runs, found with a rolling hash
 * over the new image against a table of the base's fixed blocks (as rsync
 * does), each match grown forwards and backwards byte by byte; where a match
 * ends, the next bytes are tried at the same displacement first, so a
 * changed byte costs one literal byte rather than a block. The op stream is
 * compressed with Brotli (Node's zlib) with a 4 MiB window, which bounds the
 * agent's memory when it applies the delta. Why this scheme rather than
 * zstd --patch-from or bsdiff: bench/results/README.md ("Deltas").
 */
import { createHash } from 'node:crypto';
import { brotliCompressSync, constants as zlib } from 'node:zlib';
import { Carousel, type CarouselInit } from '../carousel/carousel.js';
import type { PublisherEntry } from '../carousel/publisher.js';
import { channelGroup } from '../protocol/channel.js';
import { deltaChannelName, deltaView, DELTA_HEADER_SIZE, encodeDeltaHeader, encodeVarint, OP_COPY, OP_END, OP_LITERAL } from '../protocol/delta.js';
import { ConfigError, InvalidManifestError } from '../protocol/errors.js';
import type { DeltaEntry, Manifest } from '../protocol/manifest.js';
import { hex } from '../protocol/hex.js';
import { codeObject, planRelease, type Release, type ReleaseContent } from '../protocol/release.js';
import type { SymbolSet } from '../protocol/symbol-set.js';
import type { CodecPool } from './codec-pool.js';
import { encodeOnPool, readReleaseFile } from './release.js';

/** Bytes per indexed base block: the shortest match found anywhere in the base. */
export const DELTA_BLOCK = 32;
/** Shortest match at the displacement of the previous copy. */
const SAME_SHIFT_MIN = 8;
/** Candidates of one hash bucket compared at most. */
const MAX_CANDIDATES = 16;
/** Brotli window: 2^22 = 4 MiB, what the agent holds while it applies the delta. */
export const DELTA_WINDOW_BITS = 22;
const MULTIPLIER = 0x01000193;

export interface DiffStats {
  copies: number;
  copiedBytes: number;
  literalBytes: number;
}

/** The delta object that rebuilds `next` from `base`. */
export function diffImages(base: Uint8Array, next: Uint8Array, stats?: DiffStats): Uint8Array {
  if (next.length === 0) throw new InvalidManifestError('the new image is empty');
  const B = DELTA_BLOCK;
  const blocks = Math.floor(base.length / B);
  let bits = 10;
  while ((1 << bits) < blocks * 2 && bits < 26) bits++;
  const mask = (1 << bits) - 1;
  const head = new Int32Array(1 << bits).fill(-1);
  const chain = new Int32Array(Math.max(blocks, 1));
  // Inserted last to first: a bucket lists the base's earliest block first.
  for (let b = blocks - 1; b >= 0; b--) {
    const h = hashAt(base, b * B, B) & mask;
    chain[b] = head[h]!;
    head[h] = b;
  }
  let top = 1;
  for (let i = 1; i < B; i++) top = Math.imul(top, MULTIPLIER);

  const ops: number[] = [];
  const chunks: Uint8Array[] = [];
  const flushOps = (): void => {
    if (ops.length > 0) chunks.push(Uint8Array.from(ops));
    ops.length = 0;
  };
  const literal = (from: number, to: number): void => {
    if (to <= from) return;
    ops.push(OP_LITERAL);
    encodeVarint(to - from, ops);
    flushOps();
    chunks.push(next.subarray(from, to));
    if (stats) stats.literalBytes += to - from;
  };
  const copy = (offset: number, length: number): void => {
    ops.push(OP_COPY);
    encodeVarint(offset, ops);
    encodeVarint(length, ops);
    if (ops.length > 4096) flushOps();
    if (stats) {
      stats.copies++;
      stats.copiedBytes += length;
    }
  };
  const forward = (c: number, p: number): number => {
    let n = 0;
    while (p + n < next.length && c + n < base.length && base[c + n] === next[p + n]) n++;
    return n;
  };

  let pos = 0;
  let litStart = 0;
  let shift = 0;
  let h = next.length >= B ? hashAt(next, 0, B) : 0;
  while (pos + B <= next.length) {
    let bestAt = -1;
    let bestLen = 0;
    const same = pos + shift;
    if (same >= 0 && same < base.length) {
      const n = forward(same, pos);
      if (n >= SAME_SHIFT_MIN) {
        bestAt = same;
        bestLen = n;
      }
    }
    if (bestLen < B) {
      let tries = 0;
      for (let b = head[h & mask]!; b >= 0 && tries < MAX_CANDIDATES; b = chain[b]!, tries++) {
        const n = forward(b * B, pos);
        if (n >= B && n > bestLen) {
          bestAt = b * B;
          bestLen = n;
        }
      }
    }
    if (bestAt < 0) {
      if (pos + B < next.length) h = (Math.imul(h - Math.imul(next[pos]!, top), MULTIPLIER) + next[pos + B]!) | 0;
      pos++;
      continue;
    }
    let back = 0;
    while (back < pos - litStart && back < bestAt && base[bestAt - back - 1] === next[pos - back - 1]) back++;
    literal(litStart, pos - back);
    copy(bestAt - back, bestLen + back);
    shift = bestAt - pos;
    pos += bestLen;
    litStart = pos;
    if (pos + B <= next.length) h = hashAt(next, pos, B);
  }
  // The tail shorter than a block: at the last displacement, or literal.
  if (litStart < next.length) {
    const same = litStart + shift;
    const n = same >= 0 && same < base.length ? forward(same, litStart) : 0;
    if (n >= SAME_SHIFT_MIN) {
      copy(same, n);
      litStart += n;
    }
    literal(litStart, next.length);
  }
  ops.push(OP_END);
  flushOps();
  const stream = Buffer.concat(chunks);
  const compressed = brotliCompressSync(stream, {
    params: {
      [zlib.BROTLI_PARAM_QUALITY]: 9,
      [zlib.BROTLI_PARAM_LGWIN]: DELTA_WINDOW_BITS,
      [zlib.BROTLI_PARAM_SIZE_HINT]: stream.length,
    },
  });
  const out = new Uint8Array(DELTA_HEADER_SIZE + compressed.length);
  out.set(encodeDeltaHeader({ baseSize: base.length, newSize: next.length }));
  out.set(compressed, DELTA_HEADER_SIZE);
  return out;
}

function hashAt(bytes: Uint8Array, at: number, length: number): number {
  let h = 0;
  for (let i = 0; i < length; i++) h = (Math.imul(h, MULTIPLIER) + bytes[at + i]!) | 0;
  return h;
}

export interface BaseRelease {
  releaseId: Uint8Array;
  image: Uint8Array;
  model: string;
}

export interface BuiltDelta {
  entry: DeltaEntry;
  object: Uint8Array;
  symbolSet: SymbolSet;
}

/**
 * The delta from `base` to the image of `init`, cut and coded as the release
 * will be (same datagram size, segment size, repair and AUTH coding), ready to
 * be listed in its manifest.
 */
export async function buildDelta(init: ReleaseContent, base: BaseRelease, pool: CodecPool): Promise<BuiltDelta> {
  if (base.model !== init.model) throw new InvalidManifestError(`a delta needs a base of the same model: the base is for "${base.model}", the release for "${init.model}"`);
  const object = diffImages(base.image, init.image);
  const { deltas: _, ...content } = init;
  const plan = planRelease({ ...content, image: object });
  const symbols = await encodeOnPool(pool, object, plan.symbolSize, plan.encoding);
  const { fec, symbolSet } = codeObject(init, plan, symbols);
  const sha256 = (b: Uint8Array): Uint8Array => new Uint8Array(createHash('sha256').update(b).digest());
  return {
    entry: { baseReleaseId: base.releaseId, baseSha256: sha256(base.image), size: object.length, sha256: sha256(object), ...fec },
    object,
    symbolSet,
  };
}

/** The deltas `fwcast sign --delta-from` lists: one per base release file, in the order given. */
export async function deltasFromFiles(files: readonly string[], init: ReleaseContent, pool: CodecPool): Promise<BuiltDelta[]> {
  const built: BuiltDelta[] = [];
  for (const file of files) {
    const base = readReleaseFile(file);
    if (base.manifest.seq >= init.seq) throw new ConfigError(`--delta-from ${file}: its seq ${base.manifest.seq} is not below the release's ${init.seq}`);
    if (built.some((d) => Buffer.compare(d.entry.baseReleaseId, base.releaseId) === 0)) throw new ConfigError(`--delta-from ${file}: that base is given twice`);
    built.push(await buildDelta(init, { releaseId: base.releaseId, image: base.image, model: base.manifest.model }, pool));
  }
  return built;
}

/**
 * The carousels of a release's deltas, each on its base's sub-channel
 * (protocol/delta.ts): the release's own signed manifest, the delta's symbols.
 */
export function deltaCarousels(release: Release, port: number, extra: Omit<CarouselInit, 'manifest' | 'signed' | 'releaseId' | 'image' | 'symbolSet'> = {}): PublisherEntry[] {
  const deltas = release.manifest.deltas ?? [];
  return deltas.map((d, i) => {
    const name = deltaChannelName(release.manifest.model, d.baseReleaseId);
    const view = deltaView({ manifest: release.manifest, signed: release.signed, releaseId: release.releaseId, kid: new Uint8Array(), cosigners: [] }, d);
    return {
      channel: { name, group: channelGroup(name), port },
      carousel: new Carousel({ ...extra, manifest: view.manifest, signed: release.signed, releaseId: release.releaseId, image: release.deltaObjects![i]! }),
    };
  });
}

/** What `fwcast inspect` and `sign --json` say of a release's deltas. */
export function deltaSummary(m: Manifest): Array<Record<string, unknown>> {
  return (m.deltas ?? []).map((d) => {
    const channel = deltaChannelName(m.model, d.baseReleaseId);
    return { baseRelease: hex(d.baseReleaseId), baseSha256: hex(d.baseSha256), size: d.size, sha256: hex(d.sha256), segments: d.segments.length, channel, group: channelGroup(channel) };
  });
}
