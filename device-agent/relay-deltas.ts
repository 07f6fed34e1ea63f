/**
 * Relay mode's deltas: so that agents behind a relay that hold a base take
 * its delta, as they would from the publisher, the relay keeps the deltas of
 * the release it relays. For each delta the relayed release lists and the
 * store does not keep yet, it joins that delta's sub-channel upstream and
 * receives it (a receiver of its own, with the authentication of any
 * transfer: the delta's Merkle root and segment digests from the signed
 * manifest; spill files in the store, so a restart resumes), checks the whole
 * object against its signed SHA-256 and keeps it beside the release
 * (Store.keepDelta), where relay.ts picks it up and carousels it.
 *
 * Bounded: only the deltas the relayed release lists, each received once and
 * removed with the release (Store.pruneReleases); a newer relayed release
 * ends the receptions of the previous one. A delta never heard leaves the
 * full release relayed alone: the agents below wait for it, then take the
 * full image (delta-lane.ts).
 */
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { channelGroup } from '../protocol/channel.js';
import { deltaChannelName, deltaView } from '../protocol/delta.js';
import { DigestMismatchError, StoreError } from '../protocol/errors.js';
import { RaptorqCodec } from '../protocol/fec.js';
import { hex } from '../protocol/hex.js';
import type { PublicKey } from '../protocol/keys.js';
import type { ReceiverLimits } from '../protocol/limits.js';
import { errorFields, type Logger } from '../protocol/log.js';
import type { DeltaEntry, Manifest, VerifiedManifest } from '../protocol/manifest.js';
import type { TrustedRoot } from '../protocol/root.js';
import { TransportClosedError, type Channel, type Transport } from '../transport/transport.js';
import { Receiver, type ReceiverEvent } from './receiver/receiver.js';
import { SpillAssembler } from './spill-assembler.js';
import { sha256File, type Store } from './store.js';

/** Where the agent receives, and what it trusts: the deltas' sub-channels are joined there. */
export interface Upstream {
  transport: Transport;
  trusted: readonly PublicKey[];
  /** The root in force (the agent's), if it has one; rootChanged() brings receptions under way up to date. */
  root: () => TrustedRoot | undefined;
  limits?: ReceiverLimits;
}

export interface RelayDeltasInit {
  store: Store;
  /** Without: nothing is received (the relay serves the deltas its store already keeps). */
  upstream?: Upstream;
  log: Logger;
  /** A delta was received, matched its signed digest and is kept in the store. */
  onKept: (model: string, releaseId: string, baseReleaseId: string) => void;
  /** Unix seconds. */
  now?: () => number;
}

/** The release whose deltas are received: as the relay read it from the store. */
export interface RelayedRelease {
  manifest: Manifest;
  signed: Uint8Array;
  releaseId: Uint8Array;
}

interface Reception {
  model: string;
  releaseId: string;
  baseReleaseId: string;
  delta: DeltaEntry;
  channel: Channel;
  leave: AbortController;
  receiver: Receiver;
  assembler: SpillAssembler | undefined;
}

export class RelayDeltas {
  #init: RelayDeltasInit;
  /** Per model: the deltas being received, keyed by `<release>.<base release>` (their transfer directory's name). */
  #receiving = new Map<string, Map<string, Reception>>();
  #codec = new RaptorqCodec();
  #flusher: NodeJS.Timeout;
  /** Models whose store failed: logged once, until it works again. */
  #storeDown = new Map<string, number>();

  constructor(init: RelayDeltasInit) {
    this.#init = init;
    this.#flusher = setInterval(() => this.#flush(), 250);
    this.#flusher.unref();
  }

