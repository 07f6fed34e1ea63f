/**
 * Confidential firmware (SPEC §18): the image is encrypted before FEC, so
 * RaptorQ, symbol digests, the carousel and relays only ever see ciphertext.
 *
 * Content: AES-256-GCM over fixed-size chunks of the plaintext, each chunk
 * followed by its 16-byte tag; chunk i's nonce is the release's random base
 * nonce XOR i (big-endian, in its last 8 bytes), under a content key (CEK)
 * drawn at random for each release. A chunk decrypts on its own, so the agent
 * needs one chunk of memory whatever the image size.
 *
 * Key delivery, in the spirit of COSE_Encrypt recipients (RFC 9052 §5) and
 * SUIT firmware encryption: each recipient wraps the CEK with AES-256-KW
 * (RFC 3394) under
 *   - a group key provisioned on every device of a model or cohort (alg −5), or
 *   - a key-encryption key agreed with one device's X25519 key (alg −31,
 *     ECDH-ES + A256KW): HKDF-SHA-256 over the X25519 shared secret with the
 *     release's ephemeral key, its info a COSE_KDF_Context naming both public
 *     keys. One ephemeral key serves all device recipients of a release: the
 *     context binds each KEK to its device, and it saves 32 bytes a recipient.
 * Recipients are named by key id only: 8 bytes of SHA-256, of the device's
 * public key, or of a label and the group key.
 *
 * Node's crypto does every primitive (AES-GCM, AES-KW, X25519, HKDF). Pure:
 * bytes in, bytes out.
 */
import { createCipheriv, createDecipheriv, createHash, createPrivateKey, createPublicKey, diffieHellman, hkdfSync, type KeyObject } from 'node:crypto';
import { decodeCbor, encodeCbor } from './cbor.js';
import { DecryptionFailedError, InvalidManifestError, KeyUnwrapError, NoDecryptionKeyError, TooManyRecipientsError } from './errors.js';
import { hex } from './hex.js';
import { KEY_ID_SIZE, keyId } from './keys.js';

/** COSE algorithm ids (RFC 9053). */
export const ALG_A256GCM = 3;
export const ALG_A256KW = -5;
export const ALG_ECDH_ES_A256KW = -31;

export const CEK_SIZE = 32;
export const NONCE_SIZE = 12;
export const TAG_SIZE = 16;
/** AES-KW output for a 32-byte key: the key and its 8-byte integrity check. */
export const WRAPPED_SIZE = CEK_SIZE + 8;
export const X25519_KEY_SIZE = 32;

/** Plaintext bytes per chunk: 0.006% of tag overhead, and 256 KiB is all the agent holds while decrypting. */
export const DEFAULT_ENCRYPTION_CHUNK = 256 << 10;
/** Small chunks only cost tags (16 bytes each); the test vectors use 32. */
export const MIN_ENCRYPTION_CHUNK = 16;
export const MAX_ENCRYPTION_CHUNK = 8 << 20;

/**
 * Most recipients one manifest may carry. A recipient is 54 bytes of
 * manifest: 4096 of them (221 KB) fit in the default 256 KiB manifest limit;
 * fleets larger than that are addressed by cohort keys (README, "Confidential
 * firmware"). A receiver refuses more before it looks at any of them.
 */
export const MAX_RECIPIENTS = 4096;

/** SHA-256 in the COSE algorithms registry (as manifest key 8). */
const DIGEST_SHA256_ALG = -16;

const E = { alg: 1, chunkSize: 2, nonce: 3, plainSize: 4, plainDigest: 5, ephemeral: 6, recipients: 7 } as const;

export interface Recipient {
  alg: typeof ALG_A256KW | typeof ALG_ECDH_ES_A256KW;
  kid: Uint8Array;
  /** The CEK wrapped with AES-256-KW. */
  wrapped: Uint8Array;
}

/** Manifest key 11. The manifest's own size and digests are the ciphertext's. */
export interface EncryptionBlock {
  alg: typeof ALG_A256GCM;
  chunkSize: number;
  nonce: Uint8Array;
  plainSize: number;
  plainSha256: Uint8Array;
  /** The release's ephemeral X25519 public key: present iff a recipient is a device (alg −31). */
  ephemeral?: Uint8Array;
  recipients: Recipient[];
}

