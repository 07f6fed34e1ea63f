// STK500v1: our client against the real optiboot bootloader running in
// simavr, checked afterwards by Debian's avrdude.
import test from 'ava';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLinkPair, openSerialPort } from '../../device-agent/serial/link.js';
import { BootloaderTimeoutError } from '../../device-agent/serial/bootloader-error.js';
import { flashStk500 } from '../../device-agent/serial/stk500.js';
import { parseIntelHex } from '../../device-agent/serial/intel-hex.js';
import { createSerialInstaller, SerialConfigError } from '../../device-agent/serial/installer.js';
import { startArduino, toIntelHex } from './avr.js';
import { patternBytes, requireTools, run, tempDir } from './helpers.js';
import { createHash } from 'node:crypto';

test('our client flashes optiboot in simavr; avrdude -c arduino reads the same bytes back', async (t) => {
  requireTools(t, 'avrdude');
  const dir = tempDir(t, 'stk500');
  const arduino = await startArduino(t, dir);
  const image = patternBytes(3000, 31);
  const link = await openSerialPort({ path: arduino.host, baudRate: 115200 });
  const started = Date.now();
  const result = await flashStk500({ link, image });
  t.log(`${image.length} bytes written + read back in ${Date.now() - started} ms (simulated 115200 baud UART)`);
  await link.close();
  t.is(result.signature, '1e950f');
  t.is(result.part, 'ATmega328P');

  const backPath = join(dir, 'back.bin');
  const read = await run('avrdude', ['-c', 'arduino', '-p', 'm328p', '-P', arduino.host, '-b', '115200', '-U', `flash:r:${backPath}:r`]);
  t.is(read.code, 0, read.stderr);
  t.regex(read.stderr, /device signature = 0x1e950f/);
  const back = readFileSync(backPath);
  t.true(back.subarray(0, image.length).equals(Buffer.from(image)), 'avrdude reads back what our client wrote');

  await arduino.stop();
  const flash = readFileSync(arduino.flashOut);
  t.true(flash.subarray(0, image.length).equals(Buffer.from(image)), 'simulated flash holds the image');
  t.true(flash.subarray(3072).every((b) => b === 0xff), 'nothing written past the last page');
});

test('the serial installer takes an Intel HEX image from the store and verifies it in flash', async (t) => {
  const dir = tempDir(t, 'stk500-hex');
  const arduino = await startArduino(t, dir);
  const image = patternBytes(1500, 41);
  const hex = toIntelHex(image);
  t.deepEqual(parseIntelHex(hex).data, image);
  const imagePath = join(dir, 'app.hex');
  writeFileSync(imagePath, hex);
  const installer = createSerialInstaller({ type: 'serial', protocol: 'stk500', port: arduino.host });
  t.is(installer.description, `serial stk500 bootloader on ${arduino.host}`);
  const progress: Array<[number, number]> = [];
  await installer.install({
    imagePath, model: 'uno', version: '1.0.0', seq: 1,
    sha256: createHash('sha256').update(hex).digest('hex'),
    onProgress: (done, total) => progress.push([done, total]),
  });
  t.deepEqual(progress.at(-1), [3000, 3000]);
  await arduino.stop();
  t.true(readFileSync(arduino.flashOut).subarray(0, image.length).equals(Buffer.from(image)));
});

test('installer configuration errors name the field', (t) => {
  t.throws(() => createSerialInstaller({ type: 'serial', protocol: 'esp32', port: '/dev/ttyUSB0' }), {
    instanceOf: SerialConfigError, message: 'serial installer: "protocol" must be one of mcuboot, stm32, stk500, esp (got "esp32")',
  });
  t.throws(() => createSerialInstaller({ type: 'serial', protocol: 'stm32' }), { instanceOf: TypeError, message: /"port"/ });
  t.throws(() => createSerialInstaller({ type: 'serial', protocol: 'stm32', port: '/dev/x', baud: 'fast' }), { message: /"baud" must be a baud rate/ });
  t.throws(() => createSerialInstaller({ type: 'serial', protocol: 'stm32', port: '/dev/x', address: -1 }), { message: /"address"/ });
});

test('the installer refuses an image whose SHA-256 is not the verified one, before touching the port', async (t) => {
  const dir = tempDir(t, 'stk500-sha');
  const imagePath = join(dir, 'app.bin');
  writeFileSync(imagePath, patternBytes(100, 1));
  const installer = createSerialInstaller({ type: 'serial', protocol: 'stk500', port: join(dir, 'no-port') });
  await t.throwsAsync(installer.install({ imagePath, model: 'uno', version: '1', seq: 1, sha256: '00'.repeat(32) }), { name: 'ImageChangedError' });
});

test('a silent board (no bootloader running) is a clear sync failure naming the protocol', async (t) => {
  const [host] = createLinkPair();
  const error = await t.throwsAsync(flashStk500({ link: host, image: patternBytes(100, 1), timeoutMs: 20, tries: 1 }), { instanceOf: BootloaderTimeoutError });
  t.like(error, { protocol: 'stk500', operation: 'Get sync' });
  t.regex(error!.message, /^Get sync: no answer after 3 tries .*is the board reset into its bootloader\?$/);
  await host.close();
});
