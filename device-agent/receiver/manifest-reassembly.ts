/**
 * Manifest fragments → signed manifest bytes. No keys, no clock: whether a
 * complete manifest is trusted is the receiver's business; this only puts
 * bytes together and checks they hash to the release id they were sent under.
 *
 * Poisoning: anyone can send fragments under a genuine release id, and the
 * sender cannot be told apart (through MQTT every message comes from the
 * broker; a multicast source address is easy to spoof). So no fragment is
 * trusted over another: each (release id, total length) bucket keeps the
 * distinct fragments heard, up to VERSIONS per offset, and a manifest is the
 * tiling of [0, total) by fragments, end to end, whose SHA-256 matches the
 * release id. A carousel cuts every copy of a manifest at the same offsets, so
 * a genuine copy tiles by itself. When a fragment arrives, tilings that use it
 * are tried, the most recently heard fragment first at each offset: the
 * fragments of the copy just heard are the most recent ones. What a poisoner
 * can still do is crowd a genuine fragment out of its offset (more than
 * VERSIONS - 1 fragments at that very offset after it and before the copy's
 * last fragment) or out of the tries (MAX_ATTEMPTS): the next copy is another
 * chance. Fragments of different cuts (publishers with other datagram sizes)
 * do not mix; each one's own copy completes.
 *
 * Bounded: VERSIONS per offset and BUCKET_SLACK + 2 × total bytes per bucket
 * (each fragment charged FRAGMENT_OVERHEAD besides its bytes), the least
 * recently heard going first; MAX_BUCKETS buckets and MAX_BYTES in all; at
 * most MAX_PER_SENDER buckets opened per sender (on multicast, junk from a
 * sender that does not spoof evicts only its own). A bucket is evicted by
 * fewest fragments heard, then least recently heard: a genuine one gains
 * fragments every carousel round, junk under random ids does not. Work per
 * fragment: at most MAX_STEPS steps of search and MAX_ATTEMPTS hashes of the
 * manifest (fewer for large manifests: HASH_BUDGET bytes).
 */
import { releaseIdOf } from '../../protocol/manifest.js';
import type { ManifestFragment, RootFragment } from '../../protocol/packet.js';
import type { DropReason } from './drop-reasons.js';

export const MAX_BUCKETS = 16;
export const MAX_PER_SENDER = 2;
/** Distinct fragments kept per offset of a bucket. */
export const VERSIONS = 4;
/** What a kept fragment costs besides its bytes. */
export const FRAGMENT_OVERHEAD = 64;
/** A bucket's bytes: 2 × its total length plus this. */
export const BUCKET_SLACK = 64 * FRAGMENT_OVERHEAD;
/** All buckets together. */
export const MAX_BYTES = 4 << 20;
/** Search steps and tilings hashed per fragment heard; hashing at most HASH_BUDGET bytes, at least one tiling. */
export const MAX_STEPS = 256;
export const MAX_ATTEMPTS = 4;
export const HASH_BUDGET = 64 * 1024;
/** Tilings remembered per bucket as tried (so a repeat does not hash them again). */
const MAX_TRIED = 256;

export type ReassemblyStep =
  | { kind: 'incomplete' }
  | { kind: 'complete'; signed: Uint8Array }
  | { kind: 'dropped'; reason: Extract<DropReason, 'limit-exceeded' | 'manifest-mismatch'> };

interface Fragment {
  /** Unique within the reassembly: names the fragment in a tried tiling. */
  serial: number;
  offset: number;
  bytes: Uint8Array;
  /** When last heard (the reassembly's fragment counter). */
  heard: number;
}

interface Bucket {
  key: string;
  owner: string;
  total: number;
  /** Fragments by offset, each list at most VERSIONS long. */
  at: Map<number, Fragment[]>;
  bytes: number;
  /** Fragments heard, repeats included. */
  hits: number;
  heard: number;
  tried: Set<string>;
}

const INCOMPLETE: ReassemblyStep = { kind: 'incomplete' };
const cost = (f: Fragment): number => f.bytes.length + FRAGMENT_OVERHEAD;

export class ManifestReassembly {
  #buckets = new Map<string, Bucket>();
  #bytes = 0;
  #clock = 0;
  #serial = 0;

  constructor(readonly maxManifestSize: number) {}

  /** Bytes held, all buckets together (as charged). */
  get bytes(): number {
    return this.#bytes;
  }

  get buckets(): number {
    return this.#buckets.size;
  }

