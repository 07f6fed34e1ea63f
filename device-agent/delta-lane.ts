/**
 * A model's delta lane: while a release is installed and its image kept in
 * the store, the agent joins that release's delta sub-channel
 * (protocol/delta.ts) and nothing else of deltas; holding nothing, it joins
 * none. A release listing a delta from the installed release is received
 * there, as its delta (a receiver of its own, the same authentication,
 * spill files and resume as a full transfer, in store/deltas/<model>/), and
 * the model's channel refuses that release's full image meanwhile
 * (`delta-chosen`). Once the delta is complete, the kept base is checked
 * against the signed base digest, the delta applied (delta-apply.ts) and the
 * new image checked against the release's digest; it then goes to install as
 * a full transfer's image would. If any of that fails, the full image is
 * taken from the model's channel instead.
 *
 * A kill during the transfer resumes it from the spill files; a kill during
 * the apply applies again once the complete delta is heard of again.
 */
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { channelGroup } from '../protocol/channel.js';
import { deltaChannelName, deltaFrom, deltaView } from '../protocol/delta.js';
import { DigestMismatchError } from '../protocol/errors.js';
import { RaptorqCodec } from '../protocol/fec.js';
import { hex } from '../protocol/hex.js';
import type { PublicKey } from '../protocol/keys.js';
import type { ReceiverLimits } from '../protocol/limits.js';
import { errorFields, type Logger } from '../protocol/log.js';
import type { DeltaEntry, VerifiedManifest } from '../protocol/manifest.js';
import type { ChainResult, TrustedRoot } from '../protocol/root.js';
import { TransportClosedError, type Channel, type Transport } from '../transport/transport.js';
import { applyDelta } from './delta-apply.js';
import type { DropReason } from './receiver/drop-reasons.js';
import { Receiver, type ReceiverEvent } from './receiver/receiver.js';
import { SpillAssembler } from './spill-assembler.js';
import { modelFileName, sha256File, type InstalledRecord, type Store } from './store.js';

/** A new image rebuilt from a delta, handed to the install path as a transfer's image is. */
export interface AppliedDelta {
  imagePath: string;
  destroy(): void;
  close(): void;
}

export interface ChannelCount {
  model: string;
  channel: string;
  datagrams: number;
  bytes: number;
}

export interface DeltaLaneInit {
  model: string;
  store: Store;
  transport: Transport;
  log: Logger;
  /** The port of the model's channel: sub-channels use the same one. */
  port: number;
  trusted: readonly PublicKey[];
  root: () => TrustedRoot | undefined;
  limits?: ReceiverLimits;
  signal: AbortSignal;
  now: () => number;
  /** A release rebuilt from its delta and verified: install it. */
  onImage: (release: VerifiedManifest, image: AppliedDelta) => void;
  /** The delta of `releaseId` could not be used: take the full image. */
  onFallback: (releaseId: string) => void;
  onRoot: (result: ChainResult) => void;
  /** How long the sub-channel may stay silent about a release whose full image was refused for its delta (default 60 s). */
  waitMs?: number;
}

/** A delta the manifest lists, never heard on its sub-channel: a relay or publisher that sends full images only. */
export class DeltaNotHeardError extends Error {
  override name = 'DeltaNotHeardError';
}

interface Base {
  record: InstalledRecord;
  releaseId: Uint8Array;
  channel: Channel;
  leave: AbortController;
  receiver: Receiver;
  /** The release (as signed, not its delta view) accepted on the sub-channel, by id. */
  originals: Map<string, { release: VerifiedManifest; delta: DeltaEntry }>;
}

export class DeltaLane {
  #base: Base | undefined;
  #codec = new RaptorqCodec();
  #receiving: SpillAssembler | undefined;
  /** Releases whose delta failed: their full image is taken. */
  #failed = new Set<string>();
  #counts = new Map<string, ChannelCount>();
  #flusher: NodeJS.Timeout;
  /** Releases whose full image was refused for their delta, until the sub-channel is heard accepting them. */
  #waiting = new Map<string, NodeJS.Timeout>();

  constructor(private readonly init: DeltaLaneInit) {
    this.#flusher = setInterval(() => this.#flush(), 250);
    this.#flusher.unref();
  }

