/**
 * The serial bridge end to end: `fwcast publish` multicasts an MCU image in
 * one network namespace, `fwcast-agent` in another receives and verifies it,
 * then its serial installer flashes an emulated microcontroller over a socat
 * pty pair. The ptys live in the shared /dev/pts, so the agent inside its
 * network namespace opens the host end while the emulator (outside any
 * network namespace, like a board on a cable) serves the device end.
 *
 *   [pub] fwcast publish ── bridge ── [bridge] fwcast-agent ── pty ══ pty ── emulator ── flash file
 */
import test, { type ExecutionContext } from 'ava';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildMcubootImage } from '../device-agent/serial/mcuboot-image.js';
import { BOOT_FLAG_SET, BOOT_MAGIC, TRAILER } from '../hardware/emulators/mcuboot-swap.js';
import { HANG_MARKER } from '../hardware/emulators/smp-app-emulator.js';
import { NetLab } from '../scripts/lab/netlab.js';
import { sha256hex } from './helpers/fixtures.js';
import { events, exitCode, FWCAST, FWCAST_AGENT, fwcast, track, waitForEvent, type Tracked } from './helpers/processes.js';
import { patternBytes, requireTools, run, startProcess, startTsx, tempDir, waitForOutput } from './serial/helpers.js';

/**
 * A socat pty pair, as test/serial/helpers.ts makes it, with more patience:
 * this file starts several CLIs at once, and a loaded CI box can take more
 * than 5 s to show socat's "ready" line.
 */
async function ptyPair(t: ExecutionContext, dir: string, name: string): Promise<{ device: string; host: string }> {
  const device = join(dir, `${name}-dev`);
  const host = join(dir, `${name}-host`);
  const socat = startProcess(t, 'socat', ['-d', '-d', `pty,raw,echo=0,link=${device}`, `pty,raw,echo=0,link=${host}`]);
  await waitForOutput(socat, /starting data transfer loop/, 20_000, 'socat');
  return { device, host };
}

interface Release { image: Uint8Array; release: string; pub: string }

/** Signs `image` for `model` with a fresh key (in `dir`). */
function signRelease(dir: string, image: Uint8Array, model: string): Release {
  fwcast('keygen', '--out', dir);
  const imagePath = join(dir, `${model}.bin`);
  writeFileSync(imagePath, image);
  const release = join(dir, `${model}-1.0.1.fwc`);
  fwcast('sign', imagePath, '--key', join(dir, 'publisher.key'), '--model', model, '--version', '1.0.1', '--seq', '1', '--out', release);
  return { image, release, pub: join(dir, 'publisher.pub') };
}

/** Writes an agent config whose only model is flashed by a serial installer. */
function bridgeConfig(dir: string, name: string, pub: string, model: string, installer: Record<string, unknown>): { config: string; store: string } {
  const store = join(dir, `store-${name}`);
  const config = join(dir, `agent-${name}.json`);
  writeFileSync(config, JSON.stringify({
    interface: 'eth0', store, trustedKeys: [pub],
    models: [{ model, installer: { type: 'serial', ...installer } }],
  }, null, 2));
  return { config, store };
}

function bridgeAgent(lab: NetLab, host: string, config: string): Tracked {
  return track(lab.spawn(host, process.execPath, [FWCAST_AGENT, '--config', config, '--once', '--json', '--timeout', '60', '--log-format', 'json']));
}

function publish(lab: NetLab, release: string): Tracked {
  return track(lab.spawn('pub', process.execPath, [FWCAST, 'publish', release, '--iface', 'eth0', '--rate', '10mbit', '--duration', '60s']));
}

/** What `fwcast-agent status --json` lists for a store. */
async function installedRecords(store: string): Promise<{ model: string; sha256: string }[]> {
  const status = await run(process.execPath, [FWCAST_AGENT, 'status', '--store', store, '--json'], 30_000);
  if (status.code !== 0) throw new Error(`status exited ${status.code}: ${status.stderr}`);
  return JSON.parse(status.stdout) as { model: string; sha256: string }[];
}

