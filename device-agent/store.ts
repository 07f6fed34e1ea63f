/**
 * The agent's store directory:
 *
 *   state.json                  installed release per model (written atomically)
 *   incoming/<release>.part     image being received, written segment by segment
 *   releases/<model>/<release>.img, .cose
 *                               the last verified release: image and signed manifest
 *
 * Nothing in `releases/` or `state.json` is replaced except by rename, so a power
 * cut leaves the previous state intact.
 */
import { createHash } from 'node:crypto';
import { accessSync, closeSync, constants, createReadStream, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../protocol/errors.js';
import { fsyncDir, writeFileAtomic } from './durable.js';

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

export class Store {
  #state: StateFile;

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
    let text: string;
    try {
      text = readFileSync(join(this.dir, 'state.json'), 'utf8');
    } catch {
      return { format: 1, models: {} };
    }
    try {
      const parsed = JSON.parse(text) as StateFile;
      if (parsed.format !== 1 || typeof parsed.models !== 'object') throw new Error('unknown format');
      return parsed;
    } catch (err) {
      throw new ConfigError(`${join(this.dir, 'state.json')} is corrupt (${(err as Error).message}); restore it or remove it to forget installed versions`);
    }
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

  openIncoming(releaseId: string, size: number): IncomingImage {
    return new IncomingImage(join(this.dir, 'incoming', `${releaseId}.part`), size);
  }

  /** Moves a verified image into releases/<model>/ with its signed manifest; removes older ones. */
  keepRelease(model: string, releaseId: string, image: IncomingImage, signedManifest: Uint8Array): string {
    const dir = join(this.dir, 'releases', model.replaceAll('/', '_'));
    mkdirSync(dir, { recursive: true });
    const imagePath = join(dir, `${releaseId}.img`);
    writeFileAtomic(join(dir, `${releaseId}.cose`), signedManifest);
    renameSync(image.path, imagePath);
    fsyncDir(dir);
    return imagePath;
  }

  pruneReleases(model: string, keepReleaseId: string): void {
    const dir = join(this.dir, 'releases', model.replaceAll('/', '_'));
    for (const name of readdirSync(dir)) {
      if (!name.startsWith(keepReleaseId)) rmSync(join(dir, name), { force: true });
    }
  }
}

/** An image being received: written at segment offsets, then fsynced and hashed. */
export class IncomingImage {
  #fd: number | undefined;

  constructor(readonly path: string, readonly size: number) {
    this.#fd = openSync(path, 'w', 0o600);
  }

  write(offset: number, bytes: Uint8Array): void {
    if (this.#fd === undefined) throw new Error('incoming image already closed');
    let done = 0;
    while (done < bytes.length) done += writeSync(this.#fd, bytes, done, bytes.length - done, offset + done);
  }

  /** Flushes to disk and returns the SHA-256 of what is on disk. */
  async finish(): Promise<string> {
    if (this.#fd !== undefined) {
      fsyncSync(this.#fd);
      closeSync(this.#fd);
      this.#fd = undefined;
    }
    const hash = createHash('sha256');
    for await (const chunk of createReadStream(this.path)) hash.update(chunk as Buffer);
    return hash.digest('hex');
  }

  discard(): void {
    if (this.#fd !== undefined) closeSync(this.#fd);
    this.#fd = undefined;
    rmSync(this.path, { force: true });
  }
}
