/**
 * The device agent: for each configured model it joins the model's channel,
 * feeds datagrams to a Receiver, writes decoded segments to the store, checks
 * the whole image against the signed digest, runs the installer and records
 * the installed sequence. It never sends anything back.
 */
import { EventEmitter } from 'node:events';
import { existsSync, rmSync, statfsSync } from 'node:fs';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { DigestMismatchError, FwcastError, StoreError } from '../protocol/errors.js';
import { encodeRootChain, ExpiredRootUpdateError, MAX_ROOT_CHAIN, trustRoot, verifyRootChain, type ChainResult, type TrustedRoot } from '../protocol/root.js';
import type { PublicKey } from '../protocol/keys.js';
import type { ReceiverLimits } from '../protocol/limits.js';
import { errorFields, type Logger } from '../protocol/log.js';
import type { VerifiedManifest } from '../protocol/manifest.js';
import type { Channel, Transport } from '../transport/transport.js';
import type { Installer } from './installer.js';
import { Receiver, type ReceiverEvent, type ReceiverStats } from './receiver/receiver.js';
import { limitRefusals } from '../cli/refusal-log.js';
import { RaptorqCodec } from '../protocol/fec.js';
import { SpillAssembler } from './spill-assembler.js';
import { StorageThread, type ThreadedAssembler } from './threaded-assembler.js';
import { sha256File, type InstalledRecord, type Store } from './store.js';
import { hex } from '../protocol/hex.js';
import { RolledBackError, TriedInstall, type InstallSteps } from './install-steps.js';
import { nextAction, type LifecycleAction } from './install-lifecycle.js';
import type { VerifiedHalt } from '../protocol/halt.js';
import type { DeviceRollout } from '../protocol/rollout.js';
import { RECHECK_SECONDS, RolloutGate } from './rollout-gate.js';
import { defaultDeviceId } from './rollout-config.js';
import type { DecryptionKey } from '../protocol/encryption.js';
import { keepEncryptedRelease, vetEncryptedRelease } from './decrypting-image.js';
import { DeltaLane, type AppliedDelta, type ChannelCount } from './delta-lane.js';

export interface AgentModel {
  model: string;
  channel: Channel;
  installer: Installer;
  /** Try each install before keeping it (install-steps.ts); without, an install is kept at once. */
  steps?: InstallSteps;
}

export interface AgentInit {
  models: AgentModel[];
  /** Publisher keys trusted as they are (`--key`); unused with a root. */
  trusted: readonly PublicKey[];
  /**
   * The provisioned root of trust (`--root`, a signed root document): manifests
   * are authorized by it, or by a newer root verified from it (ROOT datagrams),
   * which the store keeps.
   */
  root?: Uint8Array;
  store: Store;
  transport: Transport;
  log: Logger;
  limits?: ReceiverLimits;
  /** Unix seconds; injectable for tests of expiry. */
  now?: () => number;
  /** First delay before retrying a failed install, ms (default 30 s; doubles up to 15 min). */
  retryBaseMs?: number;
  /**
   * Store and decode in a thread of each model's own (threaded-assembler.ts):
   * the socket is read while segments decode, so a fast carousel loses
   * nothing to the agent itself, for about 10 MiB more resident memory.
   * Default: in the receiving thread.
   */
  storageThread?: boolean;
  /** This device's id, cohorts and maintenance windows for staged rollout (SPEC §17); default: no cohorts, no windows, the host's id. */
  rollout?: DeviceRollout;
  /** Longest wait before a waiting release is looked at again, seconds (default RECHECK_SECONDS). */
  rolloutRecheckSeconds?: number;
  /** Confidential firmware: the device's X25519 key and group keys that open encrypted releases (decrypting-image.ts). */
  decryptionKeys?: readonly DecryptionKey[];
  /** Relay mode: an encrypted release this device holds no key for is kept as ciphertext and relayed (event `kept`), not refused. */
  relaying?: boolean;
  /** How long a refused full image waits for its delta to be heard on the sub-channel before it is taken (default 60 s). */
  deltaWaitMs?: number;
}

/** A transfer's assembler: in this thread, or handing over to the storage thread. */
type TransferAssembler = SpillAssembler | ThreadedAssembler;

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
  /** A newer root of trust is in force (`rootVersion`). */
  root: [{ rootVersion: number }];
  /** A verified halt heard for the first time (kept in the rollout gate). */
  halt: [{ model: string; releaseId: string }];
  /** Relay mode: an encrypted release this device cannot open is kept for relaying. */
  kept: [{ model: string; releaseId: string }];
}

/** What an install needs of a release: a verified manifest, or what the store's lifecycle record kept of one. */
interface CandidateRelease {
  manifest: Pick<VerifiedManifest['manifest'], 'model' | 'version' | 'seq' | 'imageSha256' | 'rollout' | 'encryption' | 'expires'>;
  releaseId: Uint8Array;
  signed?: Uint8Array;
}

