/** Reading and writing key files, with errors that say which file and why. */
import { hex } from '../protocol/hex.js';
import { closeSync, existsSync, lstatSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ed25519 from '../protocol/ed25519.js';
import { ConfigError } from '../protocol/errors.js';
import { openExclusive, writeAll, writeFileAtomic } from '../storage/durable-file.js';
import { decodePrivateKeyPem, decodePublicKey, encodePrivateKeyPem, encodePublicKeyPem, keyId, type PublicKey } from '../protocol/keys.js';

function readText(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

export async function readPrivateKey(path: string): Promise<Uint8Array> {
  await ed25519.ready();
  return decodePrivateKeyPem(readText(path, 'private key'), `private key ${path}`);
}

/** A trusted key given as a file path, or inline as PEM or base64. */
export function readTrustedKey(spec: string): PublicKey {
  const inline = spec.trim().startsWith('-----BEGIN') || /^[A-Za-z0-9+/]{43}=$/.test(spec.trim());
  if (inline) return decodePublicKey(spec, 'trusted key');
  return decodePublicKey(readText(spec, 'public key'), `public key ${spec}`);
}

export async function writeKeyPair(dir: string, force: boolean): Promise<{ privatePath: string; publicPath: string; kid: string }> {
  await ed25519.ready();
  mkdirSync(dir, { recursive: true });
  const privatePath = join(dir, 'publisher.key');
  const publicPath = join(dir, 'publisher.pub');
  const present = (path: string): boolean => existsSync(path) || lstatSync(path, { throwIfNoEntry: false }) !== undefined;
  if (!force && (present(privatePath) || present(publicPath))) {
    throw new ConfigError(`${privatePath} or ${publicPath} already exists; use --force to replace them`);
  }
  const pair = ed25519.generateKeyPair();
  writeKeyFile(privatePath, encodePrivateKeyPem(pair.seed), 0o600, force);
  writeKeyFile(publicPath, encodePublicKeyPem(pair.publicKey), 0o644, force);
  return { privatePath, publicPath, kid: hex(keyId(pair.publicKey)) };
}

/** DIR/publisher.pub, checked free (unless `force`) before a key is made inside an HSM, where a failed write would leave it orphaned. */
export function publicKeyPath(dir: string, force: boolean): string {
  const publicPath = join(dir, 'publisher.pub');
  if (!force && lstatSync(publicPath, { throwIfNoEntry: false }) !== undefined) throw new ConfigError(`${publicPath} already exists; use --force to replace it`);
  return publicPath;
}

/** DIR/publisher.pub alone, for a key whose private half stays elsewhere (an HSM). */
export function writePublicKey(dir: string, publicKey: Uint8Array, force: boolean): { publicPath: string; kid: string } {
  mkdirSync(dir, { recursive: true });
  const publicPath = publicKeyPath(dir, force);
  writeKeyFile(publicPath, encodePublicKeyPem(publicKey), 0o644, force);
  return { publicPath, kid: hex(keyId(publicKey)) };
}

/**
 * Never through a symlink: a fresh file is created exclusively (O_EXCL|O_NOFOLLOW), and
 * `force` replaces the path itself by rename, whatever it was, rather than writing where it points.
 */
export function writeKeyFile(path: string, text: string, mode: number, force: boolean): void {
  try {
    if (force) writeFileAtomic(path, text, mode);
    else writeNewFile(path, text, mode);
  } catch (err) {
    throw new ConfigError(`cannot write ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}${(err as NodeJS.ErrnoException).code === 'EEXIST' ? ' (something, perhaps a symlink, is already there; use --force to replace it)' : ''}`);
  }
}

/** Creates `path` with `text`; fails if anything, a dangling symlink included, is there. */
function writeNewFile(path: string, text: string, mode: number): void {
  const fd = openExclusive(path, mode);
  try {
    writeAll(fd, Buffer.from(text, 'utf8'));
  } finally {
    closeSync(fd);
  }
}