/** A key the publisher encrypts for. */
export type RecipientKey =
  | { kind: 'group'; kid: Uint8Array; key: Uint8Array }
  | { kind: 'device'; kid: Uint8Array; publicKey: Uint8Array };

/** A key a device decrypts with. */
export type DecryptionKey =
  | { kind: 'group'; kid: Uint8Array; key: Uint8Array }
  | { kind: 'device'; kid: Uint8Array; publicKey: Uint8Array; privateKey: Uint8Array };

const sha256 = (...parts: Uint8Array[]): Uint8Array => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
};

const GROUP_KID_LABEL = new TextEncoder().encode('fwcast group key id');

/** A group key's id: SHA-256 of a label and the key, cut to 8 bytes (names the key, reveals nothing of it). */
export function groupKeyId(key: Uint8Array): Uint8Array {
  return sha256(GROUP_KID_LABEL, key).subarray(0, KEY_ID_SIZE);
}

export function groupKey(key: Uint8Array): { kind: 'group'; kid: Uint8Array; key: Uint8Array } {
  if (key.length !== CEK_SIZE) throw new InvalidManifestError(`a group key is ${CEK_SIZE} bytes, got ${key.length}`);
  return { kind: 'group', kid: groupKeyId(key), key };
}

export function deviceRecipient(publicKey: Uint8Array): RecipientKey {
  if (publicKey.length !== X25519_KEY_SIZE) throw new InvalidManifestError(`an X25519 public key is ${X25519_KEY_SIZE} bytes, got ${publicKey.length}`);
  return { kind: 'device', kid: keyId(publicKey), publicKey };
}

/** PKCS#8 DER of an X25519 private key, before its 32 bytes (RFC 8410). */
export const X25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
/** SPKI DER of an X25519 public key, before its 32 bytes (RFC 8410). */
export const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

const b64url = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64url');

function x25519Private(privateKey: Uint8Array): KeyObject {
  return createPrivateKey({ key: Buffer.concat([X25519_PKCS8_PREFIX, privateKey]), format: 'der', type: 'pkcs8' });
}

function x25519Public(publicKey: Uint8Array): KeyObject {
  return createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: b64url(publicKey) }, format: 'jwk' });
}

/** The X25519 public key of a 32-byte private key. */
export function x25519PublicKey(privateKey: Uint8Array): Uint8Array {
  if (privateKey.length !== X25519_KEY_SIZE) throw new InvalidManifestError(`an X25519 private key is ${X25519_KEY_SIZE} bytes, got ${privateKey.length}`);
  const jwk = createPublicKey(x25519Private(privateKey)).export({ format: 'jwk' });
  return new Uint8Array(Buffer.from(jwk.x!, 'base64url'));
}

/**
 * The info of HKDF for a device recipient: a COSE_KDF_Context (RFC 9053 §5.2)
 * [AlgorithmID −5, PartyU [nil, ephemeral key, nil], PartyV [nil, device key,
 * nil], SuppPubInfo [256, h'', "fwcast firmware encryption"]].
 */
export function kdfContext(ephemeral: Uint8Array, devicePublic: Uint8Array): Uint8Array {
  return encodeCbor([ALG_A256KW, [null, ephemeral, null], [null, devicePublic, null], [256, new Uint8Array(0), 'fwcast firmware encryption']]);
}

/** The key-encryption key of a device recipient: HKDF-SHA-256(X25519 shared secret, no salt, kdfContext). */
function deviceKek(shared: Uint8Array, ephemeral: Uint8Array, devicePublic: Uint8Array): Uint8Array {
  if (shared.every((b) => b === 0)) throw new KeyUnwrapError('the X25519 shared secret is all zeros (a low-order public key)');
  return new Uint8Array(hkdfSync('sha256', shared, new Uint8Array(0), kdfContext(ephemeral, devicePublic), 32));
}

/** AES-256-KW (RFC 3394, default IV). */
export function wrapKey(kek: Uint8Array, key: Uint8Array): Uint8Array {
  const c = createCipheriv('id-aes256-wrap', kek, Buffer.from('A6A6A6A6A6A6A6A6', 'hex'));
  return new Uint8Array(Buffer.concat([c.update(key), c.final()]));
}

