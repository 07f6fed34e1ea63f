// Faults on a real pty line: a relay between two socat pty pairs corrupts
// bytes at a bounded rate or drops the line for a while. Each run must end
// in an image verified by the device, or in a clear error — never in a
// success with the wrong bytes in flash.
import test, { type ExecutionContext } from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openSerialPort } from '../../device-agent/serial/link.js';
import { flashMcuboot } from '../../device-agent/serial/mcuboot-smp.js';
import { buildMcubootImage } from '../../device-agent/serial/mcuboot-image.js';
import { flashStm32 } from '../../device-agent/serial/stm32-an3155.js';
import { BootloaderTimeoutError } from '../../device-agent/serial/bootloader-error.js';
import { flashStk500 } from '../../device-agent/serial/stk500.js';
import { startRelay, type Relay, type RelayInit } from './relay.js';
import { startArduino } from './avr.js';
import { patternBytes, ptyPair, requireTools, startTsx, tempDir, waitForOutput } from './helpers.js';

/** host link ↔ pty pair ↔ relay ↔ pty pair ↔ device at `deviceTty`. */
async function badCable(t: ExecutionContext, dir: string, options: Omit<RelayInit, 'hostSide' | 'deviceSide'>): Promise<{ hostTty: string; deviceTty: string; relay: Relay }> {
  requireTools(t, 'socat');
  const hostPair = await ptyPair(t, dir, 'h');
  const devicePair = await ptyPair(t, dir, 'd');
  const relay = await startRelay({ ...options, hostSide: hostPair.device, deviceSide: devicePair.host });
  t.teardown(() => relay.close());
  return { hostTty: hostPair.host, deviceTty: devicePair.device, relay };
}

async function emulator(t: ExecutionContext, script: string, tty: string, flashPath: string): Promise<void> {
  const child = startTsx(t, script, ['--port', tty, '--flash', flashPath]);
  await waitForOutput(child, /serving/, 15_000, script);
}

test('MCUboot upload through a noisy line: lost frames are re-sent, the device still lists our hash', async (t) => {
  const dir = tempDir(t, 'noise-smp');
  const { hostTty, deviceTty, relay } = await badCable(t, dir, { corruptEvery: 2500, seed: 0x5eed });
  const slot = join(dir, 'slot0.bin');
  await emulator(t, 'hardware/emulators/smp-emulator.ts', deviceTty, slot);
  const image = buildMcubootImage(patternBytes(30_000, 51), { major: 1, minor: 0, revision: 0 });
  const link = await openSerialPort({ path: hostTty });
  t.teardown(() => link.close());
  const started = Date.now();
  const result = await flashMcuboot({ link, image, timeoutMs: 150, eraseTimeoutMs: 1000, tries: 10 });
  t.log(`corrupted ${relay.corrupted} of ${relay.forwarded} bytes; ${result.retries} re-sent requests; ${Date.now() - started} ms`);
  t.true(relay.corrupted >= 3, 'the line really was noisy');
  t.true(result.retries >= 1, 'corruption cost retries');
  t.is(result.verifiedBy, 'hash');
  t.true(readFileSync(slot).subarray(0, image.length).equals(Buffer.from(image)), 'slot 0 holds exactly the image');
});

test('STM32 write through a noisy line: NACKs and garbled answers are retried after resync, then verified by read-back', async (t) => {
  const dir = tempDir(t, 'noise-stm32');
  const { hostTty, deviceTty, relay } = await badCable(t, dir, { corruptEvery: 2500, seed: 0xc0ffee });
  const flashPath = join(dir, 'stm32.bin');
  await emulator(t, 'hardware/emulators/stm32-emulator.ts', deviceTty, flashPath);
  const image = patternBytes(24_000, 52);
  const link = await openSerialPort({ path: hostTty });
  t.teardown(() => link.close());
  const started = Date.now();
  const result = await flashStm32({ link, image, timeoutMs: 200, tries: 6 });
  t.log(`corrupted ${relay.corrupted} of ${relay.forwarded} bytes; ${result.retries} retries; ${result.passes} pass(es); ${Date.now() - started} ms`);
  t.true(relay.corrupted >= 3, 'the line really was noisy');
  t.true(result.retries >= 1);
  t.true(readFileSync(flashPath).subarray(0, image.length).equals(Buffer.from(image)), 'flash holds exactly the image');
});

