/**
 * A publisher's signing key, wherever it lives: in memory (a key file), in an
 * HSM or token through PKCS#11, or behind a command (CI, a cloud KMS). What
 * the publisher signs (release manifests; root documents alike) goes through
 * this interface, so a key that never leaves its HSM signs it all. Every signature is checked
 * against the configured public key before it is used: a signer answering
 * with another key, or with garbage, is refused here, not by every device.
 *
 * Signatures are pure Ed25519 (RFC 8032, no pre-hash) over the exact bytes
 * given, which is what CKM_EDDSA without parameters and `openssl pkeyutl
 * -rawin` make.
 */
import * as ed25519 from './ed25519.js';
import { SignerError } from './errors.js';
import { hex } from './hex.js';
import { keyId } from './keys.js';

export interface Signer {
  /** The 32-byte Ed25519 public key the signatures verify with. */
  readonly publicKey: Uint8Array;
  /** Its COSE key id (protocol/keys.ts keyId). */
  readonly kid: Uint8Array;
  /** Where the key is, for messages: "key file keys/publisher.key", "PKCS#11 token fw key release". */
  readonly description: string;
  /** A 64-byte Ed25519 signature over `message` (not empty), verified with `publicKey`; rejects with SignerError otherwise. */
  sign(message: Uint8Array): Promise<Uint8Array>;
  /** Releases what the signer holds (a token session); later sign() calls reject. Idempotent. */
  close(): Promise<void>;
}

export interface SignerParts {
  publicKey: Uint8Array;
  description: string;
  /** Makes the signature; its answer is checked before sign() returns it. */
  signRaw(message: Uint8Array): Promise<Uint8Array>;
  close?(): Promise<void> | void;
}

/** A Signer from its parts: the one place that checks length and validity of what comes back. */
export function makeSigner(parts: SignerParts): Signer {
  if (parts.publicKey.length !== 32) throw new SignerError(`${parts.description}: public key is ${parts.publicKey.length} bytes, an Ed25519 key has 32`);
  const publicKey = new Uint8Array(parts.publicKey);
  const kid = keyId(publicKey);
  let closed = false;
  return {
    publicKey,
    kid,
    description: parts.description,
    async sign(message: Uint8Array): Promise<Uint8Array> {
      if (closed) throw new SignerError(`${parts.description}: signer is closed`);
      // What fwcast signs is never empty (a CBOR Sig_structure), and tokens differ on empty input (SoftHSM2 refuses it).
      if (message.length === 0) throw new SignerError(`${parts.description}: nothing to sign (an empty message)`);
      const signature = await parts.signRaw(message);
      if (!(signature instanceof Uint8Array) || signature.length !== 64) {
        throw new SignerError(`${parts.description}: answered ${signature instanceof Uint8Array ? `${signature.length} bytes` : typeof signature}, not a 64-byte Ed25519 signature`);
      }
      if (!ed25519.verify(signature, message, publicKey)) {
        throw new SignerError(`${parts.description}: its signature does not verify with public key ${hex(kid)} (is it the public key of the key that signs?)`, { kid: hex(kid) });
      }
      return new Uint8Array(signature);
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await parts.close?.();
    },
  };
}

/** A signer holding the 32-byte Ed25519 seed in memory (a key file's). `ed25519.ready()` must have resolved. */
export function seedSigner(seed: Uint8Array, description = 'in-memory key'): Signer {
  const key = new Uint8Array(seed);
  return makeSigner({
    publicKey: ed25519.publicKeyFromSeed(key),
    description,
    signRaw: async (message) => ed25519.sign(message, key),
    close: () => void key.fill(0),
  });
}
