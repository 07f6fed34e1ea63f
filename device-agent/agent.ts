/**
 * The device agent: for each configured model it joins the model's channel,
 * feeds datagrams to a Receiver, writes decoded segments to the store, checks
 * the whole image against the signed digest, runs the installer and records
 * the installed sequence. It never sends anything back.
 */
import { EventEmitter } from 'node:events';
import type { FwcastError } from '../protocol/errors.js';
import { DigestMismatchError } from '../protocol/errors.js';
import { RaptorqCodec } from '../protocol/fec.js';
import type { PublicKey } from '../protocol/keys.js';
import type { ReceiverLimits } from '../protocol/limits.js';
import { errorFields, type Logger } from '../protocol/log.js';
import type { VerifiedManifest } from '../protocol/manifest.js';
import type { Channel, Transport } from '../transport/transport.js';
import type { Installer } from './installer.js';
import { Receiver, type ReceiverEvent, type ReceiverStats } from './receiver/receiver.js';
import { limitRefusals } from './refusal-log.js';
import { SpillAssembler } from './spill-assembler.js';
import { sha256File, type InstalledRecord, type Store } from './store.js';
import { hex } from '../protocol/hex.js';

export interface AgentModel {
  model: string;
  channel: Channel;
  installer: Installer;
}

export interface AgentInit {
  models: AgentModel[];
  trusted: readonly PublicKey[];
  store: Store;
  transport: Transport;
  log: Logger;
  limits?: ReceiverLimits;
  /** Unix seconds; injectable for tests of expiry. */
  now?: () => number;
  /** First delay before retrying a failed install, ms (default 30 s; doubles up to 15 min). */
  retryBaseMs?: number;
}

export interface AgentProgress {
  model: string;
  version: string;
  seq: number;
  symbols: number;
  symbolsNeeded: number;
  segmentsDone: number;
  segments: number;
}

export interface AgentEvents {
  installed: [InstalledRecord];
  rejected: [{ model: string; releaseId: string; error: FwcastError }];
  failed: [{ model: string; error: Error }];
}

class ModelWorker {
  readonly receiver: Receiver;
  readonly retryBaseMs: number;
  #assembler: SpillAssembler | undefined;
  #installing = false;
  #flusher: NodeJS.Timeout;
  /** This model's own codec: a decoder trap recycles it without touching other models' transfers. */
  #codec = new RaptorqCodec();

  constructor(readonly spec: AgentModel, private readonly agent: Agent, private readonly log: Logger, installed: InstalledRecord | undefined, init: AgentInit) {
    this.retryBaseMs = init.retryBaseMs ?? 30_000;
    // What was received reaches the disk at least four times a second, whatever the rate.
    this.#flusher = setInterval(() => this.#assembler?.flush(), 250);
    this.#flusher.unref();
    this.receiver = new Receiver({
      model: spec.model,
      trusted: init.trusted,
      ...(installed ? { installedSeq: installed.seq } : {}),
      ...(init.limits ? { limits: init.limits } : {}),
      assemblerFor: (release) => this.#openTransfer(release),
    });
  }

  /** Symbols go to disk in the store: memory stays flat, and a restart resumes. */
  #openTransfer(release: VerifiedManifest): SpillAssembler {
    const releaseId = hex(release.releaseId);
    this.agent.store.removeStaleTransfers(this.spec.model, releaseId);
    this.#assembler?.close();
    const assembler = new SpillAssembler(this.agent.store.transferDir(releaseId), release.manifest, this.#codec);
    this.#assembler = assembler;
    if (assembler.completed.size > 0 || assembler.resumedSymbols > 0) {
      const m = release.manifest;
      this.log.event('release.resumed', {
        model: m.model, version: m.version, seq: m.seq, release: releaseId,
        segmentsDone: assembler.completed.size, segments: m.segments.length, symbolsOnDisk: assembler.resumedSymbols,
      }, `resuming ${m.version}: ${assembler.completed.size}/${m.segments.length} segments done, ${assembler.resumedSymbols} symbols on disk`);
    }
    return assembler;
  }

