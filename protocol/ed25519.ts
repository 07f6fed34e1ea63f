/** Ed25519 through libsodium; `ready()` must resolve before the other calls. */
import sodium from 'libsodium-wrappers';

export async function ready(): Promise<void> {
  await sodium.ready;
}

export interface KeyPair {
  seed: Uint8Array;
  publicKey: Uint8Array;
}

export function generateKeyPair(): KeyPair {
  const seed = sodium.randombytes_buf(32);
  return { seed, publicKey: publicKeyFromSeed(seed) };
}

export function publicKeyFromSeed(seed: Uint8Array): Uint8Array {
  return sodium.crypto_sign_seed_keypair(seed).publicKey;
}

export function sign(message: Uint8Array, seed: Uint8Array): Uint8Array {
  return sodium.crypto_sign_detached(message, sodium.crypto_sign_seed_keypair(seed).privateKey);
}

export function verify(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean {
  if (signature.length !== 64 || publicKey.length !== 32) return false;
  try {
    return sodium.crypto_sign_verify_detached(signature, message, publicKey);
  } catch {
    return false;
  }
}
