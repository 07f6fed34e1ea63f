/**
 * The agent's receive state machine for one device model: datagrams in,
 * events out. No sockets, no files, no clock: the caller passes `now`.
 *
 * authenticate → decode → verify:
 *  - manifest fragments are reassembled per release id (manifest-reassembly.ts);
 *    a complete manifest must hash to its release id, carry a trusted
 *    signature, name this model, have a sequence above the installed one and
 *    not be expired;
 *  - AUTH datagrams are checked against the manifest's Merkle root; symbols
 *    are accepted only for the release being received, after their segment,
 *    ESI and size are checked against that manifest and their digest against
 *    a verified AUTH chunk. A chunk whose own AUTH datagram was lost is
 *    rebuilt from verified pieces of its group (chunks and parity pieces,
 *    protocol/reed-solomon.ts). Which symbols wait, which chunk to rebuild and
 *    when is the transfer ledger's business (transfer-ledger.ts, no crypto);
 *    this file does the cryptography around it. Nothing unauthenticated
 *    reaches the decoder;
 *  - every decoded segment must match its signed SHA-256 before it is handed on.
 *
 * A release refused once is remembered by id (bounded), so repeats of its
 * manifest and its symbols are counted and dropped without further work.
 *
 * With a root of trust (protocol/root.ts) instead of a fixed key list, a
 * manifest's signer must be delegated by the current root for this model and
 * now; ROOT datagrams carry the root chain, which is walked from the current
 * root (TUF rotation), and a newer root replaces it. A new root clears the
 * remembered refusals a root decides, so a release refused under the old
 * root is judged again under the new one.
 */
import { createHash } from 'node:crypto';
import { ChunkLayout, codedChunk, decodeChunkBody, decodeParityBody, leafHash, MerkleVerifier, NODE_SIZE, symbolMatches, type ChunkGroup } from '../../protocol/auth.js';
import { recoverData } from '../../protocol/reed-solomon.js';
import {
  ExpiredManifestError, FwcastError, InvalidHaltError, MalformedPacketError, NoDecryptionKeyError, RollbackError, StoreError, WrongModelError,
} from '../../protocol/errors.js';
import { hex } from '../../protocol/hex.js';
import type { PublicKey } from '../../protocol/keys.js';
import { DEFAULT_LIMITS, type ReceiverLimits } from '../../protocol/limits.js';
import { openSignedManifest, type SegmentInfo, type VerifiedManifest } from '../../protocol/manifest.js';
import { decodePacket, PacketType, type AuthPacket, type HaltPacket, type ManifestFragment, type RootFragment, type SymbolPacket } from '../../protocol/packet.js';
import { openSignedHalt, type VerifiedHalt } from '../../protocol/halt.js';
import { keyId } from '../../protocol/keys.js';
import {
  authorizeRelease, decodeRootChain, ExpiredRootUpdateError, manifestKeys, MAX_ROOT_CHAIN_SIZE, verifyRootChain, type ChainResult, type TrustedRoot,
} from '../../protocol/root.js';
import { MemoryAssembler, type SegmentAssembler, type Settlement } from '../assembler.js';
import { isDropReason, type AbandonReason, type DropReason, type LedgerDropReason } from './drop-reasons.js';
import { EarlyBacklog } from './early-backlog.js';
import { ManifestReassembly } from './manifest-reassembly.js';
import { SlotPool } from './slot-pool.js';
import { MAX_PENDING, TransferLedger, type LedgerHost } from './transfer-ledger.js';

export interface ReceiverInit {
  model: string;
  /** Keys trusted as they are (`--key`), when there is no root. */
  trusted: readonly PublicKey[];
  /** The root of trust: manifests are authorized by it, ROOT datagrams update it. */
  root?: TrustedRoot;
  /** Sequence number already installed, if any: only higher ones are accepted. */
  installedSeq?: number;
  limits?: ReceiverLimits;
  /** Where symbols of an accepted release go (default: in memory). */
  assemblerFor?: (release: VerifiedManifest) => SegmentAssembler;
  /** Last check of a release before it is accepted; throws the FwcastError that refuses it (the agent's decryption keys). */
  vet?: (release: VerifiedManifest) => void;
  /**
   * Events that happen between push() calls: those of an assembler that
   * decodes in another thread (segments settled, store errors, completion).
   */
  onLateEvent?: (e: ReceiverEvent) => void;
  /**
   * What to receive of an accepted release (deltas, device-agent/delta-lane.ts):
   * the release itself, another view of it (its delta), or a reason to refuse it.
   */
  objectOf?: (release: VerifiedManifest) => VerifiedManifest | DropReason;
}

