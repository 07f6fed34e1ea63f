// ESP ROM loader: our client against our emulator, per chip, compressed and
// not, over real ptys (with a noisy relay for the fault cases) and in memory
// for the refusals that must happen before anything is erased. Serial: each
// pty test starts an emulator process, and two cores do not start ten at once.
import test from 'ava';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLinkPair, openSerialPort, type SerialLink } from '../../device-agent/serial/link.js';
import { checkLayout, flashEsp, type EspPart } from '../../device-agent/serial/esp-rom.js';
import { espParts, parseSerialConfig, SerialConfigError } from '../../device-agent/serial/installer.js';
import { ESP_CHIPS, type EspChipName } from '../../device-agent/serial/esp-chips.js';
import { decodeRequest, encodeRequest, espChecksum, ESP_OP, slipDecode, slipEncode } from '../../device-agent/serial/esp-slip.js';
import { BootloaderError } from '../../device-agent/serial/bootloader-error.js';
import { EspEmulator } from '../../hardware/emulators/esp-emulator.js';
import { memoryFlash } from '../../hardware/emulators/flash-file.js';
import { patternBytes, ptyPair, REPO, requireTools, run, startTsx, tempDir, waitForOutput } from './helpers.js';
import { startRelay } from './relay.js';

const MiB = 1024 * 1024;

/** Firmware-like bytes: runs of repeated words between random stretches, so deflate has something to do. */
function firmwareBytes(length: number, seed: number): Uint8Array {
  const out = patternBytes(length, seed);
  for (let at = 0; at < length; at += 512) out.fill(at % 2048 === 0 ? 0x00 : 0xff, at, Math.min(length, at + 256));
  return out;
}

async function emulatorOnPty(t: Parameters<typeof requireTools>[0], name: string, chip: EspChipName, flashSize = 4 * MiB): Promise<{ dir: string; host: string; device: string; flashPath: string }> {
  requireTools(t, 'socat');
  const dir = tempDir(t, name);
  const pair = await ptyPair(t, dir, name);
  const flashPath = join(dir, 'esp-flash.bin');
  const emulator = startTsx(t, 'hardware/emulators/esp-emulator.ts', ['--port', pair.device, '--flash', flashPath, '--chip', chip, '--flash-size', String(flashSize)]);
  await waitForOutput(emulator, /serving/, 30_000, 'esp-emulator');
  return { dir, host: pair.host, device: pair.device, flashPath };
}

/** Our client's link to an in-memory emulator; both ends closed in teardown. */
function inMemory(t: { teardown(fn: () => unknown): void }, init: ConstructorParameters<typeof EspEmulator>[0]): { host: SerialLink; device: EspEmulator } {
  const device = new EspEmulator(init);
  const [host, deviceEnd] = createLinkPair();
  const serving = device.serve(deviceEnd);
  t.teardown(async () => { await host.close(); await serving; });
  return { host, device };
}

/** Half random, half runs: deflates to about half, like firmware. */
function machineLike(length: number, seed: number): Uint8Array {
  const out = patternBytes(length, seed);
  for (let at = 0; at < length; at += 64) out.fill(at & 0xff, at, Math.min(length, at + 32));
  return out;
}

const layout = (chip: EspChipName): EspPart[] => [
  { address: chip === 'esp32' ? 0x1000 : 0x0, data: firmwareBytes(18_000, 1) },
  { address: 0x8000, data: firmwareBytes(3_072, 2) },
  { address: 0x10000, data: firmwareBytes(60_001, 3) },
];

