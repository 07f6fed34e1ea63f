// STM32 AN3155: Debian's stm32flash (an independent implementation of the
// host side) against our emulator, and our client checked by stm32flash.
import test from 'ava';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLinkPair, openSerialPort } from '../../device-agent/serial/link.js';
import { AN3155, flashStm32 } from '../../device-agent/serial/stm32-an3155.js';
import { BootloaderError, BootloaderRefusedError, BootloaderTimeoutError, BootloaderVerifyError } from '../../device-agent/serial/bootloader-error.js';
import { Stm32Emulator } from '../../hardware/emulators/stm32-emulator.js';
import { memoryFlash, type FlashMemory } from '../../hardware/emulators/flash-file.js';
import { patternBytes, ptyPair, REPO, requireTools, run, startTsx, tempDir, waitForOutput, type PtyPair } from './helpers.js';

const FLASH_SIZE = 128 * 1024;

async function stm32Device(
  t: Parameters<typeof requireTools>[0], name: string, options: { args?: string[]; flash?: Uint8Array } = {},
): Promise<{ dir: string; pair: PtyPair; flashPath: string }> {
  requireTools(t, 'socat', 'stm32flash');
  const dir = tempDir(t, name);
  const pair = await ptyPair(t, dir, name);
  const flashPath = join(dir, 'stm32-flash.bin');
  if (options.flash) writeFileSync(flashPath, options.flash);
  const emulator = startTsx(t, 'hardware/emulators/stm32-emulator.ts', ['--port', pair.device, '--flash', flashPath, ...(options.args ?? [])]);
  await waitForOutput(emulator, /serving/, 15_000, 'stm32-emulator');
  return { dir, pair, flashPath };
}

test('stm32flash -m 8n1 writes and verifies an image into our emulator; the emulated flash holds it', async (t) => {
  const { dir, pair, flashPath } = await stm32Device(t, 'stm32flash-w');
  const image = patternBytes(10_000, 11);
  const imagePath = join(dir, 'app.bin');
  writeFileSync(imagePath, image);
  const result = await run('stm32flash', ['-m', '8n1', '-b', '115200', '-w', imagePath, '-v', pair.host]);
  t.is(result.code, 0, result.stdout + result.stderr);
  t.regex(result.stdout, /Device ID\s*: 0x0410/);
  t.regex(result.stdout, /Wrote and verified address 0x08002710 \(100\.00%\) Done\./);
  const flash = readFileSync(flashPath);
  t.true(flash.subarray(0, image.length).equals(image), 'emulated flash holds the image');
  t.true(flash.subarray(image.length, 10 * 1024 + 1024).every((b) => b === 0xff), 'rest of the erased pages is still erased');
});

test('our client writes through the emulator; stm32flash reads back exactly those bytes', async (t) => {
  const { dir, pair } = await stm32Device(t, 'stm32flash-r');
  // Leave old contents behind first, so our client has to erase before writing.
  writeFileSync(join(dir, 'old.bin'), patternBytes(6000, 99));
  t.is((await run('stm32flash', ['-m', '8n1', '-w', join(dir, 'old.bin'), pair.host])).code, 0);

  const image = patternBytes(20_000, 12);
  const link = await openSerialPort({ path: pair.host, parity: 'even' });
  const started = Date.now();
  const result = await flashStm32({ link, image, timeoutMs: 300 });
  t.log(`${image.length} bytes written + read back in ${Date.now() - started} ms (stm32flash had left the device synced: ${result.retries} sync retry)`);
  await link.close();
  t.is(result.productId, 0x410);
  t.is(result.passes, 1);

  const backPath = join(dir, 'back.bin');
  const read = await run('stm32flash', ['-m', '8n1', '-r', backPath, '-S', `0x08000000:${image.length}`, pair.host]);
  t.is(read.code, 0, read.stdout + read.stderr);
  t.true(readFileSync(backPath).equals(Buffer.from(image)), 'stm32flash reads back what our client wrote');
});