export type ReceiverEvent =
  | { kind: 'rejected'; releaseId: string; error: FwcastError }
  | { kind: 'accepted'; release: VerifiedManifest }
  /**
   * A segment decoded and matched its signed digest. `bytes` (from an
   * assembler that decodes in this thread) may be reused by the assembler:
   * valid until the next push().
   */
  | { kind: 'segment'; release: VerifiedManifest; segment: SegmentInfo; bytes?: Uint8Array }
  | { kind: 'complete'; release: VerifiedManifest }
  /** The assembler could not write or read its files: what failed is received again once the store works. */
  | { kind: 'store-error'; error: StoreError }
  /** The store works again after a store-error. */
  | { kind: 'store-ok' }
  /** A root chain heard on the channel made a newer root trusted (`result.root`). */
  | { kind: 'root'; result: ChainResult }
  /** A root chain heard on the channel was refused. */
  | { kind: 'root-refused'; chainId: string; error: FwcastError }
  /** A signed halt for this model, authorized as its manifests are: its release is refused from now on (SPEC §17.5). */
  | { kind: 'halt'; halt: VerifiedHalt };

export interface ReceiverStats {
  datagrams: number;
  symbolsAccepted: number;
  duplicates: number;
  segmentsDecoded: number;
  authChunksVerified: number;
  /** WASM decoder traps survived (each recycles the codec instance). */
  decoderTraps: number;
  /** Dropped datagrams by reason (drop-reasons.ts). */
  dropped: Partial<Record<DropReason, number>>;
}

/** A parity piece as heard: its body and its Merkle path in one buffer (depth × 16 bytes). */
interface ParityCandidate {
  leaf: number;
  body: Uint8Array;
  path: Uint8Array;
}

const MAX_REMEMBERED = 256;
/** Refusals a root decides: judged again under a new root. */
const ROOT_DECIDED = new Set<DropReason>(['unknown-key', 'revoked-key', 'key-out-of-scope', 'delegation-expired', 'delegation-not-yet-valid', 'delegation-threshold', 'root-expired']);
const NONE: ReceiverEvent[] = [];

/** The release being received: the ledger's host, with the cryptography and the decoder. */
class Transfer implements LedgerHost<Uint8Array, ParityCandidate, Uint8Array> {
  readonly ledger: TransferLedger<Uint8Array, ParityCandidate, Uint8Array>;
  readonly merkle: MerkleVerifier;
  /** Every chunk's verified digests, at the chunk's place: one allocation for the transfer, not one per chunk (slot-pool.ts says why). */
  readonly digestArena: Uint8Array;
  /** Symbols held back until their chunk is verified. */
  readonly #held: SlotPool;
  readonly id: string;

  constructor(readonly release: VerifiedManifest, readonly assembler: SegmentAssembler, private readonly stats: ReceiverStats, private readonly out: (e: ReceiverEvent) => void, private readonly dropped: (reason: DropReason, count: number) => void, late: (e: ReceiverEvent) => void) {
    const m = release.manifest;
    const layout = new ChunkLayout(m.segments, m.auth.chunkSymbols, m.auth.coding);
    this.ledger = new TransferLedger(layout, m.segments.map((s) => s.published), this, assembler.completed);
    this.merkle = new MerkleVerifier(m.auth.root, layout.depth);
    this.digestArena = new Uint8Array(layout.chunkLeaves * m.auth.chunkSymbols * m.auth.digestLength);
    this.#held = new SlotPool(m.symbolSize, MAX_PENDING);
    this.id = hex(release.releaseId);
    // An assembler that decodes elsewhere settles segments between datagrams: its events go out on their own.
    assembler.onSettled = (s) => this.#settle(s, late);
  }

