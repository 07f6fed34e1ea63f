/**
 * What confidential firmware costs (protocol/encryption.ts):
 *  - manifest bytes per recipient, and what the manifest's growth costs the
 *    carousel: manifest datagrams per round, and how long an agent that joins
 *    waits for a whole manifest copy, at 10, 1,000 and 10,000 per-device
 *    recipients and with one cohort (group) key; where the receiver's bounds
 *    (MAX_RECIPIENTS, the 256 KiB manifest limit) make cohorts necessary;
 *  - the publisher's work per recipient (X25519 + HKDF + AES-KW);
 *  - the agent's decryption pass per MiB, against the SHA-256 pass over the
 *    same file that every agent makes anyway (encrypted or not), on the
 *    same file in the same run.
 *
 *   npx tsx bench/encryption-cost.ts [IMAGE_MIB]
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { MANIFEST_EVERY } from '../carousel/carousel.js';
import * as ed25519 from '../protocol/ed25519.js';
import { decryptImageFile } from '../device-agent/decrypting-image.js';
import { sha256File } from '../device-agent/store.js';
import { AUTH_SCHEME_MERKLE_CHUNKS } from '../protocol/auth.js';
import {
  ALG_ECDH_ES_A256KW, cipherSizeFor, DEFAULT_ENCRYPTION_CHUNK, deviceRecipient, encryptImage, groupKey, MAX_RECIPIENTS, WRAPPED_SIZE, x25519PublicKey,
  type EncryptionBlock, type RecipientKey,
} from '../protocol/encryption.js';
import { segmentOti, sourceSymbolCount } from '../protocol/fec.js';
import { KEY_ID_SIZE } from '../protocol/keys.js';
import { DEFAULT_DATAGRAM_SIZE, DEFAULT_LIMITS, DEFAULT_SEGMENT_SIZE } from '../protocol/limits.js';
import { planSegments, publishedSymbols, signManifest, type Manifest } from '../protocol/manifest.js';
import { MANIFEST_OVERHEAD } from '../protocol/packet.js';
import { DEFAULT_REPAIR_PERCENT, segmentSizeFor, symbolSizeFor } from '../protocol/release.js';

const random = (n: number): Uint8Array => new Uint8Array(randomBytes(n));

export interface RecipientCost {
  /** 'group' (one cohort key) or the number of per-device recipients. */
  recipients: number | 'group';
  signedManifestBytes: number;
  /** Bytes more than the same manifest unencrypted. */
  extraBytes: number;
  bytesPerRecipient: number;
  manifestFragments: number;
  /** Manifest datagrams in one round of the image's carousel, and their share of the round. */
  manifestDatagramsPerRound: number;
  roundShare: number;
  /** Datagrams between two manifest copies: what a joining agent may wait, at worst, before it can accept the release. */
  datagramsBetweenCopies: number;
  secondsBetweenCopiesAt20Mbit: number;
  /** Within the receiver's bounds (MAX_RECIPIENTS and maxManifestSize)? */
  accepted: boolean;
}

export interface EncryptionCost {
  imageMiB: number;
  recipients: RecipientCost[];
  /** Publisher: wrapping the content key for one device recipient, µs. */
  wrapMicrosPerDevice: number;
  /** Agent: the decryption pass, and the SHA-256 pass every agent makes, ms per MiB. */
  decryptMsPerMiB: number;
  hashMsPerMiB: number;
}

/** The manifest of an image of `size` bytes, as the publisher would sign it (digests and root stand in: sizes are what is measured). */
function manifestFor(size: number): Manifest {
  const symbolSize = symbolSizeFor(DEFAULT_DATAGRAM_SIZE);
  const segmentSize = segmentSizeFor(symbolSize, DEFAULT_SEGMENT_SIZE);
  const segments = planSegments(size, symbolSize, segmentSize).map((p) => {
    const k = sourceSymbolCount(p.length, symbolSize);
    return { index: p.index, offset: p.offset, oti: segmentOti(p.length, symbolSize), sourceSymbols: k, published: publishedSymbols(k, DEFAULT_REPAIR_PERCENT), sha256: random(32) };
  });
  return {
    model: 'rpi4', seq: 7, version: '7.0.0', created: 1_800_000_000, imageSize: size, imageSha256: random(32), symbolSize, segmentSize, repairPercent: DEFAULT_REPAIR_PERCENT, segments,
    auth: { scheme: AUTH_SCHEME_MERKLE_CHUNKS, digestLength: 10, chunkSymbols: 97, root: random(16), coding: { groupChunks: 16, parityPerChunk: 1 } },
  };
}

