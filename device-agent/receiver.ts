/**
 * The agent's receive state machine for one device model: datagrams in,
 * events out. No sockets, no files, no clock: the caller passes `now`.
 *
 * authenticate → decode → verify:
 *  - manifest fragments are reassembled per release id; a complete manifest
 *    must hash to its release id, carry a trusted signature, name this model,
 *    have a sequence above the installed one and not be expired;
 *  - symbols are accepted only for the release being received, after their
 *    segment, ESI and size are checked against that manifest;
 *  - every decoded segment must match its signed SHA-256 before it is handed on.
 *
 * A release refused once is remembered by id (bounded), so repeats of its
 * manifest and its symbols are counted and dropped without further work.
 */
import { createHash } from 'node:crypto';
import { SegmentDecoder } from '../protocol/fec.js';
import {
  ExpiredManifestError, FwcastError, MalformedPacketError, RollbackError, WrongModelError,
} from '../protocol/errors.js';
import type { PublicKey } from '../protocol/keys.js';
import { DEFAULT_LIMITS, type ReceiverLimits } from '../protocol/limits.js';
import { openSignedManifest, releaseIdOf, type SegmentInfo, type VerifiedManifest } from '../protocol/manifest.js';
import { decodePacket, PacketType, type ManifestFragment, type SymbolPacket } from '../protocol/packet.js';

export interface ReceiverInit {
  model: string;
  trusted: readonly PublicKey[];
  /** Sequence number already installed, if any: only higher ones are accepted. */
  installedSeq?: number;
  limits?: ReceiverLimits;
}

export type ReceiverEvent =
  | { kind: 'rejected'; releaseId: string; error: FwcastError }
  | { kind: 'accepted'; release: VerifiedManifest }
  | { kind: 'segment'; release: VerifiedManifest; segment: SegmentInfo; bytes: Uint8Array }
  | { kind: 'complete'; release: VerifiedManifest };

export interface ReceiverStats {
  datagrams: number;
  symbolsAccepted: number;
  duplicates: number;
  segmentsDecoded: number;
  /** Dropped datagrams by reason (the `reason` of the error class, or a plain name). */
  dropped: Record<string, number>;
}

interface Reassembly {
  releaseId: Uint8Array;
  bytes: Uint8Array;
  filled: Uint8Array;
  missing: number;
}

interface Transfer {
  release: VerifiedManifest;
  decoders: Map<number, SegmentDecoder>;
  done: Uint8Array;
  remaining: number;
}

const MAX_REASSEMBLIES = 4;
const MAX_REMEMBERED = 256;
const NONE: ReceiverEvent[] = [];

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

export class Receiver {
  readonly model: string;
  readonly stats: ReceiverStats = { datagrams: 0, symbolsAccepted: 0, duplicates: 0, segmentsDecoded: 0, dropped: {} };
  #trusted: readonly PublicKey[];
  #limits: ReceiverLimits;
  #installedSeq: number | undefined;
  #reassemblies = new Map<string, Reassembly>();
  #refused = new Map<string, string>();
  #transfer: Transfer | undefined;

  constructor(init: ReceiverInit) {
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
      symbols += t.done[seg.index] ? seg.sourceSymbols : Math.min(seg.sourceSymbols, t.decoders.get(seg.index)?.received ?? 0);
    }
    return { segments: t.done.length, segmentsDone: t.done.length - t.remaining, symbols, symbolsNeeded: needed };
  }

  /** Called once the release has been installed: its sequence becomes the floor. */
  markInstalled(release: VerifiedManifest): void {
    this.#installedSeq = release.manifest.seq;
    this.#remember(hex(release.releaseId), 'already-installed');
    this.#dropTransfer();
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

  push(datagram: Uint8Array, now: number): ReceiverEvent[] {
    this.stats.datagrams++;
    let packet;
    try {
      packet = decodePacket(datagram);
    } catch (err) {
      return this.#drop(err instanceof FwcastError ? err.reason : 'malformed');
    }
    return packet.type === PacketType.Manifest ? this.#onFragment(packet, now) : this.#onSymbol(packet);
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

  #onFragment(f: ManifestFragment, now: number): ReceiverEvent[] {
    const id = hex(f.releaseId);
    const refused = this.#refused.get(id);
    if (refused) return this.#drop(refused);
    if (this.#transfer && id === hex(this.#transfer.release.releaseId)) return this.#drop('manifest-repeat');
    if (f.totalLength > this.#limits.maxManifestSize) return this.#drop('limit-exceeded');
    let r = this.#reassemblies.get(id);
    if (r && r.bytes.length !== f.totalLength) return this.#drop('malformed');
    if (!r) {
      if (this.#reassemblies.size >= MAX_REASSEMBLIES) this.#reassemblies.delete(this.#reassemblies.keys().next().value!);
      r = { releaseId: new Uint8Array(f.releaseId), bytes: new Uint8Array(f.totalLength), filled: new Uint8Array(f.totalLength), missing: f.totalLength };
      this.#reassemblies.set(id, r);
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
    this.#reassemblies.delete(id);
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
    if (current !== undefined && release.manifest.seq <= current) return this.#drop('superseded');
    this.#dropTransfer();
    const n = release.manifest.segments.length;
    this.#transfer = { release, decoders: new Map(), done: new Uint8Array(n), remaining: n };
    return [{ kind: 'accepted', release }];
  }

  #onSymbol(p: SymbolPacket): ReceiverEvent[] {
    const t = this.#transfer;
    const id = hex(p.releaseId);
    if (!t || id !== hex(t.release.releaseId)) return this.#drop(this.#refused.get(id) ?? 'unknown-release');
    const m = t.release.manifest;
    const seg = m.segments[p.segment];
    if (!seg) return this.#drop('bad-segment');
    if (p.symbol.length !== m.symbolSize) return this.#drop('bad-symbol-size');
    if (p.esi >= seg.published) return this.#drop('bad-esi');
    if (t.done[seg.index]) return this.#drop('segment-complete');
    let decoder = t.decoders.get(seg.index);
    if (!decoder) {
      decoder = new SegmentDecoder(seg.oti.transferLength, m.symbolSize);
      t.decoders.set(seg.index, decoder);
    }
    const before = decoder.received;
    const bytes = decoder.push(p.esi, p.symbol);
    if (decoder.received === before) {
      this.stats.duplicates++;
      return NONE;
    }
    this.stats.symbolsAccepted++;
    if (!bytes) return NONE;
    t.decoders.delete(seg.index);
    if (Buffer.compare(createHash('sha256').update(bytes).digest(), seg.sha256) !== 0) {
      // A forged symbol poisoned the decode: start the segment over.
      return this.#drop('segment-digest-mismatch');
    }
    t.done[seg.index] = 1;
    t.remaining--;
    this.stats.segmentsDecoded++;
    const events: ReceiverEvent[] = [{ kind: 'segment', release: t.release, segment: seg, bytes }];
    if (t.remaining === 0) events.push({ kind: 'complete', release: t.release });
    return events;
  }

  #dropTransfer(): void {
    for (const d of this.#transfer?.decoders.values() ?? []) d.free();
    this.#transfer = undefined;
  }
}
