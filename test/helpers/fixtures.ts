/** Shared test fixtures: deterministic images and throwaway keys. */
import { createHash, randomBytes } from 'node:crypto';
import * as ed25519 from '../../protocol/ed25519.js';
import { keyId, type PublicKey } from '../../protocol/keys.js';

/** xorshift32: deterministic unsigned 32-bit values, so failures reproduce. */
export function xorshift32(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

/** Deterministic numbers in [0, 1). */
export function prng(seed: number): () => number {
  const next = xorshift32(seed);
  return () => next() / 2 ** 32;
}

/** Deterministic Fisher–Yates shuffle. */
export function shuffle<T>(items: readonly T[], seed: number): T[] {
  const next = xorshift32(seed);
  const out = items.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = next() % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

export function makeImage(size: number, seed = 1): Uint8Array {
  const next = prng(seed);
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i += 4) {
    const v = (next() * 2 ** 32) >>> 0;
    out[i] = v & 0xff;
    if (i + 1 < size) out[i + 1] = (v >>> 8) & 0xff;
    if (i + 2 < size) out[i + 2] = (v >>> 16) & 0xff;
    if (i + 3 < size) out[i + 3] = v >>> 24;
  }
  return out;
}

export interface TestKey extends PublicKey {
  seed: Uint8Array;
}

export async function makeKey(): Promise<TestKey> {
  await ed25519.ready();
  const seed = new Uint8Array(randomBytes(32));
  const publicKey = ed25519.publicKeyFromSeed(seed);
  return { seed, publicKey, kid: keyId(publicKey) };
}

export const sha256hex = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');
