// The serial bridge as an installer: a verified image from the agent's store
// goes over a UART into a microcontroller's bootloader, and install()
// resolves only once the bootloader has shown the image back to us.
import { hex } from '../../protocol/hex.js';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Installer, InstallRequest } from '../installer.js';
import { openSerialPort, type Parity, type SerialLink } from './link.js';
import { flashMcuboot } from './mcuboot-smp.js';
import { MCUBOOT_HEALTH_PROBES, testAndConfirmMcuboot, type McubootHealthProbe } from './mcuboot-test-confirm.js';
import { McubootTestFailedError } from './bootloader-error.js';
import { flashStm32, STM32_FLASH_BASE } from './stm32-an3155.js';
import { flashStk500 } from './stk500.js';
import { flashEsp, type EspPart, type EspReset } from './esp-rom.js';
import { ESP_CHIPS, type EspChipName } from './esp-chips.js';
import { looksLikeIntelHex, parseIntelHex } from './intel-hex.js';

export const SERIAL_PROTOCOLS = ['mcuboot', 'stm32', 'stk500', 'esp'] as const;
export type SerialProtocol = (typeof SERIAL_PROTOCOLS)[number];

export interface SerialInstallerConfig {
  type: 'serial';
  protocol: SerialProtocol;
  /** /dev/ttyUSB0, /dev/fwcast-* (see hardware/raspberry-pi/99-fwcast-serial.rules), or a pty. */
  port: string;
  /** Default 115200 for all protocols. */
  baud?: number;
  /** Flash address of the image: stm32 default 0x08000000, stk500 default 0, esp default 0x10000 (with `layout`: the flash address of the image's first byte, default 0); ignored for mcuboot. */
  address?: number;
  /** Per-answer timeout in ms; protocol default when absent. */
  timeoutMs?: number;
  /** Attempts per operation; protocol default when absent. */
  tries?: number;
  /** stm32: jump to the image after the verified write (default false). mcuboot: reset into it (default true). */
  start?: boolean;
  /** stm32 only: 'even' as AN3155 requires (default), 'none' for ptys and adapters without parity. */
  parity?: Parity;
  /** Answer timeout of an erase in ms: stm32 default 30000; mcuboot (whole-slot erase) default 100 ms per KiB of slot, at least 10000. */
  eraseTimeoutMs?: number;
  /** mcuboot: size of slot 0 in bytes, for the size check when the device does not report it. */
  slotSize?: number;
  /** mcuboot: bytes kept for MCUboot's trailer at the slot's end when the device does not report its largest image (default 3120). */
  trailerSize?: number;
  /** stm32: read what will be erased first and write it back if the install fails (default true). */
  restore?: boolean;
  /** esp: the chip the device must be; another one is refused before anything is erased. */
  chip?: EspChipName;
  /** esp: the image is a merged flash image (esptool merge_bin); write only these regions of it (e.g. bootloader, partition table, app). */
  layout?: { address: number; length: number }[];
  /** esp: send zlib-deflated blocks where the ROM can inflate them (default true). */
  compress?: boolean;
  /** esp: switch to this baud rate after connecting (default: stay at `baud`). */
  flashBaud?: number;
  /** esp: 'classic' DTR/RTS reset into download mode (default), or 'none' for boards strapped by hand. */
  reset?: EspReset;
  /** esp: flash size in bytes, used when the flash id does not tell it. */
  flashSize?: number;
  /** esp: 'md5' (default), or 'checksums' to accept the ROM's per-block checksums alone (the ESP8266 ROM cannot hash). */
  verify?: 'md5' | 'checksums';
  /** mcuboot: serial recovery (default) or test-and-confirm through the running application's SMP server. */
  mcuboot?: McubootModeConfig;
}

export const MCUBOOT_MODES = ['recovery', 'test-confirm'] as const;
export type McubootMode = (typeof MCUBOOT_MODES)[number];

export interface McubootModeConfig {
  /** 'recovery': MCUboot's serial recovery overwrites slot 0. 'test-confirm': the application uploads to slot 1, MCUboot test-boots it, fwcast confirms it once healthy. */
  mode: McubootMode;
  /** test-confirm: how long the device may take to answer again after a reset (swap included); default 60000. */
  bootTimeoutMs?: number;
  /** test-confirm: the same after the reset that reverts a failed test; default bootTimeoutMs. */
  revertTimeoutMs?: number;
  /** test-confirm: 'echo' (default, an SMP echo of a random text) or 'none' (answering the image list is enough). */
  health?: McubootHealthProbe;
}

