// An MCUboot-encrypted image (imgtool sign -E: ENCRYPTED flag, AES-CTR
// payload, key TLV) goes through the serial bridge as is: the Linux board
// never decrypts it, the bytes the device receives are the image's, and the
// device (which holds the key) decrypts and lists the plaintext's hash.
import test from 'ava';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { createLinkPair } from '../../device-agent/serial/link.js';
import { flashMcuboot, McubootImageError } from '../../device-agent/serial/mcuboot-smp.js';
import { BootloaderVerifyError } from '../../device-agent/serial/bootloader-error.js';
import { IMAGE_F_ENCRYPTED_AES128, IMAGE_MAGIC, parseMcubootImage, TLV_INFO_MAGIC, TLV_SHA256 } from '../../device-agent/serial/mcuboot-image.js';
import { SmpEmulator } from '../../hardware/emulators/smp-emulator.js';
import { patternBytes } from './helpers.js';

/** As `imgtool sign -E` lays it out: the hash over header and plaintext, the payload AES-128-CTR encrypted, an ECIES-X25519 key TLV (0x33). */
function encryptedImage(plain: Uint8Array, key: Uint8Array, keyTlv = 0x33): Uint8Array {
  const tlvs = 4 + (4 + 32) + (keyTlv ? 4 + 80 : 0);
  const out = new Uint8Array(32 + plain.length + tlvs);
  const view = new DataView(out.buffer);
  view.setUint32(0, IMAGE_MAGIC, true);
  view.setUint16(8, 32, true);
  view.setUint32(12, plain.length, true);
  view.setUint32(16, IMAGE_F_ENCRYPTED_AES128, true);
  view.setUint8(20, 2);
  out.set(plain, 32);
  const at = 32 + plain.length;
  const hash = createHash('sha256').update(out.subarray(0, at)).digest();
  out.set(createCipheriv('aes-128-ctr', key, new Uint8Array(16)).update(plain), 32);
  view.setUint16(at, TLV_INFO_MAGIC, true);
  view.setUint16(at + 2, tlvs, true);
  view.setUint16(at + 4, TLV_SHA256, true);
  view.setUint16(at + 6, 32, true);
  out.set(hash, at + 8);
  if (keyTlv) {
    view.setUint16(at + 40, keyTlv, true);
    view.setUint16(at + 42, 80, true);
    // Ephemeral key, HMAC and wrapped key: the emulator is given the AES key instead of unwrapping this.
    out.set(randomBytes(80), at + 44);
  }
  return out;
}

const key = new Uint8Array(randomBytes(16));
const plain = patternBytes(50_000, 9);
const image = encryptedImage(plain, key);

test('the client sends an MCUboot-encrypted image as is; the device decrypts it and lists its hash', async (t) => {
  const info = parseMcubootImage(image);
  t.true(info.encrypted);
  t.is(info.encryptionKeyTlv, 0x33);
  t.false(info.hashValid, 'the hash covers the plaintext, which the bridge never sees');
  const device = new SmpEmulator({ imageKey: key });
  const [host, deviceEnd] = createLinkPair();
  const serving = device.serve(deviceEnd);
  const result = await flashMcuboot({ link: host, image, timeoutMs: 500 });
  t.is(result.verifiedBy, 'hash');
  t.deepEqual(Buffer.from(device.uploaded!), Buffer.from(image), 'the device received the encrypted image byte for byte');
  t.false(Buffer.from(image).includes(Buffer.from(plain.subarray(0, 64))), 'no plaintext on the line');
  t.deepEqual(Buffer.from(device.flash.bytes.subarray(32, 32 + plain.length)), Buffer.from(plain), 'the device decrypted it in place');
  await host.close();
  await serving;
});

test('a device without the key lists nothing: the upload is reported as failed, not installed', async (t) => {
  const device = new SmpEmulator();
  const [host, deviceEnd] = createLinkPair();
  const serving = device.serve(deviceEnd);
  await t.throwsAsync(flashMcuboot({ link: host, image, timeoutMs: 500 }), { instanceOf: BootloaderVerifyError });
  await host.close();
  await serving;
});

test('an image flagged ENCRYPTED without a key TLV is refused before anything is sent', async (t) => {
  const [host, deviceEnd] = createLinkPair();
  await t.throwsAsync(flashMcuboot({ link: host, image: encryptedImage(plain, key, 0) }), { instanceOf: McubootImageError, message: /no key TLV/ });
  t.is((await deviceEnd.readAvailable({ timeoutMs: 50 })).length, 0);
  await host.close();
});
