/**
 * Deltas (protocol/delta.ts): bytes on the wire for a release taken as its
 * delta against the full image, for realistic consecutive images
 * (delta-images.ts), with the time to apply the delta and the applying
 * process's peak RSS (bench/delta-apply-child.mjs, the compiled agent code).
 * Wire bytes are one carousel round of each (manifest, AUTH and source
 * symbols, with IPv6 and UDP headers): what a receiver without loss takes;
 * loss scales both alike. The full run adds a 256 MiB image, for the memory
 * bound a Raspberry Pi must keep (≤ 96 MiB), measured by the apply alone.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Carousel } from '../carousel/carousel.js';
import * as ed25519 from '../protocol/ed25519.js';
import { IPV6_UDP_HEADERS, type DatagramSource } from '../carousel/pacer.js';
import { CodecPool } from '../server/codec-pool.js';
import { buildDelta, deltaCarousels, diffImages, type DiffStats } from '../server/delta-build.js';
import { buildReleaseParallel, type Release } from '../server/release.js';
import { firmwarePair, FULL_TREES, rootfsPair, SMOKE_TREES, type ImagePair } from './delta-images.js';

const SEED = new Uint8Array(32).fill(7);

export interface DeltaMeasurement {
  name: string;
  what: string;
  imageBytes: number;
  deltaBytes: number;
  diffMs: number;
  diff: DiffStats;
  fullWireBytes: number;
  deltaWireBytes: number;
  /** Delta wire bytes over full wire bytes. */
  ratio: number;
  applyMs: number;
  applyPeakRssMiB: number;
  /** A process of the same Node doing nothing: what the apply adds is the difference. */
  idleRssMiB: number;
}

/** Bytes on the wire of one carousel round (round 0: every source symbol once). */
function roundBytes(carousel: DatagramSource): number {
  let bytes = 0;
  while (carousel.round < 1) bytes += carousel.next().length + IPV6_UDP_HEADERS;
  return bytes;
}

function applyInChild(dir: string, pair: ImagePair, delta: Uint8Array): { ms: number; maxRssKiB: number } {
  writeFileSync(join(dir, 'base'), pair.base);
  writeFileSync(join(dir, 'delta'), delta);
  const out = execFileSync(process.execPath, [new URL('./delta-apply-child.mjs', import.meta.url).pathname, join(dir, 'base'), join(dir, 'delta'), join(dir, 'new'), String(pair.base.length), String(pair.next.length)], { encoding: 'utf8' });
  const r = JSON.parse(out) as { sha256: string; ms: number; maxRssKiB: number };
  if (r.sha256 !== createHash('sha256').update(pair.next).digest('hex')) throw new Error(`${pair.name}: the applied delta does not rebuild the new image`);
  return r;
}

function idleRssKiB(): number {
  return Number(execFileSync(process.execPath, ['-e', "process.stdout.write(/VmHWM:\\s+(\\d+)/.exec(require('fs').readFileSync('/proc/self/status', 'utf8'))[1])"], { encoding: 'utf8' }));
}

/**
 * Measures one pair; with `wire`, also the bytes of a carousel round of each
 * (both coded alike, without repair symbols, which round 0 does not send).
 */
async function measurePair(pair: ImagePair, pool: CodecPool, idleMiB: number, wire: boolean): Promise<DeltaMeasurement> {
  const diff: DiffStats = { copies: 0, copiedBytes: 0, literalBytes: 0 };
  const started = performance.now();
  const object = diffImages(pair.base, pair.next, diff);
  const diffMs = performance.now() - started;
  let fullWireBytes = 0;
  let deltaWireBytes = 0;
  if (wire) {
    // Only the base's id matters to the delta: the base release is not coded.
    const baseId = createHash('sha256').update(pair.base).digest().subarray(0, 8);
    const content = { image: pair.next, model: 'bench', version: '2', seq: 2, repairPercent: 0 };
    const built = await buildDelta(content, { releaseId: baseId, image: pair.base, model: 'bench' }, pool);
    const next: Release = { ...(await buildReleaseParallel({ ...content, seed: SEED, deltas: [built.entry] }, pool)), deltaObjects: [built.object] };
    fullWireBytes = roundBytes(new Carousel(next));
    deltaWireBytes = roundBytes(deltaCarousels(next, 4242)[0]!.carousel);
  }
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-bench-delta-'));
  try {
    const applied = applyInChild(dir, pair, object);
    return {
      name: pair.name, what: pair.what, imageBytes: pair.next.length, deltaBytes: object.length, diffMs: Math.round(diffMs), diff,
      fullWireBytes, deltaWireBytes, ratio: wire ? deltaWireBytes / fullWireBytes : Number.NaN,
      applyMs: Math.round(applied.ms), applyPeakRssMiB: +(applied.maxRssKiB / 1024).toFixed(1), idleRssMiB: idleMiB,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A 256 MiB image and its successor with 1% of it rewritten in 64 KiB pieces and a few bytes inserted: the memory bound. */
function largePair(): ImagePair {
  const size = 256 << 20;
  const base = new Uint8Array(size);
  let x = 0x9e3779b9;
  const view = new Uint32Array(base.buffer);
  for (let i = 0; i < view.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    view[i] = x >>> 0;
  }
  const next = new Uint8Array(size + 16);
  next.set(base.subarray(0, size / 2));
  next.set(Uint8Array.from({ length: 16 }, (_, i) => i), size / 2);
  next.set(base.subarray(size / 2), size / 2 + 16);
  for (let at = 1 << 20; at + (64 << 10) < next.length; at += 100 * (64 << 10)) next.fill(at & 0xff, at, at + (64 << 10));
  return { name: 'large', what: '256 MiB image, 1% rewritten in 64 KiB pieces, 16 bytes inserted', base, next };
}

export async function measureDeltas(opts: { smoke: boolean }): Promise<DeltaMeasurement[]> {
  await ed25519.ready();
  const pool = new CodecPool();
  const idleMiB = +(idleRssKiB() / 1024).toFixed(1);
  try {
    const results: DeltaMeasurement[] = [];
    // Made one at a time: each pair is dropped before the next is built.
    results.push(await measurePair(firmwarePair(), pool, idleMiB, true));
    results.push(await measurePair(opts.smoke ? rootfsPair(SMOKE_TREES, 8 << 20) : rootfsPair(FULL_TREES, 24 << 20), pool, idleMiB, true));
    // The large image for the apply's memory only: coding 256 MiB twice would take minutes.
    if (!opts.smoke) results.push(await measurePair(largePair(), pool, idleMiB, false));
    return results;
  } finally {
    await pool.close();
  }
}