/** Publishes `rel` to agents already listening; returns their exit codes once all have ended. */
async function deliver(t: ExecutionContext, lab: NetLab, rel: Release, agents: Tracked[], model: string): Promise<(number | null)[]> {
  await Promise.all(agents.map((a) => waitForEvent(a, 'agent.listening', { channel: `fw/${model}` }, 40_000)));
  const publisher = publish(lab, rel.release);
  const started = Date.now();
  const codes = await Promise.all(agents.map((a) => exitCode(a, 60_000)));
  t.log(`agents done ${Date.now() - started} ms after the carousel started`);
  publisher.child.kill('SIGTERM');
  t.is(await exitCode(publisher, 10_000), 0, 'publisher stops cleanly');
  return codes;
}

test('End to end: multicast → agent → serial (STM32 AN3155) → emulated flash equals the signed image', async (t) => {
  requireTools(t, 'socat');
  const lab = NetLab.create(['pub', 'bridge']);
  t.teardown(() => lab.destroy());
  const dir = tempDir(t, 'bridge-stm32');
  const model = 'stm32f103';
  const rel = signRelease(dir, readFileSync(new URL('../firmware-samples/sample-mcu-20k.bin', import.meta.url)), model);

  const pair = await ptyPair(t, dir, 'stm32');
  const flashPath = join(dir, 'stm32-flash.bin');
  const emulator = startTsx(t, 'hardware/emulators/stm32-emulator.ts', ['--port', pair.device, '--flash', flashPath]);
  await waitForOutput(emulator, /serving/, 30_000, 'stm32-emulator');

  const { config, store } = bridgeConfig(dir, 'stm32', rel.pub, model, { protocol: 'stm32', port: pair.host });
  const agent = bridgeAgent(lab, 'bridge', config);
  const [code] = await deliver(t, lab, rel, [agent], model);

  t.is(code, 0, agent.stderr);
  const result = JSON.parse(agent.stdout.trim().split('\n').pop()!) as { model: string; seq: number; sha256: string };
  t.is(result.model, model);
  t.is(result.seq, 1);
  t.is(result.sha256, sha256hex(rel.image), 'agent reports the signed image digest');
  t.like(events(agent.stderr, 'release.verified')[0], { model, installer: `serial stm32 bootloader on ${pair.host}` });
  const flash = readFileSync(flashPath);
  t.true(flash.subarray(0, rel.image.length).equals(rel.image), 'emulated flash at 0x08000000 holds the image byte for byte');
  t.true(flash.subarray(rel.image.length, 21 * 1024).every((b) => b === 0xff), 'rest of the last erased page is erased');
  t.deepEqual((await installedRecords(store)).map((r) => [r.model, r.sha256]), [[model, sha256hex(rel.image)]]);
});

test('End to end: multicast → agent → serial (MCUboot serial recovery) → slot 0 equals the signed MCUboot image', async (t) => {
  requireTools(t, 'socat');
  const lab = NetLab.create(['pub', 'bridge']);
  t.teardown(() => lab.destroy());
  const dir = tempDir(t, 'bridge-mcuboot');
  const model = 'nrf52840-dk';
  // MCUboot lists only real images: header, payload and SHA-256 TLV.
  const rel = signRelease(dir, buildMcubootImage(patternBytes(30_000, 41), { major: 1, minor: 0, revision: 1, build: 0 }), model);

  const pair = await ptyPair(t, dir, 'smp');
  const slotPath = join(dir, 'slot0.bin');
  const emulator = startTsx(t, 'hardware/emulators/smp-emulator.ts', ['--port', pair.device, '--flash', slotPath]);
  await waitForOutput(emulator, /serving/, 30_000, 'smp-emulator');

  const { config, store } = bridgeConfig(dir, 'mcuboot', rel.pub, model, { protocol: 'mcuboot', port: pair.host });
  const agent = bridgeAgent(lab, 'bridge', config);
  const [code] = await deliver(t, lab, rel, [agent], model);

  t.is(code, 0, agent.stderr);
  const result = JSON.parse(agent.stdout.trim().split('\n').pop()!) as { sha256: string };
  t.is(result.sha256, sha256hex(rel.image));
  const slot = readFileSync(slotPath);
  t.true(slot.subarray(0, rel.image.length).equals(rel.image), 'slot 0 holds the MCUboot image byte for byte');
  t.true(slot.subarray(rel.image.length).every((b) => b === 0xff), 'nothing written past the image');
  await waitForOutput(emulator, /smp-emulator: reset/, 5000, 'smp-emulator reset after the verified upload');
  t.deepEqual((await installedRecords(store)).map((r) => r.model), [model]);
});