  /**
   * Receives `missing` (deltas `release` lists, not kept yet) for `model`,
   * each on its sub-channel at `port`. Receptions of this release already
   * under way go on; every other reception of the model ends, its transfer
   * removed.
   */
  receive(model: string, port: number, release: RelayedRelease, missing: readonly DeltaEntry[]): void {
    const upstream = this.#init.upstream;
    if (!upstream) return;
    const releaseId = hex(release.releaseId);
    const wanted = new Map(missing.map((d) => [`${releaseId}.${hex(d.baseReleaseId)}`, d]));
    const current = this.#receiving.get(model) ?? new Map<string, Reception>();
    this.#receiving.set(model, current);
    for (const [key, r] of current) if (!wanted.has(key)) this.#end(r, true);
    const dir = this.#init.store.relayDeltaTransfers(model);
    // A relay whose releases list no deltas leaves no trace in the store.
    if (wanted.size === 0 && !existsSync(dir)) return;
    try {
      mkdirSync(dir, { recursive: true });
      for (const name of readdirSync(dir)) if (!wanted.has(name)) rmSync(join(dir, name), { recursive: true, force: true });
    } catch (err) {
      const error = StoreError.wrap(err, dir, 'receive deltas in');
      if (!(error instanceof StoreError)) throw error;
      this.storeFailed(model, error);
      return;
    }
    for (const [key, delta] of wanted) {
      if (current.has(key)) continue;
      void this.#start(upstream, model, port, release, delta, join(dir, key));
    }
  }

