/** Reading and writing key files, with errors that say which file and why. */
import { hex } from '../protocol/hex.js';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ed25519 from '../protocol/ed25519.js';
import { ConfigError } from '../protocol/errors.js';
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
  if (!force && (existsSync(privatePath) || existsSync(publicPath))) {
    throw new ConfigError(`${privatePath} or ${publicPath} already exists; use --force to replace them`);
  }
  const pair = ed25519.generateKeyPair();
  writeFileSync(privatePath, encodePrivateKeyPem(pair.seed), { mode: 0o600 });
  chmodSync(privatePath, 0o600);
  writeFileSync(publicPath, encodePublicKeyPem(pair.publicKey), { mode: 0o644 });
  return { privatePath, publicPath, kid: hex(keyId(pair.publicKey)) };
}