/** A configuration field that is missing or wrong; the message names the field. */
export class SerialConfigError extends TypeError {
  override readonly name = 'SerialConfigError';
}

function optionalNumber(config: Record<string, unknown>, field: string, check: (n: number) => boolean, rule: string): number | undefined {
  const value = config[field];
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || !check(value)) {
    throw new SerialConfigError(`serial installer: "${field}" must be ${rule} (got ${JSON.stringify(value)})`);
  }
  return value;
}

function parseLayout(raw: unknown): { address: number; length: number }[] {
  const rule = 'serial installer: "layout" must be a non-empty list of {"address", "length"} (non-negative integers, length > 0)';
  if (!Array.isArray(raw) || raw.length === 0) throw new SerialConfigError(rule);
  return raw.map((r: unknown) => {
    const { address, length } = (r ?? {}) as Record<string, unknown>;
    if (typeof address !== 'number' || typeof length !== 'number' || !Number.isInteger(address) || !Number.isInteger(length) || address < 0 || length <= 0) {
      throw new SerialConfigError(`${rule} (got ${JSON.stringify(r)})`);
    }
    return { address, length };
  });
}

/** The regions of a merged ESP flash image that `layout` names, each at its flash address; the whole image at `address` without one. */
export function espParts(config: SerialInstallerConfig, image: Uint8Array): EspPart[] {
  if (!config.layout) return [{ address: config.address ?? ESP_APP_OFFSET, data: image }];
  const base = config.address ?? 0;
  return config.layout.map(({ address, length }) => {
    const from = address - base;
    if (from < 0 || from + length > image.length) {
      throw new SerialConfigError(`serial installer: layout region 0x${address.toString(16)}+${length} is outside the ${image.length}-byte image that starts at flash address 0x${base.toString(16)}`);
    }
    return { address, data: image.subarray(from, from + length) };
  });
}

function parseMcubootMode(raw: unknown, protocol: unknown, start: unknown): McubootModeConfig {
  const where = 'serial installer: "mcuboot"';
  if (protocol !== 'mcuboot') throw new SerialConfigError(`${where} applies only to "protocol": "mcuboot" (got ${JSON.stringify(protocol)})`);
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new SerialConfigError(`${where} must be an object such as {"mode": "test-confirm"}`);
  const config = raw as Record<string, unknown>;
  const known = ['mode', 'bootTimeoutMs', 'revertTimeoutMs', 'health'];
  const unknown = Object.keys(config).filter((k) => !known.includes(k));
  if (unknown.length) throw new SerialConfigError(`${where} has unknown field(s) ${unknown.map((k) => JSON.stringify(k)).join(', ')}; known: ${known.join(', ')}`);
  if (!MCUBOOT_MODES.includes(config.mode as McubootMode)) throw new SerialConfigError(`${where}.mode must be one of ${MCUBOOT_MODES.join(', ')} (got ${JSON.stringify(config.mode)})`);
  const parsed: McubootModeConfig = { mode: config.mode as McubootMode };
  const testOnly = ['bootTimeoutMs', 'revertTimeoutMs', 'health'].filter((k) => config[k] !== undefined);
  if (parsed.mode === 'recovery') {
    if (testOnly.length) throw new SerialConfigError(`${where}: ${testOnly.join(', ')} apply only to "mode": "test-confirm"`);
    return parsed;
  }
  // A test boot that is never reset into never runs, and an unconfirmed one is reverted at the next reset anyway.
  if (start === false) throw new SerialConfigError(`${where}: "mode": "test-confirm" resets the device into the image; it cannot be combined with "start": false`);
  const bootTimeoutMs = optionalNumber(config, 'bootTimeoutMs', (n) => n >= 100 && n <= 3_600_000, 'between 100 and 3600000 milliseconds');
  const revertTimeoutMs = optionalNumber(config, 'revertTimeoutMs', (n) => n >= 100 && n <= 3_600_000, 'between 100 and 3600000 milliseconds');
  if (config.health !== undefined && !MCUBOOT_HEALTH_PROBES.includes(config.health as McubootHealthProbe)) {
    throw new SerialConfigError(`${where}.health must be one of ${MCUBOOT_HEALTH_PROBES.join(', ')} (got ${JSON.stringify(config.health)})`);
  }
  if (bootTimeoutMs !== undefined) parsed.bootTimeoutMs = bootTimeoutMs;
  if (revertTimeoutMs !== undefined) parsed.revertTimeoutMs = revertTimeoutMs;
  if (config.health !== undefined) parsed.health = config.health as McubootHealthProbe;
  return parsed;
}

