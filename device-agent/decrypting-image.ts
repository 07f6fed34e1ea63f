/**
 * The agent's side of confidential firmware (protocol/encryption.ts): which
 * of its keys opens a release, and the verified ciphertext image decrypted
 * into the image to install, one chunk at a time.
 *
 * Decryption starts once the whole ciphertext matched its signed digest, from
 * the transfer on disk, into a file beside it: memory is two chunk buffers
 * (256 KiB each by default) whatever the image size, and a kill at any moment
 * leaves the transfer complete on disk, so the next start decrypts again from
 * the beginning; nothing half-decrypted is ever kept or installed. The
 * plaintext must match the plaintext digest the manifest signs.
 */
import { createHash } from 'node:crypto';
import { renameSync } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { decryptChunk, TAG_SIZE, unwrapContentKey, type DecryptionKey, type EncryptionBlock } from '../protocol/encryption.js';
import { DigestMismatchError, NoDecryptionKeyError, StoreError } from '../protocol/errors.js';
import { hex } from '../protocol/hex.js';
import type { Logger } from '../protocol/log.js';
import type { VerifiedManifest } from '../protocol/manifest.js';
import { fsyncDir } from '../storage/durable-file.js';
import type { Store } from './store.js';

/**
 * The receiver's last check of a release (ReceiverInit.vet): an encrypted
 * release must name a key this device holds, and that key must unwrap its
 * content key; otherwise it is refused (no-decryption-key, key-unwrap-failed)
 * before a symbol is stored. A relay (`relaying`) takes a release it cannot
 * open, to serve its ciphertext onward.
 */
export function vetEncryptedRelease(release: VerifiedManifest, keys: readonly DecryptionKey[], relaying: boolean): void {
  const block = release.manifest.encryption;
  if (!block) return;
  try {
    // Unwrapped again, from the manifest, when the image is complete: nothing secret is held meanwhile.
    unwrapContentKey(block, keys).cek.fill(0);
  } catch (err) {
    if (!(err instanceof NoDecryptionKeyError) || !relaying) throw err;
  }
}

/**
 * A complete encrypted release, its ciphertext verified: decrypted, then kept
 * in the store (ciphertext as releases/<model>/<id>.img, which a relay serves;
 * plaintext as <id>.plain.img, which is installed). Undefined if this device
 * holds no key for it (a relay): then only the ciphertext is kept.
 */
export async function keepEncryptedRelease(store: Store, release: VerifiedManifest, releaseId: string, cipherPath: string, keys: readonly DecryptionKey[], log: Logger): Promise<{ imagePath: string; sha256: string } | undefined> {
  const m = release.manifest;
  const block = m.encryption!;
  const key = releaseKey(block, keys);
  if (!key) {
    store.keepRelease(m.model, releaseId, cipherPath, release.signed);
    // The relay serves one release per model: the one before goes.
    store.pruneReleases(m.model, releaseId);
    log.event('release.relay-only', { model: m.model, version: m.version, seq: m.seq, release: releaseId, recipients: block.recipients.length },
      `${m.model} ${m.version} (seq ${m.seq}) is encrypted for ${block.recipients.length} recipients, none of them this device: kept as ciphertext to relay, not installed`);
    return undefined;
  }
  const started = performance.now();
  const plainPart = join(dirname(cipherPath), 'image.plain');
  try {
    const sha256 = await decryptImageFile(cipherPath, plainPart, block, key.cek);
    store.keepRelease(m.model, releaseId, cipherPath, release.signed);
    const imagePath = store.keptPlaintext(m.model, releaseId);
    try {
      renameSync(plainPart, imagePath);
      fsyncDir(dirname(imagePath));
    } catch (err) {
      throw StoreError.wrap(err, imagePath, 'keep');
    }
    const seconds = Math.round(performance.now() - started) / 1000;
    log.event('release.decrypted', { model: m.model, version: m.version, seq: m.seq, release: releaseId, kid: key.kid, keyKind: key.kind, plainSize: block.plainSize, sha256, seconds },
      `decrypted ${m.model} ${m.version} (seq ${m.seq}) with ${key.kind} key ${key.kid} in ${seconds} s: plaintext sha256 ${sha256} matches the manifest`);
    return { imagePath, sha256 };
  } finally {
    key.cek.fill(0);
  }
}

