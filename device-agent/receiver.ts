/**
 * The agent's receive state machine for one device model: datagrams in,
 * events out. No sockets, no files, no clock: the caller passes `now`.
 *
 * authenticate → decode → verify:
 *  - manifest fragments are reassembled per release id; a complete manifest
 *    must hash to its release id, carry a trusted signature, name this model,
 *    have a sequence above the installed one and not be expired;
 *  - AUTH datagrams are checked against the manifest's Merkle root; symbols
 *    are accepted only for the release being received, after their segment,
 *    ESI and size are checked against that manifest and their digest against
 *    a verified AUTH chunk. A chunk whose own AUTH datagram was lost is
 *    rebuilt from verified pieces of its group (chunks and parity pieces,
 *    protocol/reed-solomon.ts) once there are enough of them. Symbols that
 *    arrive before their chunk is verified wait in a bounded buffer; nothing
 *    unauthenticated reaches the decoder;
 *  - every decoded segment must match its signed SHA-256 before it is handed on.
 *
 * A release refused once is remembered by id (bounded), so repeats of its
 * manifest and its symbols are counted and dropped without further work.
 */
import { createHash } from 'node:crypto';
import { ChunkLayout, codedChunk, decodeChunkBody, decodeParityBody, leafHash, MerkleVerifier, NODE_SIZE, symbolMatches } from '../protocol/auth.js';
import { recoverData } from '../protocol/reed-solomon.js';
import { recycleRaptorq } from '../protocol/fec.js';
import { MemoryAssembler, type SegmentAssembler } from './assembler.js';
import {
  ExpiredManifestError, FwcastError, MalformedPacketError, RollbackError, WrongModelError,
} from '../protocol/errors.js';
import type { PublicKey } from '../protocol/keys.js';
import { DEFAULT_LIMITS, type ReceiverLimits } from '../protocol/limits.js';
import { openSignedManifest, releaseIdOf, type SegmentInfo, type VerifiedManifest } from '../protocol/manifest.js';
import { decodePacket, PacketType, type AuthPacket, type ManifestFragment, type SymbolPacket } from '../protocol/packet.js';
import { hex } from '../protocol/hex.js';

export interface ReceiverInit {
  model: string;
  trusted: readonly PublicKey[];
  /** Sequence number already installed, if any: only higher ones are accepted. */
  installedSeq?: number;
  limits?: ReceiverLimits;
  /** Where symbols of an accepted release go (default: in memory). */
  assemblerFor?: (release: VerifiedManifest) => SegmentAssembler;
}

export type ReceiverEvent =
  | { kind: 'rejected'; releaseId: string; error: FwcastError }
  | { kind: 'accepted'; release: VerifiedManifest }
  /** `bytes` may be reused by the assembler: valid until the next push(). */
  | { kind: 'segment'; release: VerifiedManifest; segment: SegmentInfo; bytes: Uint8Array }
  | { kind: 'complete'; release: VerifiedManifest };

export interface ReceiverStats {
  datagrams: number;
  symbolsAccepted: number;
  duplicates: number;
  segmentsDecoded: number;
  authChunksVerified: number;
  /** WASM decoder traps survived (each recycles the codec instance). */
  decoderTraps: number;
  /** Dropped datagrams by reason (the `reason` of the error class, or a plain name). */
  dropped: Record<string, number>;
}

interface Reassembly {
  sender: string;
  releaseId: Uint8Array;
  bytes: Uint8Array;
  filled: Uint8Array;
  missing: number;
}

interface Transfer {
  release: VerifiedManifest;
  assembler: SegmentAssembler;
  done: Uint8Array;
  remaining: number;
  layout: ChunkLayout;
  merkle: MerkleVerifier;
  /** Verified chunks, by chunk leaf. */
  verified: Uint8Array;
  /** Verified symbol digests by leaf (chunk), until their segment is decoded. */
  digests: Map<number, Uint8Array>;
  /** Pieces of coded groups that still miss a chunk, by the group's first leaf. */
  groups: Map<number, GroupPieces>;
  /** Unchecked parity pieces held, all groups together (at most MAX_UNCHECKED). */
  uncheckedCount: number;
  /** Symbols waiting for their chunk, by leaf; at most MAX_PENDING in all. */
  pending: Map<number, Array<{ segment: number; esi: number; symbol: Uint8Array }>>;
  pendingCount: number;
}