/** ESP-IDF's default offset of the first app partition. */
export const ESP_APP_OFFSET = 0x10000;

/** Validates a raw configuration object (from JSON) into a SerialInstallerConfig. */
export function parseSerialConfig(raw: unknown): SerialInstallerConfig {
  if (typeof raw !== 'object' || raw === null) throw new SerialConfigError('serial installer: configuration must be an object');
  const config = raw as Record<string, unknown>;
  if (config.type !== 'serial') throw new SerialConfigError(`serial installer: "type" must be "serial" (got ${JSON.stringify(config.type)})`);
  if (!SERIAL_PROTOCOLS.includes(config.protocol as SerialProtocol)) {
    throw new SerialConfigError(`serial installer: "protocol" must be one of ${SERIAL_PROTOCOLS.join(', ')} (got ${JSON.stringify(config.protocol)})`);
  }
  if (typeof config.port !== 'string' || config.port === '') throw new SerialConfigError('serial installer: "port" must be a device path such as /dev/ttyUSB0');
  if (config.start !== undefined && typeof config.start !== 'boolean') throw new SerialConfigError('serial installer: "start" must be true or false');
  if (config.parity !== undefined && config.parity !== 'even' && config.parity !== 'none') throw new SerialConfigError('serial installer: "parity" must be "even" or "none"');
  if (config.restore !== undefined && typeof config.restore !== 'boolean') throw new SerialConfigError('serial installer: "restore" must be true or false');
  if (config.chip !== undefined && !ESP_CHIPS.includes(config.chip as EspChipName)) throw new SerialConfigError(`serial installer: "chip" must be one of ${ESP_CHIPS.join(', ')} (got ${JSON.stringify(config.chip)})`);
  if (config.compress !== undefined && typeof config.compress !== 'boolean') throw new SerialConfigError('serial installer: "compress" must be true or false');
  if (config.reset !== undefined && config.reset !== 'classic' && config.reset !== 'none') throw new SerialConfigError('serial installer: "reset" must be "classic" or "none"');
  if (config.verify !== undefined && config.verify !== 'md5' && config.verify !== 'checksums') throw new SerialConfigError('serial installer: "verify" must be "md5" or "checksums"');
  const parsed: SerialInstallerConfig = { type: 'serial', protocol: config.protocol as SerialProtocol, port: config.port };
  const baud = optionalNumber(config, 'baud', (n) => n >= 50 && n <= 4_000_000, 'a baud rate between 50 and 4000000');
  const address = optionalNumber(config, 'address', (n) => n >= 0 && n <= 0xffffffff, 'a flash address between 0 and 0xffffffff');
  const timeoutMs = optionalNumber(config, 'timeoutMs', (n) => n > 0, 'a positive number of milliseconds');
  const tries = optionalNumber(config, 'tries', (n) => n >= 1 && n <= 100, 'between 1 and 100');
  const eraseTimeoutMs = optionalNumber(config, 'eraseTimeoutMs', (n) => n > 0 && n <= 3_600_000, 'a positive number of milliseconds, at most an hour');
  const slotSize = optionalNumber(config, 'slotSize', (n) => n > 0, 'a positive number of bytes');
  const trailerSize = optionalNumber(config, 'trailerSize', (n) => n >= 0, 'a number of bytes');
  if (slotSize !== undefined && trailerSize !== undefined && trailerSize >= slotSize) {
    throw new SerialConfigError(`serial installer: "trailerSize" ${trailerSize} leaves no room in "slotSize" ${slotSize}`);
  }
  const flashBaud = optionalNumber(config, 'flashBaud', (n) => n >= 50 && n <= 4_000_000, 'a baud rate between 50 and 4000000');
  const flashSize = optionalNumber(config, 'flashSize', (n) => n > 0 && n <= 0x40000000, 'a positive number of bytes');
  if (config.layout !== undefined) parsed.layout = parseLayout(config.layout);
  if (config.mcuboot !== undefined) parsed.mcuboot = parseMcubootMode(config.mcuboot, config.protocol, config.start);
  if (baud !== undefined) parsed.baud = baud;
  if (flashBaud !== undefined) parsed.flashBaud = flashBaud;
  if (flashSize !== undefined) parsed.flashSize = flashSize;
  if (config.chip !== undefined) parsed.chip = config.chip as EspChipName;
  if (config.compress !== undefined) parsed.compress = config.compress as boolean;
  if (config.reset !== undefined) parsed.reset = config.reset as EspReset;
  if (config.verify !== undefined) parsed.verify = config.verify as 'md5' | 'checksums';
  if (address !== undefined) parsed.address = address;
  if (timeoutMs !== undefined) parsed.timeoutMs = timeoutMs;
  if (tries !== undefined) parsed.tries = tries;
  if (config.start !== undefined) parsed.start = config.start as boolean;
  if (config.parity !== undefined) parsed.parity = config.parity as Parity;
  if (eraseTimeoutMs !== undefined) parsed.eraseTimeoutMs = eraseTimeoutMs;
  if (slotSize !== undefined) parsed.slotSize = slotSize;
  if (trailerSize !== undefined) parsed.trailerSize = trailerSize;
  if (config.restore !== undefined) parsed.restore = config.restore as boolean;
  return parsed;
}

