/**
 * Ed25519. Signing and key generation (publisher side) use libsodium, loaded
 * on first use; verification (every device) uses OpenSSL through node:crypto,
 * which adds no WASM heap to a small agent. `ready()` must resolve before
 * signing or generating keys.
 */
import { createPublicKey, verify as verifySignature } from 'node:crypto';

type Sodium = (typeof import('libsodium-wrappers'))['default'];
let sodium: Sodium | undefined;

export async function ready(): Promise<void> {
  if (sodium) return;
  const module = (await import('libsodium-wrappers')).default;
  await module.ready;
  sodium = module;
}

function lib(): Sodium {
  if (!sodium) throw new Error('ed25519.ready() must be awaited before signing');
  return sodium;
}

export interface KeyPair {
  seed: Uint8Array;
  publicKey: Uint8Array;
}

export function generateKeyPair(): KeyPair {
  const seed = lib().randombytes_buf(32);
  return { seed, publicKey: publicKeyFromSeed(seed) };
}

export function publicKeyFromSeed(seed: Uint8Array): Uint8Array {
  return lib().crypto_sign_seed_keypair(seed).publicKey;
}

export function sign(message: Uint8Array, seed: Uint8Array): Uint8Array {
  return lib().crypto_sign_detached(message, lib().crypto_sign_seed_keypair(seed).privateKey);
}

const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

export function verify(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean {
  if (signature.length !== 64 || publicKey.length !== 32) return false;
  try {
    const key = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, publicKey]), format: 'der', type: 'spki' });
    return verifySignature(null, message, key, signature);
  } catch {
    return false;
  }
}