/**
 * The parity pieces held for a coded group, by index j. Its verified chunks
 * are pieces too (their digests are in Transfer.digests). Parity pieces are
 * kept unchecked, and verified against the root only when a rebuild needs
 * them; a group is rebuilt once its pieces add up to its size while symbols
 * of a chunk it misses are waiting. Without loss nothing is ever checked or
 * rebuilt: rebuilding every group as soon as it could be, and checking
 * pieces beyond a budget as they came, cost 19 MiB of peak RSS on a 256 MiB
 * image.
 */
interface GroupPieces {
  verified: Map<number, Uint8Array>;
  /** At most MAX_CANDIDATES per index: a forged copy heard first cannot crowd out the genuine one. */
  unchecked: Map<number, ParityCandidate[]>;
}

/** A parity piece as heard: its body and its Merkle path in one buffer (depth × 16 bytes). */
interface ParityCandidate {
  leaf: number;
  body: Uint8Array;
  path: Uint8Array;
}

/** Manifests being reassembled, in all and per sender: junk from one sender only evicts its own. */
const MAX_REASSEMBLIES = 16;
const MAX_REASSEMBLIES_PER_SENDER = 2;
/** Symbols held back until their AUTH chunk arrives (about 1.2 MB at the default size). */
const MAX_PENDING = 1024;
/**
 * Symbol and AUTH datagrams of a release whose manifest has not arrived yet,
 * kept (about 0.6 MB) and replayed once it is accepted: a receiver that joins
 * between two manifest copies does not throw away what it heard meanwhile.
 */
const MAX_EARLY = 512;
const MAX_REMEMBERED = 256;
/** Unchecked parity pieces kept, all groups together (about 1.3 KB each). */
const MAX_UNCHECKED = 1024;
const MAX_CANDIDATES = 2;
const NONE: ReceiverEvent[] = [];


export class Receiver {
  readonly model: string;
  readonly stats: ReceiverStats = { datagrams: 0, symbolsAccepted: 0, duplicates: 0, segmentsDecoded: 0, authChunksVerified: 0, decoderTraps: 0, dropped: {} };
  #trusted: readonly PublicKey[];
  #limits: ReceiverLimits;
  #installedSeq: number | undefined;
  #reassemblies = new Map<string, Reassembly>();
  #refused = new Map<string, string>();
  #transfer: Transfer | undefined;
  #early: Array<{ id: string; datagram: Uint8Array }> = [];
  #assemblerFor: (release: VerifiedManifest) => SegmentAssembler;

  constructor(init: ReceiverInit) {
    this.#assemblerFor = init.assemblerFor ?? ((release) => new MemoryAssembler(release.manifest.symbolSize));
    this.model = init.model;
    this.#trusted = init.trusted;
    this.#limits = init.limits ?? DEFAULT_LIMITS;
    this.#installedSeq = init.installedSeq;
  }

  get installedSeq(): number | undefined {
    return this.#installedSeq;
  }

  /** The release being received, if any. */
  get current(): VerifiedManifest | undefined {
    return this.#transfer?.release;
  }

  /** Segments decoded and symbols held for the current release. */
  progress(): { segments: number; segmentsDone: number; symbols: number; symbolsNeeded: number } | undefined {
    const t = this.#transfer;
    if (!t) return undefined;
    let symbols = 0;
    let needed = 0;
    for (const seg of t.release.manifest.segments) {
      needed += seg.sourceSymbols;
      symbols += t.done[seg.index] ? seg.sourceSymbols : Math.min(seg.sourceSymbols, t.assembler.received(seg.index));
    }
    return { segments: t.done.length, segmentsDone: t.done.length - t.remaining, symbols, symbolsNeeded: needed };
  }