test('a part offering Extended Erase (0x44) is erased with it, page by page', async (t) => {
  const flash = memoryFlash(FLASH_SIZE);
  flash.write(0, patternBytes(4096, 5));
  const opcodes: number[] = [];
  const device = new Stm32Emulator({ flash, extendedErase: true, onCommand: (op) => opcodes.push(op) });
  const [host, deviceEnd] = createLinkPair();
  const serving = device.serve(deviceEnd);
  const image = patternBytes(3000, 6);
  await flashStm32({ link: host, image, timeoutMs: 200 });
  t.true(opcodes.includes(AN3155.EXTENDED_ERASE));
  t.false(opcodes.includes(AN3155.ERASE));
  t.true(Buffer.from(flash.bytes.subarray(0, image.length)).equals(Buffer.from(image)));
  t.true(flash.bytes.subarray(image.length, 3072).every((b) => b === 0xff), 'padding of the last page is erased');
  t.true(Buffer.from(flash.bytes.subarray(3072, 4096)).equals(Buffer.from(patternBytes(4096, 5).subarray(3072))), 'the page after the image is untouched');
  await host.close();
  await serving;
});

test('a silent device (BOOT0 low, no bootloader) is a clear sync failure', async (t) => {
  const [host] = createLinkPair();
  const error = await t.throwsAsync(flashStm32({ link: host, image: patternBytes(100, 1), timeoutMs: 50, tries: 2 }), { instanceOf: BootloaderTimeoutError });
  t.like(error, { protocol: 'stm32', operation: 'Sync' });
  t.regex(error!.message, /^Sync: no ACK to 0x7F/);
  await host.close();
});

test('flash command end to end: exit 0 and the image in flash; a bad port is one error line and exit 1', async (t) => {
  const { dir, pair, flashPath } = await stm32Device(t, 'stm32-cli');
  const image = patternBytes(5000, 21);
  const imagePath = join(dir, 'fw.bin');
  writeFileSync(imagePath, image);
  const ok = await run(process.execPath, ['--import', 'tsx', join(REPO, 'device-agent/serial/flash-main.ts'), 'flash', '--protocol', 'stm32', '--port', pair.host, '--parity', 'none', imagePath]);
  t.is(ok.code, 0, ok.stderr);
  t.regex(ok.stdout, /^flash: ok: 5000 bytes, verified: read back 5000 bytes at 0x8000000/m);
  t.regex(ok.stderr, /flash: 100% \(10000\/10000\)/);
  t.true(readFileSync(flashPath).subarray(0, image.length).equals(image));

  const bad = await run(process.execPath, ['--import', 'tsx', join(REPO, 'device-agent/serial/flash-main.ts'), 'flash', '--protocol', 'stm32', '--port', join(dir, 'no-such-tty'), imagePath]);
  t.is(bad.code, 1);
  const lines = bad.stderr.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('npm warn'));
  t.deepEqual(lines, [`flash: failed: SerialOpenError: cannot open ${join(dir, 'no-such-tty')}: No such file or directory`]);
});

test('a stuck flash bit is caught by read-back: one full retry pass, then a verify error naming the address', async (t) => {
  const backing = memoryFlash(FLASH_SIZE);
  // Bit 0 of the byte at 0x08000a05 never programs to 0.
  const stuck: FlashMemory = {
    bytes: backing.bytes, size: backing.size, erase: (o, l) => backing.erase(o, l),
    write: (offset, data) => {
      const copy = new Uint8Array(data);
      if (offset <= 0xa05 && offset + copy.length > 0xa05) copy[0xa05 - offset]! |= 0x01;
      backing.write(offset, copy);
    },
  };
  const opcodes: number[] = [];
  const device = new Stm32Emulator({ flash: stuck, onCommand: (op) => opcodes.push(op) });
  const [host, deviceEnd] = createLinkPair();
  const serving = device.serve(deviceEnd);
  const image = new Uint8Array(4096).fill(0x00);
  // Without the write-back of the old contents, whose erase would be a third.
  const error = await t.throwsAsync(flashStm32({ link: host, image, timeoutMs: 200, restore: false }), {
    instanceOf: BootloaderVerifyError, message: 'Verify: flash at 0x08000a00 differs from the image after two full passes',
  });
  t.like(error, { protocol: 'stm32', operation: 'Verify' });
  t.is(opcodes.filter((op) => op === AN3155.ERASE).length, 2, 'erased and rewritten once before giving up');
  await host.close();
  await serving;
});