/** A complete release on its way to being installed. */
interface Candidate {
  release: CandidateRelease;
  id: string;
  seq: number;
  /** Until it is verified and kept: the transfer that holds its image (or the image rebuilt from a delta). */
  assembler?: TransferAssembler | AppliedDelta;
  /** Once verified and kept in the store. */
  kept?: { imagePath: string; sha256: string };
  /** Install attempts that failed so far. */
  attempt: number;
  /** A tried install the agent resumes at start: where it stood (install-lifecycle.ts nextAction). */
  resume?: LifecycleAction;
}

/**
 * One model's receiver, transfers and installs. Installs run one at a time;
 * while one runs, the newest complete release waits in `#next` (an older one
 * is dropped), and runs as soon as the running install ends. A failed install
 * is offered again after a back-off, unless something newer came meanwhile.
 * So an older release is never installed after a newer one, and nothing that
 * a transfer or an install still uses is deleted.
 */
class ModelWorker {
  readonly receiver: Receiver;
  /** Deltas from the installed release, on its sub-channel (delta-lane.ts). */
  readonly delta: DeltaLane;
  /** What the model's channel delivered. */
  readonly count: ChannelCount;
  readonly retryBaseMs: number;
  /** The transfer being received, if any. */
  #receiving: { id: string; assembler: TransferAssembler } | undefined;
  #running: Candidate | undefined;
  #next: Candidate | undefined;
  #retry: { candidate: Candidate; timer: NodeJS.Timeout } | undefined;
  #acceptedAt = 0;
  /** When handling the current datagram began, while one is handled: the turn of the loop that may complete a release. */
  #turnStarted: number | undefined;
  /** Set while the store fails: its errors are logged once, then counted until it works again. */
  #storeDown: { failures: number } | undefined;
  /** Spill files, decoding and image writes, off the thread that reads the socket (threaded-assembler.ts), if chosen. */
  #storage: StorageThread | undefined;
  /** Otherwise: this model's own codec (a decoder trap recycles it without touching other models'), and a flush timer. */
  #codec: RaptorqCodec | undefined;
  #flusher: NodeJS.Timeout | undefined;
  /** With steps configured: the install lifecycle (install-steps.ts). */
  readonly #tried: TriedInstall | undefined;
  /** Wakes #pump when the waiting release's rollout time comes (rollout-gate.ts). */
  #rolloutTimer: NodeJS.Timeout | undefined;

