/**
 * The agent's store directory:
 *
 *   state.json                  installed release per model (written atomically)
 *   incoming/<release>/         a transfer in progress (see spill-assembler.ts)
 *   releases/<model>/<release>.img, .cose
 *                               the last verified release: image and signed manifest
 *   releases/<model>/<release>.delta-<base release>
 *                               relay mode: a delta the release lists, verified, kept to
 *                               relay (relay-deltas.ts); removed with its release
 *   relay-deltas/<model>/<release>.<base release>/
 *                               relay mode: a delta being received (spill-assembler.ts)
 *   root-chain.cbor             the root versions verified after the provisioned root
 *                               (protocol/root.ts encodeRootChain; written atomically)
 *   lifecycle.json              per model: the install being tried (install-lifecycle.ts)
 *                               and the releases rolled back on this device (written atomically)
 *
 * Nothing in `releases/` or `state.json` is replaced except by rename, so a power
 * cut leaves the previous state intact.
 */
import { createHash } from 'node:crypto';
import { accessSync, constants, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ConfigError, StoreError } from '../protocol/errors.js';
import { decodeRootChain, encodeRootChain } from '../protocol/root.js';
import { LIFECYCLE_STATES, type LifecycleRecord } from './install-lifecycle.js';
import { fsyncDir, writeFileAtomic } from '../storage/durable-file.js';

export interface InstalledRecord {
  model: string;
  seq: number;
  version: string;
  sha256: string;
  releaseId: string;
  installedAt: string;
  path: string;
}

interface StateFile {
  format: 1;
  models: Record<string, InstalledRecord>;
}

/** A release rolled back on this device: never installed again. */
export interface BadRelease {
  releaseId: string;
  seq: number;
  version: string;
  /** ISO time of the rollback. */
  at: string;
  cause: string;
}

interface LifecycleFile {
  format: 1;
  models: Record<string, { record?: LifecycleRecord; bad: BadRelease[] }>;
}

/** Rolled-back releases remembered per model: far more than a channel carries at once. */
const MAX_BAD_RELEASES = 64;

export class Store {
  #state: StateFile;
  #lifecycle: LifecycleFile | undefined;

  constructor(readonly dir: string) {
    try {
      for (const sub of ['', 'incoming', 'releases']) mkdirSync(join(dir, sub), { recursive: true });
      accessSync(dir, constants.W_OK);
    } catch (err) {
      throw new ConfigError(`store directory ${dir} is not usable: ${(err as Error).message}`);
    }
    this.#state = this.#load();
  }

