/**
 * The server's release store: verified release files on disk, content-addressed
 * by release id, that survive restarts and power cuts.
 *
 *   STORE/incoming/<random>.part    uploads in progress (removed at start-up)
 *   STORE/releases/<release id>.fwc complete, verified releases (fwcast sign's format)
 *   STORE/retired/<release id>.cose signed manifests of retired releases
 *   STORE/symbols/                  encoded symbols of live releases (the server's cache, see symbol-cache.ts)
 *
 * An upload is streamed to incoming/, fsynced, verified (signature by a trusted
 * key, served model, not expired, sequence above every release of the model
 * ever stored, image matching the manifest), and only then renamed into
 * releases/ (and the directory fsynced). A crash or kill -9 at any moment leaves
 * either no release or a complete one: partial uploads never appear.
 *
 * The live release of a model is its newest (highest seq) release that is not
 * retired. Superseded releases stay on disk up to `keep` per model; retired ones
 * keep only their signed manifest, so the sequence high-water mark (the rollback
 * check) survives them.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fsyncDir, fsyncPath, openExclusive, writeFileAtomic } from '../../storage/durable-file.js';
import { FwcastError, RootRollbackError } from '../../protocol/errors.js';
import type { PublicKey } from '../../protocol/keys.js';
import { errorFields, nullLogger, type Logger } from '../../protocol/log.js';
import { openSignedManifest, type Manifest } from '../../protocol/manifest.js';
import { DEFAULT_LIMITS } from '../../protocol/limits.js';
import { decodeReleaseLayout, MAX_RELEASE_HEADER_SIZE } from '../../protocol/release-file.js';
import { authorizeRelease, manifestKeys, MAX_ROOT_CHAIN_SIZE } from '../../protocol/root.js';
import { keyId } from '../../protocol/keys.js';
import { readReleaseFile, readReleaseHead, readReleaseManifest, type ReleaseFile } from '../release.js';
import type { RootKeeper } from './root-keeper.js';
import { hex } from '../../protocol/hex.js';

export type ReleaseState = 'live' | 'superseded' | 'retired';

export interface StoredRelease {
  releaseId: string;
  model: string;
  version: string;
  seq: number;
  imageSize: number;
  sha256: string;
  keyId: string;
  /** Unix seconds, from the manifest. */
  created: number;
  expires?: number;
  /** When the server stored it (ISO 8601). */
  storedAt: string;
  state: ReleaseState;
}

/** Why an upload or request was refused, with the HTTP status that says so. */
export class RejectedError extends Error {
  override name = 'RejectedError';
  constructor(readonly status: number, readonly reason: string, message: string) {
    super(message);
  }
}

/** Each refusal reason and its HTTP status; `reason` matches the agents' drop counters where both exist. */
export const REJECTIONS = {
  unauthorized: 401,
  'too-large': 413,
  malformed: 400,
  'invalid-manifest': 400,
  'limit-exceeded': 400,
  'bad-signature': 422,
  'unknown-key': 422,
  'wrong-model': 422,
  expired: 422,
  rollback: 409,
  retired: 409,
  'unsupported-version': 400,
  'digest-mismatch': 400,
  // Roots (pushed, or inside a release file) and releases judged by the root: the agents' reasons.
  'bad-root': 400,
  'root-chain-too-long': 400,
  'root-rollback': 409,
  'root-threshold': 422,
  'root-expired': 422,
  'no-root': 409,
  'revoked-key': 422,
  'key-out-of-scope': 422,
  'delegation-expired': 422,
  'delegation-not-yet-valid': 422,
  'delegation-threshold': 422,
} as const satisfies Record<string, number>;

export type RejectionReason = keyof typeof REJECTIONS;

function reject(reason: RejectionReason, message: string): RejectedError {
  return new RejectedError(REJECTIONS[reason], reason, message);
}

export interface ReleaseStoreInit {
  dir: string;
  trusted: readonly PublicKey[];
  /** With a root of trust, uploads are authorized by its newest version (and `trusted` too, if any). */
  roots?: RootKeeper | undefined;
  /** Models this server publishes; uploads for others are refused. */
  models: readonly string[];
  /** Superseded releases kept per model besides the live one (default 2). */
  keep?: number;
  log?: Logger;
  now?: () => number;
}