export interface FlashReport {
  protocol: SerialProtocol;
  bytes: number;
  retries: number;
  /** How the image was proven, in words, e.g. "slot 0 lists SHA-256 0bd0…". */
  verified: string;
}

/**
 * Runs one protocol's flash-and-verify over an open link. `image` is the file
 * as stored: an MCUboot image, a raw STM32 binary, AVR HEX/binary, or an ESP
 * binary (raw at an address, or a merged flash image cut by `layout`).
 */
export async function flashImage(
  link: SerialLink,
  config: SerialInstallerConfig,
  image: Uint8Array,
  options: { signal?: AbortSignal; onProgress?: (done: number, total: number) => void } = {},
): Promise<FlashReport> {
  const common = { link, timeoutMs: config.timeoutMs, tries: config.tries, signal: options.signal, onProgress: options.onProgress };
  const eraseTimeoutMs = config.eraseTimeoutMs;
  switch (config.protocol) {
    case 'mcuboot': {
      if (config.mcuboot?.mode === 'test-confirm') {
        const result = await testAndConfirmMcuboot({
          ...common, image, eraseTimeoutMs, slotSize: config.slotSize, trailerSize: config.trailerSize,
          bootTimeoutMs: config.mcuboot.bootTimeoutMs, revertTimeoutMs: config.mcuboot.revertTimeoutMs, health: config.mcuboot.health,
        });
        const slot0 = result.after.find((s) => s.slot === 0)!;
        const how = { confirmed: `after a test boot of ${result.bootMs} ms`, resumed: 'after a test boot left unconfirmed earlier', 'already-confirmed': 'already' }[result.outcome];
        return { protocol: 'mcuboot', bytes: image.length, retries: result.retries, verified: `slot 0 runs SHA-256 ${hex(slot0.hash!)}, confirmed ${how}` };
      }
      const result = await flashMcuboot({ ...common, image, reset: config.start ?? true, eraseTimeoutMs, slotSize: config.slotSize, trailerSize: config.trailerSize });
      const slot0 = result.after.find((s) => s.slot === 0);
      const how = result.verifiedBy === 'hash' ? `SHA-256 ${hex(slot0!.hash!)}` : `version ${slot0!.version} (build reports no hashes)`;
      return { protocol: 'mcuboot', bytes: image.length, retries: result.retries, verified: `MCUboot lists slot 0 with ${how}` };
    }
    case 'stm32': {
      const address = config.address ?? STM32_FLASH_BASE;
      const result = await flashStm32({ ...common, image, address, go: config.start ?? false, eraseTimeoutMs, restore: config.restore });
      return {
        protocol: 'stm32', bytes: image.length, retries: result.retries,
        verified: `read back ${image.length} bytes at 0x${address.toString(16)} (product id 0x${result.productId.toString(16)})`,
      };
    }
    case 'esp':
      return flashEspParts(link, config, espParts(config, image), options);
    case 'stk500': {
      let flat = { base: config.address ?? 0, data: image };
      if (looksLikeIntelHex(image)) {
        flat = parseIntelHex(Buffer.from(image).toString('latin1'));
        if (config.address !== undefined && config.address !== flat.base) {
          throw new SerialConfigError(`serial installer: "address" 0x${config.address.toString(16)} contradicts the HEX file, which starts at 0x${flat.base.toString(16)}`);
        }
      }
      const result = await flashStk500({ ...common, image: flat.data, address: flat.base });
      return {
        protocol: 'stk500', bytes: flat.data.length, retries: result.retries,
        verified: `read back ${flat.data.length} bytes at 0x${flat.base.toString(16)} from ${result.part}`,
      };
    }
  }
}