  onDatagram(data: Uint8Array, now: number, from: string): void {
    for (const event of this.receiver.push(data, now, from)) this.#handle(event);
  }

  #handle(event: ReceiverEvent): void {
    switch (event.kind) {
      case 'rejected':
        this.log.event('release.refused', { model: this.spec.model, release: event.releaseId, ...errorFields(event.error), ...event.error.facts },
          `rejected release ${event.releaseId}: ${event.error.name}: ${event.error.message}`);
        this.agent.emit('rejected', { model: this.spec.model, releaseId: event.releaseId, error: event.error });
        break;
      case 'accepted': {
        const m = event.release.manifest;
        this.log.event('release.accepted', {
          model: m.model, version: m.version, seq: m.seq, release: hex(event.release.releaseId), imageSize: m.imageSize, segments: m.segments.length, kid: hex(event.release.kid),
        }, `receiving ${m.model} ${m.version} (seq ${m.seq}, ${m.imageSize} bytes in ${m.segments.length} segments), signed by key ${hex(event.release.kid)}`);
        break;
      }
      case 'segment':
        break;
      case 'complete': {
        // Every segment has matched its signed SHA-256: the network has nothing more to give.
        const m = event.release.manifest;
        this.log.event('release.received', { model: m.model, version: m.version, seq: m.seq, release: hex(event.release.releaseId), segments: m.segments.length },
          `received ${m.model} ${m.version} (seq ${m.seq}): all ${m.segments.length} segments match their signed digests`);
        void this.#install(event.release);
        break;
      }
    }
  }

  async #install(release: VerifiedManifest): Promise<void> {
    const assembler = this.#assembler;
    this.#assembler = undefined;
    if (!assembler || this.#installing) return;
    this.#installing = true;
    const m = release.manifest;
    const releaseId = hex(release.releaseId);
    try {
      assembler.close();
      // Its decoders lived only during add(): the codec's grown WASM memory goes back until the next transfer.
      this.#codec.recycle();
      const sha256 = await sha256File(assembler.imagePath);
      if (sha256 !== hex(m.imageSha256)) {
        assembler.destroy();
        throw new DigestMismatchError(`image ${m.version} decoded to SHA-256 ${sha256}, the manifest says ${hex(m.imageSha256)}`);
      }
      const imagePath = this.agent.store.keepRelease(m.model, releaseId, assembler.imagePath, release.signed);
      assembler.destroy();
      this.log.event('release.verified', { model: m.model, version: m.version, seq: m.seq, release: releaseId, sha256, installer: this.spec.installer.description },
        `verified ${m.model} ${m.version} (seq ${m.seq}) sha256 ${sha256}; installing: ${this.spec.installer.description}`);
      // Verified and kept: from here on a failed install is retried from the kept image, not received again.
      this.receiver.abandon('install-pending');
      await this.#deliver(release, imagePath, sha256, 0);
    } catch (err) {
      this.receiver.abandon('install-failed');
      this.log.event('release.not-installed', { model: m.model, version: m.version, seq: m.seq, release: releaseId, ...errorFields(err) },
        `${m.model} ${m.version} (seq ${m.seq}) was not installed: ${(err as Error).name}: ${(err as Error).message}`);
      this.agent.emit('failed', { model: m.model, error: err as Error });
    } finally {
      this.#installing = false;
    }
  }

  /** Runs the installer; on failure tries again later (30 s, doubling to 15 min) until a newer release is installed. */
  async #deliver(release: VerifiedManifest, imagePath: string, sha256: string, attempt: number): Promise<void> {
    const m = release.manifest;
    if ((this.receiver.installedSeq ?? -1) >= m.seq || this.agent.signal.aborted) return;
    let reported = -1;
    try {
      await this.spec.installer.install({
        imagePath, model: m.model, version: m.version, seq: m.seq, sha256, signal: this.agent.signal,
        onProgress: (done, total) => {
          const tenth = Math.floor((10 * done) / Math.max(total, 1));
          if (tenth > reported) {
            reported = tenth;
            this.log.event('release.installing', { model: m.model, version: m.version, seq: m.seq, percent: tenth * 10, done, total }, `installing ${m.version}: ${tenth * 10}%`);
          }
        },
      });
    } catch (err) {
      const delay = Math.min(this.retryBaseMs * 2 ** attempt, 15 * 60_000);
      this.log.event('release.install-failed', {
        model: m.model, version: m.version, seq: m.seq, release: hex(release.releaseId), ...errorFields(err), attempt: attempt + 1, retryInSeconds: delay / 1000,
      }, `install of ${m.model} ${m.version} (seq ${m.seq}) failed: ${(err as Error).name}: ${(err as Error).message}; retrying in ${delay / 1000} s`);
      this.agent.emit('failed', { model: m.model, error: err as Error });
      const timer = setTimeout(() => void this.#deliver(release, imagePath, sha256, attempt + 1), delay);
      this.agent.signal.addEventListener('abort', () => clearTimeout(timer), { once: true });
      return;
    }
    const releaseId = hex(release.releaseId);
    const record: InstalledRecord = {
      model: m.model, seq: m.seq, version: m.version, sha256, releaseId,
      installedAt: new Date().toISOString(), path: this.spec.installer.target ?? imagePath,
    };
    this.agent.store.recordInstalled(record);
    this.agent.store.pruneReleases(m.model, releaseId);
    this.receiver.markInstalled(release);
    this.log.event('release.installed', { model: m.model, version: m.version, seq: m.seq, release: releaseId, sha256, path: record.path },
      `installed ${m.model} ${m.version} (seq ${m.seq}) at ${record.path}`);
    this.agent.emit('installed', record);
  }

  progress(): AgentProgress | undefined {
    const release = this.receiver.current;
    const p = this.receiver.progress();
    if (!release || !p) return undefined;
    return { model: this.spec.model, version: release.manifest.version, seq: release.manifest.seq, ...p };
  }

  close(): void {
    clearInterval(this.#flusher);
    this.receiver.close();
    this.#assembler?.close();
    this.#assembler = undefined;
  }
}

