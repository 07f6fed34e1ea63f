/**
 * What the property/fuzz suites (test/fuzz-*.test.ts) share: the fixed seed,
 * keys from fixed seeds, the "value or typed FwcastError" contract, and byte
 * mutations. Each suite keeps its own mutation arbitrary (which operations,
 * how often, aimed where): that decides what it generates.
 */
import type fc from 'fast-check';
import * as ed25519 from '../../protocol/ed25519.js';
import { FwcastError } from '../../protocol/errors.js';
import { keyId } from '../../protocol/keys.js';
import type { TestKey } from './fixtures.js';

/** One seed for every suite, so CI is reproducible: a failure prints the shrunk counterexample to replay. */
export const SEED = 20261125;

/** fast-check parameters: the fixed seed, `numRuns` runs, the error in the report. */
export const run = (numRuns: number): fc.Parameters<unknown> => ({ seed: SEED, numRuns, includeErrorInReport: true });

/** Keys from fixed seeds, so release ids, and hence every generated input, are the same on every run. */
export function fixedKey(n: number): TestKey {
  const seed = new Uint8Array(32).fill(n);
  const publicKey = ed25519.publicKeyFromSeed(seed);
  return { seed, publicKey, kid: keyId(publicKey) };
}

/** Runs `f`; a FwcastError (with a reason) becomes a value, any other exception propagates and fails the property. */
export function typed<T>(f: () => T): { ok: true; value: T } | { ok: false; error: FwcastError } {
  try {
    return { ok: true, value: f() };
  } catch (err) {
    if (err instanceof FwcastError) {
      if (typeof err.reason !== 'string' || err.reason.length === 0) throw new Error(`FwcastError without a reason: ${err.message}`);
      return { ok: false, error: err };
    }
    throw err;
  }
}

export const hexOf = (b: Uint8Array): string => Buffer.from(b).toString('hex');
export const eq = (a: Uint8Array, b: Uint8Array): boolean => Buffer.compare(a, b) === 0;

export const cat = (...parts: ArrayLike<number>[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
};

/** One edit of a byte string; positions are taken modulo its length, so any number is valid. */
export type Mutation =
  | { op: 'flip'; at: number; bit: number }
  | { op: 'set'; at: number; value: number }
  | { op: 'u32'; at: number; value: number }
  | { op: 'truncate'; to: number }
  | { op: 'extend'; bytes: Uint8Array }
  | { op: 'delete'; at: number; length: number }
  | { op: 'insert'; at: number; bytes: Uint8Array }
  /** Overwrites bytes at `at` with bytes of the same input from `from`. */
  | { op: 'copy'; from: number; at: number; length: number }
  /** Replaces bytes at `at` with a piece of another input of `corpus`. */
  | { op: 'splice'; at: number; from: number; start: number; length: number };

/** A mutated copy of `d`; `corpus` supplies the other inputs 'splice' takes pieces from. */
export function mutate(d: Uint8Array, m: Mutation, corpus: readonly Uint8Array[] = []): Uint8Array {
  const out = Uint8Array.from(d);
  const n = out.length;
  switch (m.op) {
    case 'flip': if (n) out[m.at % n]! ^= 1 << m.bit; return out;
    case 'set': if (n) out[m.at % n] = m.value; return out;
    case 'u32': if (n >= 4) new DataView(out.buffer).setUint32(m.at % (n - 3), m.value); return out;
    case 'truncate': return out.slice(0, m.to % (n + 1));
    case 'extend': return cat(out, m.bytes);
    case 'delete': { const at = m.at % (n + 1); return cat(out.subarray(0, at), out.subarray(at + m.length)); }
    case 'insert': { const at = m.at % (n + 1); return cat(out.subarray(0, at), m.bytes, out.subarray(at)); }
    case 'copy': {
      if (!n) return out;
      const from = m.from % n;
      out.set(d.subarray(from, from + m.length).subarray(0, Math.max(0, n - (m.at % n))), m.at % n);
      return out;
    }
    case 'splice': {
      if (corpus.length === 0) throw new Error('splice needs a corpus');
      const other = corpus[m.from % corpus.length]!;
      const start = other.length ? m.start % other.length : 0;
      const piece = other.subarray(start, start + m.length);
      const at = m.at % (n + 1);
      return cat(out.subarray(0, at), piece, out.subarray(Math.min(n, at + piece.length)));
    }
  }
}
