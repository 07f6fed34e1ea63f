/**
 * The long-running publisher behind `fwcast serve`: the release store, one
 * Publisher carouselling the live release of every served model within one
 * rate budget, and the HTTP API. New uploads replace a model's carousel on the
 * fly; retiring the live release puts the next newest on the air (or none).
 */
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { readTrustedKey } from '../../cli/key-files.js';
import * as ed25519 from '../../protocol/ed25519.js';
import { ConfigError } from '../../protocol/errors.js';
import { errorFields, type Logger } from '../../protocol/log.js';
import { ChannelTransport } from '../../channels/channel-transport.js';
import type { Transport } from '../../transport/transport.js';
import { Carousel } from '../../carousel/carousel.js';
import { CodecPool } from '../codec-pool.js';
import { channelCounts, Publisher } from '../../carousel/publisher.js';
import { symbolSetFor } from '../symbol-cache.js';
import type { ServeConfig, ServedModel } from './config.js';
import { createHttpApi } from './http-api.js';
import { readTlsIdentity, type Listener, type TlsIdentity } from './http-listener.js';
import { ServeMetrics } from './metrics.js';
import { ReleaseStore, type StoredRelease } from './release-store.js';
import { RootKeeper } from './root-keeper.js';
import { deltaCarousels } from '../delta-build.js';
import { ListenerFollower, ListenerGate } from '../../carousel/listener-gate.js';
import { openListenerSource } from '../../transport/listeners.js';
import { HaltStore } from './halt-store.js';
import { HaltCarousel } from '../../carousel/halt-carousel.js';

/** Images this large are encoded on worker threads; smaller ones take well under a second here. */
const POOL_THRESHOLD = 4 << 20;

interface OnAir {
  release: StoredRelease;
  since: string;
  carousel: Carousel;
  /** The release's delta sub-channels (fwcast sign --delta-from), and their carousels. */
  deltas: Array<{ channel: string; carousel: Carousel }>;
  /** HALT datagrams carried with it. */
  halts: number;
}

export class FwcastServer {
  readonly config: ServeConfig;
  readonly metrics = new ServeMetrics();
  #log: Logger;
  #store!: ReleaseStore;
  #halts!: HaltStore;
  #transport: Transport;
  #publisher: Publisher;
  #listener!: Listener;
  #abort = new AbortController();
  #running: Promise<void> | undefined;
  #sampler: NodeJS.Timeout | undefined;
  #onAir = new Map<string, OnAir>();
  /** Models whose channel carries halts alone (no live release), and how many. */
  #haltsAlone = new Map<string, number>();
  #syncing: Promise<void> = Promise.resolve();
  #models: Map<string, ServedModel>;
  /** The root of trust carried on every channel and authorizing uploads, if roots are configured. */
  #roots: RootKeeper | undefined;
  /** Follows each channel's listeners when "listeners" is configured. */
  #listeners: ListenerFollower | undefined;

