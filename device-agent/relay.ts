/**
 * Relay mode: an agent that has installed (verified) a release carousels it
 * onward on another transport, e.g. received over MQTT and re-multicast on its
 * LAN, at its own rate. The relay holds no signing key and signs nothing: it
 * sends the original signed manifest and the symbols that manifest commits to
 * (regenerated from the kept image; Carousel refuses an image whose symbols do
 * not match the signed authentication root), so downstream agents verify
 * against the original publisher's key exactly as if they heard it directly.
 *
 * With a root of trust it also carries the agent's root chain, so a rotation
 * or a revocation reaches the agents downstream of it.
 *
 * It serves the release the store keeps for each model (releases/<model>/
 * <release>.img and .cose): at start (so a restarted relay goes on serving) and
 * after each install (the newer release replaces the older on the channel), or
 * each encrypted release it keeps without a key to install it.
 *
 * Given the upstream transport, it also carries the release's deltas: each
 * delta the manifest lists goes out on its sub-channel (protocol/delta.ts)
 * from the bytes the store keeps (relay-deltas.ts receives and keeps them),
 * checked against the delta's signed SHA-256 and Merkle root as the image is,
 * so agents downstream holding a base take the delta as from the publisher.
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { decodeCoseSign1 } from '../protocol/cose-sign1.js';
import { DigestMismatchError, StoreError } from '../protocol/errors.js';
import { hex } from '../protocol/hex.js';
import { errorFields, type Logger } from '../protocol/log.js';
import { decodeManifest, releaseIdOf, type DeltaEntry, type Manifest } from '../protocol/manifest.js';
import { channelGroup } from '../protocol/channel.js';
import { deltaChannelName, deltaView } from '../protocol/delta.js';
import { Carousel } from '../carousel/carousel.js';
import { channelCounts, Publisher, type ChannelStats } from '../carousel/publisher.js';
import type { Channel, Transport } from '../transport/transport.js';
import type { Store } from './store.js';
import { RelayDeltas, type Upstream } from './relay-deltas.js';

export interface RelayInit {
  /** Where to send onward (not the transport the agent receives on, or it hears itself). */
  transport: Transport;
  /** Bits per second, all relayed channels together. */
  rate: number;
  store: Store;
  /** The models to relay and the channel each goes out on. */
  models: ReadonlyArray<{ model: string; channel: Channel }>;
  log: Logger;
  /**
   * The root chain to carry before each manifest copy (the agent's: its
   * provisioned root and what it verified since), so agents downstream learn
   * rotations and revocations through the relay too. Read at each serve and
   * at rootChanged().
   */
  rootChain?: () => Uint8Array | undefined;
  /** The HALT datagrams a model's channel carries onward with its release (RolloutGate.haltDatagrams). */
  halts?: (model: string) => Uint8Array[];
  /**
   * Where the agent receives, and what it trusts: the relay receives there
   * the deltas its releases list, to carry them too. Without: full releases
   * only (and deltas the store already keeps).
   */
  upstream?: Upstream;
}

interface Serving {
  releaseId: string;
  carousel: Carousel;
  manifest: Manifest;
  signed: Uint8Array;
  id: Uint8Array;
  /** Delta carousels on the air, by sub-channel name. */
  deltas: Map<string, Carousel>;
}

export class Relay {
  #init: RelayInit;
  #publisher: Publisher;
  #abort = new AbortController();
  #running: Promise<void> | undefined;
  #serving = new Map<string, Serving>();
  #deltas: RelayDeltas;

