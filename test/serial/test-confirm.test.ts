// MCUboot test-and-confirm: our client's flow against the emulated
// application on MCUboot's swap (in-memory line, real timers), the swap
// model's trailer rules, and the installer's configuration.
import test, { type ExecutionContext } from 'ava';
import { readFileSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { createLinkPair, type LineFilter } from '../../device-agent/serial/link.js';
import { ConsoleFrameDecoder, decodeSmpPacket } from '../../device-agent/serial/smp-frame.js';
import { testAndConfirmMcuboot } from '../../device-agent/serial/mcuboot-test-confirm.js';
import { BootloaderRefusedError, McubootTestFailedError } from '../../device-agent/serial/bootloader-error.js';
import { buildMcubootImage, parseMcubootImage } from '../../device-agent/serial/mcuboot-image.js';
import { createSerialInstaller, parseSerialConfig, SerialConfigError } from '../../device-agent/serial/installer.js';
import { memoryFlash } from '../../hardware/emulators/flash-file.js';
import { BOOT_FLAG_SET, BOOT_MAGIC, McubootSwapSlots, TRAILER } from '../../hardware/emulators/mcuboot-swap.js';
import { HANG_MARKER, NO_ECHO_MARKER, SELF_CONFIRM_MARKER, SmpAppEmulator, type SmpAppEmulatorInit } from '../../hardware/emulators/smp-app-emulator.js';
import { patternBytes, ptyPair, REPO, requireTools, run, startTsx, tempDir, waitForOutput } from './helpers.js';

const SLOT = 64 * 1024;
const TRAILER_SIZE = 4096;
const oldImage = buildMcubootImage(patternBytes(20_000, 1), { major: 1, minor: 0, revision: 0 });
const newImage = buildMcubootImage(patternBytes(24_000, 2), { major: 1, minor: 0, revision: 1 });
const marked = (marker: string, seed: number): Uint8Array =>
  buildMcubootImage(Buffer.concat([Buffer.from(marker, 'latin1'), patternBytes(18_000, seed)]), { major: 1, minor: 0, revision: 2 });
const hashOf = (image: Uint8Array): string => Buffer.from(parseMcubootImage(image).sha256Tlv).toString('hex');
const hexOf = (b: Uint8Array | undefined): string | undefined => (b ? Buffer.from(b).toString('hex') : undefined);

/** A device that shipped with `oldImage` in its primary slot, powered on, serving an in-memory line. */
function device(t: { teardown(fn: () => unknown): void }, init: Partial<SmpAppEmulatorInit> = {}, toDevice?: LineFilter) {
  const flash = memoryFlash(2 * SLOT);
  flash.write(0, oldImage);
  const emulator = new SmpAppEmulator({ flash, slotSize: SLOT, trailerSize: TRAILER_SIZE, resetDelayMs: 50, bootMs: 50, ...init });
  emulator.powerOn();
  const [host, deviceEnd] = createLinkPair(toDevice ? { aToB: toDevice } : undefined);
  const serving = emulator.serve(deviceEnd);
  t.teardown(async () => { emulator.close(); await host.close(); await serving; });
  const primary = (): Uint8Array => emulator.slots.slot(0);
  const trailer = (n: 0 | 1, field: keyof typeof TRAILER, length = 1): Uint8Array => emulator.slots.slot(n).subarray(SLOT - TRAILER[field], SLOT - TRAILER[field] + length);
  return { emulator, host, primary, trailer };
}

const quick = { timeoutMs: 200, bootTimeoutMs: 3000 };

/** Waits (bounded) until the emulated device has booted `count` times. */
async function bootsReach(emulator: SmpAppEmulator, count: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (emulator.boots.length < count) {
    if (Date.now() > deadline) throw new Error(`the device booted ${emulator.boots.length} times, not ${count}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

test('a healthy image is test-booted, then confirmed: slot 0 holds it with image-ok set, the old image waits in slot 1', async (t) => {
  const { emulator, host, primary, trailer } = device(t);
  const result = await testAndConfirmMcuboot({ link: host, image: newImage, ...quick });
  t.is(result.outcome, 'confirmed');
  t.is(hexOf(result.previousHash), hashOf(oldImage));
  t.true(result.bootMs! > 0);
  t.true(Buffer.from(primary().subarray(0, newImage.length)).equals(Buffer.from(newImage)), 'primary slot holds the new image byte for byte');
  t.true(Buffer.from(trailer(0, 'magic', 16)).equals(Buffer.from(BOOT_MAGIC)), 'primary trailer magic');
  t.is(trailer(0, 'imageOk')[0], BOOT_FLAG_SET, 'image-ok set: confirmed');
  t.true(Buffer.from(emulator.slots.slot(1).subarray(0, oldImage.length)).equals(Buffer.from(oldImage)), 'the old image was swapped into slot 1');
  t.deepEqual(emulator.boots.map((b) => [b.swap, b.running, b.version]), [['none', 'app', '1.0.0'], ['test', 'app', '1.0.1']]);
  const slot0 = result.after.find((s) => s.slot === 0)!;
  t.like(slot0, { active: true, confirmed: true });
  t.is(hexOf(slot0.hash), hashOf(newImage));
  // The next reset keeps it: nothing pending, nothing to revert.
  emulator.reset(0);
  await bootsReach(emulator, 3);
  t.like(emulator.boots.at(-1), { swap: 'none', running: 'app', version: '1.0.1' });
});

test('an image that never answers after reset: the watchdog resets it, MCUboot reverts, the old image runs again, the error says "reverted"', async (t) => {
  const { emulator, host, primary, trailer } = device(t, { watchdogMs: 2500 });
  const hang = marked(HANG_MARKER, 3);
  const error = await t.throwsAsync(testAndConfirmMcuboot({ link: host, image: hang, ...quick, bootTimeoutMs: 1000, revertTimeoutMs: 4000 }), { instanceOf: McubootTestFailedError });
  t.is(error!.deviceState, 'reverted');
  t.regex(error!.message, /^Test boot: the device did not answer within 1000 ms of the reset into the test image; MCUboot reverted: slot 0 runs [0-9a-f]{64} again$/);
  t.true(error!.message.includes(hashOf(oldImage)));
  t.deepEqual(emulator.boots.map((b) => [b.swap, b.running, b.version]), [['none', 'app', '1.0.0'], ['test', 'hung', '1.0.2'], ['revert', 'app', '1.0.0']]);
  t.true(Buffer.from(primary().subarray(0, oldImage.length)).equals(Buffer.from(oldImage)), 'the old image is back in the primary slot');
  t.is(trailer(0, 'imageOk')[0], BOOT_FLAG_SET, 'and kept: a revert is not reverted again');
});

test('an unhealthy image (answers, fails the echo probe): the agent\'s reset makes MCUboot revert it', async (t) => {
  const { emulator, host, primary } = device(t);
  const error = await t.throwsAsync(testAndConfirmMcuboot({ link: host, image: marked(NO_ECHO_MARKER, 4), ...quick }), { instanceOf: McubootTestFailedError });
  t.is(error!.deviceState, 'reverted');
  t.regex(error!.message, /^Test boot: the health probe \(SMP echo\) failed: .*rc 8 \(ENOTSUP\); .*; MCUboot reverted/);
  t.deepEqual(emulator.boots.map((b) => b.swap), ['none', 'test', 'revert'], 'no watchdog here: the revert came from the reset fwcast sent');
  t.true(Buffer.from(primary().subarray(0, oldImage.length)).equals(Buffer.from(oldImage)));
});

test('an image that hangs without a watchdog: reported "unconfirmed", and the next reset (a power cycle) reverts it', async (t) => {
  const { emulator, host, primary } = device(t);
  const error = await t.throwsAsync(testAndConfirmMcuboot({ link: host, image: marked(HANG_MARKER, 5), ...quick, bootTimeoutMs: 600, revertTimeoutMs: 600 }), { instanceOf: McubootTestFailedError });
  t.is(error!.deviceState, 'unconfirmed');
  t.regex(error!.message, /did not answer within 600 ms of the reset that reverts it; the test image is unconfirmed/);
  const booted = emulator.boots.length;
  emulator.reset(0);
  await bootsReach(emulator, booted + 1);
  t.like(emulator.boots.at(-1), { swap: 'revert', running: 'app', version: '1.0.0' });
  t.true(Buffer.from(primary().subarray(0, oldImage.length)).equals(Buffer.from(oldImage)));
});

test('a reset request lost on the line: the device keeps listing the test as pending, so the reset is sent again, and the image is confirmed', async (t) => {
  let resetsSeen = 0;
  // Swallows the first os reset request (group 0, id 5) on its way to the device.
  const dropFirstReset: LineFilter = (data) => {
    const decoder = new ConsoleFrameDecoder();
    for (const line of Buffer.from(data).toString('latin1').split('\n')) {
      const outcome = decoder.pushLine(Buffer.from(line, 'latin1'));
      if (outcome.kind !== 'packet') continue;
      const { header } = decodeSmpPacket(outcome.packet);
      if (header.group === 0 && header.id === 5 && ++resetsSeen === 1) return new Uint8Array(0);
    }
    return data;
  };
  const { emulator, host } = device(t, {}, dropFirstReset);
  const result = await testAndConfirmMcuboot({ link: host, image: newImage, ...quick, bootTimeoutMs: 6000 });
  t.is(result.outcome, 'confirmed');
  t.is(resetsSeen, 2, 'the reset was sent a second time');
  t.true(result.retries >= 1);
  t.deepEqual(emulator.boots.map((b) => b.swap), ['none', 'test']);
});

test('an unhealthy image that confirms itself at boot cannot be reverted: reported "self-confirmed", and it stays', async (t) => {
  const { emulator, host, trailer } = device(t);
  const image = marked(`${SELF_CONFIRM_MARKER} ${NO_ECHO_MARKER}`, 8);
  const error = await t.throwsAsync(testAndConfirmMcuboot({ link: host, image, ...quick }), { instanceOf: McubootTestFailedError });
  t.is(error!.deviceState, 'self-confirmed');
  t.regex(error!.message, /if the application is built without echo, set "health": "none"; the device confirmed the test image itself, so MCUboot keeps it$/);
  // The reset fwcast sent lands after it saw the image confirmed; MCUboot then boots it again, no swap.
  await bootsReach(emulator, 3);
  t.deepEqual(emulator.boots.map((b) => [b.swap, b.version]), [['none', '1.0.0'], ['test', '1.0.2'], ['none', '1.0.2']]);
  t.is(trailer(0, 'imageOk')[0], BOOT_FLAG_SET);
});

test('a test boot left unconfirmed (the agent stopped after the reset) is resumed: checked and confirmed without a new upload', async (t) => {
  const { emulator, host, trailer } = device(t);
  emulator.slots.flash.write(SLOT, newImage);
  emulator.slots.setPending(false);
  emulator.reset(0);
  await bootsReach(emulator, 2);
  t.like(emulator.boots.at(-1), { swap: 'test', running: 'app', version: '1.0.1' });
  const result = await testAndConfirmMcuboot({ link: host, image: newImage, ...quick });
  t.is(result.outcome, 'resumed');
  t.is(trailer(0, 'imageOk')[0], BOOT_FLAG_SET);
  t.is(emulator.boots.length, 2, 'no further reset');
  const again = await testAndConfirmMcuboot({ link: host, image: newImage, ...quick });
  t.is(again.outcome, 'already-confirmed');
});

test('an image MCUboot will not boot (its hash does not check): the device runs the old image, reported "reverted"', async (t) => {
  const { emulator, host } = device(t);
  // Corrupt the upload on the device side: flip a payload byte as it is written to the secondary slot.
  const flash = emulator.slots.flash;
  const write = flash.write.bind(flash);
  flash.write = (offset, data) => {
    const copy = new Uint8Array(data);
    if (offset <= SLOT + 1000 && offset + copy.length > SLOT + 1000) copy[SLOT + 1000 - offset]! ^= 1;
    write(offset, copy);
  };
  const error = await t.throwsAsync(testAndConfirmMcuboot({ link: host, image: newImage, ...quick }), { instanceOf: McubootTestFailedError });
  t.is(error!.deviceState, 'reverted');
  t.regex(error!.message, /MCUboot did not boot the test image/);
  t.deepEqual(emulator.boots.map((b) => b.swap), ['none', 'fail']);
});

test('the device refuses the upload while another test is pending: a refusal naming the image group code, device untouched', async (t) => {
  const { emulator, host } = device(t);
  emulator.slots.flash.write(SLOT, marked(NO_ECHO_MARKER, 6));
  emulator.slots.setPending(false);
  const error = await t.throwsAsync(testAndConfirmMcuboot({ link: host, image: newImage, ...quick }), { instanceOf: BootloaderRefusedError });
  t.is(error!.deviceState, 'untouched');
  t.regex(error!.message, /group 1 rc 9 \(NO_FREE_SLOT\)/);
  t.is(emulator.boots.length, 1);
});

/** The same shipped device as a separate process on a socat pty, as a board on a cable. */
async function deviceOnPty(t: ExecutionContext, name: string) {
  requireTools(t, 'socat');
  const dir = tempDir(t, name);
  const pair = await ptyPair(t, dir, 'app');
  const slots = join(dir, 'slots.bin');
  const shipped = new Uint8Array(2 * SLOT).fill(0xff);
  shipped.set(oldImage);
  writeFileSync(slots, shipped);
  const emulator = startTsx(t, 'hardware/emulators/smp-app-emulator.ts', ['--port', pair.device, '--flash', slots, '--slot-size', String(SLOT)]);
  await waitForOutput(emulator, /serving/, 15_000, 'smp-app-emulator');
  return { dir, pair, slots, emulator };
}

test('flash command over a pty: --mcuboot-mode test-confirm reports a revert with exit 1, then confirms a healthy image with exit 0', async (t) => {
  const { dir, pair, slots, emulator } = await deviceOnPty(t, 'confirm-cli');
  const flash = (image: Uint8Array, name: string) => {
    const path = join(dir, name);
    writeFileSync(path, image);
    return run(process.execPath, [
      '--import', 'tsx', join(REPO, 'device-agent/serial/flash-main.ts'), 'flash', '--protocol', 'mcuboot', '--port', pair.host,
      '--mcuboot-mode', 'test-confirm', '--boot-timeout', '5000', path,
    ]);
  };
  const unhealthy = await flash(marked(NO_ECHO_MARKER, 7), 'unhealthy.img');
  t.is(unhealthy.code, 1, unhealthy.stdout);
  t.regex(unhealthy.stderr, /^flash: failed: McubootTestFailedError: Test boot: the health probe \(SMP echo\) failed: .*MCUboot reverted.* \(device: reverted\)$/m);
  t.true(readFileSync(slots).subarray(0, oldImage.length).equals(oldImage), 'the shipped image runs again');
  const healthy = await flash(newImage, 'healthy.img');
  t.is(healthy.code, 0, healthy.stderr);
  t.regex(healthy.stdout, /^flash: ok: \d+ bytes, verified: slot 0 runs SHA-256 [0-9a-f]{64}, confirmed after a test boot of \d+ ms/m);
  t.true(readFileSync(slots).subarray(0, newImage.length).equals(newImage));
  t.regex(emulator.output(), /boot: swap revert, slot 0 runs 1\.0\.0[^]*boot: swap test, slot 0 runs 1\.0\.1/);
});

test('installer: an image whose test boot failed is not tried again on that device (no second reboot into it); another image is', async (t) => {
  const { dir, pair, slots, emulator } = await deviceOnPty(t, 'confirm-installer');
  const installer = createSerialInstaller({ type: 'serial', protocol: 'mcuboot', port: pair.host, mcuboot: { mode: 'test-confirm', bootTimeoutMs: 5000 } });
  const install = (image: Uint8Array, name: string) => {
    const imagePath = join(dir, name);
    writeFileSync(imagePath, image);
    return installer.install({ imagePath, model: 'm', version: '1.0.2', seq: 2, sha256: createHash('sha256').update(image).digest('hex') });
  };
  const boots = (): number => (emulator.output().match(/boot: /g) ?? []).length;
  const bad = marked(NO_ECHO_MARKER, 9);
  const first = await t.throwsAsync(install(bad, 'bad.img'), { instanceOf: McubootTestFailedError });
  t.is(first!.deviceState, 'reverted');
  await waitForOutput(emulator, /boot: swap revert/, 5000, 'the revert in the emulator log');
  const bootsAfterFirst = boots();
  t.is(bootsAfterFirst, 3, 'power-on, test boot, revert');
  const second = await t.throwsAsync(install(bad, 'bad-again.img'), { instanceOf: McubootTestFailedError });
  t.is(second!.deviceState, 'untouched');
  t.regex(second!.message, /^Test boot: not tried again: this image already failed its test boot on this device \(Test boot: the health probe .*; device: reverted\)$/);
  t.is(boots(), bootsAfterFirst, 'the device was not rebooted into it again');
  await install(newImage, 'good.img');
  t.true(readFileSync(slots).subarray(0, newImage.length).equals(newImage), 'a different image still installs');
});

test('swap model: the trailer table of MCUboot (TEST, PERM, REVERT, NONE) and a secondary that does not validate', (t) => {
  const flash = memoryFlash(2 * SLOT);
  flash.write(0, oldImage);
  const slots = new McubootSwapSlots(flash, SLOT, TRAILER_SIZE);
  t.is(slots.swapType(), 'none', 'a factory image: no magic anywhere');
  flash.write(SLOT, newImage);
  slots.setPending(true);
  t.is(slots.swapType(), 'perm');
  t.like(slots.boot(), { swap: 'perm', image: { version: '1.0.1' } });
  t.is(slots.swapType(), 'none', 'a permanent swap is not reverted');
  slots.setConfirmed();
  t.is(slots.swapType(), 'none');
  flash.erase(SLOT, SLOT);
  flash.write(SLOT, oldImage);
  slots.setPending(false);
  t.is(slots.swapType(), 'test');
  t.like(slots.boot(), { swap: 'test', image: { version: '1.0.0' } });
  t.is(slots.swapType(), 'revert', 'an unconfirmed test image');
  t.like(slots.boot(), { swap: 'revert', image: { version: '1.0.1' } });
  t.is(slots.swapType(), 'none');
  const bad = new Uint8Array(newImage);
  bad[100]! ^= 0xff;
  flash.erase(SLOT, SLOT);
  flash.write(SLOT, bad);
  slots.setPending(false);
  t.like(slots.boot(), { swap: 'fail', image: { version: '1.0.1' } });
  t.true(slots.slot(1).every((b) => b === 0xff), 'MCUboot erased the secondary slot');
});

test('config: "mcuboot": {"mode": "test-confirm"} is parsed; wrong combinations are clear errors naming the field', (t) => {
  const base = { type: 'serial', protocol: 'mcuboot', port: '/dev/ttyACM0' };
  t.deepEqual(parseSerialConfig({ ...base, mcuboot: { mode: 'test-confirm', bootTimeoutMs: 30000, health: 'none' } }).mcuboot,
    { mode: 'test-confirm', bootTimeoutMs: 30000, health: 'none' });
  t.deepEqual(parseSerialConfig({ ...base, mcuboot: { mode: 'recovery' } }).mcuboot, { mode: 'recovery' });
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ ...base, protocol: 'stm32', mcuboot: { mode: 'test-confirm' } }, /"mcuboot" applies only to "protocol": "mcuboot"/],
    [{ ...base, mcuboot: 'test-confirm' }, /"mcuboot" must be an object/],
    [{ ...base, mcuboot: { mode: 'test' } }, /"mcuboot"\.mode must be one of recovery, test-confirm \(got "test"\)/],
    [{ ...base, mcuboot: { mode: 'test-confirm', bootTimeout: 5 } }, /unknown field\(s\) "bootTimeout"/],
    [{ ...base, mcuboot: { mode: 'test-confirm', bootTimeoutMs: 10 } }, /"bootTimeoutMs" must be between 100 and 3600000/],
    [{ ...base, mcuboot: { mode: 'test-confirm', health: 'ping' } }, /health must be one of echo, none/],
    [{ ...base, mcuboot: { mode: 'recovery', health: 'echo' } }, /health apply only to "mode": "test-confirm"/],
    [{ ...base, start: false, mcuboot: { mode: 'test-confirm' } }, /cannot be combined with "start": false/],
  ];
  for (const [config, message] of bad) t.throws(() => parseSerialConfig(config), { instanceOf: SerialConfigError, message }, JSON.stringify(config));
});
