// Our MCUboot serial-recovery client against our MCUboot emulator (itself
// checked byte for byte against the real MCUboot in smp-conformance.test.ts).
import test from 'ava';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLinkPair, openSerialPort } from '../../device-agent/serial/link.js';
import { flashMcuboot, McubootImageError } from '../../device-agent/serial/mcuboot-smp.js';
import { BootloaderError, BootloaderTimeoutError, BootloaderVerifyError } from '../../device-agent/serial/bootloader-error.js';
import { buildMcubootImage } from '../../device-agent/serial/mcuboot-image.js';
import { flashImage, parseSerialConfig, SerialConfigError } from '../../device-agent/serial/installer.js';
import { SmpEmulator } from '../../hardware/emulators/smp-emulator.js';
import { memoryFlash, type FlashMemory } from '../../hardware/emulators/flash-file.js';
import { patternBytes, ptyPair, REPO, requireTools, run, startTsx, tempDir, waitForOutput } from './helpers.js';

const image = buildMcubootImage(patternBytes(60_000, 7), { major: 3, minor: 1, revision: 4, build: 15 });

test('client uploads an MCUboot image to the emulator over a pty; the emulator lists its hash and holds the bytes', async (t) => {
  requireTools(t, 'socat');
  const dir = tempDir(t, 'smp');
  const pair = await ptyPair(t, dir, 'smp');
  const slot = join(dir, 'slot0.bin');
  const emulator = startTsx(t, 'hardware/emulators/smp-emulator.ts', ['--port', pair.device, '--flash', slot]);
  await waitForOutput(emulator, /serving/, 15_000, 'smp-emulator');
  const link = await openSerialPort({ path: pair.host });
  t.teardown(() => link.close());
  const progress: number[] = [];
  const started = Date.now();
  const result = await flashMcuboot({ link, image, onProgress: (done) => progress.push(done) });
  t.log(`${image.length} bytes in ${Date.now() - started} ms over the pty`);
  t.deepEqual(result.before, []);
  t.is(result.verifiedBy, 'hash');
  t.is(result.after[0]?.version, '3.1.4.15');
  t.true(result.resetAcknowledged);
  t.is(progress.at(-1), image.length);
  const flash = readFileSync(slot);
  t.true(flash.subarray(0, image.length).equals(image), 'slot 0 holds the image');
  t.true(flash.subarray(image.length).every((b) => b === 0xff), 'nothing written past the image');
});

test('an answer lost mid-upload: the client re-sends an old offset, the device answers with its own, the upload completes', async (t) => {
  const device = new SmpEmulator();
  let responses = 0;
  const [host, deviceEnd] = createLinkPair({
    // Swallow the device's answer to the 5th request (after image list, params, slot info and the
    // first chunk: an upload chunk the device did write).
    bToA: (data) => (++responses === 5 ? new Uint8Array(0) : data),
  });
  const serving = device.serve(deviceEnd);
  const result = await flashMcuboot({ link: host, image, timeoutMs: 200 });
  t.is(result.verifiedBy, 'hash');
  t.is(result.retries, 1, 'exactly the one lost answer was retried');
  t.is(device.offsetMismatches, 1, 'the re-sent chunk was behind the device, which answered with its own off');
  t.true(Buffer.from(device.flash.bytes.subarray(0, image.length)).equals(Buffer.from(image)));
  await host.close();
  await serving;
});

test('device reset mid-upload (upload state lost): the client restarts from off 0 and still verifies', async (t) => {
  let device = new SmpEmulator();
  const [host, deviceEnd] = createLinkPair();
  let served = 0;
  // Power-cycle the emulated device after its 5th answer: same flash, fresh upload state.
  const loop = (async () => {
    for (;;) {
      let line: Uint8Array;
      try { line = await deviceEnd.readUntil(0x0a, { timeoutMs: 5000, maxBytes: 2000 }); } catch { return; }
      const { response } = device.receiveLine(line.subarray(0, -1));
      if (!response) continue;
      await deviceEnd.write(response);
      if (++served === 5) device = new SmpEmulator({ flash: device.flash });
    }
  })();
  const result = await flashMcuboot({ link: host, image, timeoutMs: 300 });
  t.is(result.verifiedBy, 'hash');
  t.true(Buffer.from(device.flash.bytes.subarray(0, image.length)).equals(Buffer.from(image)));
  await host.close();
  await loop;
});

test('a device that stops answering mid-upload is a clear failure naming the offset, never a success', async (t) => {
  const device = new SmpEmulator();
  const [host, deviceEnd] = createLinkPair();
  let answers = 0;
  const loop = (async () => {
    for (;;) {
      let line: Uint8Array;
      try { line = await deviceEnd.readUntil(0x0a, { timeoutMs: 5000, maxBytes: 2000 }); } catch { return; }
      const { response } = device.receiveLine(line.subarray(0, -1));
      if (response && ++answers <= 6) await deviceEnd.write(response); // then the cable is cut
    }
  })();
  const error = await t.throwsAsync(flashMcuboot({ link: host, image, timeoutMs: 100, tries: 3 }), { instanceOf: BootloaderTimeoutError });
  t.is(error!.protocol, 'mcuboot');
  t.regex(error!.message, /^Image upload at off \d+: no answer from the device after 3 tries/);
  await host.close();
  await loop;
});