for (const chip of ESP_CHIPS) {
  for (const compress of [true, false]) {
    // The ESP8266 ROM has neither deflate nor MD5: one uncompressed run, on checksums.
    if (chip === 'esp8266' && compress) continue;
    test.serial(`${chip}${compress ? ', compressed' : ''}: bootloader, partition table and app written over a pty after a switch to 921600 baud; the emulated flash holds each at its offset`, async (t) => {
      const { host, flashPath } = await emulatorOnPty(t, `esp-${chip}-${compress ? 'z' : 'raw'}`, chip);
      const link = await openSerialPort({ path: host });
      t.teardown(() => link.close());
      const parts = layout(chip);
      const progress: number[] = [];
      const result = await flashEsp({
        link, parts, chip, compress, reset: 'none', timeoutMs: 1000, start: false, flashBaud: 921600,
        verify: chip === 'esp8266' ? 'checksums' : 'md5', onProgress: (done) => progress.push(done),
      });
      t.like(result, { chip, compressed: compress && chip !== 'esp8266', verifiedBy: chip === 'esp8266' ? 'checksums' : 'md5', flashSize: 4 * MiB, passes: 1 });
      // CHANGE_BAUDRATE, then the host side follows; the ESP8266 ROM has no such command and stays.
      t.is(result.baud, chip === 'esp8266' ? undefined : 921600);
      t.is(progress.at(-1), parts.reduce((n, p) => n + Math.ceil(p.data.length / 4) * 4, 0));
      const flash = readFileSync(flashPath);
      for (const p of parts) t.true(flash.subarray(p.address, p.address + p.data.length).equals(p.data), `part at 0x${p.address.toString(16)}`);
      // Bytes between the parts were never erased.
      t.true(flash.subarray(0xc000, 0x10000).every((b) => b === 0xff));
    });
  }
}

test.serial('esp8266: the ROM erase miscount is compensated: six sectors asked for as three, and the sectors after the image keep their contents', async (t) => {
  const flash = memoryFlash(MiB);
  const old = patternBytes(0x20000, 9);
  flash.write(0, old);
  const { host, device } = inMemory(t, { chip: 'esp8266', flash });
  const image = patternBytes(0x6000, 10);
  await flashEsp({ link: host, parts: [{ address: 0x3000, data: image }], reset: 'none', verify: 'checksums', timeoutMs: 1000 });
  // Told six sectors, this ROM would have erased twelve (up to 0xf000).
  t.deepEqual(device.erases[0], [0x3000, 0x6000], 'the ROM erased exactly the six sectors of the image');
  t.true(Buffer.from(flash.bytes.subarray(0x3000, 0x9000)).equals(Buffer.from(image)));
  t.true(Buffer.from(flash.bytes.subarray(0x9000, 0x20000)).equals(Buffer.from(old.subarray(0x9000))), 'the sectors after it are untouched');
});

test.serial('esp8266 without the checksums opt-in: refused before anything is erased, naming why', async (t) => {
  const flash = memoryFlash(MiB);
  const { host, device } = inMemory(t, { chip: 'esp8266', flash });
  const error = await t.throwsAsync(flashEsp({ link: host, parts: [{ address: 0, data: patternBytes(4096, 1) }], reset: 'none', timeoutMs: 1000 }), { instanceOf: BootloaderError });
  t.like(error, { protocol: 'esp', operation: 'Verify', deviceState: 'untouched' });
  t.regex(error!.message, /no SPI_FLASH_MD5/);
  t.deepEqual(device.erases, []);
});

test.serial('a wrong chip is refused before anything is erased', async (t) => {
  const flash = memoryFlash(4 * MiB);
  const ops: number[] = [];
  const { host, device } = inMemory(t, { chip: 'esp32c3', flash, magic: 0x1b31506f, onCommand: (op) => ops.push(op) });
  const error = await t.throwsAsync(flashEsp({ link: host, chip: 'esp32', parts: [{ address: 0x10000, data: patternBytes(5000, 1) }], reset: 'none', timeoutMs: 1000 }));
  t.is(error!.name, 'WrongChipError');
  t.like(error, { protocol: 'esp', deviceState: 'untouched' });
  t.regex(error!.message, /the device is an ESP32-C3, not the configured esp32/);
  t.false(ops.includes(ESP_OP.FLASH_BEGIN) || ops.includes(ESP_OP.FLASH_DEFL_BEGIN), 'no erase was sent');
});