/** Symbol datagrams of one carousel round (repair included), as the carousel counts them. */
function roundSymbols(m: Manifest): number {
  return m.segments.reduce((n, s) => n + s.published, 0);
}

export async function measureEncryptionCost(imageMiB: number, counts: readonly number[] = [10, 1000, 10_000]): Promise<EncryptionCost> {
  await ed25519.ready();
  const plainSize = imageMiB << 20;
  const cipherSize = cipherSizeFor(plainSize, DEFAULT_ENCRYPTION_CHUNK);
  const seed = random(32);
  const base = signManifest(manifestFor(plainSize), seed).length;
  const manifest = manifestFor(cipherSize);
  const fragment = DEFAULT_DATAGRAM_SIZE - MANIFEST_OVERHEAD;
  const block = (recipients: EncryptionBlock['recipients'], ephemeral: boolean): EncryptionBlock => ({
    alg: 3, chunkSize: DEFAULT_ENCRYPTION_CHUNK, nonce: random(12), plainSize, plainSha256: random(32), ...(ephemeral ? { ephemeral: random(32) } : {}), recipients,
  });
  const cost = (recipients: number | 'group', b: EncryptionBlock): RecipientCost => {
    const signed = signManifest({ ...manifest, encryption: b }, seed).length;
    const fragments = Math.ceil(signed / fragment);
    const n = roundSymbols(manifest);
    const perRound = Math.ceil(n / (MANIFEST_EVERY * fragments) + 1) * fragments;
    const between = MANIFEST_EVERY * fragments;
    const count = recipients === 'group' ? 1 : recipients;
    return {
      recipients, signedManifestBytes: signed, extraBytes: signed - base, bytesPerRecipient: (signed - base) / count, manifestFragments: fragments,
      manifestDatagramsPerRound: perRound, roundShare: perRound / (n + perRound), datagramsBetweenCopies: between,
      secondsBetweenCopiesAt20Mbit: (between * (DEFAULT_DATAGRAM_SIZE + 48) * 8) / 20e6,
      accepted: count <= MAX_RECIPIENTS && signed <= DEFAULT_LIMITS.maxManifestSize,
    };
  };
  // Sizes do not depend on the wrapped bytes: recipients beyond what a publisher may list are laid out the same way, to measure them.
  const device = (i: number) => ({ alg: ALG_ECDH_ES_A256KW as typeof ALG_ECDH_ES_A256KW, kid: random(KEY_ID_SIZE).map((x, j) => (j < 4 ? (i >> (8 * j)) & 0xff : x)), wrapped: random(WRAPPED_SIZE) });
  const recipients: RecipientCost[] = [cost('group', block([{ alg: -5, kid: random(KEY_ID_SIZE), wrapped: random(WRAPPED_SIZE) }], false))];
  for (const n of counts) recipients.push(cost(n, block(Array.from({ length: n }, (_, i) => device(i)), true)));

  // Publisher: real wraps for 1000 devices.
  const devices: RecipientKey[] = Array.from({ length: 1000 }, () => deviceRecipient(x25519PublicKey(random(32))));
  const small = random(4096);
  let started = performance.now();
  encryptImage(small, devices, {}, random);
  const wrapMicrosPerDevice = ((performance.now() - started) * 1000) / devices.length;

  // Agent: decrypt and hash the same file.
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-bench-enc-'));
  try {
    const group = groupKey(random(32));
    const cek = random(32);
    const { ciphertext, block: b } = encryptImage(random(plainSize), [group], { cek }, random);
    writeFileSync(join(dir, 'c'), ciphertext);
    await sha256File(join(dir, 'c'));
    started = performance.now();
    await sha256File(join(dir, 'c'));
    const hashMs = performance.now() - started;
    started = performance.now();
    await decryptImageFile(join(dir, 'c'), join(dir, 'p'), b, cek);
    const decryptMs = performance.now() - started;
    return { imageMiB, recipients, wrapMicrosPerDevice, decryptMsPerMiB: decryptMs / imageMiB, hashMsPerMiB: hashMs / imageMiB };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await measureEncryptionCost(Number(process.argv[2] ?? 64));
  process.stdout.write(JSON.stringify(r, null, 2) + '\n');
}
