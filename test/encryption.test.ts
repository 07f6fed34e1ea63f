/**
 * Confidential firmware, unit level (protocol/encryption.ts,
 * device-agent/decrypting-image.ts): the encryption block round-trips in a
 * signed manifest, each recipient kind opens it, and each bad input gets its
 * named refusal: no key, a tampered wrapped key, a wrong key, a tampered
 * ciphertext, a wrong plaintext digest, too many recipients. The agent
 * (in memory) installs the exact plaintext and keeps the ciphertext.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from '../device-agent/agent.js';
import { decryptImageFile, vetEncryptedRelease } from '../device-agent/decrypting-image.js';
import { FileInstaller } from '../device-agent/installers/file-installer.js';
import { Receiver } from '../device-agent/receiver/receiver.js';
import { Store, type InstalledRecord } from '../device-agent/store.js';
import { Carousel } from '../carousel/carousel.js';
import {
  cipherSizeFor, decodeEncryptionBlockBytes, deviceRecipient, encryptImage, encryptionBlockBytes, groupKey, MAX_RECIPIENTS, unwrapContentKey, x25519PublicKey,
  type DecryptionKey, type EncryptionBlock, type RecipientKey,
} from '../protocol/encryption.js';
import { DecryptionFailedError, DigestMismatchError, KeyUnwrapError, NoDecryptionKeyError, TooManyRecipientsError } from '../protocol/errors.js';
import { keyId } from '../protocol/keys.js';
import { nullLogger } from '../protocol/log.js';
import { decodeManifest, encodeManifest, openSignedManifest } from '../protocol/manifest.js';
import { buildRelease } from '../server/release.js';
import { MemoryHub, MemoryTransport } from '../transport/memory.js';
import { makeImage, makeKey, sha256hex } from './helpers/fixtures.js';

const random = (n: number): Uint8Array => new Uint8Array(randomBytes(n));

function device(): { recipient: RecipientKey; key: DecryptionKey } {
  const privateKey = random(32);
  const publicKey = x25519PublicKey(privateKey);
  return { recipient: deviceRecipient(publicKey), key: { kind: 'device', kid: keyId(publicKey), publicKey, privateKey } };
}

async function decryptAll(ciphertext: Uint8Array, block: EncryptionBlock, cek: Uint8Array): Promise<Uint8Array> {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-enc-'));
  writeFileSync(join(dir, 'c'), ciphertext);
  await decryptImageFile(join(dir, 'c'), join(dir, 'p'), block, cek);
  return new Uint8Array(readFileSync(join(dir, 'p')));
}

test('a group key and each listed device key open the release; the plaintext comes back exactly', async (t) => {
  const image = makeImage(700_001, 3);
  const group = groupKey(random(32));
  const [a, b, left] = [device(), device(), device()];
  const { ciphertext, block } = encryptImage(image, [group, a.recipient, b.recipient], { chunkSize: 65536 }, random);
  t.is(ciphertext.length, cipherSizeFor(image.length, 65536));
  t.is(block.recipients.length, 3);
  for (const key of [group, a.key, b.key]) {
    const { cek, kind } = unwrapContentKey(block, [key]);
    t.is(kind, key.kind);
    t.is(sha256hex(await decryptAll(ciphertext, block, cek)), sha256hex(image));
  }
  const error = t.throws(() => unwrapContentKey(block, [left.key]), { instanceOf: NoDecryptionKeyError });
  t.is(error.reason, 'no-decryption-key');
  t.throws(() => unwrapContentKey(block, []), { instanceOf: NoDecryptionKeyError });
  // A key the device holds besides the one listed: the listed one opens it.
  t.is(unwrapContentKey(block, [left.key, b.key]).kind, 'device');
});

test('the encryption block rides in the signed manifest as key 11 and decodes to the same block; a manifest without it is unchanged', async (t) => {
  const key = await makeKey();
  const image = makeImage(100_000, 5);
  const plain = buildRelease({ image, seed: key.seed, model: 'rpi4', version: '1', seq: 1, created: 1_800_000_000 });
  t.false('encryption' in decodeManifest(encodeManifest(plain.manifest)));
  const { ciphertext, block } = encryptImage(image, [groupKey(random(32)), device().recipient], {}, random);
  const release = buildRelease({ image: ciphertext, encryption: block, seed: key.seed, model: 'rpi4', version: '1', seq: 1, created: 1_800_000_000 });
  const opened = openSignedManifest(release.signed, [key]).manifest;
  t.deepEqual(opened.encryption, block);
  t.is(opened.imageSize, ciphertext.length, 'size and digests are the ciphertext\'s');
  t.is(Buffer.from(opened.imageSha256).toString('hex'), sha256hex(ciphertext));
});

test('bad input: tampered wrapped key, wrong key under a listed id, tampered ciphertext, wrong plaintext digest', async (t) => {
  const image = makeImage(300_000, 7);
  const group = groupKey(random(32));
  const a = device();
  const { ciphertext, block } = encryptImage(image, [group, a.recipient], { chunkSize: 4096 }, random);

  const tampered: EncryptionBlock = { ...block, recipients: block.recipients.map((r) => ({ ...r, wrapped: r.wrapped.map((x, i) => (i === 5 ? x ^ 1 : x)) })) };
  t.is(t.throws(() => unwrapContentKey(tampered, [group]), { instanceOf: KeyUnwrapError }).reason, 'key-unwrap-failed');
  t.throws(() => unwrapContentKey(tampered, [a.key]), { instanceOf: KeyUnwrapError });
  // Another private key presented under a's id: the KEK differs, AES-KW's check fails.
  const impostor = random(32);
  t.throws(() => unwrapContentKey(block, [{ kind: 'device', kid: a.key.kid, publicKey: a.recipient.kind === 'device' ? a.recipient.publicKey : new Uint8Array(32), privateKey: impostor }]), { instanceOf: KeyUnwrapError });
  // A group key presented under another group key's id.
  t.throws(() => unwrapContentKey(block, [{ kind: 'group', kid: group.kid, key: random(32) }]), { instanceOf: KeyUnwrapError });

  const { cek } = unwrapContentKey(block, [group]);
  const flipped = ciphertext.slice();
  flipped[10_000]! ^= 0x40;
  const failed = await t.throwsAsync(() => (decryptAll(flipped, block, cek)), { instanceOf: DecryptionFailedError });
  t.is(failed.reason, 'decryption-failed');
  t.is(failed.facts.chunk, 2, 'the chunk that does not decrypt is named');
  await t.throwsAsync(() => (decryptAll(ciphertext, block, random(32))), { instanceOf: DecryptionFailedError });
  const lying: EncryptionBlock = { ...block, plainSha256: random(32) };
  await t.throwsAsync(() => (decryptAll(ciphertext, lying, cek)), { instanceOf: DigestMismatchError });
});

test('a block of more recipients than a receiver reads is refused by name, before any is unwrapped', (t) => {
  const group = groupKey(random(32));
  const { ciphertext, block } = encryptImage(makeImage(2000, 1), [group], {}, random);
  const many: EncryptionBlock = { ...block, recipients: Array.from({ length: MAX_RECIPIENTS + 1 }, (_, i) => ({ alg: -5 as const, kid: keyId(new Uint8Array([i, i >> 8])), wrapped: random(40) })) };
  const error = t.throws(() => decodeEncryptionBlockBytes(encryptionBlockBytes(many), ciphertext.length), { instanceOf: TooManyRecipientsError });
  t.is(error.reason, 'too-many-recipients');
  t.throws(() => encryptImage(makeImage(2000, 1), many.recipients.map(() => groupKey(random(32))), {}, random), { instanceOf: TooManyRecipientsError });
  // The block's sizes must agree with the manifest's.
  t.throws(() => decodeEncryptionBlockBytes(encryptionBlockBytes(block), ciphertext.length + 1), { message: /ciphertext bytes/ });
});

test('a receiver left out refuses the release as no-decryption-key once, however often it hears it', async (t) => {
  const key = await makeKey();
  const { ciphertext, block } = encryptImage(makeImage(50_000, 2), [device().recipient], {}, random);
  const release = buildRelease({ image: ciphertext, encryption: block, seed: key.seed, model: 'rpi4', version: '2', seq: 2 });
  const receiver = new Receiver({ model: 'rpi4', trusted: [key], vet: (r) => vetEncryptedRelease(r, [device().key], false) });
  const carousel = new Carousel({ ...release, manifestEvery: 20 });
  const refusals = [];
  for (let i = 0; i < 400; i++) for (const e of receiver.push(carousel.next(), 0, 'x')) if (e.kind === 'rejected') refusals.push(e.error);
  t.deepEqual(refusals.map((e) => e.reason), ['no-decryption-key']);
  t.is(receiver.stats.dropped['no-decryption-key'], 1);
  t.true((receiver.stats.dropped['encrypted-for-others'] ?? 0) > 100, 'its other datagrams are counted under their own name');
  // A relay takes it, to serve the ciphertext.
  const relay = new Receiver({ model: 'rpi4', trusted: [key], vet: (r) => vetEncryptedRelease(r, [], true) });
  const kinds = new Set<string>();
  for (let i = 0; i < 40; i++) for (const e of relay.push(carousel.next(), 0, 'x')) kinds.add(e.kind);
  t.true(kinds.has('accepted'));
});

test('the agent installs the exact plaintext and keeps the ciphertext the manifest signs beside it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-enc-agent-'));
  const key = await makeKey();
  const image = makeImage(400_000, 9);
  const a = device();
  const { ciphertext, block } = encryptImage(image, [a.recipient], { chunkSize: 16384 }, random);
  const release = buildRelease({ image: ciphertext, encryption: block, seed: key.seed, model: 'rpi4', version: '3', seq: 3 });
  const hub = new MemoryHub();
  const channel = { name: 'fw/rpi4', group: 'ff1e::1', port: 4242 };
  const target = join(dir, 'flashed.img');
  const store = new Store(join(dir, 'store'));
  const agent = new Agent({ models: [{ model: 'rpi4', channel, installer: new FileInstaller(target) }], trusted: [key], store, transport: new MemoryTransport(hub), log: nullLogger, decryptionKeys: [a.key] });
  t.teardown(() => agent.stop());
  const installed = new Promise<InstalledRecord>((resolve) => agent.once('installed', resolve));
  let done = false;
  void installed.then(() => (done = true));
  await agent.start();
  const carousel = new Carousel({ ...release });
  const publisher = new MemoryTransport(hub);
  await publisher.open();
  const deadline = Date.now() + 30_000;
  for (let sent = 0; !done && Date.now() < deadline; sent++) {
    publisher.send(channel, carousel.next());
    if (sent % 200 === 0) await new Promise((r) => setTimeout(r, 5));
  }
  const record = await installed;
  t.is(record.sha256, sha256hex(image));
  t.is(sha256hex(readFileSync(target)), sha256hex(image));
  const kept = store.keptRelease('rpi4', record.releaseId);
  t.is(sha256hex(readFileSync(kept.image)), sha256hex(ciphertext), 'the kept .img is what a relay serves: the signed ciphertext');
});