  /** Ends every reception of `model`. */
  stop(model: string): void {
    for (const r of this.#receiving.get(model)?.values() ?? []) this.#end(r, false);
  }

  /** The agent trusts a newer root (or loaded its own at start): receptions under way judge by it. */
  rootChanged(): void {
    const root = this.#init.upstream?.root();
    if (!root) return;
    for (const model of this.#receiving.values()) for (const r of model.values()) r.receiver.setRoot(root, this.#now());
  }

  close(): void {
    clearInterval(this.#flusher);
    for (const model of this.#receiving.keys()) this.stop(model);
  }

  #now(): number {
    return (this.#init.now ?? (() => Date.now() / 1000))();
  }

  async #start(upstream: Upstream, model: string, port: number, release: RelayedRelease, delta: DeltaEntry, transferDir: string): Promise<void> {
    const releaseId = hex(release.releaseId);
    const baseReleaseId = hex(delta.baseReleaseId);
    const name = deltaChannelName(model, delta.baseReleaseId);
    const root = upstream.root();
    const r: Reception = {
      model, releaseId, baseReleaseId, delta, channel: { name, group: channelGroup(name), port }, leave: new AbortController(), assembler: undefined,
      receiver: new Receiver({
        model,
        trusted: upstream.trusted,
        ...(root ? { root } : {}),
        ...(upstream.limits ? { limits: upstream.limits } : {}),
        // Only the relayed release's delta: the store keeps nothing else.
        objectOf: (heard: VerifiedManifest) => (hex(heard.releaseId) === releaseId ? deltaView(heard, delta) : 'superseded'),
        assemblerFor: (view) => {
          r.assembler?.close();
          try {
            r.assembler = new SpillAssembler(transferDir, view.manifest, this.#codec);
          } catch (err) {
            throw StoreError.wrap(err, transferDir, 'receive a delta in');
          }
          return r.assembler;
        },
        onLateEvent: (e) => this.#handle(r, e),
      }),
    };
    this.#receiving.get(model)!.set(`${releaseId}.${baseReleaseId}`, r);
    const signal = r.leave.signal;
    try {
      await upstream.transport.join(r.channel, (data, from) => {
        for (const e of r.receiver.push(data, this.#now(), from)) this.#handle(r, e);
      }, signal);
    } catch (err) {
      this.#end(r, false);
      if (signal.aborted || err instanceof TransportClosedError) return;
      this.#init.log.event('relay.delta-failed', { model, release: releaseId, baseRelease: baseReleaseId, ...errorFields(err) },
        `relay: cannot join ${name} to receive the delta of release ${releaseId} from ${baseReleaseId}: ${(err as Error).message}; the full release is relayed alone`);
      return;
    }
    this.#init.log.event('relay.delta-joined', { model, release: releaseId, baseRelease: baseReleaseId, channel: name },
      `relay: receiving the delta of release ${releaseId} from ${baseReleaseId} on ${name}, to relay it`);
  }

  /** Stops receiving `r`; `discard`: its transfer goes too (its release is no longer relayed). */
  #end(r: Reception, discard: boolean): void {
    const model = this.#receiving.get(r.model);
    if (model?.get(`${r.releaseId}.${r.baseReleaseId}`) === r) model.delete(`${r.releaseId}.${r.baseReleaseId}`);
    r.leave.abort();
    r.receiver.close();
    if (discard) r.assembler?.destroy();
    else r.assembler?.close();
    r.assembler = undefined;
  }

  #handle(r: Reception, e: ReceiverEvent): void {
    switch (e.kind) {
      case 'store-error':
        this.storeFailed(r.model, e.error);
        break;
      // Not on a decoded segment: the spill files may work while keeping the delta fails (the failure that matters here).
      case 'store-ok':
        this.#storeWorks(r.model);
        break;
      case 'complete': {
        r.receiver.abandon(r.releaseId, 'install-pending');
        const assembler = r.assembler;
        r.assembler = undefined;
        if (assembler) void this.#keep(r, assembler);
        break;
      }
      default:
        break;
    }
  }

  /** A complete delta: checked whole against its signed digest, then kept; anything else, received again. */
  async #keep(r: Reception, assembler: SpillAssembler): Promise<void> {
    const { model, releaseId, baseReleaseId, delta } = r;
    assembler.close();
    // Decoders lived only while it received: the codec's grown WASM memory goes back.
    this.#codec.recycle();
    let kept: string;
    try {
      const sha = await sha256File(assembler.imagePath).catch((err: unknown) => {
        throw StoreError.wrap(err, assembler.imagePath, 'read');
      });
      if (sha !== hex(delta.sha256)) throw new DigestMismatchError(`the delta received has SHA-256 ${sha}, the manifest says ${hex(delta.sha256)}`);
      if (r.leave.signal.aborted) return assembler.destroy();
      try {
        kept = this.#init.store.keepDelta(model, releaseId, baseReleaseId, assembler.imagePath);
      } catch (err) {
        throw StoreError.wrap(err, this.#init.store.keptDelta(model, releaseId, baseReleaseId), 'keep a delta in');
      }
      this.#storeWorks(model);
    } catch (err) {
      assembler.destroy();
      if (r.leave.signal.aborted) return;
      if (err instanceof StoreError) this.storeFailed(model, err);
      else {
        this.#init.log.event('relay.delta-failed', { model, release: releaseId, baseRelease: baseReleaseId, ...errorFields(err) },
          `relay: the delta of release ${releaseId} from ${baseReleaseId} cannot be kept (${(err as Error).message}); receiving it again`);
      }
      // Its next manifest copy starts it again.
      r.receiver.forget(releaseId);
      return;
    }
    // The transfer directory holds nothing more: the delta moved into the store.
    assembler.destroy();
    this.#end(r, false);
    this.#init.log.event('relay.delta-kept', { model, release: releaseId, baseRelease: baseReleaseId, channel: r.channel.name, size: delta.size, path: kept },
      `relay: kept the ${delta.size}-byte delta of release ${releaseId} from ${baseReleaseId} (it matches its signed SHA-256)`);
    this.#init.onKept(model, releaseId, baseReleaseId);
  }

  #flush(): void {
    for (const [model, receptions] of this.#receiving) {
      for (const r of receptions.values()) {
        try {
          r.assembler?.flush();
        } catch (err) {
          if (!(err instanceof StoreError)) throw err;
          this.storeFailed(model, err);
        }
      }
    }
  }

  /** Logs a failure of the store (store.failed) once, until it works again: the relay's own reads of kept deltas report here too. */
  storeFailed(model: string, error: StoreError): void {
    const failures = this.#storeDown.get(model);
    if (failures !== undefined) return void this.#storeDown.set(model, failures + 1);
    this.#storeDown.set(model, 1);
    this.#init.log.event('store.failed', { model, store: this.#init.store.dir, path: error.facts.path, code: error.facts.code, ...errorFields(error) },
      `relay: the store cannot keep a delta to relay: ${error.message}; the full release is relayed meanwhile, and the delta received again`);
  }

  #storeWorks(model: string): void {
    const failures = this.#storeDown.get(model);
    if (failures === undefined) return;
    this.#storeDown.delete(model);
    this.#init.log.event('store.recovered', { model, store: this.#init.store.dir, failures }, `the store works again after ${failures} failed writes; deltas are kept again`);
  }
}