/**
 * An emulated board running an SMP-capable application on MCUboot's swap,
 * shipped with `shipped` in its primary slot; its flash file holds both
 * slots (primary, then secondary).
 */
async function mcubootApplication(t: ExecutionContext, dir: string, shipped: Uint8Array, slotSize: number, extra: string[] = []) {
  const pair = await ptyPair(t, dir, 'app');
  const flashPath = join(dir, 'slots.bin');
  const slots = new Uint8Array(2 * slotSize).fill(0xff);
  slots.set(shipped, 0);
  writeFileSync(flashPath, slots);
  const emulator = startTsx(t, 'hardware/emulators/smp-app-emulator.ts', ['--port', pair.device, '--flash', flashPath, '--slot-size', String(slotSize), ...extra]);
  await waitForOutput(emulator, /serving/, 30_000, 'smp-app-emulator');
  const primary = (): Buffer => readFileSync(flashPath).subarray(0, slotSize);
  return { pair, emulator, primary };
}

const TEST_CONFIRM_SLOT = 64 * 1024;
const shippedImage = buildMcubootImage(patternBytes(20_000, 60), { major: 1, minor: 0, revision: 0, build: 0 });

test('End to end: multicast → agent → serial (MCUboot test-and-confirm through the application) → the healthy image is test-booted and confirmed', async (t) => {
  requireTools(t, 'socat');
  const lab = NetLab.create(['pub', 'bridge']);
  t.teardown(() => lab.destroy());
  const dir = tempDir(t, 'bridge-confirm');
  const model = 'nrf52840-app';
  const rel = signRelease(dir, buildMcubootImage(patternBytes(30_000, 61), { major: 1, minor: 0, revision: 1, build: 0 }), model);
  const { pair, emulator, primary } = await mcubootApplication(t, dir, shippedImage, TEST_CONFIRM_SLOT);

  const { config, store } = bridgeConfig(dir, 'confirm', rel.pub, model, {
    protocol: 'mcuboot', port: pair.host, timeoutMs: 500, mcuboot: { mode: 'test-confirm', bootTimeoutMs: 10_000 },
  });
  const agent = bridgeAgent(lab, 'bridge', config);
  const [code] = await deliver(t, lab, rel, [agent], model);

  t.is(code, 0, agent.stderr);
  t.is((JSON.parse(agent.stdout.trim().split('\n').pop()!) as { sha256: string }).sha256, sha256hex(rel.image));
  t.like(events(agent.stderr, 'release.verified')[0], { model, installer: `serial mcuboot test-and-confirm on ${pair.host}` });
  t.regex(emulator.output(), /boot: swap test, slot 0 runs 1\.0\.1 /, 'MCUboot swapped the new image in for a test boot');
  const slot = primary();
  t.true(slot.subarray(0, rel.image.length).equals(rel.image), 'the primary slot holds the signed image byte for byte');
  t.true(slot.subarray(TEST_CONFIRM_SLOT - TRAILER.magic, TEST_CONFIRM_SLOT - TRAILER.magic + 16).equals(BOOT_MAGIC), 'primary trailer magic');
  t.is(slot[TEST_CONFIRM_SLOT - TRAILER.imageOk], BOOT_FLAG_SET, 'image-ok set: the image is confirmed and stays at the next reset');
  t.deepEqual((await installedRecords(store)).map((r) => [r.model, r.sha256]), [[model, sha256hex(rel.image)]]);
});

