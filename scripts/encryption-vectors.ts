/**
 * The confidential-firmware test vectors of protocol/SPEC.md §18.6, from fixed
 * keys, content key, nonce and ephemeral key: `npx tsx
 * scripts/encryption-vectors.ts` prints the section's body;
 * test/encryption-vectors.test.ts checks SPEC.md holds exactly it.
 */
import { hex } from '../protocol/hex.js';
import {
  deviceRecipient, encryptImage, encryptionBlockBytes, groupKey, kdfContext, x25519PublicKey,
} from '../protocol/encryption.js';

const fill = (n: number, length = 32): Uint8Array => new Uint8Array(length).fill(n);

/** Hex in lines of 32 bytes, as SPEC.md prints byte strings. */
const lines = (bytes: Uint8Array): string => (hex(bytes).match(/.{1,64}/g) ?? []).join('\n');

/** The fixed inputs: a vector must never depend on randomness. */
export function vectorInputs() {
  const plaintext = new TextEncoder().encode('fwcast confidential firmware test vector: two chunks of 32 bytes and a tail.');
  const group = groupKey(fill(0x11));
  const devicePrivate = fill(0x22);
  const device = { privateKey: devicePrivate, publicKey: x25519PublicKey(devicePrivate) };
  const cek = fill(0x33);
  const nonce = fill(0x44, 12);
  const ephemeralPrivate = fill(0x55);
  const encrypted = encryptImage(plaintext, [group, deviceRecipient(device.publicKey)], { chunkSize: 32, cek, nonce, ephemeralPrivate }, () => {
    throw new Error('vectors use no randomness');
  });
  return { plaintext, group, device, cek, nonce, ephemeralPrivate, ...encrypted };
}

export function encryptionVectors(): string {
  const v = vectorInputs();
  const block = encryptionBlockBytes(v.block);
  return [
    'Inputs (each key is 32 bytes of the value shown, the nonce 12; chunks of 32 bytes, to keep the vectors short):',
    '',
    `    group key            11…  kid ${hex(v.group.kid)}`,
    `    device private key   22…  public ${hex(v.device.publicKey)}  kid ${hex(v.block.recipients[1]!.kid)}`,
    `    content key (CEK)    33…`,
    `    base nonce           44…`,
    `    ephemeral private    55…  public ${hex(v.block.ephemeral!)}`,
    `    plaintext            "${new TextDecoder().decode(v.plaintext)}" (${v.plaintext.length} bytes)`,
    '',
    `Ciphertext (${v.ciphertext.length} bytes: chunks of 32 + 16, 32 + 16 and ${v.plaintext.length - 64} + 16):`,
    '',
    '```',
    lines(v.ciphertext),
    '```',
    '',
    `The device recipient's KDF context (HKDF info, ${kdfContext(v.block.ephemeral!, v.device.publicKey).length} bytes):`,
    '',
    '```',
    lines(kdfContext(v.block.ephemeral!, v.device.publicKey)),
    '```',
    '',
    `The encryption block (manifest key 11, ${block.length} bytes):`,
    '',
    '```',
    lines(block),
    '```',
  ].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) process.stdout.write(encryptionVectors() + '\n');