test('a raw binary is refused before anything is sent: MCUboot would never list it', async (t) => {
  const [host, deviceEnd] = createLinkPair();
  await t.throwsAsync(flashMcuboot({ link: host, image: patternBytes(1000, 3) }), { instanceOf: McubootImageError, message: /not an MCUboot image/ });
  t.is((await deviceEnd.readAvailable({ timeoutMs: 50 })).length, 0);
  await host.close();
});

test('write-protected flash still holding an older image: off reaches len, but the listed hash is not ours, so it fails', async (t) => {
  const old = buildMcubootImage(patternBytes(5000, 8), { major: 3, minor: 1, revision: 4, build: 15 });
  const backing = memoryFlash(256 * 1024);
  backing.write(0, old);
  // Accepts every write and erase, stores nothing: the upload itself looks perfect.
  const protectedFlash: FlashMemory = { bytes: backing.bytes, size: backing.size, write: () => {}, erase: () => {} };
  const device = new SmpEmulator({ flash: protectedFlash });
  const [host, deviceEnd] = createLinkPair();
  const serving = device.serve(deviceEnd);
  const error = await t.throwsAsync(flashMcuboot({ link: host, image, timeoutMs: 200 }), { instanceOf: BootloaderVerifyError });
  t.like(error, { protocol: 'mcuboot', operation: 'Verify after upload' });
  t.regex(error!.message, /^Verify after upload: slot 0 hash [0-9a-f]{64} is not the image's [0-9a-f]{64}$/);
  await host.close();
  await serving;
});

test('a flash that corrupts one byte: MCUboot no longer lists the image, and the upload is reported as failed', async (t) => {
  const backing = memoryFlash(256 * 1024);
  const flaky: FlashMemory = {
    bytes: backing.bytes, size: backing.size, erase: (o, l) => backing.erase(o, l),
    write: (offset, data) => {
      const copy = new Uint8Array(data);
      if (offset <= 30_000 && offset + copy.length > 30_000) copy[30_000 - offset]! ^= 0x04;
      backing.write(offset, copy);
    },
  };
  const device = new SmpEmulator({ flash: flaky });
  const [host, deviceEnd] = createLinkPair();
  const serving = device.serve(deviceEnd);
  const error = await t.throwsAsync(flashMcuboot({ link: host, image, timeoutMs: 200 }), {
    instanceOf: BootloaderVerifyError, message: 'Verify after upload: the device lists no image in slot 0 (its hash did not check)',
  });
  t.is(error!.protocol, 'mcuboot');
  await host.close();
  await serving;
});

/** An MCUboot image of exactly `total` bytes (header, payload and a SHA-256 TLV). */
function imageOfSize(total: number, seed: number): Uint8Array {
  const out = buildMcubootImage(patternBytes(total - 32 - 40, seed), { major: 9, minor: 0, revision: 0 });
  if (out.length !== total) throw new Error(`built ${out.length} bytes, wanted ${total}`);
  return out;
}

test('a slot erase longer than the erase wait: the first chunk is not re-sent blindly, the slot is erased once, the upload verifies', async (t) => {
  // 1.2 s erase against a 1 s wait: the scaled-down form of a 12 s erase against the old fixed 10 s.
  const device = new SmpEmulator({ eraseMs: 1200 });
  const [host, deviceEnd] = createLinkPair();
  const serving = device.serve(deviceEnd);
  const result = await flashMcuboot({ link: host, image, timeoutMs: 200, eraseTimeoutMs: 1000, tries: 5 });
  t.is(result.verifiedBy, 'hash');
  t.is(device.erases, 1, 'the slot was erased exactly once');
  t.true(Buffer.from(device.flash.bytes.subarray(0, image.length)).equals(Buffer.from(image)));
  await host.close();
  await serving;
});

test('flash command over a pty: --erase-timeout waits out a slow erase, exit 0 and slot 0 holds the image', async (t) => {
  requireTools(t, 'socat');
  const dir = tempDir(t, 'smp-erase-cli');
  const pair = await ptyPair(t, dir, 'smp');
  const slot = join(dir, 'slot0.bin');
  const emulator = startTsx(t, 'hardware/emulators/smp-emulator.ts', ['--port', pair.device, '--flash', slot, '--erase-ms', '1200']);
  await waitForOutput(emulator, /serving/, 15_000, 'smp-emulator');
  const imagePath = join(dir, 'app.img');
  writeFileSync(imagePath, image);
  const result = await run(process.execPath, [
    '--import', 'tsx', join(REPO, 'device-agent/serial/flash-main.ts'), 'flash', '--protocol', 'mcuboot', '--port', pair.host,
    '--erase-timeout', '1000', '--no-start', imagePath,
  ]);
  t.is(result.code, 0, result.stderr);
  t.regex(result.stdout, /^flash: ok: \d+ bytes, verified: MCUboot lists slot 0 with SHA-256 [0-9a-f]{64}/m);
  t.true(readFileSync(slot).subarray(0, image.length).equals(image));
});

test('an image larger than the slot the device reports is refused before upload, with the sizes; the old image stays', async (t) => {
  const old = buildMcubootImage(patternBytes(5000, 71), { major: 1, minor: 0, revision: 0 });
  const flash = memoryFlash(64 * 1024);
  flash.write(0, old);
  const device = new SmpEmulator({ flash, slotInfo: true });
  const [host, deviceEnd] = createLinkPair();
  const serving = device.serve(deviceEnd);
  const error = await t.throwsAsync(flashMcuboot({ link: host, image: imageOfSize(70_000, 72), timeoutMs: 200 }), { instanceOf: BootloaderError });
  t.log(error!.message);
  t.is(error!.name, 'ImageTooLargeError');
  t.like(error, { protocol: 'mcuboot', deviceState: 'untouched' });
  t.regex(error!.message, /70000 bytes/);
  t.regex(error!.message, /slot 0 of 65536 bytes/);
  t.is(device.erases, 0, 'nothing was erased');
  t.true(Buffer.from(device.flash.bytes.subarray(0, old.length)).equals(Buffer.from(old)), 'the old image is still in slot 0');
  await host.close();
  await serving;
});

test('an image that fits the slot but reaches into MCUboot\'s trailer is refused for that reason (device slot info)', async (t) => {
  const device = new SmpEmulator({ flash: memoryFlash(64 * 1024), slotInfo: true, trailerSize: 4096 });
  const [host, deviceEnd] = createLinkPair();
  const serving = device.serve(deviceEnd);
  const error = await t.throwsAsync(flashMcuboot({ link: host, image: imageOfSize(64 * 1024 - 1000, 73), timeoutMs: 200 }), { instanceOf: BootloaderError });
  t.log(error!.message);
  t.is(error!.name, 'ImageTooLargeError');
  t.regex(error!.message, /trailer/);
  t.regex(error!.message, /at most 61440 bytes/);
  t.is(device.erases, 0);
  await host.close();
  await serving;
});

test('an image of exactly the configured slot size is refused before upload as overlapping the trailer, not as a bad hash', async (t) => {
  // This device, like the recorded MCUboot build, has no slot info command: the size comes from configuration.
  const device = new SmpEmulator({ flash: memoryFlash(64 * 1024) });
  const [host, deviceEnd] = createLinkPair();
  const serving = device.serve(deviceEnd);
  const error = await t.throwsAsync(flashMcuboot({ link: host, image: imageOfSize(64 * 1024, 74), timeoutMs: 200, slotSize: 64 * 1024 }), { instanceOf: BootloaderError });
  t.log(error!.message);
  t.is(error!.name, 'ImageTooLargeError');
  t.regex(error!.message, /trailer/);
  t.regex(error!.message, /slotSize/);
  t.is(device.erases, 0);
  await host.close();
  await serving;
});

test('installer configuration: eraseTimeoutMs, slotSize, trailerSize and restore are checked, and reach the flash', async (t) => {
  const base = { type: 'serial', protocol: 'mcuboot', port: '/dev/x' };
  t.like(parseSerialConfig({ ...base, eraseTimeoutMs: 30_000, slotSize: 0x40000, trailerSize: 4096, restore: false }),
    { eraseTimeoutMs: 30_000, slotSize: 0x40000, trailerSize: 4096, restore: false });
  t.throws(() => parseSerialConfig({ ...base, eraseTimeoutMs: 0 }), { instanceOf: SerialConfigError, message: /"eraseTimeoutMs"/ });
  t.throws(() => parseSerialConfig({ ...base, slotSize: '256k' }), { instanceOf: SerialConfigError, message: /"slotSize"/ });
  t.throws(() => parseSerialConfig({ ...base, slotSize: 4096, trailerSize: 4096 }), { instanceOf: SerialConfigError, message: /"trailerSize" 4096 leaves no room in "slotSize" 4096/ });
  t.throws(() => parseSerialConfig({ ...base, restore: 'yes' }), { instanceOf: SerialConfigError, message: /"restore"/ });

  // slotSize from the configuration is what the size check uses when the device has no slot info.
  const device = new SmpEmulator({ flash: memoryFlash(64 * 1024) });
  const [host, deviceEnd] = createLinkPair();
  const serving = device.serve(deviceEnd);
  const config = parseSerialConfig({ ...base, slotSize: 32 * 1024, timeoutMs: 200 });
  const error = await t.throwsAsync(flashImage(host, config, imageOfSize(40_000, 75)), { instanceOf: BootloaderError });
  t.is(error!.name, 'ImageTooLargeError');
  t.regex(error!.message, /larger than slot 0 of 32768 bytes \(slotSize 32768, trailerSize 3120\)/);
  t.is(device.erases, 0);
  await host.close();
  await serving;
});