/** Flash of `size` bytes holding `old` at its start, erased after it. */
function flashHolding(size: number, old: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(size).fill(0xff);
  bytes.set(old);
  return bytes;
}

test('an application printing a line every 100 ms (no bootloader on the line): a clear failure within seconds, flash untouched', async (t) => {
  const old = patternBytes(8000, 61);
  const { pair, flashPath } = await stm32Device(t, 'stm32-chatty', { args: ['--application-line-ms', '100'], flash: flashHolding(FLASH_SIZE, old) });
  const link = await openSerialPort({ path: pair.host });
  t.teardown(() => link.close());
  const started = Date.now();
  const outcome = await Promise.race([
    flashStm32({ link, image: patternBytes(4000, 62), timeoutMs: 200 }).then(() => 'flashed', (error: unknown) => error),
    new Promise((resolve) => setTimeout(() => resolve('still waiting after 30 s'), 30_000)),
  ]);
  const elapsed = Date.now() - started;
  t.log(`gave up after ${elapsed} ms: ${String(outcome)}`);
  t.true(outcome instanceof BootloaderError, `a bootloader error, got ${String(outcome)}`);
  t.true(elapsed < 15_000, `bounded (${elapsed} ms)`);
  t.like(outcome, { protocol: 'stm32', operation: 'Sync', deviceState: 'untouched' });
  t.regex((outcome as Error).message, /never went quiet/);
  t.true(readFileSync(flashPath).subarray(0, old.length).equals(old), 'old firmware intact');
});

test('an image larger than the flash of a part not in the page table is refused before anything is erased', async (t) => {
  const flash = memoryFlash(32 * 1024);
  const old = patternBytes(20_000, 63);
  flash.write(0, old);
  const opcodes: number[] = [];
  // Product id 0x4ff is in no table: the only size we can know is the one the chip reports.
  const device = new Stm32Emulator({ flash, productId: 0x4ff, onCommand: (op) => opcodes.push(op) });
  const [host, deviceEnd] = createLinkPair();
  const serving = device.serve(deviceEnd);
  const error = await t.throwsAsync(flashStm32({ link: host, image: patternBytes(40_000, 64), timeoutMs: 100 }), { instanceOf: BootloaderError });
  t.log(error!.message);
  t.is(error!.name, 'ImageTooLargeError');
  t.like(error, { protocol: 'stm32', deviceState: 'untouched' });
  t.regex(error!.message, /40000 bytes/);
  t.regex(error!.message, /32768 bytes of flash/);
  t.false(opcodes.includes(AN3155.ERASE), 'no erase was sent');
  t.false(opcodes.includes(AN3155.WRITE_MEMORY), 'no write was sent');
  t.true(Buffer.from(flash.bytes.subarray(0, old.length)).equals(Buffer.from(old)), 'old firmware intact');
  await host.close();
  await serving;
});

test('a write that fails after the erase: the previous flash contents are written back and verified', async (t) => {
  const flash = memoryFlash(FLASH_SIZE);
  const old = patternBytes(3000, 65);
  flash.write(0, old);
  // Pages from 0x1000 on no longer program: the new, larger image cannot be written.
  const device = new Stm32Emulator({ flash, failWritesFrom: 0x1000 });
  const [host, deviceEnd] = createLinkPair();
  const serving = device.serve(deviceEnd);
  const error = await t.throwsAsync(flashStm32({ link: host, image: patternBytes(6000, 66), timeoutMs: 100, tries: 2 }), { instanceOf: BootloaderRefusedError });
  t.log(error!.message);
  t.like(error, { protocol: 'stm32', operation: 'Write Memory at 0x08001000', deviceState: 'restored' });
  t.true(Buffer.from(flash.bytes.subarray(0, old.length)).equals(Buffer.from(old)), 'old firmware back in place');
  t.true(flash.bytes.subarray(old.length, 8192).every((b) => b === 0xff), 'nothing of the new image is left');
  await host.close();
  await serving;
});