  #load(): StateFile {
    const path = join(this.dir, 'state.json');
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch {
      return { format: 1, models: {} };
    }
    const corrupt = (why: string): ConfigError => new ConfigError(`${path} is corrupt (${why}); restore it or remove it to forget installed versions`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw corrupt((err as Error).message);
    }
    const state = parsed as Partial<StateFile> | null;
    if (typeof state !== 'object' || state === null || state.format !== 1 || typeof state.models !== 'object' || state.models === null || Array.isArray(state.models)) {
      throw corrupt('unknown format');
    }
    return state as StateFile;
  }

  installed(model: string): InstalledRecord | undefined {
    return this.#state.models[model];
  }

  list(): InstalledRecord[] {
    return Object.values(this.#state.models);
  }

  recordInstalled(record: InstalledRecord): void {
    const next: StateFile = { format: 1, models: { ...this.#state.models, [record.model]: record } };
    writeFileAtomic(join(this.dir, 'state.json'), JSON.stringify(next, null, 2) + '\n');
    this.#state = next;
  }

  #lifecycleFile(): LifecycleFile {
    if (this.#lifecycle) return this.#lifecycle;
    const path = join(this.dir, 'lifecycle.json');
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch {
      return (this.#lifecycle = { format: 1, models: {} });
    }
    const corrupt = (why: string): ConfigError => new ConfigError(`${path} is corrupt (${why}); restore it, or remove it to forget the install being tried and the releases rolled back`);
    let parsed: LifecycleFile;
    try {
      parsed = JSON.parse(text) as LifecycleFile;
    } catch (err) {
      throw corrupt((err as Error).message);
    }
    if (typeof parsed !== 'object' || parsed === null || parsed.format !== 1 || typeof parsed.models !== 'object' || parsed.models === null) throw corrupt('unknown format');
    for (const [model, entry] of Object.entries(parsed.models)) {
      if (!Array.isArray(entry?.bad) || (entry.record !== undefined && !LIFECYCLE_STATES.includes(entry.record.state))) throw corrupt(`model ${model}`);
    }
    return (this.#lifecycle = parsed);
  }

  /** The install of `model` being tried, or the last one tried (install-lifecycle.ts). */
  lifecycle(model: string): LifecycleRecord | undefined {
    return this.#lifecycleFile().models[model]?.record;
  }

  /** The models that have a lifecycle record. */
  lifecycleModels(): string[] {
    return Object.entries(this.#lifecycleFile().models).flatMap(([model, e]) => (e.record ? [model] : []));
  }

  /** The releases of `model` rolled back on this device, oldest first. */
  badReleases(model: string): BadRelease[] {
    return this.#lifecycleFile().models[model]?.bad ?? [];
  }

  /** Persists `record` for its model, and with it (one atomic write) `bad` among the model's rolled-back releases. */
  saveLifecycle(record: LifecycleRecord, bad?: BadRelease): void {
    const file = this.#lifecycleFile();
    const model = record.release.model;
    const previous = file.models[model]?.bad ?? [];
    const next: LifecycleFile = {
      format: 1,
      models: { ...file.models, [model]: { record, bad: bad ? [...previous.filter((b) => b.releaseId !== bad.releaseId), bad].slice(-MAX_BAD_RELEASES) : previous } },
    };
    this.#writeLifecycle(next);
  }

  /**
   * Remembers a release as bad for `model` without a lifecycle record: one
   * the device itself refused to keep (an MCU that reverted a test image).
   */
  markBad(model: string, bad: BadRelease): void {
    const file = this.#lifecycleFile();
    const entry = file.models[model];
    const next: LifecycleFile = {
      format: 1,
      models: { ...file.models, [model]: { ...(entry?.record ? { record: entry.record } : {}), bad: [...(entry?.bad ?? []).filter((b) => b.releaseId !== bad.releaseId), bad].slice(-MAX_BAD_RELEASES) } },
    };
    this.#writeLifecycle(next);
  }

  /** Writes lifecycle.json (atomically); a file error is a StoreError naming it. */
  #writeLifecycle(next: LifecycleFile): void {
    const path = join(this.dir, 'lifecycle.json');
    try {
      writeFileAtomic(path, JSON.stringify(next, null, 2) + '\n');
    } catch (err) {
      throw StoreError.wrap(err, path, 'write');
    }
    this.#lifecycle = next;
  }

  /** The signed roots verified after the provisioned one, oldest first (empty if none). */
  rootChain(): Uint8Array[] {
    let bytes: Uint8Array;
    try {
      bytes = readFileSync(join(this.dir, 'root-chain.cbor'));
    } catch {
      return [];
    }
    return decodeRootChain(bytes);
  }

  /** Keeps `chain` (signed roots, oldest first) as the root chain, replacing the previous one by rename. */
  saveRootChain(chain: readonly Uint8Array[]): void {
    writeFileAtomic(join(this.dir, 'root-chain.cbor'), encodeRootChain(chain));
  }

  transferDir(releaseId: string): string {
    return join(this.dir, 'incoming', releaseId);
  }

  /** Removes the transfers of `model` other than those in `keep` (releases a newer one replaced); never one in use. */
  removeStaleTransfers(model: string, keep: ReadonlySet<string>): void {
    const incoming = join(this.dir, 'incoming');
    for (const name of readdirSync(incoming)) {
      if (keep.has(name)) continue;
      let owner: string | undefined;
      try {
        owner = readFileSync(join(incoming, name, 'model'), 'utf8');
      } catch {
        owner = undefined;
      }
      if (owner === model) rmSync(join(incoming, name), { recursive: true, force: true });
    }
  }

  /** Where the kept release of `model` lives. */
  #releaseDir(model: string): string {
    return join(this.dir, 'releases', modelFileName(model));
  }

  /** The files of a kept release: its image and its signed manifest. */
  keptRelease(model: string, releaseId: string): { image: string; manifest: string } {
    const dir = this.#releaseDir(model);
    return { image: join(dir, `${releaseId}.img`), manifest: join(dir, `${releaseId}.cose`) };
  }

  /** Ids of the releases of `model` the store keeps (a signed manifest in releases/<model>/). */
  keptReleaseIds(model: string): string[] {
    const dir = this.#releaseDir(model);
    if (!existsSync(dir)) return [];
    return readdirSync(dir).filter((n) => n.endsWith('.cose')).map((n) => n.slice(0, -'.cose'.length));
  }

  /** Where the decrypted image of a kept encrypted release lives: beside its ciphertext (the .img a relay serves). */
  keptPlaintext(model: string, releaseId: string): string {
    return join(this.#releaseDir(model), `${releaseId}.plain.img`);
  }

  /** Moves a verified image into releases/<model>/ with its signed manifest. */
  keepRelease(model: string, releaseId: string, image: string, signedManifest: Uint8Array): string {
    const dir = this.#releaseDir(model);
    if (!existsSync(dir)) {
      mkdirSync(dir);
      fsyncDir(dirname(dir));
    }
    const kept = this.keptRelease(model, releaseId);
    writeFileAtomic(kept.manifest, signedManifest);
    renameSync(image, kept.image);
    fsyncDir(dir);
    return kept.image;
  }

  /** Where relay mode keeps the delta of kept release `releaseId` from `baseReleaseId`: beside the release, so it goes with it. */
  keptDelta(model: string, releaseId: string, baseReleaseId: string): string {
    return join(this.#releaseDir(model), `${releaseId}.delta-${baseReleaseId}`);
  }

  /** Moves a verified delta of a kept release into releases/<model>/ (by rename: a power cut leaves it whole or absent). */
  keepDelta(model: string, releaseId: string, baseReleaseId: string, file: string): string {
    const dir = this.#releaseDir(model);
    mkdirSync(dir, { recursive: true });
    const kept = this.keptDelta(model, releaseId, baseReleaseId);
    renameSync(file, kept);
    fsyncDir(dir);
    return kept;
  }

  /** Where relay mode receives the deltas of `model`'s releases (one directory per delta, spill-assembler.ts). */
  relayDeltaTransfers(model: string): string {
    return join(this.dir, 'relay-deltas', modelFileName(model));
  }

  /** Removes the kept releases of `model` other than `keepReleaseId` (with their deltas). */
  pruneReleases(model: string, keepReleaseId: string): void {
    const dir = this.#releaseDir(model);
    for (const name of readdirSync(dir)) {
      if (!name.startsWith(keepReleaseId)) rmSync(join(dir, name), { force: true });
    }
  }
}

/**
 * A model name as one file name, different for different models: "/" (the
 * only character of a model name that a path cannot hold) becomes "%2F", and
 * "%" cannot occur in a model name, so `cam/v2` and `cam_v2` never share a file.
 */
export function modelFileName(model: string): string {
  return encodeURIComponent(model);
}

/** Bytes hashed per read in sha256File. */
const HASH_CHUNK = 256 << 10;

/**
 * SHA-256 of a file, read through one reused buffer: a read stream allocates
 * a buffer per chunk, and at 64 KiB each they pile up to most of the image
 * before a garbage collection frees them.
 */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  const buffer = Buffer.allocUnsafeSlow(HASH_CHUNK);
  const file = await open(path, 'r');
  try {
    for (;;) {
      const { bytesRead } = await file.read(buffer, 0, buffer.length, null);
      if (bytesRead === 0) break;
      hash.update(buffer.subarray(0, bytesRead));
    }
  } finally {
    await file.close();
  }
  return hash.digest('hex');
}
