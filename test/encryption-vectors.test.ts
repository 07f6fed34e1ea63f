/**
 * SPEC.md §18.6 prints exactly what scripts/encryption-vectors.ts generates,
 * and the printed bytes work as the section says: the block decodes against
 * the ciphertext's size, the group key and the device key each unwrap the
 * content key, and the ciphertext decrypts, chunk by chunk, to the plaintext.
 */
import { readFileSync } from 'node:fs';
import test from 'ava';
import { decodeEncryptionBlockBytes, decryptChunk, groupKey, kdfContext, TAG_SIZE, unwrapContentKey, x25519PublicKey } from '../protocol/encryption.js';
import { keyId } from '../protocol/keys.js';
import { encryptionVectors } from '../scripts/encryption-vectors.js';

const SPEC = readFileSync(new URL('../protocol/SPEC.md', import.meta.url), 'utf8');
const section = SPEC.slice(SPEC.indexOf('### 18.6 Test vectors'));
const blocks = [...section.matchAll(/```\n([0-9a-f\n]+)```/g)].map((m) => new Uint8Array(Buffer.from(m[1]!.replace(/\n/g, ''), 'hex')));

test('SPEC.md §18.6 holds exactly the generated vectors', (t) => {
  t.true(section.includes(encryptionVectors()));
});

test('the printed block opens with the printed keys and the printed ciphertext decrypts to the plaintext', (t) => {
  t.is(blocks.length, 3);
  const [ciphertext, context, blockBytes] = blocks as [Uint8Array, Uint8Array, Uint8Array];
  const block = decodeEncryptionBlockBytes(blockBytes, ciphertext.length);
  const devicePrivate = new Uint8Array(32).fill(0x22);
  const devicePublic = x25519PublicKey(devicePrivate);
  t.deepEqual(kdfContext(block.ephemeral!, devicePublic), context);
  const fromGroup = unwrapContentKey(block, [groupKey(new Uint8Array(32).fill(0x11))]);
  const fromDevice = unwrapContentKey(block, [{ kind: 'device', kid: keyId(devicePublic), publicKey: devicePublic, privateKey: devicePrivate }]);
  t.deepEqual(fromGroup.cek, new Uint8Array(32).fill(0x33));
  t.deepEqual(fromDevice.cek, fromGroup.cek);
  const plain: number[] = [];
  const out = new Uint8Array(block.chunkSize);
  for (let i = 0, at = 0; at < ciphertext.length; i++) {
    const sealed = ciphertext.subarray(at, Math.min(at + block.chunkSize + TAG_SIZE, ciphertext.length));
    const n = decryptChunk(fromGroup.cek, block.nonce, i, sealed, out);
    plain.push(...out.subarray(0, n));
    at += sealed.length;
  }
  t.is(Buffer.from(plain).toString('utf8'), 'fwcast confidential firmware test vector: two chunks of 32 bytes and a tail.');
});