  constructor(init: RelayInit) {
    if (!(init.rate > 0)) throw new RangeError('rate must be positive');
    this.#init = init;
    this.#publisher = new Publisher({ transport: init.transport, rate: init.rate });
    this.#deltas = new RelayDeltas({
      store: init.store, ...(init.upstream ? { upstream: init.upstream } : {}), log: init.log,
      onKept: (model, releaseId, baseReleaseId) => {
        const s = this.#serving.get(model);
        const d = s?.releaseId === releaseId ? s.manifest.deltas?.find((x) => hex(x.baseReleaseId) === baseReleaseId) : undefined;
        if (s && d) this.#serveDelta(model, s, d);
      },
    });
  }

  /**
   * Starts sending (the publisher opens the transport) and re-serves what the
   * store already keeps. Does not wait for the transport: a relay whose
   * upstream or onward broker is down still starts.
   */
  async start(): Promise<void> {
    this.#running = this.#publisher.run({ signal: this.#abort.signal }).catch((err: Error) => {
      this.#init.log.event('relay.failed', errorFields(err), `relay stopped: ${err.message}`);
    });
    for (const { model } of this.#init.models) {
      // A relay holding no key for an encrypted release keeps it without installing it: the newest kept release goes out.
      const id = this.#newestKept(model) ?? this.#init.store.installed(model)?.releaseId;
      if (id) this.serve(model, id);
    }
  }

  #newestKept(model: string): string | undefined {
    let newest: { id: string; seq: number } | undefined;
    for (const id of this.#init.store.keptReleaseIds(model)) {
      try {
        const seq = decodeManifest(decodeCoseSign1(new Uint8Array(readFileSync(this.#init.store.keptRelease(model, id).manifest))).payload).seq;
        if (!newest || seq > newest.seq) newest = { id, seq };
      } catch {
        // Unreadable: serve() says why if it is the one chosen; here it is passed over.
      }
    }
    return newest?.id;
  }

  /**
   * Starts carouselling the kept release `releaseId` of `model`, replacing the
   * one relayed before. Returns false (and logs why) if it cannot. `again`:
   * also when it is relayed already (a halt came to carry with it).
   */
  serve(model: string, releaseId: string, again = false): boolean {
    const log = this.#init.log;
    const spec = this.#init.models.find((m) => m.model === model);
    if (!spec) return false;
    if (this.#serving.get(model)?.releaseId === releaseId && !again) return true;
    const paths = this.#init.store.keptRelease(model, releaseId);
    if (!existsSync(paths.image) || !existsSync(paths.manifest)) {
      log.event('relay.release-missing', { model, release: releaseId, store: this.#init.store.dir },
        `relay: no kept release ${releaseId} for ${model} in ${this.#init.store.dir}; nothing to relay until the next install`);
      return false;
    }
    try {
      const signed = new Uint8Array(readFileSync(paths.manifest));
      const image = new Uint8Array(readFileSync(paths.image));
      const manifest = decodeManifest(decodeCoseSign1(signed).payload);
      const id = releaseIdOf(signed);
      if (hex(id) !== releaseId) throw new DigestMismatchError(`${paths.manifest} is not release ${releaseId}`);
      const digest = createHash('sha256').update(image).digest();
      if (Buffer.compare(digest, manifest.imageSha256) !== 0) throw new DigestMismatchError(`${paths.image} does not match its signed SHA-256`);
      const rootChain = this.#init.rootChain?.();
      const carousel = new Carousel({ manifest, signed, releaseId: id, image, halts: this.#init.halts?.(model) ?? [], ...(rootChain ? { rootChain } : {}) });
      this.#publisher.set({ channel: spec.channel, carousel });
      const previous = this.#serving.get(model);
      const serving: Serving = { releaseId, carousel, manifest, signed, id, deltas: previous?.releaseId === releaseId ? previous.deltas : new Map() };
      if (previous && previous.releaseId !== releaseId) for (const name of previous.deltas.keys()) this.#publisher.remove(name);
      this.#serving.set(model, serving);
      log.event('relay.serving', {
        model, version: manifest.version, seq: manifest.seq, release: releaseId, channel: spec.channel.name, transport: this.#init.transport.description, rate: this.#init.rate,
      }, `relaying ${model} ${manifest.version} (seq ${manifest.seq}) on ${spec.channel.name} via ${this.#init.transport.description} at ${this.#init.rate / 1e6} Mbit/s`);
    } catch (err) {
      log.event('relay.release-failed', { model, release: releaseId, ...errorFields(err) }, `relay: cannot relay ${model} release ${releaseId}: ${(err as Error).message}`);
      return false;
    }
    const serving = this.#serving.get(model)!;
    // Each delta it lists: from the store if kept there, otherwise received upstream first (and served once kept).
    const missing = (serving.manifest.deltas ?? []).filter((d) => !serving.deltas.has(deltaChannelName(model, d.baseReleaseId)) && !this.#serveDelta(model, serving, d));
    this.#deltas.receive(model, spec.channel.port, { manifest: serving.manifest, signed: serving.signed, releaseId: serving.id }, missing);
    return true;
  }

  /**
   * Carousels the kept delta `d` of the relayed release on its sub-channel,
   * after checking it against its signed SHA-256 (and Carousel, its Merkle
   * root). False if it is not kept, or is kept wrong (then it is removed, to
   * be received again).
   */
  #serveDelta(model: string, s: Serving, d: DeltaEntry): boolean {
    const spec = this.#init.models.find((m) => m.model === model)!;
    const base = hex(d.baseReleaseId);
    const path = this.#init.store.keptDelta(model, s.releaseId, base);
    if (!existsSync(path)) return false;
    const name = deltaChannelName(model, d.baseReleaseId);
    try {
      const bytes = new Uint8Array(readFileSync(path));
      const digest = createHash('sha256').update(bytes).digest();
      if (Buffer.compare(digest, d.sha256) !== 0) throw new DigestMismatchError(`${path} does not match the delta's signed SHA-256`);
      const view = deltaView({ manifest: s.manifest, signed: s.signed, releaseId: s.id, kid: new Uint8Array(), cosigners: [] }, d);
      const rootChain = this.#init.rootChain?.();
      const carousel = new Carousel({ manifest: view.manifest, signed: s.signed, releaseId: s.id, image: bytes, ...(rootChain ? { rootChain } : {}) });
      this.#publisher.set({ channel: { name, group: channelGroup(name), port: spec.channel.port }, carousel });
      s.deltas.set(name, carousel);
    } catch (err) {
      const error = StoreError.wrap(err, path, 'read the kept delta');
      if (error instanceof StoreError) this.#deltas.storeFailed(model, error);
      else {
        this.#init.log.event('relay.delta-failed', { model, release: s.releaseId, baseRelease: base, ...errorFields(error) },
          `relay: cannot relay the delta of ${model} release ${s.releaseId} from ${base} (${(error as Error).message}); removed, it goes out once kept again`);
      }
      try {
        rmSync(path, { force: true });
      } catch (rmErr) {
        // Left where it is: keeping the delta received again reports the store's state.
        const e = StoreError.wrap(rmErr, path, 'remove the kept delta');
        if (!(e instanceof StoreError)) throw e;
      }
      return false;
    }
    const m = s.manifest;
    this.#init.log.event('relay.delta-serving', { model, version: m.version, seq: m.seq, release: s.releaseId, baseRelease: base, channel: name, size: d.size },
      `relaying the ${d.size}-byte delta of ${model} ${m.version} from ${base} on ${name}`);
    return true;
  }

  /** The agent trusts a newer root: every relayed channel carries the new chain from its next manifest copy. */
  rootChanged(): void {
    const chain = this.#init.rootChain?.();
    for (const { carousel, deltas } of this.#serving.values()) for (const c of [carousel, ...deltas.values()]) c.setRootChain(chain);
    this.#deltas.rootChanged();
  }

  stats(): ChannelStats[] {
    return this.#publisher.stats();
  }

  /** Stops sending and logs each relayed channel's totals. */
  async stop(): Promise<void> {
    this.#abort.abort();
    this.#deltas.close();
    await this.#running;
    await this.#init.transport.close();
    for (const s of this.stats()) {
      this.#init.log.event('carousel.stopped', channelCounts(s),
        `stats relay ${s.channel}: ${s.rounds} rounds, ${s.packets} datagrams, ${s.bytes} bytes`);
    }
  }
}