test('End to end: an MCUboot test image that never answers after reset is reverted by MCUboot; the agent records nothing and marks the release bad (device-reverted)', async (t) => {
  requireTools(t, 'socat');
  const lab = NetLab.create(['pub', 'bridge']);
  t.teardown(() => lab.destroy());
  const dir = tempDir(t, 'bridge-revert');
  const model = 'nrf52840-app';
  const hang = buildMcubootImage(Buffer.concat([Buffer.from(HANG_MARKER, 'latin1'), patternBytes(30_000, 62)]), { major: 1, minor: 0, revision: 1, build: 0 });
  const rel = signRelease(dir, hang, model);
  // The hung application stops feeding the watchdog, which resets the board 5 s after boot, well after the agent's 2 s boot timeout.
  const { pair, emulator, primary } = await mcubootApplication(t, dir, shippedImage, TEST_CONFIRM_SLOT, ['--watchdog-ms', '5000']);

  const { config, store } = bridgeConfig(dir, 'revert', rel.pub, model, {
    protocol: 'mcuboot', port: pair.host, timeoutMs: 500, mcuboot: { mode: 'test-confirm', bootTimeoutMs: 2000, revertTimeoutMs: 15_000 },
  });
  const agent = bridgeAgent(lab, 'bridge', config);
  const [code] = await deliver(t, lab, rel, [agent], model);

  t.is(code, 1, agent.stderr);
  t.is(agent.stdout, '', 'no install reported');
  t.deepEqual(events(agent.stderr, 'release.installed'), []);
  // The device went back by itself: a bad release on this device, never tried again (each try would boot the device into it).
  const failure = events(agent.stderr, 'lifecycle.rolled-back', { model, version: '1.0.1', seq: 1 })[0];
  t.like(failure, { cause: 'device-reverted', rollbackOk: true }, agent.stderr);
  t.regex(String(failure?.detail), /^McubootTestFailedError: .*did not answer within 2000 ms of the reset into the test image; MCUboot reverted/);
  const lifecycle = JSON.parse(readFileSync(join(store, 'lifecycle.json'), 'utf8')) as { models: Record<string, { bad: Array<{ seq: number; cause: string }> }> };
  t.like(lifecycle.models[model]?.bad, [{ seq: 1, cause: 'device-reverted' }]);
  t.regex(emulator.output(), /boot: swap test, slot 0 runs 1\.0\.1 [0-9a-f]{64}, application hung/);
  t.regex(emulator.output(), /boot: swap revert, slot 0 runs 1\.0\.0 /, 'MCUboot swapped the unconfirmed test image back out');
  const slot = primary();
  t.true(slot.subarray(0, shippedImage.length).equals(shippedImage), 'the shipped image runs again from the primary slot');
  t.is(slot[TEST_CONFIRM_SLOT - TRAILER.imageOk], BOOT_FLAG_SET, 'and is kept');
  t.deepEqual(await installedRecords(store), []);
});