export interface IngestResult {
  release: StoredRelease;
  /** False when the same release (same id) was already stored. */
  created: boolean;
}

const ID_PATTERN = /^[0-9a-f]{16}$/;

/** Where the image starts, from a release file's first bytes; Infinity if they are not a release header (refused later, when the manifest is read). */
function imageOffsetOf(header: Uint8Array): number {
  try {
    return decodeReleaseLayout(header, DEFAULT_LIMITS.maxManifestSize, MAX_ROOT_CHAIN_SIZE).imageOffset;
  } catch {
    return Infinity;
  }
}

export class ReleaseStore {
  readonly dir: string;
  #trusted: readonly PublicKey[];
  #roots: RootKeeper | undefined;
  #models: Set<string>;
  #keep: number;
  #log: Logger;
  #now: () => number;
  #releases = new Map<string, StoredRelease>();
  /** Highest seq ever stored per model, retired releases included. */
  #highWater = new Map<string, number>();
  /** Serializes the check-and-commit step of uploads and retirements. */
  #lock: Promise<unknown> = Promise.resolve();

  constructor(init: ReleaseStoreInit) {
    this.dir = init.dir;
    this.#trusted = init.trusted;
    this.#roots = init.roots;
    this.#models = new Set(init.models);
    this.#keep = init.keep ?? 2;
    this.#log = init.log ?? nullLogger;
    this.#now = init.now ?? (() => Date.now());
  }