  /** Adds one fragment; `id` is its release id in hex, `from` its sender. */
  add(f: ManifestFragment | RootFragment, id: string, from: string): ReassemblyStep {
    if (f.totalLength > this.maxManifestSize) return { kind: 'dropped', reason: 'limit-exceeded' };
    const now = ++this.#clock;
    const key = `${id}|${f.totalLength}`;
    let b = this.#buckets.get(key);
    if (!b) {
      this.#makeRoom(from);
      b = { key, owner: from, total: f.totalLength, at: new Map(), bytes: 0, hits: 0, heard: now, tried: new Set() };
      this.#buckets.set(key, b);
    }
    b.hits++;
    b.heard = now;
    const fragment = this.#keep(b, f, now);
    while (this.#bytes > MAX_BYTES && this.#buckets.size > 1) this.#evict(this.#victim(b));
    const step = this.#complete(b, fragment, f.releaseId);
    if (step.kind === 'complete') this.#evict(b);
    return step;
  }

  /** Stores the fragment (or refreshes its copy) and returns it. */
  #keep(b: Bucket, f: ManifestFragment | RootFragment, now: number): Fragment {
    let list = b.at.get(f.offset);
    if (!list) b.at.set(f.offset, (list = []));
    const same = list.find((x) => x.bytes.length === f.bytes.length && Buffer.compare(x.bytes, f.bytes) === 0);
    if (same) {
      same.heard = now;
      return same;
    }
    const fragment: Fragment = { serial: ++this.#serial, offset: f.offset, bytes: f.bytes.slice(), heard: now };
    list.push(fragment);
    this.#charge(b, cost(fragment));
    if (list.length > VERSIONS) this.#drop(b, oldest(list)!);
    const budget = 2 * b.total + BUCKET_SLACK;
    while (b.bytes > budget) {
      let old: Fragment | undefined;
      for (const l of b.at.values()) for (const x of l) if (x !== fragment && (!old || x.heard < old.heard)) old = x;
      if (!old) break;
      this.#drop(b, old);
    }
    return fragment;
  }

  #charge(b: Bucket, n: number): void {
    b.bytes += n;
    this.#bytes += n;
  }

  #drop(b: Bucket, f: Fragment): void {
    const list = b.at.get(f.offset)!;
    list.splice(list.indexOf(f), 1);
    if (list.length === 0) b.at.delete(f.offset);
    this.#charge(b, -cost(f));
  }

  #evict(b: Bucket): void {
    this.#buckets.delete(b.key);
    this.#bytes -= b.bytes;
  }

  /** Fewest fragments heard, then least recently heard; never `keep`. */
  #victim(keep?: Bucket, among?: string): Bucket {
    let v: Bucket | undefined;
    for (const b of this.#buckets.values()) {
      if (b === keep || (among !== undefined && b.owner !== among)) continue;
      if (!v || b.hits < v.hits || (b.hits === v.hits && b.heard < v.heard)) v = b;
    }
    return v!;
  }

  /** Before `from` opens a bucket: its own oldest goes if it has its share, else the weakest if all are taken. */
  #makeRoom(from: string): void {
    let own = 0;
    for (const b of this.#buckets.values()) if (b.owner === from) own++;
    if (own >= MAX_PER_SENDER) this.#evict(this.#victim(undefined, from));
    else if (this.#buckets.size >= MAX_BUCKETS) this.#evict(this.#victim());
  }

  /**
   * Tries tilings of [0, total) that use `f`, the most recently heard fragment
   * first at each offset, within the step and hash bounds.
   */
  #complete(b: Bucket, f: Fragment, releaseId: Uint8Array): ReassemblyStep {
    const total = b.total;
    // Cheap test first: something must start at 0 and (unless f does) something end at total.
    if (!b.at.has(0)) return INCOMPLETE;
    const attempts = Math.max(1, Math.min(MAX_ATTEMPTS, Math.floor(HASH_BUDGET / total)));
    let steps = 0;
    let tries = 0;
    const path: Fragment[] = [];
    let found: Uint8Array | undefined;
    const search = (pos: number): void => {
      if (found || tries >= attempts || steps >= MAX_STEPS) return;
      steps++;
      if (pos === total) {
        const name = path.map((x) => x.serial).join(',');
        if (b.tried.has(name)) return;
        if (b.tried.size >= MAX_TRIED) b.tried.clear();
        b.tried.add(name);
        tries++;
        const signed = new Uint8Array(total);
        for (const x of path) signed.set(x.bytes, x.offset);
        if (Buffer.compare(releaseIdOf(signed), releaseId) === 0) found = signed;
        return;
      }
      let candidates: Fragment[];
      if (pos === f.offset) candidates = [f];
      else {
        const list = b.at.get(pos);
        if (!list) return;
        // Before f's offset, a tiling must land on it exactly.
        candidates = list.filter((x) => pos > f.offset || x.offset + x.bytes.length <= f.offset).sort((x, y) => y.heard - x.heard);
      }
      for (const c of candidates) {
        path.push(c);
        search(pos + c.bytes.length);
        path.pop();
        if (found) return;
      }
    };
    search(0);
    if (found) return { kind: 'complete', signed: found };
    return tries > 0 ? { kind: 'dropped', reason: 'manifest-mismatch' } : INCOMPLETE;
  }
}

function oldest(list: Fragment[]): Fragment | undefined {
  let o: Fragment | undefined;
  for (const x of list) if (!o || x.heard < o.heard) o = x;
  return o;
}