test.serial('an image larger than the flash (size read from the flash id) is refused before anything is erased', async (t) => {
  const flash = memoryFlash(MiB);
  const old = patternBytes(0x20000, 4);
  flash.write(0, old);
  const ops: number[] = [];
  const { host, device } = inMemory(t, { chip: 'esp32s3', flash, onCommand: (op) => ops.push(op) });
  // A configured 4 MiB does not override what the flash itself reports.
  const error = await t.throwsAsync(flashEsp({ link: host, parts: [{ address: 0x10000, data: patternBytes(MiB, 5) }], reset: 'none', flashSize: 4 * MiB, timeoutMs: 1000 }));
  t.is(error!.name, 'ImageTooLargeError');
  t.like(error, { protocol: 'esp', deviceState: 'untouched' });
  t.regex(error!.message, /1048576 bytes of flash/);
  t.false(ops.includes(ESP_OP.FLASH_BEGIN) || ops.includes(ESP_OP.FLASH_DEFL_BEGIN), 'no erase was sent');
  t.true(Buffer.from(flash.bytes.subarray(0, old.length)).equals(Buffer.from(old)), 'old firmware intact');
});

test.serial('a silent line (no chip in download mode) is a clear Sync failure that says DTR/RTS could not be driven on a pty', async (t) => {
  requireTools(t, 'socat');
  const dir = tempDir(t, 'esp-silent');
  const pair = await ptyPair(t, dir, 'silent');
  const link = await openSerialPort({ path: pair.host });
  t.teardown(() => link.close());
  const error = await t.throwsAsync(flashEsp({ link, parts: [{ address: 0, data: patternBytes(100, 1) }], timeoutMs: 100 }), { instanceOf: BootloaderError });
  t.like(error, { protocol: 'esp', operation: 'Sync', deviceState: 'untouched' });
  t.regex(error!.message, /download mode/);
  t.regex(error!.message, /DTR\/RTS could not be driven/);
});

for (const compress of [true, false]) {
  test.serial(`line noise both ways${compress ? ', compressed' : ''}: the image is verified by the ROM's MD5, after retries`, async (t) => {
    requireTools(t, 'socat');
    const dir = tempDir(t, 'esp-noise');
    const hostPair = await ptyPair(t, dir, 'host');
    const emulated = await emulatorOnPty(t, 'esp-noise-dev', 'esp32');
    const { flashPath } = emulated;
    const relay = await startRelay({ hostSide: hostPair.device, deviceSide: emulated.host, corruptEvery: 3000, minGap: 200, seed: compress ? 7 : 8 });
    t.teardown(() => relay.close());
    const link = await openSerialPort({ path: hostPair.host });
    t.teardown(() => link.close());
    const image = firmwareBytes(100_000, 12);
    let outcome: unknown;
    try {
      outcome = await flashEsp({ link, parts: [{ address: 0x10000, data: image }], compress, reset: 'none', timeoutMs: 400, tries: 8, start: false });
    } catch (error) {
      outcome = error;
    }
    t.log(`${relay.corrupted} bytes corrupted; outcome: ${outcome instanceof Error ? outcome.message : JSON.stringify(outcome)}`);
    t.true(relay.corrupted > 0, 'the relay did corrupt bytes');
    const inFlash = readFileSync(flashPath).subarray(0x10000, 0x10000 + image.length);
    if (outcome instanceof Error) {
      // A failure is acceptable only as a clear bootloader error saying the flash was erased.
      t.true(outcome instanceof BootloaderError, String(outcome));
      t.is((outcome as BootloaderError).deviceState, 'erased');
    } else {
      t.true(inFlash.equals(image), 'a reported success means the flash holds the image');
      t.true((outcome as { retries: number }).retries > 0, 'noise cost retries');
    }
  });
}

test.serial('the line drops mid-write and comes back: the part is started over and verified, or the failure says the flash is erased', async (t) => {
  requireTools(t, 'socat');
  const dir = tempDir(t, 'esp-drop');
  const hostPair = await ptyPair(t, dir, 'host');
  const emulated = await emulatorOnPty(t, 'esp-drop-dev', 'esp32c3');
  const { flashPath } = emulated;
  const relay = await startRelay({ hostSide: hostPair.device, deviceSide: emulated.host });
  t.teardown(() => relay.close());
  const link = await openSerialPort({ path: hostPair.host });
  t.teardown(() => link.close());
  const image = firmwareBytes(80_000, 13);
  let unplugged = false;
  const result = await flashEsp({
    link, parts: [{ address: 0x10000, data: image }], compress: false, reset: 'none', timeoutMs: 300, start: false,
    onProgress: (done) => { if (!unplugged && done > 30_000) { unplugged = true; relay.unplug(700); } },
  });
  t.true(unplugged);
  t.true(result.passes >= 2, `the part was started over (${result.passes} passes)`);
  t.true(readFileSync(flashPath).subarray(0x10000, 0x10000 + image.length).equals(image));

  // Unplugged for good: a clear failure, never a success.
  relay.unplug();
  const error = await t.throwsAsync(flashEsp({
    link, parts: [{ address: 0x10000, data: patternBytes(50_000, 14) }], compress: false, reset: 'none', timeoutMs: 200, tries: 2, start: false,
  }), { instanceOf: BootloaderError });
  t.like(error, { protocol: 'esp' });
});

