/**
 * Manifest fragments → signed manifest bytes. No keys, no clock: whether a
 * complete manifest is trusted is the receiver's business; this only puts
 * bytes together and checks they hash to the release id they were sent under.
 *
 * Bounded: at most MAX_REASSEMBLIES in all and MAX_PER_SENDER per sender, so
 * junk from one sender only evicts its own reassemblies. A reassembly is keyed
 * by (sender, release id, total length): a spoofed fragment with another
 * length cannot block the genuine one.
 */
import { releaseIdOf } from '../../protocol/manifest.js';
import type { ManifestFragment } from '../../protocol/packet.js';
import type { DropReason } from './drop-reasons.js';

const MAX_REASSEMBLIES = 16;
const MAX_PER_SENDER = 2;

export type ReassemblyStep =
  | { kind: 'incomplete' }
  | { kind: 'complete'; signed: Uint8Array }
  | { kind: 'dropped'; reason: Extract<DropReason, 'limit-exceeded' | 'manifest-mismatch'> };

interface Reassembly {
  sender: string;
  bytes: Uint8Array;
  filled: Uint8Array;
  missing: number;
}

const INCOMPLETE: ReassemblyStep = { kind: 'incomplete' };

export class ManifestReassembly {
  #reassemblies = new Map<string, Reassembly>();

  constructor(readonly maxManifestSize: number) {}

  /** Adds one fragment; `id` is its release id in hex, `from` its sender. */
  add(f: ManifestFragment, id: string, from: string): ReassemblyStep {
    if (f.totalLength > this.maxManifestSize) return { kind: 'dropped', reason: 'limit-exceeded' };
    const key = `${from}|${id}|${f.totalLength}`;
    let r = this.#reassemblies.get(key);
    if (!r) {
      let own = 0;
      let oldestOwn: string | undefined;
      for (const [k, x] of this.#reassemblies) {
        if (x.sender !== from) continue;
        oldestOwn ??= k;
        own++;
      }
      if (own >= MAX_PER_SENDER) this.#reassemblies.delete(oldestOwn!);
      else if (this.#reassemblies.size >= MAX_REASSEMBLIES) this.#reassemblies.delete(this.#reassemblies.keys().next().value!);
      r = { sender: from, bytes: new Uint8Array(f.totalLength), filled: new Uint8Array(f.totalLength), missing: f.totalLength };
      this.#reassemblies.set(key, r);
    }
    for (let i = 0; i < f.bytes.length; i++) {
      const at = f.offset + i;
      if (!r.filled[at]) {
        r.filled[at] = 1;
        r.bytes[at] = f.bytes[i]!;
        r.missing--;
      }
    }
    if (r.missing > 0) return INCOMPLETE;
    this.#reassemblies.delete(key);
    if (Buffer.compare(releaseIdOf(r.bytes), f.releaseId) !== 0) return { kind: 'dropped', reason: 'manifest-mismatch' };
    return { kind: 'complete', signed: r.bytes };
  }
}