  #settle(s: Settlement, out: (e: ReceiverEvent) => void): void {
    switch (s.kind) {
      case 'committed':
        if (this.ledger.isDone(s.segment)) return;
        return this.#segmentDone(this.release.manifest.segments[s.segment]!, undefined, out);
      case 'mismatch':
        return this.dropped('segment-digest-mismatch', 1);
      case 'trap':
        this.stats.decoderTraps += s.count;
        return this.dropped('decoder-trap', s.count);
      case 'store-error':
        this.dropped('store-error', s.refused);
        return out({ kind: 'store-error', error: s.error });
      case 'store-ok':
        return out({ kind: 'store-ok' });
    }
  }

  #segmentDone(seg: SegmentInfo, bytes: Uint8Array | undefined, out: (e: ReceiverEvent) => void): void {
    this.ledger.segmentDone(seg.index);
    this.stats.segmentsDecoded++;
    out({ kind: 'segment', release: this.release, segment: seg, ...(bytes ? { bytes } : {}) });
    if (this.ledger.remaining === 0) out({ kind: 'complete', release: this.release });
  }

  deliver(segment: number, esi: number, symbol: Uint8Array, digests: Uint8Array): void {
    const m = this.release.manifest;
    const length = m.auth.digestLength;
    if (!symbolMatches(symbol, digests, (esi % m.auth.chunkSymbols) * length, length)) return this.dropped('bad-symbol-digest', 1);
    const seg = m.segments[segment]!;
    let result;
    try {
      result = this.assembler.add(seg, esi, symbol);
    } catch (err) {
      if (err instanceof StoreError) return this.#storeError(err);
      // A trap inside the WASM codec: the assembler starts afresh with a new instance
      // of its own codec. Segments already decoded are kept; what it held in WASM is
      // collected again. Other models' assemblers have codecs of their own.
      this.stats.decoderTraps++;
      this.assembler.recoverFromTrap();
      return this.dropped('decoder-trap', 1);
    }
    if (result.kind === 'duplicate') {
      this.stats.duplicates++;
      return;
    }
    if (result.kind === 'shed') return this.dropped('storage-behind', 1);
    if (result.kind === 'enough') return this.dropped('segment-decoding', 1);
    this.stats.symbolsAccepted++;
    if (result.kind === 'stored') return;
    const bytes = result.bytes;
    if (Buffer.compare(result.sha256 ?? createHash('sha256').update(bytes).digest(), seg.sha256) !== 0) {
      // Cannot happen with authenticated symbols unless the publisher is broken; start the segment over.
      this.assembler.reset(seg);
      return this.dropped('segment-digest-mismatch', 1);
    }
    try {
      this.assembler.commit(seg, bytes);
    } catch (err) {
      // The segment stays to decode: its symbols are still in the assembler.
      if (err instanceof StoreError) return this.#storeError(err);
      throw err;
    }
    this.#segmentDone(seg, bytes, this.out);
  }

  #storeError(error: StoreError): void {
    this.out({ kind: 'store-error', error });
    this.dropped('store-error', 1);
  }

  chunkVerified(): void {
    this.stats.authChunksVerified++;
  }

  checkPiece(c: ParityCandidate): Uint8Array | undefined {
    const path = Array.from({ length: c.path.length / NODE_SIZE }, (_, d) => c.path.subarray(d * NODE_SIZE, (d + 1) * NODE_SIZE));
    if (!this.merkle.verify(leafHash(c.body), c.leaf, path)) return undefined;
    const auth = this.release.manifest.auth;
    return decodeParityBody(c.body, auth.chunkSymbols, auth.digestLength).parity;
  }

  keep(symbol: Uint8Array): Uint8Array {
    // A held symbol must outlive the datagram's buffer; one decoded at once need not be copied.
    return this.#held.take(symbol) ?? symbol.slice();
  }

  letGo(symbol: Uint8Array): void {
    this.#held.give(symbol);
  }

  samePiece(a: ParityCandidate, b: ParityCandidate): boolean {
    return Buffer.compare(a.body, b.body) === 0;
  }

  recover(group: ChunkGroup, pieces: ReadonlyMap<number, Uint8Array>, missing: readonly number[]): Uint8Array[] {
    const { chunkSymbols, digestLength } = this.release.manifest.auth;
    const coded = new Map<number, Uint8Array>();
    for (const [i, piece] of pieces) coded.set(i, i < group.size ? codedChunk(piece, chunkSymbols, digestLength) : piece);
    const data = recoverData(group.size, group.size * this.ledger.layout.parityPerChunk, coded)!;
    return missing.map((leaf) => data[leaf - group.first]!.slice(0, this.ledger.layout.chunk(leaf).count * digestLength));
  }

  drop(reason: LedgerDropReason, count: number): void {
    this.dropped(reason, count);
  }
}