  /** Bytes and datagrams each delta sub-channel delivered. */
  counts(): ChannelCount[] {
    return [...this.#counts.values()];
  }

  /** For the model's channel's receiver: the full image of a release whose delta this lane takes is refused. */
  choose(release: VerifiedManifest): VerifiedManifest | DropReason {
    const base = this.#base;
    if (!base || !this.#usable(release)) return release;
    const id = hex(release.releaseId);
    if (!this.#waiting.has(id) && !base.originals.has(id)) {
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        if (this.#base !== base || base.originals.has(id)) return;
        const m = release.manifest;
        this.#fail(base, release, new DeltaNotHeardError(`nothing of the delta of ${m.version} was heard on ${base.channel.name} in ${(this.init.waitMs ?? 60_000) / 1000} s`));
      }, this.init.waitMs ?? 60_000);
      timer.unref();
      this.#waiting.set(id, timer);
    }
    return 'delta-chosen';
  }

  #usable(release: VerifiedManifest): DeltaEntry | undefined {
    const base = this.#base;
    if (!base || this.#failed.has(hex(release.releaseId))) return undefined;
    const d = deltaFrom(release.manifest, base.releaseId);
    return d && hex(d.baseSha256) === base.record.sha256 ? d : undefined;
  }

  #dir(): string {
    return join(this.init.store.dir, 'deltas', modelFileName(this.init.model));
  }

  /**
   * Follows what is installed: joins its delta sub-channel (leaving the
   * previous one) if its image is kept. Resolves quietly if the agent stops
   * meanwhile.
   */
  async follow(installed: InstalledRecord | undefined): Promise<void> {
    if (this.#base?.record.releaseId === installed?.releaseId) return;
    this.#leave();
    if (!installed || this.init.signal.aborted) return;
    if (!existsSync(this.init.store.keptRelease(this.init.model, installed.releaseId).image)) return;
    const releaseId = Uint8Array.from(Buffer.from(installed.releaseId, 'hex'));
    const name = deltaChannelName(this.init.model, releaseId);
    const channel: Channel = { name, group: channelGroup(name), port: this.init.port };
    const root = this.init.root();
    const base: Base = {
      record: installed, releaseId, channel, leave: new AbortController(), originals: new Map(),
      receiver: new Receiver({
        model: this.init.model,
        trusted: this.init.trusted,
        ...(root ? { root } : {}),
        installedSeq: installed.seq,
        ...(this.init.limits ? { limits: this.init.limits } : {}),
        objectOf: (release) => {
          const d = this.#usable(release);
          if (!d) return 'no-delta';
          base.originals.clear();
          base.originals.set(hex(release.releaseId), { release, delta: d });
          return deltaView(release, d);
        },
        assemblerFor: (view) => this.#open(view),
        onLateEvent: (e) => this.#handle(base, e),
      }),
    };
    this.#base = base;
    const count: ChannelCount = this.#counts.get(name) ?? { model: this.init.model, channel: name, datagrams: 0, bytes: 0 };
    this.#counts.set(name, count);
    const signal = AbortSignal.any([this.init.signal, base.leave.signal]);
    try {
      await this.init.transport.join(channel, (data, from) => {
        count.datagrams++;
        count.bytes += data.length;
        for (const e of base.receiver.push(data, this.init.now(), from)) this.#handle(base, e);
      }, signal);
    } catch (err) {
      // Stopping (the transport closed, the agent aborted), or the join failed: the full image is taken on the model's channel.
      if (this.#base === base) this.#leave();
      if (signal.aborted || err instanceof TransportClosedError) return;
      throw err;
    }
    this.init.log.event('delta.joined', { model: this.init.model, channel: name, group: channel.group, port: channel.port, baseRelease: installed.releaseId, baseVersion: installed.version },
      `listening for deltas from ${installed.version} on ${name} [${channel.group}]:${channel.port}`);
  }

  #leave(): void {
    const base = this.#base;
    if (!base) return;
    this.#base = undefined;
    base.leave.abort();
    base.receiver.close();
    this.#receiving?.close();
    this.#receiving = undefined;
    this.init.log.event('delta.left', { model: this.init.model, channel: base.channel.name }, `left ${base.channel.name}`);
  }

  /** The delta's transfer, in the store: a restart resumes it. Others of this model are stale. */
  #open(view: VerifiedManifest): SpillAssembler {
    const id = hex(view.releaseId);
    const dir = this.#dir();
    mkdirSync(dir, { recursive: true });
    for (const name of readdirSync(dir)) if (name !== id) rmSync(join(dir, name), { recursive: true, force: true });
    this.#receiving?.close();
    const assembler = new SpillAssembler(join(dir, id), view.manifest, this.#codec);
    this.#receiving = assembler;
    const m = view.manifest;
    if (assembler.completed.size > 0 || assembler.resumedSymbols > 0) {
      this.init.log.event('release.resumed', {
        model: m.model, version: m.version, seq: m.seq, release: id, segmentsDone: assembler.completed.size, segments: m.segments.length, symbolsOnDisk: assembler.resumedSymbols,
      }, `resuming the delta of ${m.version}: ${assembler.completed.size}/${m.segments.length} segments done, ${assembler.resumedSymbols} symbols on disk`);
    }
    return assembler;
  }

  #flush(): void {
    try {
      this.#receiving?.flush();
    } catch {
      // A store failure leaves the batch in memory; the model's channel logs the store's state.
    }
  }

