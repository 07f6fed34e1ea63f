/**
 * The publisher's side of confidential firmware (protocol/encryption.ts):
 * `fwcast sign --encrypt-for` encrypts the image for its recipients before
 * anything else sees it; the release is then built from the ciphertext as
 * any other, so FEC, symbol authentication, the carousel and relays work on
 * ciphertext unchanged. `fwcast inspect` shows recipients by key id only.
 */
import { randomBytes } from 'node:crypto';
import { ALG_A256KW, encryptImage, type EncryptionBlock, type RecipientKey } from '../protocol/encryption.js';
import { hex } from '../protocol/hex.js';

/** The image encrypted for `recipients` under a fresh content key, nonce and ephemeral key. */
export function encryptForRecipients(image: Uint8Array, recipients: readonly RecipientKey[], chunkSize?: number): { ciphertext: Uint8Array; block: EncryptionBlock } {
  return encryptImage(image, recipients, chunkSize ? { chunkSize } : {}, (n) => new Uint8Array(randomBytes(n)));
}

/** What `fwcast inspect` shows of an encryption block: never a wrapped key. */
export function encryptionSummary(b: EncryptionBlock) {
  return {
    content: 'A256GCM',
    chunkSize: b.chunkSize,
    plainSize: b.plainSize,
    plainSha256: hex(b.plainSha256),
    recipients: b.recipients.map((r) => ({ kind: r.alg === ALG_A256KW ? 'group' : 'device', keyId: hex(r.kid) })),
  };
}