export class Receiver {
  readonly model: string;
  readonly stats: ReceiverStats = { datagrams: 0, symbolsAccepted: 0, duplicates: 0, segmentsDecoded: 0, authChunksVerified: 0, decoderTraps: 0, dropped: {} };
  #trusted: readonly PublicKey[];
  #root: TrustedRoot | undefined;
  #rootReassembly = new ManifestReassembly(MAX_ROOT_CHAIN_SIZE);
  /** Root chains already judged, by id: repeats are counted, not verified again. */
  #rootsHeard = new Map<string, DropReason>();
  /** Halts already judged, by the SHA-256 of their header's id and signed bytes (not by release id alone: a forged halt must not mask the real one). */
  #haltsHeard = new Map<string, DropReason>();
  #limits: ReceiverLimits;
  #installedSeq: number | undefined;
  #reassembly: ManifestReassembly;
  #refused = new Map<string, DropReason>();
  #transfer: Transfer | undefined;
  #early = new EarlyBacklog<Uint8Array>((datagram) => datagram.byteLength);
  #assemblerFor: (release: VerifiedManifest) => SegmentAssembler;
  #vet: ((release: VerifiedManifest) => void) | undefined;
  /** Events of the push() under way (NONE until there is one: most datagrams have none). */
  #events: ReceiverEvent[] = NONE;
  #emit = (e: ReceiverEvent): void => {
    if (this.#events === NONE) this.#events = [e];
    else this.#events.push(e);
  };
  #count = (reason: DropReason, count: number): void => {
    this.stats.dropped[reason] = (this.stats.dropped[reason] ?? 0) + count;
  };

  #late: (e: ReceiverEvent) => void;
  #objectOf: ((release: VerifiedManifest) => VerifiedManifest | DropReason) | undefined;
  /** Inside push(): events go out with its result, not through onLateEvent. */
  #pushing = false;

  constructor(init: ReceiverInit) {
    this.#late = init.onLateEvent ?? (() => {});
    this.#objectOf = init.objectOf;
    this.#assemblerFor = init.assemblerFor ?? ((release) => new MemoryAssembler(release.manifest.symbolSize));
    this.#vet = init.vet;
    this.model = init.model;
    this.#trusted = init.trusted;
    if (init.root) this.setRoot(init.root, 0);
    this.#limits = init.limits ?? DEFAULT_LIMITS;
    this.#installedSeq = init.installedSeq;
    this.#reassembly = new ManifestReassembly(this.#limits.maxManifestSize);
  }

  get root(): TrustedRoot | undefined {
    return this.#root;
  }

  /**
   * Trusts `root` from now on (a newer root verified here, or by another
   * model's receiver: the agent shares it). Releases refused for reasons a
   * root decides are judged again when next heard.
   */
  setRoot(root: TrustedRoot, now: number): void {
    this.#root = root;
    this.#trusted = manifestKeys(root).map((publicKey) => ({ publicKey, kid: keyId(publicKey) }));
    for (const [id, reason] of this.#refused) if (ROOT_DECIDED.has(reason)) this.#refused.delete(id);
    for (const [id, reason] of this.#haltsHeard) if (ROOT_DECIDED.has(reason)) this.#haltsHeard.delete(id);
    // The release being received was authorized by the old root: the new one may have revoked its key.
    const t = this.#transfer;
    if (!t) return;
    try {
      authorizeRelease(root, t.release.manifest, t.release.kid, now, t.release.cosigners);
    } catch (err) {
      if (!(err instanceof FwcastError)) throw err;
      this.#remember(t.id, isDropReason(err.reason) ? err.reason : 'malformed');
      this.#dropTransfer();
      (this.#pushing ? this.#emit : this.#late)({ kind: 'rejected', releaseId: t.id, error: err });
    }
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
      symbols += t.ledger.isDone(seg.index) ? seg.sourceSymbols : Math.min(seg.sourceSymbols, t.assembler.received(seg.index));
    }
    return { segments: t.ledger.segments, segmentsDone: t.ledger.segments - t.ledger.remaining, symbols, symbolsNeeded: needed };
  }

  /** Called once the release has been installed: its sequence becomes the floor. */
  markInstalled(release: { releaseId: Uint8Array; manifest: { seq: number } }): void {
    this.#installedSeq = Math.max(this.#installedSeq ?? -1, release.manifest.seq);
    this.#remember(hex(release.releaseId), 'already-installed');
    // A transfer of this release or an older one is moot now; a newer one goes on.
    if (this.#transfer && this.#transfer.release.manifest.seq <= this.#installedSeq) this.#dropTransfer();
  }

  /**
   * Refuses release `releaseId` (hex) until restart, e.g. while it installs or
   * after its install failed, and ends its transfer if it is the current one:
   * a newer release being received meanwhile goes on.
   */
  abandon(releaseId: string, reason: AbandonReason): void {
    this.#remember(releaseId, reason);
    if (this.#transfer?.id === releaseId) this.#dropTransfer();
  }

  /** Judges release `releaseId` (hex) afresh when next heard, whatever refused it. */
  forget(releaseId: string): void {
    this.#refused.delete(releaseId);
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
      this.#count(err instanceof FwcastError && isDropReason(err.reason) ? err.reason : 'malformed', 1);
      return NONE;
    }
    this.#events = NONE;
    switch (packet.type) {
      case PacketType.Manifest: this.#onFragment(packet, now, from); break;
      case PacketType.Auth: this.#onAuth(packet, datagram); break;
      case PacketType.Symbol: this.#onSymbol(packet, datagram); break;
      case PacketType.Halt: this.#onHalt(packet, now); break;
      case PacketType.Root:
        this.#pushing = true;
        try {
          this.#onRootFragment(packet, now, from);
        } finally {
          this.#pushing = false;
        }
        break;
    }
    return this.#events;
  }

  #remember(id: string, reason: DropReason): void {
    this.#refused.delete(id);
    this.#refused.set(id, reason);
    if (this.#refused.size > MAX_REMEMBERED) this.#refused.delete(this.#refused.keys().next().value!);
  }

  #onFragment(f: ManifestFragment, now: number, from: string): void {
    const id = hex(f.releaseId);
    const refused = this.#refused.get(id);
    if (refused) return this.#count(refused, 1);
    if (this.#transfer && id === this.#transfer.id) return this.#count('manifest-repeat', 1);
    const step = this.#reassembly.add(f, id, from);
    if (step.kind === 'dropped') return this.#count(step.reason, 1);
    if (step.kind === 'complete') this.#onManifest(id, step.signed, now);
  }

  #onRootFragment(f: RootFragment, now: number, from: string): void {
    if (!this.#root) return this.#count('root-ignored', 1);
    const id = hex(f.releaseId);
    const heard = this.#rootsHeard.get(id);
    if (heard) return this.#count(heard, 1);
    const step = this.#rootReassembly.add(f, id, from);
    if (step.kind === 'dropped') return this.#count(step.reason, 1);
    if (step.kind !== 'complete') return;
    let result: ChainResult;
    let refusal: FwcastError | undefined;
    try {
      result = verifyRootChain(this.#root, decodeRootChain(step.signed), now);
    } catch (err) {
      const error = err instanceof FwcastError ? err : new MalformedPacketError(String(err));
      const reason = isDropReason(error.reason) ? error.reason : 'malformed';
      this.#rootsHeard.set(id, reason);
      this.#count(reason, 1);
      this.#emit({ kind: 'root-refused', chainId: id, error });
      // Validly signed but expired: still the newest root (TUF persists each step), under which nothing installs.
      if (!(err instanceof ExpiredRootUpdateError)) return this.#forgetOldRoots();
      result = err.result;
      refusal = error;
    }
    if (!refusal) this.#rootsHeard.set(id, 'root-repeat');
    this.#forgetOldRoots();
    if (result.applied.length === 0) return;
    this.#emit({ kind: 'root', result });
    this.setRoot(result.root, now);
  }

  #onHalt(p: HaltPacket, now: number): void {
    // The id in the header too: a genuine halt relabelled with another release's id must not mask it.
    const key = createHash('sha256').update(p.releaseId).update(p.signed).digest('hex').slice(0, 16);
    const heard = this.#haltsHeard.get(key);
    if (heard) return this.#count(heard, 1);
    const id = hex(p.releaseId);
    let verified: VerifiedHalt;
    try {
      verified = openSignedHalt(p.signed, this.#trusted);
      const h = verified.halt;
      if (Buffer.compare(h.releaseId, p.releaseId) !== 0) throw new InvalidHaltError(`the halt names release ${hex(h.releaseId)}, its datagram ${id}`);
      if (h.model !== this.model) throw new WrongModelError(`halt is for model "${h.model}", this agent is "${this.model}"`, { releaseModel: h.model });
      if (this.#root) authorizeRelease(this.#root, { model: h.model, seq: 0 }, verified.kid, now);
    } catch (err) {
      const error = err instanceof FwcastError ? err : new MalformedPacketError(String(err));
      const reason = isDropReason(error.reason) ? error.reason : 'malformed';
      // Counted, not logged: anyone on the channel can send these.
      this.#rememberHalt(key, reason);
      return this.#count(reason, 1);
    }
    this.#rememberHalt(key, 'halt-repeat');
    // An installed release stays installed: the halt is for devices that have not installed it.
    if (this.#refused.get(id) !== 'already-installed') this.#remember(id, 'halted');
    if (this.#transfer?.id === id) this.#dropTransfer();
    this.#emit({ kind: 'halt', halt: verified });
  }

  #rememberHalt(key: string, reason: DropReason): void {
    this.#haltsHeard.set(key, reason);
    if (this.#haltsHeard.size > MAX_REMEMBERED) this.#haltsHeard.delete(this.#haltsHeard.keys().next().value!);
  }

  #forgetOldRoots(): void {
    if (this.#rootsHeard.size > MAX_REMEMBERED) this.#rootsHeard.delete(this.#rootsHeard.keys().next().value!);
  }

  #onManifest(id: string, signed: Uint8Array, now: number): void {
    let release: VerifiedManifest;
    try {
      release = openSignedManifest(signed, this.#trusted, this.#limits);
      const m = release.manifest;
      if (m.model !== this.model) throw new WrongModelError(`release is for model "${m.model}", this agent is "${this.model}"`, { releaseModel: m.model });
      if (this.#root) authorizeRelease(this.#root, m, release.kid, now, release.cosigners);
      if (this.#installedSeq !== undefined && m.seq <= this.#installedSeq) {
        throw new RollbackError(`sequence ${m.seq} is not above the installed ${this.#installedSeq} (version ${m.version})`, { seq: m.seq, installedSeq: this.#installedSeq });
      }
      if (m.expires !== undefined && m.expires <= now) {
        throw new ExpiredManifestError(`release ${m.version} (seq ${m.seq}) expired at ${new Date(m.expires * 1000).toISOString()}`, { seq: m.seq, expires: m.expires });
      }
      this.#vet?.(release);
    } catch (err) {
      const error = err instanceof FwcastError ? err : new MalformedPacketError(String(err));
      const reason = isDropReason(error.reason) ? error.reason : 'malformed';
      // Counted once per release: its repeats are another name, so the counter says how many releases left this device out.
      this.#remember(id, error instanceof NoDecryptionKeyError ? 'encrypted-for-others' : reason);
      this.#count(reason, 1);
      return this.#emit({ kind: 'rejected', releaseId: id, error });
    }
    if (this.#objectOf) {
      const object = this.#objectOf(release);
      if (typeof object === 'string') {
        this.#remember(id, object);
        return this.#count(object, 1);
      }
      release = object;
    }
    const current = this.#transfer?.release.manifest.seq;
    if (current !== undefined && release.manifest.seq <= current) {
      this.#remember(id, 'superseded');
      return this.#count('superseded', 1);
    }
    let assembler: SegmentAssembler;
    try {
      assembler = this.#assemblerFor(release);
    } catch (err) {
      // Not the release's fault: it is not remembered, and its next manifest copy tries again.
      if (!(err instanceof StoreError)) throw err;
      this.#count('store-error', 1);
      return this.#emit({ kind: 'store-error', error: err });
    }
    this.#dropTransfer();
    const t = new Transfer(release, assembler, this.stats, this.#emit, this.#count, this.#late);
    this.#transfer = t;
    this.#emit({ kind: 'accepted', release });
    if (t.ledger.remaining === 0) return this.#emit({ kind: 'complete', release });
    this.#replayEarly(id);
  }

  /**
   * The current transfer if `releaseId` is its release; otherwise counts the
   * drop, keeping a copy of datagrams of a release not seen yet (early-backlog.ts).
   */
  #transferFor(releaseId: Uint8Array, datagram: Uint8Array, keep = true): Transfer | undefined {
    const t = this.#transfer;
    // Byte comparison first: this runs for every datagram.
    if (t && Buffer.compare(releaseId, t.release.releaseId) === 0) return t;
    const id = hex(releaseId);
    const refused = this.#refused.get(id);
    if (!refused && keep) this.#early.keep(id, datagram.slice());
    this.#count(refused ?? 'unknown-release', 1);
    return undefined;
  }

  /** Runs the kept datagrams of a just-accepted release; they are no longer drops. */
  #replayEarly(id: string): void {
    const mine = this.#early.take(id);
    if (mine.length === 0) return;
    this.stats.dropped['unknown-release']! -= mine.length;
    for (const datagram of mine) {
      const p = decodePacket(datagram);
      if (p.type === PacketType.Auth) this.#onAuth(p, datagram);
      else if (p.type === PacketType.Symbol) this.#onSymbol(p, datagram);
    }
  }

  #onAuth(p: AuthPacket, datagram: Uint8Array): void {
    const t = this.#transferFor(p.releaseId, datagram);
    if (!t) return;
    const { layout } = t.ledger;
    if (p.leaf >= layout.leaves || p.path.length !== layout.depth) return this.#count('bad-auth', 1);
    if (p.leaf >= layout.chunkLeaves) return this.#onParity(t, p);
    const unwanted = t.ledger.chunkWanted(p.leaf);
    if (unwanted) return this.#count(unwanted, 1);
    const ref = layout.chunk(p.leaf);
    const auth = t.release.manifest.auth;
    let chunk;
    try {
      chunk = decodeChunkBody(p.body, auth.digestLength);
    } catch {
      return this.#count('bad-auth', 1);
    }
    if (chunk.segment !== ref.segment || chunk.firstEsi !== ref.firstEsi || chunk.count !== ref.count) return this.#count('bad-auth', 1);
    if (!t.merkle.verify(leafHash(p.body), p.leaf, p.path)) return this.#count('bad-auth', 1);
    const at = p.leaf * auth.chunkSymbols * auth.digestLength;
    t.digestArena.set(chunk.digests, at);
    t.ledger.chunk(p.leaf, t.digestArena.subarray(at, at + chunk.digests.length));
  }

  /** A parity piece of a coded group: kept, and checked against the root once a rebuild needs it. */
  #onParity(t: Transfer, p: AuthPacket): void {
    const unwanted = t.ledger.parityWanted(p.leaf);
    if (unwanted) return this.#count(unwanted, 1);
    const { layout } = t.ledger;
    const ref = layout.parity(p.leaf);
    const first = layout.chunk(ref.first);
    const auth = t.release.manifest.auth;
    try {
      const piece = decodeParityBody(p.body, auth.chunkSymbols, auth.digestLength);
      if (piece.segment !== first.segment || piece.firstEsi !== first.firstEsi || piece.index !== ref.index) return this.#count('bad-auth', 1);
    } catch {
      return this.#count('bad-auth', 1);
    }
    const path = new Uint8Array(p.path.length * NODE_SIZE);
    p.path.forEach((node, d) => path.set(node, d * NODE_SIZE));
    t.ledger.parity(p.leaf, { leaf: p.leaf, body: p.body.slice(), path });
  }

  #onSymbol(p: SymbolPacket, datagram: Uint8Array): void {
    // A symbol larger than any this receiver accepts can never be used: not worth a copy.
    const t = this.#transferFor(p.releaseId, datagram, p.symbol.length <= this.#limits.maxSymbolSize);
    if (!t) return;
    const m = t.release.manifest;
    const seg = m.segments[p.segment];
    if (!seg) return this.#count('bad-segment', 1);
    if (p.symbol.length !== m.symbolSize) return this.#count('bad-symbol-size', 1);
    if (p.esi >= seg.published) return this.#count('bad-esi', 1);
    t.ledger.symbol(seg.index, p.esi, p.symbol);
  }

  #dropTransfer(): void {
    this.#transfer?.assembler.close();
    this.#transfer = undefined;
  }
}
