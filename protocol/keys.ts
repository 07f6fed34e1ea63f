/**
 * Ed25519 keys in standard PEM (PKCS#8 private, SPKI public), so keys made by
 * `openssl genpkey -algorithm ed25519` work too, plus the raw base64 form for
 * public keys in configuration files. Key id (COSE `kid`) = first 8 bytes of
 * SHA-256 over the 32-byte public key.
 */
import { createHash } from 'node:crypto';
import { ConfigError } from './errors.js';

const PKCS8_PREFIX = Uint8Array.from([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]);
const SPKI_PREFIX = Uint8Array.from([0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00]);
export const KEY_ID_SIZE = 8;

export interface PublicKey {
  publicKey: Uint8Array;
  kid: Uint8Array;
}

export function keyId(publicKey: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(publicKey).digest().subarray(0, KEY_ID_SIZE));
}

function toPem(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64');
  return `-----BEGIN ${label}-----\n${b64.match(/.{1,64}/g)!.join('\n')}\n-----END ${label}-----\n`;
}

function fromPem(text: string, label: string, what: string): Uint8Array {
  const match = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]+)-----END ${label}-----`).exec(text);
  if (!match) throw new ConfigError(`${what}: no "${label}" PEM block found`);
  return new Uint8Array(Buffer.from(match[1]!.replace(/\s+/g, ''), 'base64'));
}

function stripPrefix(der: Uint8Array, prefix: Uint8Array, what: string): Uint8Array {
  if (der.length !== prefix.length + 32 || !prefix.every((b, i) => der[i] === b)) {
    throw new ConfigError(`${what}: not an Ed25519 key`);
  }
  return der.slice(prefix.length);
}

export function encodePrivateKeyPem(seed: Uint8Array): string {
  return toPem('PRIVATE KEY', Uint8Array.from([...PKCS8_PREFIX, ...seed]));
}

export function encodePublicKeyPem(publicKey: Uint8Array): string {
  return toPem('PUBLIC KEY', Uint8Array.from([...SPKI_PREFIX, ...publicKey]));
}

/** The 32-byte Ed25519 seed from a PKCS#8 PEM private key. */
export function decodePrivateKeyPem(text: string, what = 'private key'): Uint8Array {
  return stripPrefix(fromPem(text, 'PRIVATE KEY', what), PKCS8_PREFIX, what);
}

/** A public key from SPKI PEM text or from 32 raw bytes in base64. */
export function decodePublicKey(text: string, what = 'public key'): PublicKey {
  const trimmed = text.trim();
  let publicKey: Uint8Array;
  if (trimmed.startsWith('-----BEGIN')) {
    publicKey = stripPrefix(fromPem(trimmed, 'PUBLIC KEY', what), SPKI_PREFIX, what);
  } else {
    const raw = /^[A-Za-z0-9+/]{43}=$/.test(trimmed) ? Buffer.from(trimmed, 'base64') : undefined;
    if (!raw || raw.length !== 32) throw new ConfigError(`${what}: expected an Ed25519 public key as PEM or as 32 bytes of base64`);
    publicKey = new Uint8Array(raw);
  }
  return { publicKey, kid: keyId(publicKey) };
}