  #handle(base: Base, e: ReceiverEvent): void {
    const model = this.init.model;
    switch (e.kind) {
      case 'accepted': {
        const id = hex(e.release.releaseId);
        const m = base.originals.get(id)?.release.manifest;
        if (!m) return;
        clearTimeout(this.#waiting.get(id));
        this.#waiting.delete(id);
        this.init.log.event('delta.accepted', { model, version: m.version, seq: m.seq, release: id, baseRelease: base.record.releaseId, deltaSize: e.release.manifest.imageSize, imageSize: m.imageSize, segments: e.release.manifest.segments.length },
          `receiving ${model} ${m.version} as a ${e.release.manifest.imageSize}-byte delta from ${base.record.version} (the image is ${m.imageSize} bytes)`);
        break;
      }
      case 'rejected':
        this.init.log.event('release.refused', { model, release: e.releaseId, ...errorFields(e.error), ...e.error.facts }, `rejected release ${e.releaseId} on ${base.channel.name}: ${e.error.message}`);
        break;
      case 'root':
        this.init.onRoot(e.result);
        break;
      case 'complete': {
        const id = hex(e.release.releaseId);
        base.receiver.abandon(id, 'install-pending');
        const original = base.originals.get(id);
        const assembler = this.#receiving;
        this.#receiving = undefined;
        if (original && assembler) void this.#apply(base, original.release, original.delta, assembler);
        break;
      }
      default:
        break;
    }
  }

  async #apply(base: Base, release: VerifiedManifest, delta: DeltaEntry, assembler: SpillAssembler): Promise<void> {
    const m = release.manifest;
    const id = hex(release.releaseId);
    const started = performance.now();
    const outPath = join(this.#dir(), id, 'new.img');
    try {
      assembler.close();
      // Its decoders lived only while it received: the codec's grown WASM memory goes back.
      this.#codec.recycle();
      const basePath = this.init.store.keptRelease(this.init.model, base.record.releaseId).image;
      const baseSha = await sha256File(basePath);
      if (baseSha !== hex(delta.baseSha256)) throw new DigestMismatchError(`the kept image of ${base.record.version} has SHA-256 ${baseSha}, the delta's base ${hex(delta.baseSha256)}`);
      const sha = await applyDelta({ deltaPath: assembler.imagePath, basePath, outPath, baseSize: statSync(basePath).size, newSize: m.imageSize });
      if (sha !== hex(m.imageSha256)) throw new DigestMismatchError(`the delta rebuilt an image with SHA-256 ${sha}, the manifest says ${hex(m.imageSha256)}`);
    } catch (err) {
      // Whatever failed (a digest, the format, the disk), the full image remains: the error is logged with the fallback.
      try {
        assembler.destroy();
      } catch {
        // The next transfer's #open removes what is left.
      }
      return this.#fail(base, release, err);
    }
    const ms = Math.round(performance.now() - started);
    this.init.log.event('delta.applied', { model: m.model, version: m.version, seq: m.seq, release: id, baseRelease: base.record.releaseId, deltaSize: delta.size, imageSize: m.imageSize, ms },
      `rebuilt ${m.model} ${m.version} from ${base.record.version} and a ${delta.size}-byte delta in ${ms} ms`);
    this.init.onImage(release, { imagePath: outPath, destroy: () => assembler.destroy(), close: () => {} });
  }

  /** The delta of `release` cannot be used: the full image is taken from the model's channel. */
  #fail(base: Base, release: VerifiedManifest, err: unknown): void {
    const m = release.manifest;
    const id = hex(release.releaseId);
    this.#failed.add(id);
    base.receiver.abandon(id, 'install-failed');
    this.init.log.event('delta.failed', { model: m.model, version: m.version, seq: m.seq, release: id, baseRelease: base.record.releaseId, ...errorFields(err) },
      `the delta of ${m.version} from ${base.record.version} cannot be used (${(err as Error).message}); taking the full image`);
    this.init.onFallback(id);
  }

  close(): void {
    clearInterval(this.#flusher);
    for (const timer of this.#waiting.values()) clearTimeout(timer);
    this.#waiting.clear();
    this.#leave();
  }
}
