/**
 * Key files of confidential firmware (protocol/encryption.ts):
 *  - a device key pair, X25519 in standard PEM (PKCS#8 private, SPKI public,
 *    as `openssl genpkey -algorithm x25519` writes them): the private half
 *    stays on the device (its agent's decryption key), the public half goes to
 *    the publisher (`fwcast sign --encrypt-for`);
 *  - a group key, 32 random bytes in a "FWCAST GROUP KEY" PEM block, the same
 *    file on the publisher and on every device of the model or cohort.
 * Reading one tells which it is by its PEM label and key type.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { lstatSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { deviceRecipient, groupKey, X25519_PKCS8_PREFIX, X25519_SPKI_PREFIX, x25519PublicKey, type DecryptionKey, type RecipientKey } from '../protocol/encryption.js';
import { ConfigError } from '../protocol/errors.js';
import { hex } from '../protocol/hex.js';
import { keyId } from '../protocol/keys.js';
import { writeKeyFile } from './key-files.js';

const GROUP_LABEL = 'FWCAST GROUP KEY';

function pem(label: string, der: Uint8Array): string {
  return `-----BEGIN ${label}-----\n${Buffer.from(der).toString('base64').match(/.{1,64}/g)!.join('\n')}\n-----END ${label}-----\n`;
}

/** The PEM blocks of `text`: label and DER. */
function pemBlocks(text: string): Array<{ label: string; der: Uint8Array }> {
  return [...text.matchAll(/-----BEGIN ([A-Z0-9 ]+)-----([A-Za-z0-9+/=\s]+)-----END \1-----/g)]
    .map((m) => ({ label: m[1]!, der: new Uint8Array(Buffer.from(m[2]!.replace(/\s+/g, ''), 'base64')) }));
}

function suffix(der: Uint8Array, prefix: Uint8Array): Uint8Array | undefined {
  return der.length === prefix.length + 32 && prefix.every((b, i) => der[i] === b) ? der.slice(prefix.length) : undefined;
}

function readText(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

function refuseExisting(paths: string[], force: boolean): void {
  if (force) return;
  const there = paths.filter((p) => lstatSync(p, { throwIfNoEntry: false }) !== undefined);
  if (there.length > 0) throw new ConfigError(`${there.join(' and ')} already exist${there.length === 1 ? 's' : ''}; use --force to replace`);
}

/** DIR/NAME.key (0600, stays on the device) and DIR/NAME.pub (for the publisher). */
export function writeDeviceKeyPair(dir: string, name: string, force: boolean): { privatePath: string; publicPath: string; kid: string } {
  mkdirSync(dir, { recursive: true });
  const privatePath = join(dir, `${name}.key`);
  const publicPath = join(dir, `${name}.pub`);
  refuseExisting([privatePath, publicPath], force);
  const pair = generateKeyPairSync('x25519');
  const publicKey = suffix(new Uint8Array(pair.publicKey.export({ format: 'der', type: 'spki' })), X25519_SPKI_PREFIX)!;
  writeKeyFile(privatePath, pair.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, 0o600, force);
  writeKeyFile(publicPath, pem('PUBLIC KEY', new Uint8Array([...X25519_SPKI_PREFIX, ...publicKey])), 0o644, force);
  return { privatePath, publicPath, kid: hex(keyId(publicKey)) };
}

/** DIR/NAME.key (0600): a new group key, for the publisher and every device of the group. */
export function writeGroupKey(dir: string, name: string, force: boolean): { path: string; kid: string } {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${name}.key`);
  refuseExisting([path], force);
  const key = groupKey(new Uint8Array(randomBytes(32)));
  writeKeyFile(path, pem(GROUP_LABEL, key.key), 0o600, force);
  return { path, kid: hex(key.kid) };
}

/** A key to encrypt for: a group key file or a device's public key file. */
export function readRecipientKey(path: string): RecipientKey {
  const blocks = pemBlocks(readText(path, 'encryption key'));
  for (const b of blocks) {
    if (b.label === GROUP_LABEL && b.der.length === 32) return groupKey(b.der);
    const pub = b.label === 'PUBLIC KEY' ? suffix(b.der, X25519_SPKI_PREFIX) : undefined;
    if (pub) return deviceRecipient(pub);
    if (b.label === 'PRIVATE KEY' && suffix(b.der, X25519_PKCS8_PREFIX)) {
      throw new ConfigError(`${path} is a device's private key: encrypt for its public half (.pub); the private half stays on the device`);
    }
  }
  throw new ConfigError(`${path}: neither a group key ("${GROUP_LABEL}") nor an X25519 public key (from \`fwcast keygen --device\`)`);
}

/** `--encrypt-for` arguments: key files, or directories whose *.pub and *.key files are all recipients. */
export function readRecipientKeys(paths: readonly string[]): RecipientKey[] {
  const files = paths.flatMap((p) => {
    let isDir = false;
    try {
      isDir = statSync(p).isDirectory();
    } catch (err) {
      throw new ConfigError(`cannot read encryption key ${p}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    return isDir ? readdirSync(p).filter((n) => n.endsWith('.pub') || n.endsWith('.key')).sort().map((n) => join(p, n)) : [p];
  });
  const keys = files.map(readRecipientKey);
  const seen = new Set<string>();
  return keys.filter((k) => !seen.has(hex(k.kid)) && seen.add(hex(k.kid)));
}

/** A key the agent decrypts with: a group key file or the device's X25519 private key file. */
export function readDecryptionKey(path: string): DecryptionKey {
  for (const b of pemBlocks(readText(path, 'decryption key'))) {
    if (b.label === GROUP_LABEL && b.der.length === 32) return groupKey(b.der);
    const priv = b.label === 'PRIVATE KEY' ? suffix(b.der, X25519_PKCS8_PREFIX) : undefined;
    if (priv) {
      const publicKey = x25519PublicKey(priv);
      return { kind: 'device', kid: keyId(publicKey), publicKey, privateKey: priv };
    }
  }
  throw new ConfigError(`decryption key ${path}: neither a group key ("${GROUP_LABEL}") nor an X25519 private key (from \`fwcast keygen --device\`)`);
}

/** Commander collector for a repeatable key-file flag (--encrypt-for, --decryption-key). */
export const collectKeyFiles = (value: string, previous: string[] = []): string[] => [...previous, value];