for (const compress of [false, true]) {
  test.serial(`a lost answer to block 40 of ${compress ? 'a deflated' : 'an uncompressed'} write: it restarts from the last sector known written, not from the start`, async (t) => {
    const flash = memoryFlash(4 * MiB);
    let dataBlocks = 0;
    let dropNext = false;
    const device = new EspEmulator({
      chip: 'esp32', flash,
      onCommand: (op) => { if ((op === ESP_OP.FLASH_DATA || op === ESP_OP.FLASH_DEFL_DATA) && ++dataBlocks === 41) dropNext = true; },
    });
    const [host, deviceEnd] = createLinkPair({ bToA: (bytes) => { if (!dropNext) return bytes; dropNext = false; return new Uint8Array(0); } });
    const serving = device.serve(deviceEnd);
    t.teardown(async () => { await host.close(); await serving; });
    const image = compress ? machineLike(200_000, 41) : patternBytes(200_000, 41);
    const result = await flashEsp({ link: host, parts: [{ address: 0x10000, data: image }], compress, reset: 'none', timeoutMs: 2000, start: false });
    t.is(result.passes, 2);
    t.true(Buffer.from(flash.bytes.subarray(0x10000, 0x10000 + image.length)).equals(Buffer.from(image)));
    const [first, second] = device.erases.filter(([offset]) => offset >= 0x10000);
    t.is(first![0], 0x10000);
    // Uncompressed: blocks 0–39 acknowledged = 40 KiB = 10 sectors.
    if (!compress) t.is(second![0], 0x10000 + 10 * 0x1000);
    else t.true(second![0] > 0x10000 && second![0] % 0x1000 === 0, `restarted at 0x${second![0].toString(16)}`);
    t.is(second![0] + second![1], first![0] + first![1], 'the restart erases only the rest of the part');
  });
}

test.serial('flash command: --protocol esp writes address/file pairs like esptool write_flash and reports the MD5 check', async (t) => {
  const { dir, host, flashPath } = await emulatorOnPty(t, 'esp-cli', 'esp32');
  const boot = firmwareBytes(20_000, 31);
  const app = firmwareBytes(40_000, 32);
  writeFileSync(join(dir, 'boot.bin'), boot);
  writeFileSync(join(dir, 'app.bin'), app);
  const ok = await run(process.execPath, ['--import', 'tsx', join(REPO, 'device-agent/serial/flash-main.ts'), 'flash', '--protocol', 'esp', '--port', host, '--reset', 'none',
    '--chip', 'esp32', '--no-start', '0x1000', join(dir, 'boot.bin'), '0x10000', join(dir, 'app.bin')]);
  t.is(ok.code, 0, ok.stderr);
  t.regex(ok.stdout, /^flash: ok: 60000 bytes, verified: ESP32 ROM MD5 of 2 region\(s\) at 0x1000, 0x10000/m);
  const flash = readFileSync(flashPath);
  t.true(flash.subarray(0x1000, 0x1000 + boot.length).equals(boot));
  t.true(flash.subarray(0x10000, 0x10000 + app.length).equals(app));
});

test.serial('SLIP: C0 and DB inside a packet are escaped and come back; a broken escape is noise, not a packet', (t) => {
  const packet = encodeRequest(ESP_OP.FLASH_DATA, Uint8Array.of(0xc0, 0xdb, 0x01, 0xdb, 0xdc), 0xc0);
  const frame = slipEncode(packet);
  t.is(frame[0], 0xc0);
  t.is(frame.at(-1), 0xc0);
  t.is(frame.subarray(1, -1).indexOf(0xc0), -1, 'no delimiter inside the frame');
  t.deepEqual(slipDecode(frame), packet);
  t.deepEqual(decodeRequest(slipDecode(frame)!), { op: ESP_OP.FLASH_DATA, checksum: 0xc0, data: Uint8Array.of(0xc0, 0xdb, 0x01, 0xdb, 0xdc) });
  t.is(slipDecode(Uint8Array.of(0xc0, 0x00, 0xdb, 0x42, 0xc0)), undefined);
  // A size field that disagrees with the frame (a byte lost on the line) is no request.
  t.is(decodeRequest(packet.subarray(0, packet.length - 1)), undefined);
  t.is(espChecksum(Uint8Array.of(0x01, 0x02)), 0xef ^ 0x01 ^ 0x02);
});