/** The esp protocol's flash-and-verify of regions already cut (the installer's image, or the CLI's address/file pairs). */
export async function flashEspParts(
  link: SerialLink,
  config: SerialInstallerConfig,
  parts: EspPart[],
  options: { signal?: AbortSignal; onProgress?: (done: number, total: number) => void } = {},
): Promise<FlashReport> {
  const result = await flashEsp({
    link, parts, timeoutMs: config.timeoutMs, tries: config.tries, signal: options.signal, onProgress: options.onProgress,
    chip: config.chip, compress: config.compress, flashBaud: config.flashBaud, baud: config.baud, reset: config.reset,
    flashSize: config.flashSize, verify: config.verify, start: config.start,
  });
  const where = parts.map((p) => `0x${p.address.toString(16)}`).join(', ');
  return {
    protocol: 'esp', bytes: parts.reduce((n, p) => n + p.data.length, 0), retries: result.retries,
    verified: result.verifiedBy === 'md5'
      ? `${result.chipTitle} ROM MD5 of ${parts.length} region(s) at ${where}`
      : `${result.chipTitle} ROM accepted every block's checksum at ${where} (its ROM cannot hash flash)`,
  };
}

/** Opens the port, runs `work`, and always closes the port again. */
export async function withSerialLink<T>(config: SerialInstallerConfig, work: (link: SerialLink) => Promise<T>): Promise<T> {
  const link = await openSerialPort({
    path: config.port,
    baudRate: config.baud ?? 115200,
    parity: config.protocol === 'stm32' ? (config.parity ?? 'even') : 'none',
  });
  try {
    return await work(link);
  } finally {
    await link.close();
  }
}

/** The image in the store no longer matches what the agent verified. */
export class ImageChangedError extends Error {
  override readonly name = 'ImageChangedError';
}

export function createSerialInstaller(raw: unknown): Installer {
  const config = parseSerialConfig(raw);
  // One flash at a time per port: a second one would interleave bytes.
  let busy: Promise<unknown> = Promise.resolve();
  // Images whose MCUboot test boot failed here: trying one again would only reboot the device into it again.
  const failedTests = new Map<string, McubootTestFailedError>();
  return {
    description: config.mcuboot?.mode === 'test-confirm'
      ? `serial mcuboot test-and-confirm on ${config.port}`
      : `serial ${config.protocol} bootloader on ${config.port}`,
    install(req: InstallRequest): Promise<void> {
      const run = async (): Promise<void> => {
        const image = new Uint8Array(await readFile(req.imagePath));
        const actual = createHash('sha256').update(image).digest('hex');
        if (actual !== req.sha256.toLowerCase()) {
          throw new ImageChangedError(`${req.imagePath}: SHA-256 ${actual} is not the verified ${req.sha256}; refusing to flash`);
        }
        const failed = failedTests.get(actual);
        if (failed) {
          const refused = new McubootTestFailedError('mcuboot', 'Test boot', `not tried again: this image already failed its test boot on this device (${failed.message}; device: ${failed.deviceState})`);
          refused.deviceState = 'untouched';
          throw refused;
        }
        try {
          await withSerialLink(config, (link) => flashImage(link, config, image, { signal: req.signal, onProgress: req.onProgress }));
        } catch (error) {
          if (error instanceof McubootTestFailedError) failedTests.set(actual, error);
          throw error;
        }
      };
      const result = busy.then(run, run);
      busy = result.catch(() => undefined);
      return result;
    },
  };
}