  constructor(readonly spec: AgentModel, private readonly agent: Agent, private readonly log: Logger, installed: InstalledRecord | undefined, init: AgentInit) {
    this.retryBaseMs = init.retryBaseMs ?? 30_000;
    if (init.storageThread) {
      this.#storage = new StorageThread();
    } else {
      this.#codec = new RaptorqCodec();
      // What was received reaches the disk at least four times a second, whatever the rate.
      this.#flusher = setInterval(() => this.#flush(), 250);
      this.#flusher.unref();
    }
    const root = agent.root;
    this.count = { model: spec.model, channel: spec.channel.name, datagrams: 0, bytes: 0 };
    this.delta = new DeltaLane({
      model: spec.model, store: agent.store, transport: init.transport, log, port: spec.channel.port, trusted: init.trusted,
      root: () => agent.root, ...(init.limits ? { limits: init.limits } : {}), signal: agent.signal, now: init.now ?? (() => Date.now() / 1000),
      onImage: (release, image) => this.#offer({ release, id: hex(release.releaseId), seq: release.manifest.seq, assembler: image, attempt: 0 }),
      onFallback: (id) => this.receiver.forget(id),
      onRoot: (result) => agent.rootVerified(result, spec.model),
      ...(init.deltaWaitMs !== undefined ? { waitMs: init.deltaWaitMs } : {}),
    });
    this.receiver = new Receiver({
      model: spec.model,
      trusted: init.trusted,
      ...(root ? { root } : {}),
      ...(installed ? { installedSeq: installed.seq } : {}),
      ...(init.limits ? { limits: init.limits } : {}),
      assemblerFor: (release) => this.#openTransfer(release),
      vet: (release) => vetEncryptedRelease(release, init.decryptionKeys ?? [], init.relaying ?? false),
      onLateEvent: (e) => this.#handle(e),
      objectOf: (release) => this.delta.choose(release),
    });
    if (spec.steps) {
      this.#tried = new TriedInstall({
        model: spec.model, steps: spec.steps, store: agent.store, log, signal: agent.signal, now: init.now ?? (() => Date.now() / 1000),
        isHalted: (id) => agent.rollout.isHalted(spec.model, id),
      });
    }
    // Refused for good, not only until restart.
    for (const bad of agent.store.badReleases(spec.model)) this.receiver.abandon(bad.releaseId, 'rolled-back');
    for (const id of agent.rollout.halts(spec.model)) this.receiver.abandon(id, 'halted');
  }

  /** At start: an install the last run left between received and committed goes on where it stood. */
  resumeTried(): void {
    const action = this.#tried?.resume() ?? 'none';
    const r = this.#tried?.record;
    if (action === 'none' || !r) return;
    const rel = r.release;
    // Not installed yet and its image gone: it is received again from the air, as any release.
    if (action === 'install' && !existsSync(rel.imagePath)) return;
    this.receiver.abandon(rel.releaseId, 'install-pending');
    this.#offer({
      release: { manifest: { model: rel.model, version: rel.version, seq: rel.seq, imageSha256: Buffer.from(rel.sha256, 'hex') }, releaseId: Buffer.from(rel.releaseId, 'hex') },
      id: rel.releaseId, seq: rel.seq, kept: { imagePath: rel.imagePath, sha256: rel.sha256 }, attempt: 0, resume: action,
    });
  }

  /** Symbols go to disk in the store: memory stays flat, and a restart resumes. */
  #openTransfer(release: VerifiedManifest): TransferAssembler {
    const releaseId = hex(release.releaseId);
    const inUse = new Set([releaseId]);
    for (const c of [this.#running, this.#next]) if (c?.assembler) inUse.add(c.id);
    this.agent.store.removeStaleTransfers(this.spec.model, inUse);
    const dir = this.agent.store.transferDir(releaseId);
    const assembler = this.#storage ? this.#storage.open(dir, release.manifest) : new SpillAssembler(dir, release.manifest, this.#codec);
    this.#receiving = { id: releaseId, assembler };
    if (assembler.completed.size > 0 || assembler.resumedSymbols > 0) {
      const m = release.manifest;
      this.log.event('release.resumed', {
        model: m.model, version: m.version, seq: m.seq, release: releaseId,
        segmentsDone: assembler.completed.size, segments: m.segments.length, symbolsOnDisk: assembler.resumedSymbols,
      }, `resuming ${m.version}: ${assembler.completed.size}/${m.segments.length} segments done, ${assembler.resumedSymbols} symbols on disk`);
    }
    return assembler;
  }

  /** Writes what the in-thread assembler batched (the storage thread flushes its own). */
  #flush(): void {
    const assembler = this.#receiving?.assembler;
    if (!(assembler instanceof SpillAssembler)) return;
    try {
      if (assembler.flush() > 0) this.#storeWorks();
    } catch (err) {
      if (!(err instanceof StoreError)) throw err;
      this.#storeFailed(err);
    }
  }

  /** Logs the first failure of the store with what to free; later ones are counted until it works again. */
  #storeFailed(error: StoreError): void {
    if (this.#storeDown) {
      this.#storeDown.failures++;
      return;
    }
    this.#storeDown = { failures: 1 };
    const free = freeBytes(this.agent.store.dir);
    this.log.event('store.failed', { model: this.spec.model, store: this.agent.store.dir, path: error.facts.path, code: error.facts.code, ...errorFields(error), freeBytes: free },
      `the store cannot be written: ${error.message}` + (free === undefined ? '' : ` (${free} bytes free in ${this.agent.store.dir})`) + '; reception goes on by itself once it can write again');
  }

  #storeWorks(): void {
    if (!this.#storeDown) return;
    this.log.event('store.recovered', { model: this.spec.model, store: this.agent.store.dir, failures: this.#storeDown.failures },
      `the store works again after ${this.#storeDown.failures} failed writes; reception goes on`);
    this.#storeDown = undefined;
  }

  onDatagram(data: Uint8Array, now: number, from: string): void {
    this.count.datagrams++;
    this.count.bytes += data.length;
    this.#turnStarted = performance.now();
    try {
      for (const event of this.receiver.push(data, now, from)) this.#handle(event);
    } finally {
      this.#turnStarted = undefined;
    }
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
        this.#acceptedAt = performance.now();
        this.agent.eventLoop.reset();
        this.log.event('release.accepted', {
          model: m.model, version: m.version, seq: m.seq, release: hex(event.release.releaseId), imageSize: m.imageSize, segments: m.segments.length, kid: hex(event.release.kid),
        }, `receiving ${m.model} ${m.version} (seq ${m.seq}, ${m.imageSize} bytes in ${m.segments.length} segments), signed by key ${hex(event.release.kid)}`);
        // Halted, or for other cohorts: not worth receiving.
        const d = this.agent.rollout.decide(event.release, this.agent.now());
        if (!d.install) this.receiver.abandon(hex(event.release.releaseId), d.reason === 'halted' ? 'halted' : 'not-in-cohort');
        break;
      }
      case 'halt':
        this.#halted(event.halt);
        break;
      case 'segment':
        this.#storeWorks();
        break;
      case 'store-error':
        this.#storeFailed(event.error);
        break;
      case 'store-ok':
        this.#storeWorks();
        break;
      case 'root':
        this.agent.rootVerified(event.result, this.spec.model);
        break;
      case 'root-refused':
        this.log.event('root.refused', { model: this.spec.model, chain: event.chainId, ...errorFields(event.error), ...event.error.facts },
          `refused root chain ${event.chainId}: ${event.error.name}: ${event.error.message}`);
        break;
      case 'complete': {
        // Every segment has matched its signed SHA-256: the network has nothing more to give.
        const m = event.release.manifest;
        const id = hex(event.release.releaseId);
        const seconds = Math.round(performance.now() - this.#acceptedAt) / 1000;
        // The delay monitor sees a stall only when the loop turns again: the one that completed the release is this turn's.
        const turnMs = this.#turnStarted === undefined ? 0 : performance.now() - this.#turnStarted;
        const stallMs = Math.round(Math.max(this.agent.eventLoop.max / 1e6, turnMs) * 100) / 100;
        this.log.event('release.received', { model: m.model, version: m.version, seq: m.seq, release: id, segments: m.segments.length, seconds, stallMs },
          `received ${m.model} ${m.version} (seq ${m.seq}) in ${seconds} s: all ${m.segments.length} segments match their signed digests; longest event-loop stall ${stallMs} ms`);
        const assembler = this.#receiving?.id === id ? this.#receiving.assembler : undefined;
        this.#receiving = undefined;
        // The receiver is free for a newer release; repeats of this one are counted, not received again.
        this.receiver.abandon(id, 'install-pending');
        if (assembler) this.#offer({ release: event.release, id, seq: m.seq, assembler, attempt: 0 });
        break;
      }
    }
  }

  /** Queues a complete release for install, unless something at least as new is installed, running or queued. */
  #offer(c: Candidate): void {
    const bad = this.agent.store.badReleases(this.spec.model).find((b) => b.releaseId === c.id);
    if (bad) {
      const m = c.release.manifest;
      c.assembler?.destroy();
      this.receiver.abandon(c.id, 'rolled-back');
      this.log.event('lifecycle.bad-release', { model: m.model, version: m.version, seq: m.seq, release: c.id, rolledBackAt: bad.at, cause: bad.cause },
        `${m.model} ${m.version} (seq ${m.seq}) was rolled back on this device at ${bad.at} (${bad.cause}): not installed again`);
      return;
    }
    const newest = Math.max(this.receiver.installedSeq ?? -1, this.#running?.seq ?? -1, this.#next?.seq ?? -1);
    // A resumed install that is activated already ends in commit or rollback, even if it was recorded as installed just before a power cut.
    const activated = c.resume !== undefined && c.resume !== 'install';
    if (c.seq <= newest && !activated) return this.#discard(c, newest);
    if (this.#next) this.#discard(this.#next, c.seq);
    if (this.#retry && this.#retry.candidate.seq < c.seq) {
      clearTimeout(this.#retry.timer);
      this.#discard(this.#retry.candidate, c.seq);
      this.#retry = undefined;
    }
    this.#next = c;
    void this.#pump();
  }

  /** Drops a release a newer one replaces: its transfer goes; a kept image goes at the next prune. */
  #discard(c: Candidate, newerSeq: number): void {
    c.assembler?.destroy();
    c.assembler = undefined;
    const m = c.release.manifest;
    this.log.event('release.superseded', { model: m.model, version: m.version, seq: m.seq, release: c.id, newerSeq },
      `${m.model} ${m.version} (seq ${m.seq}) will not be installed: seq ${newerSeq} is newer`);
  }

  /** Runs the queued install, if any and none is running; then the next one. */
  async #pump(): Promise<void> {
    if (this.#running || !this.#next || this.agent.signal.aborted) return;
    const c = this.#next;
    // A tried install resumed after a restart goes on where it stood: its rollout time had come.
    if (c.resume === undefined && this.#waitForRollout(c)) return;
    this.#next = undefined;
    this.#running = c;
    try {
      await this.#install(c);
    } finally {
      this.#running = undefined;
    }
    void this.#pump();
  }

  async #install(c: Candidate): Promise<void> {
    const m = c.release.manifest;
    try {
      if (!c.kept) await this.#verifyAndKeep(c);
    } catch (err) {
      if (err instanceof StoreError) {
        // Not the release's fault: verify and keep it again later, from the transfer still on disk.
        this.#storeFailed(err);
        return this.#retryLater(c, err);
      }
      c.assembler?.destroy();
      this.receiver.abandon(c.id, 'install-failed');
      this.log.event('release.not-installed', { model: m.model, version: m.version, seq: m.seq, release: c.id, ...errorFields(err) },
        `${m.model} ${m.version} (seq ${m.seq}) was not installed: ${(err as Error).name}: ${(err as Error).message}`);
      this.agent.emit('failed', { model: m.model, error: err as Error });
      return;
    }
    // Kept for relaying only: an encrypted release this device holds no key for.
    if (!c.kept) return;
    const tried = this.#tried;
    // A tried install resumed past its installer is activated already: it ends in commit or rollback, whatever came meanwhile.
    const settling = c.resume !== undefined && c.resume !== 'install';
    if (this.agent.signal.aborted) return;
    if (!settling) {
      // Something newer is complete already: install that instead.
      if (this.#next && this.#next.seq > c.seq) return this.#discard(c, this.#next.seq);
      if ((this.receiver.installedSeq ?? -1) >= m.seq) return;
    }
    const { imagePath, sha256 } = c.kept!;
    const keep = (): void => {
      const record: InstalledRecord = {
        model: m.model, seq: m.seq, version: m.version, sha256, releaseId: c.id,
        installedAt: new Date().toISOString(), path: this.spec.installer.target ?? imagePath,
      };
      this.agent.store.recordInstalled(record);
      this.agent.store.pruneReleases(m.model, c.id);
      this.receiver.markInstalled(c.release);
      // A sub-channel that cannot be joined only means full images: the model's channel carries them.
      this.delta.follow(record).catch(() => {});
      this.log.event('release.installed', { model: m.model, version: m.version, seq: m.seq, release: c.id, sha256, path: record.path },
        `installed ${m.model} ${m.version} (seq ${m.seq}) at ${record.path}`);
      this.agent.emit('installed', record);
    };
    let reported = -1;
    try {
      if (!settling) await this.#runInstaller(c, tried, imagePath, sha256, (done, total) => {
        const tenth = Math.floor((10 * done) / Math.max(total, 1));
        if (tenth > reported) {
          reported = tenth;
          this.log.event('release.installing', { model: m.model, version: m.version, seq: m.seq, percent: tenth * 10, done, total }, `installing ${m.version}: ${tenth * 10}%`);
        }
      });
      if (!tried) return keep();
      const outcome = await tried.settle(keep, this.agent.store.installed(m.model));
      if (outcome === 'rolled-back') this.#rolledBack(c);
    } catch (err) {
      if (DEVICE_REFUSED.has(deviceStateOf(err) ?? '')) return this.#deviceRefused(c, err as Error);
      // A tried install goes on from where its lifecycle stands.
      const r = tried?.record;
      const action = r?.release.releaseId === c.id ? nextAction(r) : 'none';
      if (action === 'none') delete c.resume;
      else c.resume = action;
      this.#retryLater(c, err);
    }
  }

  /** The installer, framed by the lifecycle's received and installing when the install is tried. */
  async #runInstaller(c: Candidate, tried: TriedInstall | undefined, imagePath: string, sha256: string, onProgress: (done: number, total: number) => void): Promise<void> {
    const m = c.release.manifest;
    if (tried && c.resume === undefined) tried.received({ model: m.model, version: m.version, seq: m.seq, releaseId: c.id, imagePath, sha256 });
    tried?.installStarted();
    try {
      await this.spec.installer.install({ imagePath, model: m.model, version: m.version, seq: m.seq, sha256, signal: this.agent.signal, onProgress });
    } catch (err) {
      tried?.installFailed();
      throw err;
    }
  }

  /**
   * The device itself tried the image and went back (an MCU whose MCUboot
   * test boot failed): a bad release, as if rolled back here, since every
   * retry would boot the device into it again.
   */
  #deviceRefused(c: Candidate, err: Error): void {
    const m = c.release.manifest;
    const state = deviceStateOf(err)!;
    try {
      this.agent.store.markBad(m.model, { releaseId: c.id, seq: m.seq, version: m.version, at: new Date().toISOString(), cause: `device-${state}` });
    } catch (storeErr) {
      // Not kept: the installer's own memory still stops retries until the agent restarts.
      const error = StoreError.wrap(storeErr, this.agent.store.dir, 'remember a bad release in');
      if (!(error instanceof StoreError)) throw error;
      this.log.event('store.failed', { model: m.model, store: this.agent.store.dir, path: error.facts.path, code: error.facts.code, ...errorFields(error) },
        `cannot remember ${m.version} as bad in the store (${error.message}); it is not retried until the agent restarts`);
    }
    this.log.event('lifecycle.rolled-back', {
      model: m.model, version: m.version, seq: m.seq, release: c.id, cause: `device-${state}`, detail: `${err.name}: ${err.message}`, rollbackOk: state !== 'self-confirmed',
    }, `${m.model} ${m.version} (seq ${m.seq}) failed its test on the device (${state}): not installed again`);
    this.#rolledBack(c);
  }

  /** A tried release was rolled back: refused for good, its kept image removed; the installed one stays. */
  #rolledBack(c: Candidate): void {
    const m = c.release.manifest;
    this.receiver.abandon(c.id, 'rolled-back');
    const kept = this.agent.store.keptRelease(m.model, c.id);
    for (const file of [kept.image, kept.manifest]) rmSync(file, { force: true });
    this.agent.emit('failed', { model: m.model, error: new RolledBackError(`${m.model} ${m.version} (seq ${m.seq}) was rolled back`, { seq: m.seq, release: c.id }) });
  }

  /**
   * Staged rollout: true while `c` must wait for its time (a timer brings it
   * back, or a newer release replaces it), or once it was dropped for good.
   */
  #waitForRollout(c: Candidate): boolean {
    clearTimeout(this.#rolloutTimer);
    const now = this.agent.now();
    const m = c.release.manifest;
    // A release that expired while it waited for its time is not installed: its signer said until when it may be.
    if (m.expires !== undefined && m.expires <= now) {
      this.#next = undefined;
      c.assembler?.destroy();
      this.receiver.abandon(c.id, 'expired');
      this.log.event('rollout.skipped', { model: m.model, version: m.version, seq: m.seq, release: c.id, reason: 'expired' },
        `${m.model} ${m.version} (seq ${m.seq}) expired at ${new Date(m.expires * 1000).toISOString()} before its install time: not installed`);
      return true;
    }
    const d = this.agent.rollout.decide(c.release, now);
    if (!d.install) {
      this.#next = undefined;
      c.assembler?.destroy();
      this.receiver.abandon(c.id, d.reason === 'halted' ? 'halted' : 'not-in-cohort');
      return true;
    }
    if (d.at <= now) {
      this.agent.rollout.started(this.spec.model);
      return false;
    }
    this.#rolloutTimer = setTimeout(() => void this.#pump(), Math.min(d.at - now, this.agent.rolloutRecheckSeconds) * 1000);
    return true;
  }

  /** A verified halt for this model: kept, and the release it names goes, unless it is installed or installing. */
  #halted(v: VerifiedHalt): void {
    const id = hex(v.halt.releaseId);
    const isNew = this.agent.rollout.recordHalt(v);
    let effect = 'refused';
    if (this.#next?.id === id) {
      effect = 'dropped';
      // Even while another install runs: the gate now says never, and drops it.
      this.#waitForRollout(this.#next);
    } else if (this.#retry?.candidate.id === id) {
      effect = 'dropped';
      clearTimeout(this.#retry.timer);
      this.#retry.candidate.assembler?.destroy();
      this.#retry = undefined;
    } else if (this.#tried?.halted(id)) {
      // Being tried (installing or pending): rolled back before it is committed.
      effect = 'rolling-back';
    } else if (this.#running?.id === id || this.agent.store.installed(this.spec.model)?.releaseId === id) {
      effect = 'installed';
    }
    if (isNew) this.agent.emit('halt', { model: this.spec.model, releaseId: id });
    if (!isNew && effect === 'refused') return;
    this.log.event('halt.received', { model: this.spec.model, release: id, issued: v.halt.issued, kid: hex(v.kid), effect },
      `halt of ${this.spec.model} release ${id} (signed by key ${hex(v.kid)}): ${HALT_EFFECTS[effect]}`);
  }

  /** Hashes the received image against the signed digest and moves it into the store's kept releases. */
  async #verifyAndKeep(c: Candidate): Promise<void> {
    const m = c.release.manifest;
    const assembler = c.assembler!;
    // Decoders lived only during add(): the codec's grown WASM memory goes back until the next transfer.
    this.#codec?.recycle();
    let sha256: string;
    try {
      sha256 = await sha256File(assembler.imagePath);
    } catch (err) {
      throw StoreError.wrap(err, assembler.imagePath, 'read');
    }
    if (sha256 !== hex(m.imageSha256)) throw new DigestMismatchError(`image ${m.version} decoded to SHA-256 ${sha256}, the manifest says ${hex(m.imageSha256)}`);
    if (m.encryption) {
      // A candidate with a transfer came from the receiver: its release is a whole verified manifest.
      const opened = await keepEncryptedRelease(this.agent.store, c.release as VerifiedManifest, c.id, assembler.imagePath, this.agent.decryptionKeys, this.log);
      assembler.destroy();
      c.assembler = undefined;
      this.#storeWorks();
      if (!opened) return void this.agent.emit('kept', { model: m.model, releaseId: c.id });
      c.kept = opened;
      sha256 = opened.sha256;
    } else {
      const imagePath = this.agent.store.keepRelease(m.model, c.id, assembler.imagePath, c.release.signed!);
      assembler.destroy();
      c.assembler = undefined;
      c.kept = { imagePath, sha256 };
    }
    this.#storeWorks();
    this.log.event('release.verified', { model: m.model, version: m.version, seq: m.seq, release: c.id, sha256, installer: this.spec.installer.description },
      `verified ${m.model} ${m.version} (seq ${m.seq}) sha256 ${sha256}; installing: ${this.spec.installer.description}`);
  }

  /** Offers `c` again after 30 s, doubling up to 15 min, unless a newer release comes first. */
  #retryLater(c: Candidate, err: unknown): void {
    if (this.agent.signal.aborted) return;
    const m = c.release.manifest;
    const delay = Math.min(this.retryBaseMs * 2 ** c.attempt, 15 * 60_000);
    c.attempt++;
    this.receiver.abandon(c.id, 'install-failed');
    this.log.event('release.install-failed', {
      model: m.model, version: m.version, seq: m.seq, release: c.id, ...errorFields(err), deviceState: deviceStateOf(err), attempt: c.attempt, retryInSeconds: delay / 1000,
    }, `install of ${m.model} ${m.version} (seq ${m.seq}) failed: ${(err as Error).name}: ${(err as Error).message}; retrying in ${delay / 1000} s`);
    this.agent.emit('failed', { model: m.model, error: err as Error });
    const timer = setTimeout(() => {
      this.#retry = undefined;
      this.#offer(c);
    }, delay);
    this.#retry = { candidate: c, timer };
  }

  progress(): AgentProgress | undefined {
    const release = this.receiver.current;
    const p = this.receiver.progress();
    if (!release || !p) return undefined;
    return { model: this.spec.model, version: release.manifest.version, seq: release.manifest.seq, ...p };
  }

  async close(): Promise<void> {
    clearInterval(this.#flusher);
    clearTimeout(this.#rolloutTimer);
    this.delta.close();
    if (this.#retry) clearTimeout(this.#retry.timer);
    this.#retry = undefined;
    this.receiver.close();
    // What is received or complete stays on disk: the next start resumes or installs it.
    for (const c of [this.#running, this.#next]) c?.assembler?.close();
    this.#receiving = undefined;
    await this.#storage?.stop();
  }
}

/** What a verified halt did here (halt.received `effect`). */
const HALT_EFFECTS: Record<string, string> = {
  installed: 'already installed here, nothing to stop',
  dropped: 'the waiting release is dropped',
  refused: 'it will not be installed',
  'rolling-back': 'it is being tried: rolled back before it is committed',
};

/** What a device reports when it tried an image itself and did not keep it (MCUboot test-and-confirm): the release is bad. */
const DEVICE_REFUSED = new Set(['reverted', 'unconfirmed', 'self-confirmed']);

/** What a serial installer's error says it left on the device, if it says. */
function deviceStateOf(err: unknown): string | undefined {
  const state = (err as { deviceState?: unknown } | undefined)?.deviceState;
  return typeof state === 'string' ? state : undefined;
}

/** Bytes available to the agent on the file system of `dir`, if it can tell. */
function freeBytes(dir: string): number | undefined {
  try {
    const s = statfsSync(dir);
    return s.bavail * s.bsize;
  } catch {
    return undefined;
  }
}

export class Agent extends EventEmitter<AgentEvents> {
  readonly store: Store;
  #init: AgentInit;
  #workers: ModelWorker[] = [];
  #abort = new AbortController();
  /** How late the event loop runs (ns): a stall is time the socket is not read. Reset as each release is accepted. */
  readonly eventLoop = monitorEventLoopDelay({ resolution: 1 });

  #root: TrustedRoot | undefined;
  /** The signed roots verified after the provisioned one, oldest first: what the store keeps. */
  #rootChain: Uint8Array[] = [];
  /** Staged rollout and halts (rollout-gate.ts). */
  readonly rollout: RolloutGate;
  readonly rolloutRecheckSeconds: number;
  /** Unix seconds (AgentInit.now). */
  readonly now: () => number;

  constructor(init: AgentInit) {
    super();
    if (init.models.length === 0) throw new TypeError('models: the agent needs at least one model');
    if (init.trusted.length === 0 && !init.root) throw new TypeError('trusted: the agent needs at least one trusted public key, or a root');
    this.#init = init;
    this.store = init.store;
    this.now = init.now ?? (() => Date.now() / 1000);
    this.rollout = new RolloutGate(init.store.dir, init.rollout ?? { deviceId: defaultDeviceId(), cohorts: [], windows: [] }, init.log.child('agent:rollout'));
    this.rolloutRecheckSeconds = init.rolloutRecheckSeconds ?? RECHECK_SECONDS;
  }

  /** Keys that open encrypted releases (none: such releases are refused, or only relayed). */
  get decryptionKeys(): readonly DecryptionKey[] {
    return this.#init.decryptionKeys ?? [];
  }

  /** The root of trust in force, if the agent has one. */
  get root(): TrustedRoot | undefined {
    return this.#root;
  }

  /**
   * The chain this agent can vouch for, to carry onward (relay mode): the
   * provisioned root and every version verified after it, oldest first, so
   * a downstream agent provisioned with the same root walks it to the newest.
   */
  get rootChain(): Uint8Array | undefined {
    return this.#init.root ? encodeRootChain([this.#init.root, ...this.#rootChain].slice(-MAX_ROOT_CHAIN)) : undefined;
  }

  /** The provisioned root, brought forward by the chain the store kept. */
  #loadRoot(provisioned: Uint8Array, now: number): void {
    this.#root = trustRoot(provisioned);
    let source = 'provisioned';
    let kept: Uint8Array[] = [];
    try {
      kept = this.store.rootChain();
      if (kept.length > 0) {
        let result;
        try {
          result = verifyRootChain(this.#root, kept, now);
        } catch (err) {
          if (!(err instanceof ExpiredRootUpdateError)) throw err;
          result = err.result;
        }
        this.#root = result.root;
        this.#rootChain = kept;
        if (result.applied.length > 0) source = 'store';
      }
    } catch (err) {
      // A root provisioned anew (newer than the kept chain, or another root altogether): the kept chain is left aside.
      this.#init.log.event('root.refused', { chain: 'store', ...errorFields(err), ...(err instanceof FwcastError ? err.facts : {}) },
        `the root chain in the store does not follow from the provisioned root and is not used: ${(err as Error).message}`);
    }
    const doc = this.#root.signed.root;
    this.#init.log.event('root.trusted', { rootVersion: doc.version, expires: doc.expires, source },
      `trusting root version ${doc.version} (${source}), which expires at ${new Date(doc.expires * 1000).toISOString()}`);
  }

  /** A worker's receiver verified a newer root: kept in the store, and every model judges by it from now on. */
  rootVerified(result: ChainResult, model: string): void {
    const previous = this.#root;
    const doc = result.root.signed.root;
    if (previous && doc.version <= previous.signed.root.version) return;
    const now = (this.#init.now ?? (() => Date.now() / 1000))();
    this.#root = result.root;
    this.#rootChain = [...this.#rootChain, ...result.applied.map((s) => s.bytes)].slice(-MAX_ROOT_CHAIN);
    try {
      this.store.saveRootChain(this.#rootChain);
    } catch (err) {
      const error = StoreError.wrap(err, this.store.dir, 'keep the root chain in');
      if (!(error instanceof StoreError)) throw error;
      this.#init.log.event('store.failed', { model, store: this.store.dir, path: error.facts.path, code: error.facts.code, ...errorFields(error) },
        `the new root could not be kept in the store (${error.message}); it is in force until the agent restarts`);
    }
    this.#init.log.event('root.updated', { model, rootVersion: doc.version, previousVersion: previous?.signed.root.version ?? 0, expires: doc.expires, applied: result.applied.length },
      `root version ${doc.version} is now trusted (from ${previous?.signed.root.version}, heard on ${model}'s channel); it expires at ${new Date(doc.expires * 1000).toISOString()}`);
    for (const w of this.#workers) if (w.receiver.root !== result.root) w.receiver.setRoot(result.root, now);
    this.emit('root', { rootVersion: doc.version });
  }

  /** Aborted when the agent stops: installers in progress see it. */
  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  async start(): Promise<void> {
    this.eventLoop.enable();
    const now = this.#init.now ?? (() => Date.now() / 1000);
    if (this.#init.root) this.#loadRoot(this.#init.root, now());
    for (const spec of this.#init.models) {
      const log = limitRefusals(this.#init.log.child(`agent:${spec.model}`), spec.model);
      const installed = this.store.installed(spec.model);
      const worker = new ModelWorker(spec, this, log, installed, this.#init);
      this.#workers.push(worker);
      await this.#init.transport.join(spec.channel, (data, from) => worker.onDatagram(data, now(), from), this.#abort.signal);
      worker.resumeTried();
      log.event('agent.listening', {
        model: spec.model, channel: spec.channel.name, group: spec.channel.group, port: spec.channel.port, transport: this.#init.transport.description,
        installedVersion: installed?.version, installedSeq: installed?.seq,
      }, `listening on ${spec.channel.name} [${spec.channel.group}]:${spec.channel.port} via ${this.#init.transport.description}` +
        (installed ? `; installed: ${installed.version} (seq ${installed.seq})` : '; nothing installed yet'));
      await worker.delta.follow(installed);
    }
  }

  progress(): AgentProgress[] {
    return this.#workers.flatMap((w) => w.progress() ?? []);
  }

  /** Datagrams and bytes each joined channel delivered: the models' channels, then delta sub-channels. */
  channelCounts(): ChannelCount[] {
    return [...this.#workers.map((w) => ({ ...w.count })), ...this.#workers.flatMap((w) => w.delta.counts())];
  }

  stats(): Record<string, ReceiverStats> {
    return Object.fromEntries(this.#workers.map((w) => [w.spec.model, w.receiver.stats]));
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    this.eventLoop.disable();
    await Promise.all(this.#workers.map((w) => w.close()));
    await this.#init.transport.close();
  }
}