  #fail!: (err: Error) => void;
  /** Settles if the server cannot go on (the publisher's send loop failed). */
  readonly failed = new Promise<Error>((resolve) => (this.#fail = resolve));

  constructor(config: ServeConfig, log: Logger, transport?: Transport) {
    this.config = config;
    this.#log = log;
    this.#models = new Map(config.models.map((m) => [m.model, m]));
    this.#transport = transport ?? new ChannelTransport({ iface: config.iface, udp: { hops: config.hops } });
    this.#publisher = new Publisher({ transport: this.#transport, rate: config.rate });
  }

  /** Opens the store, puts every model's live release on the air, and listens. Returns the HTTP address. */
  async start(): Promise<AddressInfo> {
    // First: a certificate that cannot be used is a configuration error, before anything runs.
    const tls = this.config.tls ? readTlsIdentity(this.config.tls) : undefined;
    // So is a listener source that cannot work (an interface that is not a snooping bridge).
    const listeners = this.config.listeners ? openListenerSource(this.config.listeners.source, this.config.iface) : undefined;
    await ed25519.ready();
    const trusted = this.config.trustedKeys.map(readTrustedKey);
    if (this.config.roots.length > 0) {
      this.#roots = RootKeeper.open(this.config.roots, join(this.config.store, 'roots'), this.#log.child('serve:roots'), Date.now() / 1000);
      this.#roots.warn(Date.now() / 1000);
    }
    this.#store = new ReleaseStore({
      dir: this.config.store, trusted, roots: this.#roots, models: [...this.#models.keys()], keep: this.config.keepReleases, log: this.#log.child('serve:store'),
    });
    this.#store.onRootsAdopted = (applied) => this.#rootsAdopted(applied, 'upload');
    this.#store.open();
    this.#halts = new HaltStore(join(this.config.store, 'halts'), () => this.#store.keys(), new Set(this.#models.keys()), this.#log.child('serve:store'), (halt, kid) => this.#store.authorize({ model: halt.model, seq: 0 }, kid));
    this.#halts.open();
    const counts = this.#store.list();
    this.#log.event('serve.store-opened', { store: this.config.store, releases: counts.length, live: counts.filter((r) => r.state === 'live').length },
      `store ${this.config.store}: ${counts.length} release(s)`);
    try {
      await this.#transport.open();
    } catch (err) {
      throw new ConfigError(`cannot multicast on interface "${this.config.iface}": ${(err as Error).message}`);
    }
    for (const model of this.#models.keys()) this.#sync(model);
    if (listeners) this.#followListeners(listeners);
    this.#running = this.#publisher.run({ signal: this.#abort.signal }).catch((err: unknown) => {
      this.#log.event('serve.publisher-failed', errorFields(err), `the publisher stopped: ${(err as Error).message}`);
      this.#fail(err as Error);
    });
    this.#sampler = setInterval(() => this.metrics.sample(this.#publisher.stats()), 1000);
    this.#listener = createHttpApi({
      store: this.#store,
      metrics: this.metrics,
      token: this.config.token,
      readToken: this.config.readToken,
      tls,
      limits: this.config,
      maxUploadSize: this.config.maxUploadSize,
      log: this.#log.child('serve:http'),
      status: () => this.status(),
      exposition: () => this.#exposition(),
      onChange: (model) => this.#sync(model),
      offerRoot: this.#roots ? (bytes) => this.#offerRoot(bytes) : undefined,
      halts: this.#halts,
    });
    await new Promise<void>((resolve, reject) => {
      this.#http.once('error', reject);
      this.#http.listen({ host: this.config.host, port: this.config.httpPort }, () => resolve());
    });
    const address = this.#http.address() as AddressInfo;
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    const url = `${tls ? 'https' : 'http'}://${host}:${address.port}`;
    this.#log.event('serve.listening', { url, rate: this.config.rate, interface: this.config.iface }, `listening on ${url}`);
    if (!tls && !isLoopback(address.address)) {
      this.#log.event('serve.plain-http', { url }, `${url} is plain HTTP on a network: the upload token crosses it in clear (set "tlsCert" and "tlsKey")`);
    }
    return address;
  }

  /** Before the publisher runs, so a channel nobody listens to never sends a datagram. */
  #followListeners({ source, warnings }: ReturnType<typeof openListenerSource>): void {
    const l = this.config.listeners!;
    const log = this.#log.child('serve:listeners');
    for (const w of warnings) log.event('listeners.warning', { source: source.description, detail: w }, w);
    const channels = [...this.#models.values()].map((m) => m.channel);
    this.#listeners = new ListenerFollower({ publisher: this.#publisher, source, gate: new ListenerGate({ lingerMs: l.lingerMs, alwaysOn: l.alwaysOn }), channels: () => channels, log });
    log.event('listeners.following', { source: source.description, lingerMs: l.lingerMs, alwaysOn: l.alwaysOn.join(' ') },
      `sending each channel only while ${source.description} shows listeners (linger ${l.lingerMs / 1000} s)`);
    this.#listeners.start();
  }

  get #http() {
    return this.#listener.server;
  }

  /**
   * Reads the TLS certificate and key files again (SIGHUP) and serves them to
   * new connections; on any error the current ones stay. Without TLS, nothing.
   */
  reloadTls(): void {
    const files = this.config.tls;
    if (!files || !this.#listener || !('setSecureContext' in this.#http)) return;
    let identity: TlsIdentity;
    try {
      identity = readTlsIdentity(files);
    } catch (err) {
      this.#log.event('serve.tls-reload-failed', { cert: files.cert, ...errorFields(err) }, `TLS files not reloaded, the current ones stay: ${(err as Error).message}`);
      return;
    }
    this.#http.setSecureContext({ cert: identity.cert, key: identity.key });
    this.#log.event('serve.tls-reloaded', { cert: files.cert, fingerprint: identity.fingerprint, expires: identity.expires },
      `TLS certificate ${files.cert} reloaded (SHA-256 ${identity.fingerprint}, valid until ${identity.expires})`);
  }

  /**
   * Puts the model's live release on the air, replaces an older one, or stops
   * the channel. Changes are applied one at a time, in order.
   */
  #sync(model: string): void {
    this.#syncing = this.#syncing.then(() => this.#syncNow(model)).catch((err: unknown) => {
      this.#log.child('serve:publisher').event('serve.publish-failed', { model, ...errorFields(err) }, `${model}: cannot publish: ${(err as Error).message}`);
    });
  }

  async #syncNow(model: string): Promise<void> {
    const served = this.#models.get(model);
    if (!served) return;
    const live = this.#store.live(model);
    const current = this.#onAir.get(model);
    const halts = this.#halts.datagrams(model);
    if (live?.releaseId === current?.release.releaseId && halts.length === (current?.halts ?? this.#haltsAlone.get(model) ?? 0)) return;
    const log = this.#log.child('serve:publisher');
    this.#haltsAlone.delete(model);
    // The sub-channels of the release going off the air (a newer one brings its own).
    for (const d of current?.deltas ?? []) this.#publisher.remove(d.channel);
    if (!live && halts.length > 0) {
      // A halted release taken off the air: the devices still holding it must hear the halt.
      this.#publisher.set({ channel: served.channel, carousel: new HaltCarousel(halts) });
      this.#onAir.delete(model);
      this.#haltsAlone.set(model, halts.length);
      return;
    }
    if (!live) {
      this.#publisher.remove(served.channel.name);
      this.#onAir.delete(model);
      log.event('serve.off-air', { model, channel: served.channel.name }, `${served.channel.name}: off the air (no release)`);
      return;
    }
    const started = performance.now();
    const release = this.#store.load(live.releaseId);
    // Encoded once per release (the symbols are kept in STORE/symbols for
    // restarts); large images on worker threads so the HTTP API stays responsive.
    const pool = release.image.length >= POOL_THRESHOLD ? new CodecPool() : undefined;
    let symbols;
    try {
      symbols = await symbolSetFor(release, { dir: this.#symbolDir, ...(pool ? { pool } : {}) });
    } catch (err) {
      if (!pool) throw err;
      log.event('serve.encoding-fallback', { model, channel: served.channel.name, ...errorFields(err) },
        `${served.channel.name}: worker threads failed (${(err as Error).message}); encoding on the main thread`);
      symbols = await symbolSetFor(release, { dir: this.#symbolDir });
    } finally {
      await pool?.close();
    }
    if (this.#store.live(model)?.releaseId !== live.releaseId) return; // superseded meanwhile: the next change is queued
    const rootChain = this.#roots ? { rootChain: this.#roots.chain } : {};
    const carousel = new Carousel({ ...release, symbolSet: symbols.set, ...rootChain, halts });
    this.#publisher.set({ channel: served.channel, carousel });
    // Each delta on its base's sub-channel: only devices holding that base join it.
    const deltas = deltaCarousels(release, served.channel.port, rootChain).map((e) => {
      this.#publisher.set(e);
      return { channel: e.channel.name, carousel: e.carousel as Carousel };
    });
    this.#onAir.set(model, { release: live, since: new Date().toISOString(), carousel, halts: halts.length, deltas });
    const ms = Math.round(performance.now() - started);
    log.event('serve.on-air', {
      model, version: live.version, seq: live.seq, release: live.releaseId, channel: served.channel.name, group: served.channel.group, port: served.channel.port, symbols: symbols.source, ms,
    }, `${served.channel.name}: on the air ${model} ${live.version} (seq ${live.seq}); symbols ${symbols.source === 'cache' ? 'from cache' : 'encoded'} in ${ms} ms`);
    this.#dropStaleSymbols();
  }

  #offerRoot(bytes: Uint8Array): { applied: number[]; root: unknown } {
    const roots = this.#roots!;
    const applied = roots.offer(bytes, Date.now() / 1000);
    if (applied.length > 0) this.#rootsAdopted(applied, 'push');
    return { applied, root: roots.state(Date.now() / 1000) };
  }

  /** A newer root is trusted: every channel carries the new chain from its next manifest copy. */
  #rootsAdopted(applied: number[], source: 'push' | 'upload'): void {
    const roots = this.#roots!;
    for (const air of this.#onAir.values()) for (const c of [air.carousel, ...air.deltas.map((d) => d.carousel)]) c.setRootChain(roots.chain);
    this.#log.child('serve:roots').event('serve.root-adopted', {
      rootVersion: roots.version, previousVersion: applied[0]! - 1, applied: applied.length, source, expires: roots.root.signed.root.expires,
    }, `root version ${roots.version} trusted (${source}); carried on every channel`);
    roots.warn(Date.now() / 1000);
  }

  /** Deletes cached symbols of releases that are no longer live. */
  #dropStaleSymbols(): void {
    if (!existsSync(this.#symbolDir)) return;
    const live = new Set(this.#store.list().filter((r) => r.state === 'live').map((r) => `${r.releaseId}.symbols`));
    for (const name of readdirSync(this.#symbolDir)) if (!live.has(name)) rmSync(join(this.#symbolDir, name), { force: true });
  }

  get #symbolDir(): string {
    return join(this.config.store, 'symbols');
  }

  status(): unknown {
    const stats = this.#publisher.stats();
    return {
      server: {
        interface: this.config.iface,
        rate: this.config.rate,
        startedAt: new Date(this.metrics.startedAt).toISOString(),
        uptimeSeconds: Math.round((Date.now() - this.metrics.startedAt) / 1000),
        sendErrors: this.#transport.stats().sendErrors,
      },
      channels: [...this.#models.values()].map((m) => {
        const air = this.#onAir.get(m.model);
        const s = air ? stats.find((x) => x.channel === m.channel.name && x.releaseId === air.release.releaseId) : undefined;
        return {
          model: m.model,
          channel: m.channel.name,
          group: m.channel.group,
          port: m.channel.port,
          release: air ? { releaseId: air.release.releaseId, version: air.release.version, seq: air.release.seq, since: air.since } : null,
          rounds: s?.rounds ?? 0,
          packets: s?.packets ?? 0,
          bytes: s?.bytes ?? 0,
          rateBitsPerSecond: air ? this.metrics.rate(m.channel.name, air.release.releaseId) : 0,
          listeners: this.#listenerState(m.channel.name),
        };
      }),
      releases: this.#store.list(),
      root: this.#roots ? this.#roots.state(Date.now() / 1000) : null,
    };
  }

  /** null: not following listeners (the channel is always sent). */
  #listenerState(channel: string): { present: boolean; sending: boolean; alwaysOn: boolean; lastHeard: string | null } | null {
    if (!this.#listeners) return null;
    const s = this.#listeners.gate.states().find((x) => x.channel === channel);
    const alwaysOn = this.config.listeners!.alwaysOn.includes(channel);
    return { present: s?.listeners ?? false, sending: s?.sending ?? alwaysOn, alwaysOn, lastHeard: s?.lastHeard !== undefined ? new Date(s.lastHeard).toISOString() : null };
  }

  #exposition(): string {
    const releases: Record<string, number> = { live: 0, superseded: 0, retired: 0 };
    for (const r of this.#store.list()) releases[r.state] = (releases[r.state] ?? 0) + 1;
    const live = [...this.#onAir].map(([model, a]) => ({ channel: this.#models.get(model)!.channel.name, model, releaseId: a.release.releaseId, version: a.release.version, seq: a.release.seq }));
    return this.metrics.exposition(this.#publisher.stats(), live, { rate: this.config.rate, sendErrors: this.#transport.stats().sendErrors, releases, connections: this.#listener.connections(), ...(this.#roots ? { root: { version: this.#roots.version, expires: this.#roots.root.signed.root.expires } } : {}),
      ...(this.#listeners ? { listeners: [...this.#models.values()].map((m) => ({ channel: m.channel.name, ...this.#listenerState(m.channel.name)! })) } : {}) });
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    await this.#listeners?.stop();
    if (this.#sampler) clearInterval(this.#sampler);
    if (this.#listener?.server.listening) {
      const closed = new Promise<void>((resolve) => this.#http.close(() => resolve()));
      this.#http.closeIdleConnections();
      setTimeout(() => this.#http.closeAllConnections(), 2000).unref();
      await closed;
    }
    await this.#syncing;
    await this.#running;
    await this.#transport.close();
    for (const s of this.#publisher.stats()) {
      this.#log.event('carousel.stopped', channelCounts(s),
        `${s.channel}: ${s.rounds} rounds, ${s.packets} datagrams, ${s.bytes} bytes`);
    }
  }
}

/** ::1, 127.0.0.0/8, ::ffff:127.x: addresses no other host reaches. */
function isLoopback(address: string): boolean {
  return address === '::1' || /^(::ffff:)?127\./.test(address);
}