test('End to end: multicast → agent → serial (ESP32 ROM loader) → bootloader, partition table and app of the signed merged image in the emulated flash', async (t) => {
  requireTools(t, 'socat');
  const lab = NetLab.create(['pub', 'bridge']);
  t.teardown(() => lab.destroy());
  const dir = tempDir(t, 'bridge-esp');
  const model = 'esp32-devkitc';
  // A merged flash image from 0x1000 (esptool merge_bin's shape): bootloader,
  // erased gap, partition table, erased gap, app.
  const merged = new Uint8Array(0x10000 - 0x1000 + 40_000).fill(0xff);
  merged.set(patternBytes(0x3000, 51), 0);
  merged.set(patternBytes(0xc00, 52), 0x8000 - 0x1000);
  merged.set(patternBytes(40_000, 53), 0x10000 - 0x1000);
  const rel = signRelease(dir, merged, model);

  const pair = await ptyPair(t, dir, 'esp');
  const flashPath = join(dir, 'esp-flash.bin');
  const emulator = startTsx(t, 'hardware/emulators/esp-emulator.ts', ['--port', pair.device, '--flash', flashPath, '--chip', 'esp32']);
  await waitForOutput(emulator, /serving/, 30_000, 'esp-emulator');

  const layout = [{ address: 0x1000, length: 0x3000 }, { address: 0x8000, length: 0xc00 }, { address: 0x10000, length: 40_000 }];
  const { config, store } = bridgeConfig(dir, 'esp', rel.pub, model, { protocol: 'esp', port: pair.host, chip: 'esp32', reset: 'none', address: 0x1000, layout });
  const agent = bridgeAgent(lab, 'bridge', config);
  const [code] = await deliver(t, lab, rel, [agent], model);

  t.is(code, 0, agent.stderr);
  const result = JSON.parse(agent.stdout.trim().split('\n').pop()!) as { sha256: string };
  t.is(result.sha256, sha256hex(rel.image));
  t.like(events(agent.stderr, 'release.verified')[0], { model, installer: `serial esp bootloader on ${pair.host}` });
  const flash = readFileSync(flashPath);
  t.true(flash.subarray(0x1000, 0x1000 + rel.image.length).equals(rel.image), 'flash from 0x1000 equals the signed image byte for byte');
  t.true(flash.subarray(0, 0x1000).every((b) => b === 0xff), 'nothing written below the bootloader');
  await waitForOutput(emulator, /esp-emulator: reboot/, 5000, 'esp-emulator reboot after the verified write');
  t.deepEqual((await installedRecords(store)).map((r) => [r.model, r.sha256]), [[model, sha256hex(rel.image)]]);
});

test('serial installer fails (no such port; silent device): clear error, exit 1 with --once, nothing recorded as installed', async (t) => {
  requireTools(t, 'socat');
  const lab = NetLab.create(['pub', 'noport', 'silent']);
  t.teardown(() => lab.destroy());
  const dir = tempDir(t, 'bridge-fail');
  const model = 'stm32f103';
  const rel = signRelease(dir, readFileSync(new URL('../firmware-samples/sample-mcu-20k.bin', import.meta.url)), model);

  const missing = join(dir, 'no-such-tty');
  // A pty with nothing behind it: a board whose BOOT0 is low, or unpowered.
  const pair = await ptyPair(t, dir, 'silent');
  const noport = bridgeConfig(dir, 'noport', rel.pub, model, { protocol: 'stm32', port: missing });
  const silent = bridgeConfig(dir, 'silent', rel.pub, model, { protocol: 'stm32', port: pair.host, timeoutMs: 200, tries: 2 });
  const agents = [bridgeAgent(lab, 'noport', noport.config), bridgeAgent(lab, 'silent', silent.config)];
  const codes = await deliver(t, lab, rel, agents, model);

  t.deepEqual(codes, [1, 1], agents.map((a) => a.stderr).join('\n'));
  const digest = sha256hex(rel.image);
  for (const a of agents) {
    t.like(events(a.stderr, 'release.verified')[0], { model, version: '1.0.1', seq: 1, sha256: digest }, 'the image itself was received and verified');
    t.is(a.stdout, '', 'no install reported');
    t.deepEqual(events(a.stderr, 'release.installed'), []);
  }
  const failure = (a: Tracked) => events(a.stderr, 'release.install-failed', { model, version: '1.0.1', seq: 1 })[0];
  t.like(failure(agents[0]!), { error: 'SerialOpenError', attempt: 1, retryInSeconds: 30 }, agents[0]!.stderr);
  t.true(String(failure(agents[0]!)?.detail).includes(missing), 'the error names the missing port');
  t.like(failure(agents[1]!), { error: 'BootloaderTimeoutError', deviceState: 'untouched' }, agents[1]!.stderr);
  t.true(String(events(agents[1]!.stderr, 'release.verified')[0]?.installer).startsWith('serial stm32 '), 'the STM32 bootloader client timed out');
  t.regex(String(failure(agents[1]!)?.detail), /^Sync: /, 'the bootloader never answered the sync byte');
  t.deepEqual(await installedRecords(noport.store), []);
  t.deepEqual(await installedRecords(silent.store), []);
});