test.serial('serial config: esp fields are checked, and a layout cuts the regions out of a merged image', (t) => {
  const config = parseSerialConfig({
    type: 'serial', protocol: 'esp', port: '/dev/ttyUSB0', chip: 'esp32c3', address: 0x1000, reset: 'none', compress: false, flashBaud: 921600, verify: 'md5',
    layout: [{ address: 0x1000, length: 4 }, { address: 0x3000, length: 2 }],
  });
  t.like(config, { protocol: 'esp', chip: 'esp32c3', reset: 'none', compress: false, flashBaud: 921600 });
  const merged = new Uint8Array(0x2002).fill(0xff);
  merged.set([1, 2, 3, 4], 0);
  merged.set([5, 6], 0x2000);
  t.deepEqual(espParts(config, merged), [{ address: 0x1000, data: Uint8Array.of(1, 2, 3, 4) }, { address: 0x3000, data: Uint8Array.of(5, 6) }]);
  t.deepEqual(espParts(parseSerialConfig({ type: 'serial', protocol: 'esp', port: 'p' }), merged).map((p) => p.address), [0x10000], 'a plain binary goes to 0x10000 by default');
  t.throws(() => espParts(config, merged.subarray(0, 0x2001)), { message: /layout region 0x3000\+2 is outside the 8193-byte image/ });
  for (const [field, value, message] of [
    ['chip', 'esp32s2', /"chip" must be one of esp32, esp32s3, esp32c3, esp8266/],
    ['layout', [{ address: 0x1000 }], /"layout" must be a non-empty list/],
    ['reset', 'hard', /"reset" must be "classic" or "none"/],
    ['verify', 'sha256', /"verify" must be "md5" or "checksums"/],
    ['flashBaud', 5_000_000, /"flashBaud" must be a baud rate/],
  ] as const) {
    t.throws(() => parseSerialConfig({ type: 'serial', protocol: 'esp', port: 'p', [field]: value }), { instanceOf: SerialConfigError, message });
  }
});

test.serial('a layout with an unaligned or overlapping region is refused before the port is touched', (t) => {
  t.throws(() => checkLayout([{ address: 0x1800, data: new Uint8Array(4) }]), { message: /not on a 4 KiB sector boundary/ });
  t.throws(() => checkLayout([{ address: 0x1000, data: new Uint8Array(0x1001) }, { address: 0x2000, data: new Uint8Array(4) }]), { message: /overlaps the sectors of the part at 0x00001000/ });
  t.deepEqual(checkLayout([{ address: 0, data: Uint8Array.of(1) }])[0]!.data, Uint8Array.of(1, 0xff, 0xff, 0xff), 'padded to a word with erased bytes');
});

test.serial('classic reset: EN held low with GPIO0 released, then GPIO0 low as EN rises, then both released; then SYNC', async (t) => {
  const { host } = inMemory(t, { chip: 'esp32', flash: memoryFlash(4 * MiB) });
  const signals: string[] = [];
  const withLines: SerialLink = Object.assign(Object.create(host) as SerialLink, {
    setSignals: async (s: { dtr: boolean; rts: boolean }) => { signals.push(`dtr=${s.dtr} rts=${s.rts}`); },
  });
  const result = await flashEsp({ link: withLines, parts: [{ address: 0x10000, data: patternBytes(2000, 3) }], timeoutMs: 1000, start: false });
  // RTS drives EN and DTR drives GPIO0, both inverted by the board's transistors.
  t.deepEqual(signals, ['dtr=false rts=true', 'dtr=true rts=false', 'dtr=false rts=false']);
  t.is(result.resetSkipped, undefined);
});