function unwrapKey(kek: Uint8Array, wrapped: Uint8Array, kid: Uint8Array): Uint8Array {
  try {
    const d = createDecipheriv('id-aes256-wrap', kek, Buffer.from('A6A6A6A6A6A6A6A6', 'hex'));
    return new Uint8Array(Buffer.concat([d.update(wrapped), d.final()]));
  } catch {
    throw new KeyUnwrapError(`the content key wrapped for key ${hex(kid)} does not unwrap with it (a tampered wrapped key, or another key under the same id)`, { kid: hex(kid) });
  }
}

/** Ciphertext bytes for `plainSize` bytes in chunks of `chunkSize`: one tag per chunk. */
export function cipherSizeFor(plainSize: number, chunkSize: number): number {
  return plainSize + TAG_SIZE * Math.ceil(plainSize / chunkSize);
}

/** Chunk `index`'s nonce: the base nonce XOR the index, big-endian in the last 8 bytes. */
export function chunkNonce(base: Uint8Array, index: number): Uint8Array {
  const nonce = new Uint8Array(base);
  const view = new DataView(nonce.buffer);
  view.setBigUint64(4, view.getBigUint64(4) ^ BigInt(index));
  return nonce;
}

/** Encrypts chunk `index`: ciphertext then tag. */
export function encryptChunk(cek: Uint8Array, base: Uint8Array, index: number, plain: Uint8Array): Uint8Array {
  const c = createCipheriv('aes-256-gcm', cek, chunkNonce(base, index));
  return new Uint8Array(Buffer.concat([c.update(plain), c.final(), c.getAuthTag()]));
}

/** Decrypts chunk `index` (ciphertext then tag) into `out`; a tag that does not verify is a DecryptionFailedError. */
export function decryptChunk(cek: Uint8Array, base: Uint8Array, index: number, sealed: Uint8Array, out: Uint8Array): number {
  if (sealed.length < TAG_SIZE) throw new DecryptionFailedError(`chunk ${index} is shorter than its tag`, { chunk: index });
  const d = createDecipheriv('aes-256-gcm', cek, chunkNonce(base, index));
  d.setAuthTag(sealed.subarray(sealed.length - TAG_SIZE));
  const n = sealed.length - TAG_SIZE;
  try {
    const a = d.update(sealed.subarray(0, n));
    const b = d.final();
    out.set(a, 0);
    out.set(b, a.length);
  } catch {
    throw new DecryptionFailedError(`chunk ${index} does not decrypt: its tag does not verify under the unwrapped content key`, { chunk: index });
  }
  return n;
}

export interface EncryptOptions {
  chunkSize?: number;
  /** For test vectors only: a release's CEK, base nonce and ephemeral private key are random. */
  cek?: Uint8Array;
  nonce?: Uint8Array;
  ephemeralPrivate?: Uint8Array;
}

/** Encrypts an image for `recipients`: the ciphertext to publish and the block for manifest key 11. */
export function encryptImage(plain: Uint8Array, recipients: readonly RecipientKey[], options: EncryptOptions = {}, random: (n: number) => Uint8Array): { ciphertext: Uint8Array; block: EncryptionBlock } {
  if (recipients.length === 0) throw new InvalidManifestError('an encrypted release needs at least one recipient');
  if (recipients.length > MAX_RECIPIENTS) {
    throw new TooManyRecipientsError(`${recipients.length} recipients exceed the ${MAX_RECIPIENTS} a receiver accepts: encrypt for cohort (group) keys instead of each device`);
  }
  const kids = new Set(recipients.map((r) => hex(r.kid)));
  if (kids.size !== recipients.length) throw new InvalidManifestError('a recipient key is listed twice');
  const chunkSize = options.chunkSize ?? DEFAULT_ENCRYPTION_CHUNK;
  checkChunkSize(chunkSize);
  if (plain.length === 0) throw new InvalidManifestError('the image is empty');
  const cek = options.cek ?? random(CEK_SIZE);
  const nonce = options.nonce ?? random(NONCE_SIZE);
  const ciphertext = new Uint8Array(cipherSizeFor(plain.length, chunkSize));
  for (let i = 0, at = 0; i * chunkSize < plain.length; i++) {
    const sealed = encryptChunk(cek, nonce, i, plain.subarray(i * chunkSize, Math.min((i + 1) * chunkSize, plain.length)));
    ciphertext.set(sealed, at);
    at += sealed.length;
  }
  let ephemeral: Uint8Array | undefined;
  let ephemeralKey: KeyObject | undefined;
  if (recipients.some((r) => r.kind === 'device')) {
    const priv = options.ephemeralPrivate ?? random(X25519_KEY_SIZE);
    ephemeral = x25519PublicKey(priv);
    ephemeralKey = x25519Private(priv);
  }
  const wrapped = recipients.map((r): Recipient => {
    if (r.kind === 'group') return { alg: ALG_A256KW, kid: r.kid, wrapped: wrapKey(r.key, cek) };
    const shared = new Uint8Array(diffieHellman({ privateKey: ephemeralKey!, publicKey: x25519Public(r.publicKey) }));
    return { alg: ALG_ECDH_ES_A256KW, kid: r.kid, wrapped: wrapKey(deviceKek(shared, ephemeral!, r.publicKey), cek) };
  });
  return {
    ciphertext,
    block: { alg: ALG_A256GCM, chunkSize, nonce, plainSize: plain.length, plainSha256: sha256(plain), ...(ephemeral ? { ephemeral } : {}), recipients: wrapped },
  };
}

