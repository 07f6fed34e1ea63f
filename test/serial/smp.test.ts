// Our MCUboot serial-recovery client against our MCUboot emulator (itself
// checked byte for byte against the real MCUboot in smp-conformance.test.ts).
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLinkPair, openSerialPort } from '../../device-agent/serial/link.js';
import { flashMcuboot, McubootImageError } from '../../device-agent/serial/mcuboot-smp.js';
import { BootloaderTimeoutError, BootloaderVerifyError } from '../../device-agent/serial/bootloader-error.js';
import { buildMcubootImage } from '../../device-agent/serial/mcuboot-image.js';
import { SmpEmulator } from '../../hardware/emulators/smp-emulator.js';
import { memoryFlash, type FlashMemory } from '../../hardware/emulators/flash-file.js';
import { patternBytes, ptyPair, requireTools, startTsx, tempDir, waitForOutput } from './helpers.js';

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
    // Swallow the device's answer to the 4th request (an upload chunk the device did write).
    bToA: (data) => (++responses === 4 ? new Uint8Array(0) : data),
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
