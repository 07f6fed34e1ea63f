/** Releases with deltas, and agent stores holding a base, for the delta tests. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { hex } from '../../protocol/hex.js';
import { readReleaseFile } from '../../server/release.js';
import { Store } from '../../device-agent/store.js';
import { makeImage, sha256hex } from './fixtures.js';
import { fwcast } from './processes.js';

/** Two releases a change apart: seq 1, and seq 2 with a delta from seq 1. */
export function twoReleases(changed: number, seed: number): { dir: string; next: Uint8Array; base: string; release: string; pub: string } {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-delta-'));
  fwcast('keygen', '--out', dir);
  const old = makeImage(4 * 1024 * 1024 + 77, seed);
  // A region rewritten, a few bytes inserted: what an upgrade of one package does to an image.
  const next = new Uint8Array(old.length + 5);
  next.set(old.subarray(0, 1_000_000));
  next.set(makeImage(changed, seed + 1), 1_000_000);
  next.set(old.subarray(1_000_000 + changed, 3_000_000), 1_000_000 + changed);
  next.set([1, 2, 3, 4, 5], 3_000_000);
  next.set(old.subarray(3_000_000), 3_000_005);
  writeFileSync(join(dir, 'v1.img'), old);
  writeFileSync(join(dir, 'v2.img'), next);
  const key = join(dir, 'publisher.key');
  fwcast('sign', join(dir, 'v1.img'), '--key', key, '--model', 'rpi4', '--version', '1.0.1', '--seq', '1', '--out', join(dir, 'v1.fwc'));
  fwcast('sign', join(dir, 'v2.img'), '--key', key, '--model', 'rpi4', '--version', '1.0.2', '--seq', '2', '--out', join(dir, 'v2.fwc'), '--delta-from', join(dir, 'v1.fwc'));
  return { dir, next, base: join(dir, 'v1.fwc'), release: join(dir, 'v2.fwc'), pub: join(dir, 'publisher.pub') };
}

/** A store holding release `file` installed, its image kept: as an agent leaves it after installing it. */
export function holding(storeDir: string, file: string): string {
  const r = readReleaseFile(file);
  const store = new Store(storeDir);
  const id = hex(r.releaseId);
  const part = join(storeDir, 'incoming', 'base.img');
  writeFileSync(part, r.image);
  const path = store.keepRelease(r.manifest.model, id, part, r.signed);
  store.recordInstalled({ model: r.manifest.model, seq: r.manifest.seq, version: r.manifest.version, sha256: sha256hex(r.image), releaseId: id, installedAt: new Date().toISOString(), path });
  return id;
}