  get #incoming(): string {
    return join(this.dir, 'incoming');
  }

  get #releaseDir(): string {
    return join(this.dir, 'releases');
  }

  get #retiredDir(): string {
    return join(this.dir, 'retired');
  }

  #path(id: string): string {
    return join(this.#releaseDir, `${id}.fwc`);
  }

  /** Creates the directories, drops unfinished uploads, and indexes what is stored. */
  open(): void {
    for (const d of [this.dir, this.#incoming, this.#releaseDir, this.#retiredDir]) mkdirSync(d, { recursive: true });
    let dropped = 0;
    for (const name of readdirSync(this.#incoming)) {
      unlinkSync(join(this.#incoming, name));
      dropped++;
    }
    if (dropped > 0) this.#log.event('serve.uploads-dropped', { count: dropped }, `dropped ${dropped} unfinished upload(s) from a previous run`);
    for (const dir of [this.#releaseDir, this.#retiredDir]) {
      for (const name of readdirSync(dir)) if (name.includes('.tmp-')) unlinkSync(join(dir, name));
    }
    for (const name of readdirSync(this.#retiredDir)) {
      const id = name.replace(/\.cose$/, '');
      if (!ID_PATTERN.test(id)) continue;
      try {
        const v = openSignedManifest(new Uint8Array(readFileSync(join(this.#retiredDir, name))), this.#keys());
        this.#index(v.manifest, hex(v.kid), id, statSync(join(this.#retiredDir, name)).mtime, 'retired');
      } catch (err) {
        this.#log.event('serve.release-ignored', { file: join(this.#retiredDir, name), ...errorFields(err) }, `ignoring retired manifest ${name}: ${(err as Error).message}`);
      }
    }
    for (const name of readdirSync(this.#releaseDir)) {
      const id = name.replace(/\.fwc$/, '');
      if (!ID_PATTERN.test(id) || !name.endsWith('.fwc')) continue;
      const path = join(this.#releaseDir, name);
      if (this.#releases.get(id)?.state === 'retired') {
        unlinkSync(path); // retired, but the image's removal was cut short
        continue;
      }
      try {
        const v = openSignedManifest(readReleaseManifest(path), this.#keys());
        this.#index(v.manifest, hex(v.kid), id, statSync(path).mtime, 'superseded');
      } catch (err) {
        this.#log.event('serve.release-ignored', { file: path, ...errorFields(err) }, `ignoring stored release ${name}: ${(err as Error).message}`);
      }
    }
    this.#restate();
  }

  /** Keys a stored manifest's signature is checked with: configured ones, and those the root delegates or did. */
  keys(): PublicKey[] {
    return this.#keys();
  }

  /**
   * Throws unless the key `kid` may speak for `model` now: a configured key
   * always; else the root's delegation (a halt is judged as a release is).
   */
  authorize(subject: { model: string; seq: number }, kid: Uint8Array): void {
    const root = this.#roots?.root;
    if (root && !this.#trusted.some((k) => Buffer.compare(k.kid, kid) === 0)) authorizeRelease(root, subject, kid, this.#now() / 1000);
  }

  #keys(): PublicKey[] {
    return [...this.#trusted, ...(this.#roots ? manifestKeys(this.#roots.root).map((k) => ({ publicKey: k, kid: keyId(k) })) : [])];
  }

  #index(m: Manifest, keyId: string, id: string, storedAt: Date, state: ReleaseState): StoredRelease {
    const r: StoredRelease = {
      releaseId: id, model: m.model, version: m.version, seq: m.seq, imageSize: m.imageSize, sha256: hex(m.imageSha256), keyId,
      created: m.created, ...(m.expires !== undefined ? { expires: m.expires } : {}), storedAt: storedAt.toISOString(), state,
    };
    this.#releases.set(id, r);
    this.#highWater.set(m.model, Math.max(this.#highWater.get(m.model) ?? -1, m.seq));
    return r;
  }

  /** Marks each model's newest non-retired release live, the others superseded. */
  #restate(): void {
    const live = new Map<string, StoredRelease>();
    for (const r of this.#releases.values()) {
      if (r.state === 'retired') continue;
      r.state = 'superseded';
      const best = live.get(r.model);
      if (!best || r.seq > best.seq) live.set(r.model, r);
    }
    for (const r of live.values()) r.state = 'live';
  }

  /** Every known release, newest first per model. */
  list(): StoredRelease[] {
    return [...this.#releases.values()].sort((a, b) => a.model.localeCompare(b.model) || b.seq - a.seq).map((r) => ({ ...r }));
  }

  get(id: string): StoredRelease | undefined {
    const r = this.#releases.get(id);
    return r ? { ...r } : undefined;
  }

  /** The live release of a model, if any. */
  live(model: string): StoredRelease | undefined {
    for (const r of this.#releases.values()) if (r.model === model && r.state === 'live') return { ...r };
    return undefined;
  }

  /** Reads a stored release back (image checked against the manifest). */
  load(id: string): ReleaseFile {
    return readReleaseFile(this.#path(id));
  }

  /**
   * Streams an upload to disk, verifies it and stores it. Throws RejectedError
   * (nothing stored) when the release is not acceptable.
   */
  async ingest(body: Readable, maxBytes: number): Promise<IngestResult> {
    const part = join(this.#incoming, `${randomBytes(8).toString('hex')}.part`);
    try {
      // Counts bytes against the limit and hashes the image part on the way (it starts after the header and the manifest).
      let size = 0;
      const header = Buffer.alloc(MAX_RELEASE_HEADER_SIZE);
      let imageStart = Infinity;
      const hash = createHash('sha256');
      const check = new Transform({
        transform(chunk: Buffer, _enc, done) {
          const at = size;
          size += chunk.length;
          if (size > maxBytes) return done(reject('too-large', `upload exceeds the limit of ${maxBytes} bytes`));
          if (at < MAX_RELEASE_HEADER_SIZE) {
            chunk.copy(header, at, 0, Math.min(chunk.length, MAX_RELEASE_HEADER_SIZE - at));
            // A malformed header is refused when the manifest is read back below; until then nothing is hashed.
            if (size >= MAX_RELEASE_HEADER_SIZE) imageStart = imageOffsetOf(header);
          }
          if (size > imageStart) hash.update(chunk.subarray(Math.max(0, imageStart - at)));
          done(null, chunk);
        },
      });
      await pipeline(body, check, createWriteStream(part, { fd: openExclusive(part) }));
      fsyncPath(part);
      const image = { size: Math.max(0, size - imageStart), sha256: hash.digest() };
      return await this.#exclusive(() => this.#commit(part, image));
    } finally {
      if (existsSync(part)) unlinkSync(part);
    }
  }

  #exclusive<T>(fn: () => T | Promise<T>): Promise<T> {
    const run = this.#lock.then(fn, fn);
    this.#lock = run.catch(() => undefined);
    return run;
  }

  #commit(part: string, image: { size: number; sha256: Buffer }): IngestResult {
    let verified;
    try {
      const head = readReleaseHead(part);
      // A newer root inside the file is adopted first (as agents will), so a release signed under it is judged by it.
      if (head.rootChain) this.#offerRoots(head.rootChain);
      verified = openSignedManifest(head.signed, this.#keys());
      const root = this.#roots?.root;
      if (root && !this.#trusted.some((k) => Buffer.compare(k.kid, verified!.kid) === 0)) authorizeRelease(root, verified.manifest, verified.kid, this.#now() / 1000, verified.cosigners);
    } catch (err) {
      throw asRejection(err);
    }
    const m = verified.manifest;
    const id = hex(verified.releaseId);
    const existing = this.#releases.get(id);
    if (existing?.state === 'retired') throw reject('retired', `release ${id} (${m.model} ${m.version}, seq ${m.seq}) was retired; sign a new release with a higher --seq`);
    if (existing) return { release: { ...existing }, created: false };
    if (!this.#models.has(m.model)) throw reject('wrong-model', `release is for model "${m.model}", this server publishes ${[...this.#models].map((x) => `"${x}"`).join(', ')}`);
    if (m.expires !== undefined && m.expires * 1000 <= this.#now()) throw reject('expired', `release expired at ${new Date(m.expires * 1000).toISOString()}`);
    const high = this.#highWater.get(m.model);
    if (high !== undefined && m.seq <= high) throw reject('rollback', `sequence ${m.seq} is not above ${high}, the highest stored for "${m.model}"; sign with a higher --seq`);
    if (m.deltas) {
      // The deltas follow the image in the file, so the digest taken while streaming covered both: read it back, every object checked.
      try {
        readReleaseFile(part);
      } catch (err) {
        throw asRejection(err);
      }
    } else {
      if (image.size !== m.imageSize) throw reject('malformed', `the image is ${image.size} bytes, its manifest says ${m.imageSize} (truncated upload?)`);
      if (!image.sha256.equals(m.imageSha256)) throw reject('digest-mismatch', 'the image does not match the SHA-256 its manifest signs');
    }
    const path = this.#path(id);
    renameSync(part, path);
    fsyncDir(this.#releaseDir);
    const stored = this.#index(m, hex(verified.kid), id, new Date(this.#now()), 'superseded');
    this.#restate();
    this.#prune(m.model);
    return { release: { ...stored }, created: true };
  }

  /** Roots carried in an uploaded file: adopted if newer; an older chain than serve's is no reason to refuse the release. */
  #offerRoots(chain: Uint8Array): void {
    if (!this.#roots) return;
    try {
      const applied = this.#roots.offer(chain, this.#now() / 1000);
      if (applied.length > 0) this.onRootsAdopted(applied);
    } catch (err) {
      if (!(err instanceof RootRollbackError)) throw err;
    }
  }

  /** Called when an upload made newer roots trusted (set by the server, which re-carries the chain). */
  onRootsAdopted: (versions: number[]) => void = () => undefined;

  /** Stops publishing a release; its signed manifest is kept so its seq can never be reused. */
  retire(id: string): Promise<StoredRelease | undefined> {
    return this.#exclusive(() => {
      const r = this.#releases.get(id);
      if (!r || r.state === 'retired') return r ? { ...r } : undefined;
      const signed = readReleaseManifest(this.#path(id));
      writeFileAtomic(join(this.#retiredDir, `${id}.cose`), signed);
      unlinkSync(this.#path(id));
      fsyncDir(this.#releaseDir);
      r.state = 'retired';
      this.#restate();
      return { ...r };
    });
  }

  /** Deletes superseded releases of a model beyond `keep`, oldest first. */
  #prune(model: string): void {
    const superseded = [...this.#releases.values()].filter((r) => r.model === model && r.state === 'superseded').sort((a, b) => b.seq - a.seq);
    for (const r of superseded.slice(this.#keep)) {
      unlinkSync(this.#path(r.releaseId));
      // Keep the manifest's seq in the high-water mark via the live release (higher); forget the rest.
      this.#releases.delete(r.releaseId);
      this.#log.event('serve.release-pruned', { model, version: r.version, seq: r.seq, release: r.releaseId }, `pruned superseded release ${r.releaseId}`);
    }
    if (superseded.length > this.#keep) fsyncDir(this.#releaseDir);
  }
}

function asRejection(err: unknown): RejectedError {
  if (err instanceof RejectedError) return err;
  if (err instanceof FwcastError && err.reason in REJECTIONS) return reject(err.reason as RejectionReason, err.message);
  return reject('malformed', (err as Error).message);
}