/**
 * The release's content key, unwrapped with the first of `keys` that a
 * recipient names. Bounded work: one unwrap per key held, whatever the
 * recipient list. NoDecryptionKeyError if no recipient names a key held;
 * KeyUnwrapError if one does and does not unwrap.
 */
export function unwrapContentKey(block: EncryptionBlock, keys: readonly DecryptionKey[]): { cek: Uint8Array; kid: Uint8Array; kind: DecryptionKey['kind'] } {
  const byKid = new Map<string, Recipient>();
  for (const r of block.recipients) if (!byKid.has(hex(r.kid))) byKid.set(hex(r.kid), r);
  let failure: KeyUnwrapError | undefined;
  for (const key of keys) {
    const r = byKid.get(hex(key.kid));
    if (!r) continue;
    try {
      if (key.kind === 'group') {
        if (r.alg !== ALG_A256KW) throw new KeyUnwrapError(`recipient ${hex(r.kid)} is not a group-key recipient (alg ${r.alg})`, { kid: hex(r.kid) });
        return { cek: unwrapKey(key.key, r.wrapped, r.kid), kid: key.kid, kind: 'group' };
      }
      if (r.alg !== ALG_ECDH_ES_A256KW || !block.ephemeral) throw new KeyUnwrapError(`recipient ${hex(r.kid)} is not a device-key recipient (alg ${r.alg})`, { kid: hex(r.kid) });
      const shared = new Uint8Array(diffieHellman({ privateKey: x25519Private(key.privateKey), publicKey: x25519Public(block.ephemeral) }));
      return { cek: unwrapKey(deviceKek(shared, block.ephemeral, key.publicKey), r.wrapped, r.kid), kid: key.kid, kind: 'device' };
    } catch (err) {
      if (!(err instanceof KeyUnwrapError)) throw new KeyUnwrapError(`recipient ${hex(r.kid)}: ${(err as Error).message}`, { kid: hex(r.kid) });
      failure = err;
    }
  }
  if (failure) throw failure;
  throw new NoDecryptionKeyError(keys.length === 0
    ? `the release is encrypted for ${block.recipients.length} recipients and this device holds no decryption key`
    : `none of the release's ${block.recipients.length} recipients is a key this device holds (${keys.map((k) => hex(k.kid)).join(', ')})`);
}

function checkChunkSize(chunkSize: number): void {
  if (!Number.isInteger(chunkSize) || chunkSize < MIN_ENCRYPTION_CHUNK || chunkSize > MAX_ENCRYPTION_CHUNK) {
    throw new InvalidManifestError(`encryption chunk size ${chunkSize} must be an integer in ${MIN_ENCRYPTION_CHUNK}..${MAX_ENCRYPTION_CHUNK}`);
  }
}

export function encodeEncryptionBlock(b: EncryptionBlock): Map<number, unknown> {
  const m = new Map<number, unknown>([
    [E.alg, b.alg],
    [E.chunkSize, b.chunkSize],
    [E.nonce, b.nonce],
    [E.plainSize, b.plainSize],
    [E.plainDigest, [DIGEST_SHA256_ALG, b.plainSha256]],
  ]);
  if (b.ephemeral) m.set(E.ephemeral, b.ephemeral);
  m.set(E.recipients, b.recipients.map((r) => [r.alg, r.kid, r.wrapped]));
  return m;
}