test('STK500 (real optiboot) with noisy answers: resync and page rewrites, then every page reads back right', async (t) => {
  // Noise only towards the host: STK500v1 has no checksums, so a flipped
  // address byte towards the chip would program a page somewhere else; the
  // protocol cannot guard against that, only verification can notice it.
  const dir = tempDir(t, 'noise-stk500');
  const { hostTty, deviceTty, relay } = await badCable(t, dir, { corruptEvery: 600, seed: 0xa7, noisy: 'toHost' });
  const arduino = await startArduino(t, dir, deviceTty);
  const image = patternBytes(4096, 56);
  const link = await openSerialPort({ path: hostTty, baudRate: 115200 });
  t.teardown(() => link.close());
  const started = Date.now();
  const result = await flashStk500({ link, image, timeoutMs: 300, tries: 6 });
  t.log(`corrupted ${relay.corrupted} of ${relay.forwarded} bytes; ${result.retries} retries; ${result.rereads} page re-reads; ${result.rewrittenPages} pages rewritten; ${Date.now() - started} ms`);
  t.true(relay.corrupted >= 3, 'the line really was noisy');
  t.true(result.retries + result.rereads + result.rewrittenPages >= 1, 'noise had to be recovered from');
  await link.close();
  await arduino.stop();
  t.true(readFileSync(arduino.flashOut).subarray(0, image.length).equals(Buffer.from(image)), 'simulated flash holds exactly the image');
});

test('line dropped for 1.5 s mid-upload: the MCUboot client resumes at the device\'s offset and verifies', async (t) => {
  const dir = tempDir(t, 'drop-smp');
  const { hostTty, deviceTty, relay } = await badCable(t, dir, {});
  const slot = join(dir, 'slot0.bin');
  await emulator(t, 'hardware/emulators/smp-emulator.ts', deviceTty, slot);
  const image = buildMcubootImage(patternBytes(50_000, 53), { major: 2, minor: 0, revision: 0 });
  const link = await openSerialPort({ path: hostTty });
  t.teardown(() => link.close());
  let dropped = false;
  const result = await flashMcuboot({
    link, image, timeoutMs: 300, tries: 8,
    onProgress: (done, total) => { if (!dropped && done > total / 3) { dropped = true; relay.unplug(1500); } },
  });
  t.true(dropped);
  t.true(result.retries >= 2, `waited out the drop (${result.retries} retries)`);
  t.is(result.verifiedBy, 'hash');
  t.true(readFileSync(slot).subarray(0, image.length).equals(Buffer.from(image)));
});

test('STM32 line dropped for good mid-write: a clear timeout error naming the operation, no success', async (t) => {
  const dir = tempDir(t, 'drop-stm32');
  const { hostTty, deviceTty, relay } = await badCable(t, dir, {});
  await emulator(t, 'hardware/emulators/stm32-emulator.ts', deviceTty, join(dir, 'stm32.bin'));
  const link = await openSerialPort({ path: hostTty });
  t.teardown(() => link.close());
  let dropped = false;
  const error = await t.throwsAsync(flashStm32({
    link, image: patternBytes(16_000, 54), timeoutMs: 150, tries: 3,
    onProgress: (done) => { if (!dropped && done > 4000) { dropped = true; relay.unplug(); } },
  }), { instanceOf: BootloaderTimeoutError });
  t.is(error!.protocol, 'stm32');
  t.regex(error!.message, /^Write Memory at 0x080010\w\w: device silent while resynchronising/);
});

test('STM32 line dropped briefly mid-write: resync brings the device back and the image verifies', async (t) => {
  const dir = tempDir(t, 'blip-stm32');
  const { hostTty, deviceTty, relay } = await badCable(t, dir, {});
  const flashPath = join(dir, 'stm32.bin');
  await emulator(t, 'hardware/emulators/stm32-emulator.ts', deviceTty, flashPath);
  const image = patternBytes(16_000, 55);
  const link = await openSerialPort({ path: hostTty });
  t.teardown(() => link.close());
  let dropped = false;
  const result = await flashStm32({
    link, image, timeoutMs: 150, tries: 4,
    onProgress: (done) => { if (!dropped && done > 4000) { dropped = true; relay.unplug(500); } },
  });
  t.true(result.retries >= 1);
  t.true(readFileSync(flashPath).subarray(0, image.length).equals(Buffer.from(image)));
});