export class Agent extends EventEmitter<AgentEvents> {
  readonly store: Store;
  #init: AgentInit;
  #workers: ModelWorker[] = [];
  #abort = new AbortController();

  constructor(init: AgentInit) {
    super();
    if (init.models.length === 0) throw new TypeError('models: the agent needs at least one model');
    if (init.trusted.length === 0) throw new TypeError('trusted: the agent needs at least one trusted public key');
    this.#init = init;
    this.store = init.store;
  }

  /** Aborted when the agent stops: installers in progress see it. */
  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  async start(): Promise<void> {
    const now = this.#init.now ?? (() => Date.now() / 1000);
    for (const spec of this.#init.models) {
      const log = limitRefusals(this.#init.log.child(`agent:${spec.model}`), spec.model);
      const installed = this.store.installed(spec.model);
      const worker = new ModelWorker(spec, this, log, installed, this.#init);
      this.#workers.push(worker);
      await this.#init.transport.join(spec.channel, (data, from) => worker.onDatagram(data, now(), from), this.#abort.signal);
      log.event('agent.listening', {
        model: spec.model, channel: spec.channel.name, group: spec.channel.group, port: spec.channel.port, transport: this.#init.transport.description,
        installedVersion: installed?.version, installedSeq: installed?.seq,
      }, `listening on ${spec.channel.name} [${spec.channel.group}]:${spec.channel.port} via ${this.#init.transport.description}` +
        (installed ? `; installed: ${installed.version} (seq ${installed.seq})` : '; nothing installed yet'));
    }
  }

  progress(): AgentProgress[] {
    return this.#workers.flatMap((w) => w.progress() ?? []);
  }

  stats(): Record<string, ReceiverStats> {
    return Object.fromEntries(this.#workers.map((w) => [w.spec.model, w.receiver.stats]));
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    for (const w of this.#workers) w.close();
    await this.#init.transport.close();
  }
}
