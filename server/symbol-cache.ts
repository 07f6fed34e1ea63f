/**
 * Encode once per release: a publisher keeps each release's published symbols
 * in a cache file, so restarts and later rounds never encode again. A cached
 * file is trusted only after its symbols reproduce the signed authentication
 * root; otherwise it is encoded afresh.
 *
 *   CACHE/<release id>.symbols = segment 0's symbols, segment 1's, … (ESI order, T bytes each)
 *
 * A file is touched whenever it is used; files unused for CACHE_DAYS are removed.
 */
import { hex } from '../protocol/hex.js';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readSync, rmSync, statSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { authenticate, encodeSegments, type SymbolSet } from '../protocol/symbol-set.js';
import type { CodecPool } from './codec-pool.js';
import { encodeOnPool, type Release } from './release.js';
import { replaceFile, writeAll } from '../storage/durable-file.js';
import { DigestMismatchError } from '../protocol/errors.js';

export interface SymbolCacheInit {
  /** Where cache files live; without it, nothing is cached. */
  dir?: string;
  /** Encode on these workers (otherwise on this thread). */
  pool?: CodecPool;
}

export type SymbolSource = 'built' | 'cache' | 'encoded';

const CACHE_DAYS = 14;

/** Removes cache files nobody used for CACHE_DAYS (releases no longer published). */
function pruneCache(dir: string, keep: string): void {
  const cutoff = Date.now() - CACHE_DAYS * 86_400_000;
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    // Temp files too: a write cut short by a crash leaves one (replaceFile).
    const cached = name.endsWith('.symbols') || name.includes('.symbols.tmp-');
    if (path !== keep && cached && statSync(path).mtimeMs < cutoff) rmSync(path, { force: true });
  }
}

function readCache(path: string, sizes: number[]): Uint8Array[] | undefined {
  if (!existsSync(path) || statSync(path).size !== sizes.reduce((a, b) => a + b, 0)) return undefined;
  const fd = openSync(path, 'r');
  try {
    let position = 0;
    return sizes.map((size) => {
      const out = new Uint8Array(size);
      for (let done = 0; done < size; ) done += readSync(fd, out, done, size - done, position + done);
      position += size;
      return out;
    });
  } finally {
    closeSync(fd);
  }
}

function writeCache(path: string, segments: Uint8Array[]): void {
  replaceFile(path, (fd) => {
    for (const s of segments) writeAll(fd, s);
  });
}

/** The release's symbol set, from memory, from the cache, or encoded (and then cached). */
export async function symbolSetFor(release: Release, init: SymbolCacheInit = {}): Promise<{ set: SymbolSet; source: SymbolSource }> {
  if (release.symbolSet) return { set: release.symbolSet, source: 'built' };
  const m = release.manifest;
  const sizes = m.segments.map((s) => s.published * m.symbolSize);
  const path = init.dir ? join(init.dir, `${hex(release.releaseId)}.symbols`) : undefined;
  const finish = (segments: Uint8Array[]): SymbolSet | undefined => {
    const auth = authenticate(segments, m.symbolSize, m.segments, m.auth.digestLength, m.auth.chunkSymbols, m.auth.coding);
    return Buffer.compare(auth.tree.root, m.auth.root) === 0 ? { symbolSize: m.symbolSize, segments, ...auth } : undefined;
  };
  if (init.dir && path && existsSync(init.dir)) pruneCache(init.dir, path);
  const cached = path ? readCache(path, sizes) : undefined;
  if (cached) {
    const set = finish(cached);
    if (set) {
      const now = new Date();
      utimesSync(path!, now, now);
      return { set, source: 'cache' };
    }
    rmSync(path!, { force: true });
  }
  const encoding = m.segments.map((s) => ({ offset: s.offset, length: s.oti.transferLength, published: s.published }));
  const segments = init.pool ? await encodeOnPool(init.pool, release.image, m.symbolSize, encoding) : encodeSegments(release.image, m.symbolSize, encoding);
  const set = finish(segments);
  if (!set) throw new DigestMismatchError('the image does not produce the symbols the manifest signs (authentication root differs)');
  if (path) {
    mkdirSync(init.dir!, { recursive: true });
    writeCache(path, segments);
  }
  return { set, source: 'encoded' };
}