function bytes(value: unknown, length: number, name: string): Uint8Array {
  if (!(value instanceof Uint8Array) || value.length !== length) throw new InvalidManifestError(`encryption field "${name}" must be ${length} bytes`);
  return new Uint8Array(value);
}

/** Manifest key 11, checked against the ciphertext size the manifest declares. Refuses too many recipients before reading any. */
export function decodeEncryptionBlock(value: unknown, cipherSize: number): EncryptionBlock {
  if (!(value instanceof Map)) throw new InvalidManifestError('manifest key 11 (encryption) must be a map');
  const alg = value.get(E.alg);
  if (alg !== ALG_A256GCM) throw new InvalidManifestError(`content encryption algorithm ${String(alg)} is not supported (expected ${ALG_A256GCM}, A256GCM)`);
  const chunkSize = value.get(E.chunkSize);
  if (typeof chunkSize !== 'number') throw new InvalidManifestError('encryption field "chunk-size" must be an integer');
  checkChunkSize(chunkSize);
  const nonce = bytes(value.get(E.nonce), NONCE_SIZE, 'nonce');
  const plainSize = value.get(E.plainSize);
  if (typeof plainSize !== 'number' || !Number.isSafeInteger(plainSize) || plainSize < 1) throw new InvalidManifestError('encryption field "plaintext-size" must be a positive integer');
  if (cipherSizeFor(plainSize, chunkSize) !== cipherSize) {
    throw new InvalidManifestError(`${plainSize} plaintext bytes in chunks of ${chunkSize} make ${cipherSizeFor(plainSize, chunkSize)} ciphertext bytes, the manifest says ${cipherSize}`);
  }
  const digest = value.get(E.plainDigest);
  if (!Array.isArray(digest) || digest.length !== 2 || digest[0] !== DIGEST_SHA256_ALG) throw new InvalidManifestError('encryption field "plaintext-digest" must be [-16 (SHA-256), digest]');
  const plainSha256 = bytes(digest[1], 32, 'plaintext-digest');
  const list = value.get(E.recipients);
  if (!Array.isArray(list) || list.length === 0) throw new InvalidManifestError('encryption field "recipients" must be a non-empty array');
  if (list.length > MAX_RECIPIENTS) {
    throw new TooManyRecipientsError(`${list.length} recipients exceed the limit of ${MAX_RECIPIENTS}: a release for that many devices addresses cohorts by group keys`);
  }
  const recipients = list.map((entry: unknown, i): Recipient => {
    if (!Array.isArray(entry) || entry.length !== 3 || (entry[0] !== ALG_A256KW && entry[0] !== ALG_ECDH_ES_A256KW)) {
      throw new InvalidManifestError(`recipient ${i} must be [-5 or -31, kid, wrapped key]`);
    }
    return { alg: entry[0], kid: bytes(entry[1], KEY_ID_SIZE, `recipient ${i} kid`), wrapped: bytes(entry[2], WRAPPED_SIZE, `recipient ${i} wrapped key`) };
  });
  const devices = recipients.some((r) => r.alg === ALG_ECDH_ES_A256KW);
  const ephemeral = value.has(E.ephemeral) ? bytes(value.get(E.ephemeral), X25519_KEY_SIZE, 'ephemeral') : undefined;
  if (devices !== (ephemeral !== undefined)) throw new InvalidManifestError('the ephemeral key must be present exactly when a recipient is a device (alg -31)');
  return { alg, chunkSize, nonce, plainSize, plainSha256, ...(ephemeral ? { ephemeral } : {}), recipients };
}

/** The encryption block alone as CBOR (test vectors, the cost measurement). */
export function encryptionBlockBytes(b: EncryptionBlock): Uint8Array {
  return encodeCbor(encodeEncryptionBlock(b));
}

export function decodeEncryptionBlockBytes(bytes: Uint8Array, cipherSize: number): EncryptionBlock {
  return decodeEncryptionBlock(decodeCbor(bytes, 'encryption block'), cipherSize);
}