/**
 * Node's AES-GCM gives each chunk's plaintext in a new buffer, outside the JS
 * heap, which V8 collects only once tens of MiB of them have piled up: 30 MiB
 * more peak RSS for a 256 MiB image. A young-generation collection every MiB
 * frees them as they go (about a millisecond each; every 4 MiB, decryption
 * still added 3-5 MiB to the transfer's peak, every MiB about 1).
 */
const collectGarbage: () => void = (() => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as (options: { type: 'minor'; execution: 'sync' }) => void;
  return () => gc({ type: 'minor', execution: 'sync' });
})();
const COLLECT_EVERY = 1 << 20;

export interface ReleaseKey {
  cek: Uint8Array;
  /** Id of the device's key that opened it. */
  kid: string;
  kind: DecryptionKey['kind'];
}

/** The release's content key from `keys`, or undefined if none of its recipients is one of them. Other refusals throw. */
export function releaseKey(block: EncryptionBlock, keys: readonly DecryptionKey[]): ReleaseKey | undefined {
  try {
    const k = unwrapContentKey(block, keys);
    return { cek: k.cek, kid: hex(k.kid), kind: k.kind };
  } catch (err) {
    if (err instanceof NoDecryptionKeyError) return undefined;
    throw err;
  }
}

/**
 * Decrypts `cipherPath` into `plainPath` (made anew, synced) and returns the
 * plaintext's SHA-256 (hex) once it matched the signed one. A chunk that does
 * not decrypt is a DecryptionFailedError, a plaintext of another digest a
 * DigestMismatchError; file errors are StoreErrors. `plainPath` is removed on
 * any failure.
 */
export async function decryptImageFile(cipherPath: string, plainPath: string, block: EncryptionBlock, cek: Uint8Array): Promise<string> {
  const sealed = Buffer.allocUnsafeSlow(block.chunkSize + TAG_SIZE);
  const plain = Buffer.allocUnsafeSlow(block.chunkSize);
  const hash = createHash('sha256');
  let input;
  let output;
  try {
    try {
      input = await open(cipherPath, 'r');
      output = await open(plainPath, 'w', 0o600);
    } catch (err) {
      throw StoreError.wrap(err, plainPath, 'open for decryption');
    }
    let position = 0;
    for (let index = 0; position < block.plainSize; index++) {
      const length = Math.min(block.chunkSize, block.plainSize - position) + TAG_SIZE;
      const at = position + index * TAG_SIZE;
      let read;
      try {
        ({ bytesRead: read } = await input.read(sealed, 0, length, at));
      } catch (err) {
        throw StoreError.wrap(err, cipherPath, 'read');
      }
      if (read !== length) throw new StoreError(`${cipherPath} ends at ${at + read} bytes, the manifest says more`, { path: cipherPath, code: 'ESHORT' });
      const n = decryptChunk(cek, block.nonce, index, sealed.subarray(0, length), plain);
      hash.update(plain.subarray(0, n));
      try {
        await output.write(plain, 0, n, position);
      } catch (err) {
        throw StoreError.wrap(err, plainPath, 'write');
      }
      position += n;
      if (position % COLLECT_EVERY < n) collectGarbage();
    }
    const digest = hash.digest();
    if (Buffer.compare(digest, block.plainSha256) !== 0) {
      throw new DigestMismatchError(`the image decrypted to SHA-256 ${digest.toString('hex')}, the manifest signs ${hex(block.plainSha256)} for the plaintext`);
    }
    try {
      await output.datasync();
    } catch (err) {
      throw StoreError.wrap(err, plainPath, 'sync');
    }
    return digest.toString('hex');
  } catch (err) {
    await output?.close().catch(() => {});
    output = undefined;
    await rm(plainPath, { force: true });
    throw err;
  } finally {
    // Neither the key nor plaintext stays in buffers the allocator may hand out again.
    plain.fill(0);
    await input?.close();
    await output?.close();
  }
}