  /** Called once the release has been installed: its sequence becomes the floor. */
  markInstalled(release: VerifiedManifest): void {
    this.#installedSeq = Math.max(this.#installedSeq ?? -1, release.manifest.seq);
    this.#remember(hex(release.releaseId), 'already-installed');
    // A transfer of this release or an older one is moot now; a newer one goes on.
    if (this.#transfer && this.#transfer.release.manifest.seq <= this.#installedSeq) this.#dropTransfer();
  }

  /** Abandons the current release (e.g. its install failed) and refuses it until restart. */
  abandon(reason: string): void {
    if (!this.#transfer) return;
    this.#remember(hex(this.#transfer.release.releaseId), reason);
    this.#dropTransfer();
  }

  close(): void {
    this.#dropTransfer();
  }

  /** Takes one datagram; `from` identifies its sender for per-sender bounds. Never throws. */
  push(datagram: Uint8Array, now: number, from = ''): ReceiverEvent[] {
    this.stats.datagrams++;
    let packet;
    try {
      packet = decodePacket(datagram);
    } catch (err) {
      return this.#drop(err instanceof FwcastError ? err.reason : 'malformed');
    }
    switch (packet.type) {
      case PacketType.Manifest: return this.#onFragment(packet, now, from);
      case PacketType.Auth: return this.#onAuth(packet, datagram);
      case PacketType.Symbol: return this.#onSymbol(packet, datagram);
    }
  }

  #drop(reason: string): ReceiverEvent[] {
    this.stats.dropped[reason] = (this.stats.dropped[reason] ?? 0) + 1;
    return NONE;
  }

  #remember(id: string, reason: string): void {
    this.#refused.delete(id);
    this.#refused.set(id, reason);
    if (this.#refused.size > MAX_REMEMBERED) this.#refused.delete(this.#refused.keys().next().value!);
  }

  #onFragment(f: ManifestFragment, now: number, from: string): ReceiverEvent[] {
    const id = hex(f.releaseId);
    const refused = this.#refused.get(id);
    if (refused) return this.#drop(refused);
    if (this.#transfer && id === hex(this.#transfer.release.releaseId)) return this.#drop('manifest-repeat');
    if (f.totalLength > this.#limits.maxManifestSize) return this.#drop('limit-exceeded');
    // Keyed by total length too: a spoofed fragment with another length cannot block the genuine one.
    const key = `${from}|${id}|${f.totalLength}`;
    let r = this.#reassemblies.get(key);
    if (!r) {
      const own = [...this.#reassemblies.entries()].filter(([, x]) => x.sender === from);
      if (own.length >= MAX_REASSEMBLIES_PER_SENDER) this.#reassemblies.delete(own[0]![0]);
      else if (this.#reassemblies.size >= MAX_REASSEMBLIES) this.#reassemblies.delete(this.#reassemblies.keys().next().value!);
      r = { sender: from, releaseId: new Uint8Array(f.releaseId), bytes: new Uint8Array(f.totalLength), filled: new Uint8Array(f.totalLength), missing: f.totalLength };
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
    if (r.missing > 0) return NONE;
    this.#reassemblies.delete(key);
    if (hex(releaseIdOf(r.bytes)) !== id) return this.#drop('manifest-mismatch');
    return this.#onManifest(id, r.bytes, now);
  }

  #onManifest(id: string, signed: Uint8Array, now: number): ReceiverEvent[] {
    let release: VerifiedManifest;
    try {
      release = openSignedManifest(signed, this.#trusted, this.#limits);
      const m = release.manifest;
      if (m.model !== this.model) throw new WrongModelError(`release is for model "${m.model}", this agent is "${this.model}"`);
      if (this.#installedSeq !== undefined && m.seq <= this.#installedSeq) {
        throw new RollbackError(`sequence ${m.seq} is not above the installed ${this.#installedSeq} (version ${m.version})`);
      }
      if (m.expires !== undefined && m.expires <= now) {
        throw new ExpiredManifestError(`release ${m.version} (seq ${m.seq}) expired at ${new Date(m.expires * 1000).toISOString()}`);
      }
    } catch (err) {
      const error = err instanceof FwcastError ? err : new MalformedPacketError(String(err));
      this.#remember(id, error.reason);
      this.#drop(error.reason);
      return [{ kind: 'rejected', releaseId: id, error }];
    }
    const current = this.#transfer?.release.manifest.seq;
    if (current !== undefined && release.manifest.seq <= current) {
      this.#remember(id, 'superseded');
      return this.#drop('superseded');
    }
    this.#dropTransfer();
    const m = release.manifest;
    const n = m.segments.length;
    const layout = new ChunkLayout(m.segments, m.auth.chunkSymbols, m.auth.coding);
    const assembler = this.#assemblerFor(release);
    const t: Transfer = {
      release, assembler, done: new Uint8Array(n), remaining: n,
      layout, merkle: new MerkleVerifier(m.auth.root, layout.depth), verified: new Uint8Array(layout.chunkLeaves), digests: new Map(), groups: new Map(), uncheckedCount: 0, pending: new Map(), pendingCount: 0,
    };
    for (const index of assembler.completed) {
      if (index < n && !t.done[index]) {
        t.done[index] = 1;
        t.remaining--;
      }
    }
    this.#transfer = t;
    const events: ReceiverEvent[] = [{ kind: 'accepted', release }];
    if (t.remaining === 0) events.push({ kind: 'complete', release });
    else events.push(...this.#replayEarly(id));
    return events;
  }

  /**
   * The current transfer if `releaseId` is its release; otherwise counts the
   * drop, keeping a copy of datagrams of a release not seen yet (MAX_EARLY).
   */
  #transferFor(releaseId: Uint8Array, datagram: Uint8Array): Transfer | undefined {
    const t = this.#transfer;
    // Byte comparison first: this runs for every datagram.
    if (t && Buffer.compare(releaseId, t.release.releaseId) === 0) return t;
    const id = hex(releaseId);
    const refused = this.#refused.get(id);
    if (!refused) {
      this.#early.push({ id, datagram: datagram.slice() });
      if (this.#early.length > MAX_EARLY) this.#early.shift();
    }
    this.#drop(refused ?? 'unknown-release');
    return undefined;
  }

  /** Runs the kept datagrams of a just-accepted release; they are no longer drops. */
  #replayEarly(id: string): ReceiverEvent[] {
    const mine = this.#early.filter((e) => e.id === id);
    if (mine.length === 0) return NONE;
    this.#early = this.#early.filter((e) => e.id !== id);
    this.stats.dropped['unknown-release']! -= mine.length;
    const events: ReceiverEvent[] = [];
    for (const { datagram } of mine) {
      const p = decodePacket(datagram);
      if (p.type === PacketType.Auth) events.push(...this.#onAuth(p, datagram));
      else if (p.type === PacketType.Symbol) events.push(...this.#onSymbol(p, datagram));
    }
    return events;
  }

  #onAuth(p: AuthPacket, datagram: Uint8Array): ReceiverEvent[] {
    const t = this.#transferFor(p.releaseId, datagram);
    if (!t) return NONE;
    if (p.leaf >= t.layout.leaves || p.path.length !== t.layout.depth) return this.#drop('bad-auth');
    if (p.leaf >= t.layout.chunkLeaves) return this.#onParity(t, p);
    if (t.verified[p.leaf]) return this.#drop('auth-repeat');
    const ref = t.layout.chunk(p.leaf);
    if (t.done[ref.segment]) return this.#drop('segment-complete');
    const auth = t.release.manifest.auth;
    let chunk;
    try {
      chunk = decodeChunkBody(p.body, auth.digestLength);
    } catch {
      return this.#drop('bad-auth');
    }
    if (chunk.segment !== ref.segment || chunk.firstEsi !== ref.firstEsi || chunk.count !== ref.count) return this.#drop('bad-auth');
    if (!t.merkle.verify(leafHash(p.body), p.leaf, p.path)) return this.#drop('bad-auth');
    const digests = chunk.digests.slice();
    const events = this.#chunkVerified(t, p.leaf, digests);
    if (t.layout.parityPerChunk > 0 && this.#transfer === t && !t.done[ref.segment]) {
      // A verified chunk is a piece of its group too: with parity pieces held, it may complete a rebuild.
      const { first } = t.layout.group(p.leaf);
      if (t.groups.has(first)) events.push(...this.#rebuild(t, first));
    }
    return events;
  }

  /** A parity piece of a coded group: kept, and checked against the root once a rebuild needs it. */
  #onParity(t: Transfer, p: AuthPacket): ReceiverEvent[] {
    const ref = t.layout.parity(p.leaf);
    const first = t.layout.chunk(ref.first);
    if (t.done[first.segment]) return this.#drop('segment-complete');
    if (!t.groups.has(ref.first) && this.#groupKnown(t, ref.first, ref.size)) return this.#drop('auth-repeat');
    const auth = t.release.manifest.auth;
    try {
      const piece = decodeParityBody(p.body, auth.chunkSymbols, auth.digestLength);
      if (piece.segment !== first.segment || piece.firstEsi !== first.firstEsi || piece.index !== ref.index) return this.#drop('bad-auth');
    } catch {
      return this.#drop('bad-auth');
    }
    const group = this.#group(t, ref.first);
    const index = ref.index;
    const candidates = group.unchecked.get(index) ?? [];
    if (group.verified.has(index) || candidates.some((c) => Buffer.compare(c.body, p.body) === 0)) return this.#drop('auth-repeat');
    if (candidates.length >= MAX_CANDIDATES || t.uncheckedCount >= MAX_UNCHECKED) return this.#drop('pending-full');
    const path = new Uint8Array(p.path.length * NODE_SIZE);
    p.path.forEach((node, d) => path.set(node, d * NODE_SIZE));
    group.unchecked.set(index, [...candidates, { leaf: p.leaf, body: p.body.slice(), path }]);
    t.uncheckedCount++;
    return this.#rebuild(t, ref.first);
  }

  #group(t: Transfer, first: number): GroupPieces {
    let group = t.groups.get(first);
    if (!group) t.groups.set(first, (group = { verified: new Map(), unchecked: new Map() }));
    return group;
  }

  /** Checks a parity piece against the signed root; a failure is counted as bad-auth. */
  #check(t: Transfer, c: ParityCandidate): boolean {
    const path = Array.from({ length: c.path.length / NODE_SIZE }, (_, d) => c.path.subarray(d * NODE_SIZE, (d + 1) * NODE_SIZE));
    if (t.merkle.verify(leafHash(c.body), c.leaf, path)) return true;
    this.#drop('bad-auth');
    return false;
  }

  #groupKnown(t: Transfer, first: number, size: number): boolean {
    return this.#knownChunks(t, first, size) === size;
  }

  #knownChunks(t: Transfer, first: number, size: number): number {
    let known = 0;
    for (let leaf = first; leaf < first + size; leaf++) known += t.verified[leaf]!;
    return known;
  }

  /** Whether symbols of any chunk of the group wait for it. */
  #waiting(t: Transfer, first: number, size: number): boolean {
    for (let leaf = first; leaf < first + size; leaf++) if (t.pending.has(leaf)) return true;
    return false;
  }

  #forgetGroup(t: Transfer, first: number): void {
    const group = t.groups.get(first);
    if (!group) return;
    for (const list of group.unchecked.values()) t.uncheckedCount -= list.length;
    t.groups.delete(first);
  }

  /**
   * If symbols of a missing chunk of the group wait and there are as many
   * pieces as the group has chunks (counting unchecked ones), checks unchecked
   * parity pieces until enough are verified, then rebuilds the group's missing
   * chunks. Rebuilding only for waiting symbols keeps a receiver that hears
   * every chunk from checking anything, whenever the pieces come.
   */
  #rebuild(t: Transfer, first: number): ReceiverEvent[] {
    const { size } = t.layout.group(first);
    const group = t.groups.get(first)!;
    const known = this.#knownChunks(t, first, size);
    if (known === size) {
      this.#forgetGroup(t, first);
      return NONE;
    }
    if (known + group.verified.size + group.unchecked.size < size) return NONE;
    if (!this.#waiting(t, first, size)) return NONE;
    const auth = t.release.manifest.auth;
    for (const [index, candidates] of group.unchecked) {
      if (known + group.verified.size >= size) break;
      group.unchecked.delete(index);
      t.uncheckedCount -= candidates.length;
      const genuine = candidates.find((c) => this.#check(t, c));
      if (genuine) group.verified.set(index, decodeParityBody(genuine.body, auth.chunkSymbols, auth.digestLength).parity);
    }
    if (known + group.verified.size < size) return NONE;
    const pieces = new Map<number, Uint8Array>();
    for (let i = 0; i < size; i++) if (t.verified[first + i]) pieces.set(i, codedChunk(t.digests.get(first + i)!, auth.chunkSymbols, auth.digestLength));
    for (const [j, parity] of group.verified) pieces.set(size + j, parity);
    const data = recoverData(size, size * t.layout.parityPerChunk, pieces)!;
    this.#forgetGroup(t, first);
    const length = auth.digestLength;
    const events: ReceiverEvent[] = [];
    for (let i = 0; i < size && this.#transfer === t; i++) {
      const leaf = first + i;
      if (!t.verified[leaf]) events.push(...this.#chunkVerified(t, leaf, data[i]!.slice(0, t.layout.chunk(leaf).count * length)));
    }
    return events;
  }

  /** A chunk's digests are known: symbols that waited for them go on to the decoder. */
  #chunkVerified(t: Transfer, leaf: number, digests: Uint8Array): ReceiverEvent[] {
    t.digests.set(leaf, digests);
    t.verified[leaf] = 1;
    this.stats.authChunksVerified++;
    const waiting = t.pending.get(leaf);
    if (!waiting) return [];
    t.pending.delete(leaf);
    t.pendingCount -= waiting.length;
    const events: ReceiverEvent[] = [];
    for (const w of waiting) {
      if (this.#transfer !== t) break;
      events.push(...this.#checkedSymbol(t, w.segment, w.esi, w.symbol));
    }
    return events;
  }

  #onSymbol(p: SymbolPacket, datagram: Uint8Array): ReceiverEvent[] {
    const t = this.#transferFor(p.releaseId, datagram);
    if (!t) return NONE;
    const m = t.release.manifest;
    const seg = m.segments[p.segment];
    if (!seg) return this.#drop('bad-segment');
    if (p.symbol.length !== m.symbolSize) return this.#drop('bad-symbol-size');
    if (p.esi >= seg.published) return this.#drop('bad-esi');
    if (t.done[seg.index]) return this.#drop('segment-complete');
    const leaf = t.layout.leafOf(seg.index, p.esi);
    if (t.verified[leaf]) return this.#checkedSymbol(t, seg.index, p.esi, p.symbol);
    let waiting = t.pending.get(leaf);
    if (!waiting) t.pending.set(leaf, (waiting = []));
    // Several candidates per ESI may wait (a forger cannot crowd out the genuine one),
    // but never more than twice the chunk.
    if (waiting.length >= 2 * m.auth.chunkSymbols) return this.#drop('pending-full');
    if (t.pendingCount >= MAX_PENDING) {
      const [oldest, list] = t.pending.entries().next().value!;
      t.pending.delete(oldest);
      t.pendingCount -= list.length;
      this.stats.dropped['pending-evicted'] = (this.stats.dropped['pending-evicted'] ?? 0) + list.length;
      if (oldest === leaf) t.pending.set(leaf, (waiting = []));
    }
    waiting.push({ segment: seg.index, esi: p.esi, symbol: p.symbol.slice() });
    t.pendingCount++;
    if (t.layout.parityPerChunk === 0) return NONE;
    // A symbol of a chunk whose own AUTH datagram was lost: rebuild the chunk now if its group allows.
    const { first } = t.layout.group(leaf);
    return t.groups.has(first) ? this.#rebuild(t, first) : NONE;
  }

  /** A symbol whose chunk is verified: check its digest, then decode. */
  #checkedSymbol(t: Transfer, segment: number, esi: number, symbol: Uint8Array): ReceiverEvent[] {
    if (t.done[segment]) return this.#drop('segment-complete');
    const m = t.release.manifest;
    const length = m.auth.digestLength;
    const digests = t.digests.get(t.layout.leafOf(segment, esi))!;
    if (!symbolMatches(symbol, digests, (esi % m.auth.chunkSymbols) * length, length)) return this.#drop('bad-symbol-digest');
    const seg = m.segments[segment]!;
    let result;
    try {
      result = t.assembler.add(seg, esi, symbol);
    } catch {
      // A trap inside the WASM codec: start afresh with a new instance. Segments
      // already decoded are kept; what the assembler held in WASM is collected again.
      this.stats.decoderTraps++;
      recycleRaptorq();
      t.assembler.recoverFromTrap();
      return this.#drop('decoder-trap');
    }
    if (result.kind === 'duplicate') {
      this.stats.duplicates++;
      return NONE;
    }
    this.stats.symbolsAccepted++;
    if (result.kind === 'stored') return NONE;
    const bytes = result.bytes;
    if (Buffer.compare(result.sha256 ?? createHash('sha256').update(bytes).digest(), seg.sha256) !== 0) {
      // Cannot happen with authenticated symbols unless the publisher is broken; start the segment over.
      t.assembler.reset(seg);
      return this.#drop('segment-digest-mismatch');
    }
    t.assembler.commit(seg, bytes);
    t.done[segment] = 1;
    t.remaining--;
    for (let leaf = t.layout.leafOf(segment, 0); leaf <= t.layout.leafOf(segment, seg.published - 1); leaf++) {
      t.digests.delete(leaf);
      this.#forgetGroup(t, leaf);
    }
    this.stats.segmentsDecoded++;
    const events: ReceiverEvent[] = [{ kind: 'segment', release: t.release, segment: seg, bytes }];
    if (t.remaining === 0) events.push({ kind: 'complete', release: t.release });
    return events;
  }

  #dropTransfer(): void {
    this.#transfer?.assembler.close();
    this.#transfer = undefined;
  }
}
