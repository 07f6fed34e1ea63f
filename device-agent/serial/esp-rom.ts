// The ESP ROM serial loader (ESP32, ESP32-S3, ESP32-C3, ESP8266), host side:
// SLIP-framed commands (esp-slip.ts), chip differences in esp-chips.ts.
// Talks to the ROM itself, never to esptool's flasher stub, so everything it
// does the mask ROM can do. Success is only claimed once the ROM's own
// SPI_FLASH_MD5 of each written region equals the image's (the ESP8266 ROM
// cannot hash: there, only an explicit opt-in accepts per-block checksums).
// Nothing is erased before the chip, its flash size and the layout have
// been checked.
import { createHash } from 'node:crypto';
import { constants as zlibConstants, deflateSync, inflateSync } from 'node:zlib';
import { SerialOverrunError, SerialTimeoutError, type SerialLink } from './link.js';
import {
  BootloaderError, BootloaderProtocolError, BootloaderRefusedError, BootloaderTimeoutError, BootloaderVerifyError, ImageTooLargeError, withBootloaderRetries,
} from './bootloader-error.js';
import {
  decodeResponse, encodeRequest, espChecksum, ESP_OP, ESP_ROM_ERRORS, SLIP_END, slipDecode, slipEncode, SYNC_PAYLOAD, words, type EspResponse,
} from './esp-slip.js';
import { CHIP_DETECT_MAGIC_REG, chipByMagic, type EspChip, type EspChipName } from './esp-chips.js';

/** The ROM's flash write block (FLASH_DATA / FLASH_DEFL_DATA payload). */
export const ESP_ROM_BLOCK = 0x400;
export const ESP_SECTOR = 0x1000;

const hex32 = (n: number): string => `0x${n.toString(16).padStart(8, '0')}`;
const QUIET_MS = 100;
/** The longest SLIP frame fwcast expects from the ROM (an MD5 answer is 44 bytes; data never comes back). */
const MAX_FRAME = 4096;

/** The device is another chip than the configuration names; nothing was erased. */
export class WrongChipError extends BootloaderError {}

export interface EspPart { address: number; data: Uint8Array }

export type EspReset = 'classic' | 'none';

export interface EspLoaderInit {
  link: SerialLink;
  /** Answer timeout of ordinary commands; default 3000 ms (esptool's). */
  timeoutMs?: number;
  /** Attempts per operation; default 4. */
  tries?: number;
  signal?: AbortSignal;
}

export class EspRomLoader {
  readonly link: SerialLink;
  readonly timeoutMs: number;
  readonly tries: number;
  private readonly signal: AbortSignal | undefined;
  chip: EspChip | undefined;
  /** Commands repeated after noise, a lost answer or a refused block. */
  retries = 0;

  constructor(init: EspLoaderInit) {
    this.link = init.link;
    this.timeoutMs = init.timeoutMs ?? 3000;
    this.tries = init.tries ?? 4;
    this.signal = init.signal;
  }

  /** Sends one request and returns the first well-formed response to it; garbled frames are skipped. */
  private async exchange(op: number, data: Uint8Array, operation: string, checksum: number, timeoutMs: number): Promise<EspResponse> {
    this.signal?.throwIfAborted();
    await this.link.flushInput();
    await this.link.write(slipEncode(encodeRequest(op, data, checksum)));
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) throw new BootloaderTimeoutError('esp', operation, `no answer within ${timeoutMs} ms`);
      let frame: Uint8Array;
      try {
        frame = await this.link.readUntil(SLIP_END, { timeoutMs: left, maxBytes: MAX_FRAME, signal: this.signal });
      } catch (error) {
        if (error instanceof SerialOverrunError) continue;
        if (error instanceof SerialTimeoutError) throw new BootloaderTimeoutError('esp', operation, `no answer within ${timeoutMs} ms`);
        throw error;
      }
      const packet = slipDecode(frame);
      const response = packet && decodeResponse(packet);
      if (!response) continue;
      if (response.op === op) return response;
      // The ROM answers a message it could not take (garbled, or a command it
      // lacks) with "invalid message", not always under our op.
      const statusAt = response.data.length - (this.chip?.statusLength ?? (response.data.length >= 4 ? 4 : 2));
      if (statusAt >= 0 && response.data[statusAt] !== 0 && response.data[statusAt + 1] === 0x05) {
        throw new BootloaderRefusedError('esp', operation, 'invalid message (0x05)', 0x05);
      }
    }
  }

  /** A command and its status check; returns the response's value word and `responseLength` data bytes. */
  async command(op: number, data: Uint8Array, operation: string, options: { checksum?: number; timeoutMs?: number; responseLength?: number } = {}): Promise<{ value: number; body: Uint8Array }> {
    const responseLength = options.responseLength ?? 0;
    const response = await this.exchange(op, data, operation, options.checksum ?? 0, options.timeoutMs ?? this.timeoutMs);
    if (response.data.length < responseLength + 2) {
      throw new BootloaderProtocolError('esp', operation, `answer of ${response.data.length} data byte(s), expected ${responseLength} and a status`);
    }
    const failed = response.data[responseLength]!;
    const code = response.data[responseLength + 1]!;
    if (failed !== 0) throw new BootloaderRefusedError('esp', operation, `status 0x${code.toString(16).padStart(2, '0')} (${ESP_ROM_ERRORS[code] ?? 'unknown error'})`, code);
    return { value: response.value, body: response.data.subarray(0, responseLength) };
  }

  /** Runs `attempt` until it succeeds or tries run out, draining the line between attempts. */
  async withRetries<T>(_operation: string, attempt: () => Promise<T>): Promise<T> {
    return withBootloaderRetries(this.tries, this.signal, attempt, () => this.drainUntilQuiet(), () => this.retries++);
  }

  /** Late answers to an earlier attempt must not be taken for the next one's. */
  async drainUntilQuiet(limitMs = 2000): Promise<void> {
    const deadline = Date.now() + limitMs;
    while (Date.now() < deadline) {
      const chunk = await this.link.readAvailable({ timeoutMs: QUIET_MS, signal: this.signal });
      if (chunk.length === 0) return;
    }
  }

  /**
   * The classic auto-reset of USB-serial boards: RTS drives EN and DTR drives
   * GPIO0, both inverted. Returns why it could not be done (a pty has no
   * modem lines), or undefined.
   */
  async classicReset(): Promise<string | undefined> {
    if (!this.link.setSignals) return 'the link has no modem lines';
    const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
    try {
      await this.link.setSignals({ dtr: false, rts: true });
      await pause(100);
      await this.link.setSignals({ dtr: true, rts: false });
      await pause(50);
      await this.link.setSignals({ dtr: false, rts: false });
      return undefined;
    } catch (error) {
      return `DTR/RTS could not be driven (${(error as Error).message})`;
    }
  }

  /** SYNC until the ROM answers; it answers several times, and the extra answers are drained. */
  async sync(attempts = 10, hint = ''): Promise<void> {
    for (let n = 1; n <= attempts; n++) {
      try {
        await this.command(ESP_OP.SYNC, SYNC_PAYLOAD, 'Sync', { timeoutMs: Math.min(this.timeoutMs, 500) });
        await this.drainUntilQuiet();
        return;
      } catch (error) {
        if (!(error instanceof BootloaderError)) throw error;
        if (n > 1) this.retries++;
      }
    }
    throw new BootloaderTimeoutError('esp', 'Sync', `no answer to ${attempts} SYNCs: is the chip in download mode (GPIO0 low at reset), and TX/RX crossed?${hint}`);
  }

  async readReg(address: number): Promise<number> {
    return this.withRetries(`Read register ${hex32(address)}`, async () => (await this.command(ESP_OP.READ_REG, words(address), `Read register ${hex32(address)}`)).value >>> 0);
  }

  async writeReg(address: number, value: number): Promise<void> {
    await this.withRetries(`Write register ${hex32(address)}`, () => this.command(ESP_OP.WRITE_REG, words(address, value, 0xffffffff, 0), `Write register ${hex32(address)}`));
  }

  /** Reads the magic word every ROM maps at 0x40001000 and picks the chip class. */
  async detect(): Promise<EspChip> {
    const magic = await this.readReg(CHIP_DETECT_MAGIC_REG);
    const chip = chipByMagic(magic);
    if (!chip) throw new BootloaderProtocolError('esp', 'Chip detection', `magic word ${hex32(magic)} at ${hex32(CHIP_DETECT_MAGIC_REG)} is no chip fwcast knows (ESP32, ESP32-S3, ESP32-C3, ESP8266)`);
    this.chip = chip;
    return chip;
  }

  private requireChip(): EspChip {
    if (!this.chip) throw new Error('EspRomLoader: detect() the chip first');
    return this.chip;
  }

  /** Connects the SPI flash: SPI_ATTACH, or on the ESP8266 ROM (which lacks it) an empty FLASH_BEGIN, as esptool does. */
  async attach(): Promise<void> {
    const chip = this.requireChip();
    if (chip.hasSpiAttach) {
      await this.withRetries('SPI attach', () => this.command(ESP_OP.SPI_ATTACH, chip.attachPayload(), 'SPI attach'));
    } else {
      await this.withRetries('SPI attach', () => this.command(ESP_OP.FLASH_BEGIN, words(0, 0, ESP_ROM_BLOCK, 0), 'SPI attach (empty FLASH_BEGIN)'));
    }
  }

  /** The flash's JEDEC id (RDID, 0x9F) through the SPI controller's user-command registers. */
  async flashId(): Promise<number> {
    const { spi } = this.requireChip();
    const reg = (offset: number): number => spi.base + offset;
    const oldUsr = await this.readReg(reg(spi.usr));
    const oldUsr2 = await this.readReg(reg(spi.usr2));
    // 24 bits to read back.
    if (spi.misoDlen !== undefined) await this.writeReg(reg(spi.misoDlen), 23);
    else await this.writeReg(reg(spi.usr1), 23 << 8);
    await this.writeReg(reg(spi.usr), (1 << 31 | 1 << 28) >>> 0); // USR_COMMAND | USR_MISO
    await this.writeReg(reg(spi.usr2), ((7 << 28) | 0x9f) >>> 0); // 8-bit command RDID
    await this.writeReg(reg(spi.w0), 0);
    await this.writeReg(spi.base, 1 << 18); // CMD_USR: go
    let done = false;
    for (let n = 0; n < 10 && !done; n++) done = ((await this.readReg(spi.base)) & (1 << 18)) === 0;
    if (!done) throw new BootloaderTimeoutError('esp', 'Flash id', 'the SPI controller never finished the RDID command');
    const id = (await this.readReg(reg(spi.w0))) & 0xffffff;
    await this.writeReg(reg(spi.usr), oldUsr);
    await this.writeReg(reg(spi.usr2), oldUsr2);
    return id;
  }

  async setParams(flashSize: number): Promise<void> {
    if (!this.requireChip().hasSpiAttach) return;
    await this.withRetries('SPI set params', () => this.command(ESP_OP.SPI_SET_PARAMS, words(0, flashSize, 0x10000, ESP_SECTOR, 0x100, 0xffff), 'SPI set params'));
  }

  /** Moves both ends to `baud`; returns false when the ROM cannot (ESP8266) or the link cannot. */
  async changeBaud(baud: number, currentBaud: number): Promise<boolean> {
    const chip = this.requireChip();
    if (!chip.hasChangeBaud || !this.link.setBaudRate) return false;
    await this.withRetries('Change baud rate', () => this.command(ESP_OP.CHANGE_BAUDRATE, words(baud, 0), 'Change baud rate'));
    await new Promise((resolve) => setTimeout(resolve, 50));
    await this.link.setBaudRate(baud);
    await this.link.flushInput();
    try {
      await this.readReg(CHIP_DETECT_MAGIC_REG);
    } catch (error) {
      await this.link.setBaudRate(currentBaud);
      throw new BootloaderTimeoutError('esp', 'Change baud rate', `the ROM went silent at ${baud} baud (${(error as Error).message})`);
    }
    return true;
  }

  /** The ROM's MD5 of flash [address, address + size), as 32 hex digits. */
  async md5(address: number, size: number): Promise<string> {
    const operation = `MD5 of ${size} bytes at ${hex32(address)}`;
    const timeoutMs = Math.max(this.timeoutMs, Math.ceil(size / 1024) * 8);
    return this.withRetries(operation, async () => {
      const { body } = await this.command(ESP_OP.SPI_FLASH_MD5, words(address, size, 0, 0), operation, { responseLength: 32, timeoutMs });
      const digest = Buffer.from(body).toString('latin1');
      if (!/^[0-9a-f]{32}$/.test(digest)) throw new BootloaderProtocolError('esp', operation, `answer is not 32 hex digits: ${JSON.stringify(digest)}`);
      return digest;
    });
  }

  async flashEnd(reboot: boolean): Promise<void> {
    await this.withRetries('Flash end', () => this.command(ESP_OP.FLASH_END, words(reboot ? 0 : 1), 'Flash end'));
  }
}

/**
 * A block the ROM may or may not have written (its answer was lost, or it
 * refused the block for another reason than garbling): the write starts
 * over with a new FLASH_BEGIN from `written`, a sector boundary before which
 * every byte was acknowledged.
 */
class PartRestart extends Error {
  constructor(readonly written: number, cause: BootloaderError) {
    super(cause.message, { cause });
  }
}

/** Uncompressed bytes that `compressed` (a prefix of a zlib stream) inflates to. */
function inflatedLength(compressed: Uint8Array): number {
  try {
    return inflateSync(compressed, { finishFlush: zlibConstants.Z_SYNC_FLUSH }).length;
  } catch {
    return 0;
  }
}

/**
 * Writes one part: FLASH_BEGIN (the ROM erases here) then FLASH_DATA blocks,
 * or the FLASH_DEFL_* pair with zlib-deflated data. A block the ROM refused
 * as garbled is sent again; a block whose fate is unknown throws PartRestart.
 */
async function writePart(loader: EspRomLoader, part: EspPart, compress: boolean, onBlock: (bytes: number) => void): Promise<void> {
  const chip = loader.chip!;
  const { address, data } = part;
  const payload = compress ? deflateSync(data, { level: 9 }) : data;
  // What the acknowledged blocks put into flash, rounded down to a sector; for
  // a deflated stream one sector less, as the ROM may still hold inflated bytes.
  const safelyWritten = (ackedBlocks: number): number => {
    const bytes = compress ? inflatedLength(payload.subarray(0, ackedBlocks * ESP_ROM_BLOCK)) : ackedBlocks * ESP_ROM_BLOCK;
    return Math.max(0, Math.floor(Math.min(bytes, data.length) / ESP_SECTOR) * ESP_SECTOR - (compress ? ESP_SECTOR : 0));
  };
  const blocks = Math.ceil(payload.length / ESP_ROM_BLOCK);
  const eraseSize = compress ? Math.ceil(data.length / ESP_ROM_BLOCK) * ESP_ROM_BLOCK : chip.eraseSize(address, data.length);
  const begin = [eraseSize, blocks, ESP_ROM_BLOCK, address, ...(chip.beginTakesEncryptFlag ? [0] : [])];
  const what = `${compress ? 'compressed ' : ''}write of ${data.length} bytes at ${hex32(address)}`;
  const eraseTimeoutMs = Math.max(loader.timeoutMs, Math.ceil(data.length / 1024) * 40);
  await loader.command(compress ? ESP_OP.FLASH_DEFL_BEGIN : ESP_OP.FLASH_BEGIN, words(...begin), `Begin ${what}`, { timeoutMs: eraseTimeoutMs });
  // The ROM writes (and inflates) a block before it answers.
  const blockTimeoutMs = Math.max(loader.timeoutMs, 40 * 4);
  for (let seq = 0; seq < blocks; seq++) {
    let block = payload.subarray(seq * ESP_ROM_BLOCK, (seq + 1) * ESP_ROM_BLOCK);
    if (!compress && block.length < ESP_ROM_BLOCK) {
      const padded = new Uint8Array(ESP_ROM_BLOCK).fill(0xff);
      padded.set(block);
      block = padded;
    }
    const message = new Uint8Array(16 + block.length);
    message.set(words(block.length, seq, 0, 0));
    message.set(block, 16);
    const operation = `Block ${seq} of ${what}`;
    for (let attempt = 1; ; attempt++) {
      try {
        await loader.command(compress ? ESP_OP.FLASH_DEFL_DATA : ESP_OP.FLASH_DATA, message, operation, { checksum: espChecksum(block), timeoutMs: blockTimeoutMs });
        break;
      } catch (error) {
        const garbled = error instanceof BootloaderRefusedError && (error.returnCode === 0x05 || error.returnCode === 0x07);
        if (!(error instanceof BootloaderError)) throw error;
        loader.retries++;
        await loader.drainUntilQuiet();
        if (!garbled || attempt >= loader.tries) throw new PartRestart(safelyWritten(seq), error);
      }
    }
    onBlock(compress ? Math.min(data.length, Math.round(((seq + 1) / blocks) * data.length)) : Math.min(data.length, (seq + 1) * ESP_ROM_BLOCK));
  }
}

export interface EspFlashOptions {
  link: SerialLink;
  /** Regions to write, like esptool write_flash's address/file pairs; each on a 4 KiB sector boundary. */
  parts: EspPart[];
  /** The chip the configuration expects; another one is refused before anything is erased. */
  chip?: EspChipName;
  /** Send zlib-deflated blocks (FLASH_DEFL_*) where the ROM can inflate them; default true. */
  compress?: boolean;
  /** Switch to this baud rate after connecting (CHANGE_BAUDRATE); default: stay. */
  flashBaud?: number;
  /** The baud rate the link was opened at, to return to if the switch fails; default 115200. */
  baud?: number;
  /** DTR/RTS reset into download mode first; default 'classic'. */
  reset?: EspReset;
  /** Flash size in bytes when the flash id does not tell it. */
  flashSize?: number;
  /** 'md5' (default): the ROM hashes each region. 'checksums': accept per-block checksums alone (the ESP8266 ROM cannot hash). */
  verify?: 'md5' | 'checksums';
  /** Leave the loader and reboot into the new firmware after the verified write (FLASH_END); default true. */
  start?: boolean;
  timeoutMs?: number;
  tries?: number;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

export interface EspFlashResult {
  chip: EspChipName;
  chipTitle: string;
  flashSize: number;
  flashId: number | undefined;
  compressed: boolean;
  verifiedBy: 'md5' | 'checksums';
  retries: number;
  /** 1, plus one per restart (a new FLASH_BEGIN) after a lost answer or an MD5 mismatch. */
  passes: number;
  baud: number | undefined;
  resetSkipped: string | undefined;
}

/** JEDEC RDID's third byte is log2 of the size for every common flash part. */
export function flashSizeFromId(id: number): number | undefined {
  const code = (id >> 16) & 0xff;
  return code >= 0x12 && code <= 0x1c ? 2 ** code : undefined;
}

/** Pads to whole 32-bit words with 0xFF (erased flash), as esptool does; checks alignment and overlaps. */
export function checkLayout(parts: EspPart[]): EspPart[] {
  if (parts.length === 0) throw new RangeError('no parts to write');
  const padded = parts.map((p) => {
    if (p.data.length === 0) throw new RangeError(`the part at ${hex32(p.address)} is empty`);
    if (p.address % ESP_SECTOR !== 0) throw new RangeError(`address ${hex32(p.address)} is not on a 4 KiB sector boundary (the ROM erases whole sectors)`);
    if (p.data.length % 4 === 0) return p;
    const data = new Uint8Array(Math.ceil(p.data.length / 4) * 4).fill(0xff);
    data.set(p.data);
    return { address: p.address, data };
  });
  const sorted = [...padded].sort((a, b) => a.address - b.address);
  for (let i = 1; i < sorted.length; i++) {
    const before = sorted[i - 1]!;
    const end = Math.ceil((before.address + before.data.length) / ESP_SECTOR) * ESP_SECTOR;
    if (sorted[i]!.address < end) throw new RangeError(`the part at ${hex32(sorted[i]!.address)} overlaps the sectors of the part at ${hex32(before.address)}`);
  }
  return padded;
}

const md5hex = (data: Uint8Array): string => createHash('md5').update(data).digest('hex');

/**
 * Reset, SYNC, chip check, SPI attach, flash size check, optional baud
 * change, then each part written and hashed by the ROM; a part whose hash
 * differs is written once more before giving up. The thrown error's
 * `deviceState` says whether anything was erased.
 */
export async function flashEsp(options: EspFlashOptions): Promise<EspFlashResult> {
  const parts = checkLayout(options.parts);
  const loader = new EspRomLoader({ link: options.link, timeoutMs: options.timeoutMs, tries: options.tries, signal: options.signal });
  let erased = false;
  try {
    const resetSkipped = (options.reset ?? 'classic') === 'classic' ? await loader.classicReset() : undefined;
    await loader.sync(10, resetSkipped ? ` (${resetSkipped}: the board must already be in download mode)` : '');
    const chip = await loader.detect();
    if (options.chip && options.chip !== chip.name) {
      throw new WrongChipError('esp', 'Chip detection', `the device is an ${chip.title}, not the configured ${options.chip}; nothing was erased`);
    }
    const verifiedBy = options.verify ?? 'md5';
    if (verifiedBy === 'md5' && !chip.hasMd5) {
      throw new BootloaderRefusedError('esp', 'Verify', `the ${chip.title} ROM cannot hash flash (no SPI_FLASH_MD5), so a write could not be verified; `
        + 'set "verify": "checksums" to accept the per-block checksums alone; nothing was erased');
    }
    await loader.attach();
    const flashId = await loader.flashId().catch((error: unknown) => {
      if (error instanceof BootloaderRefusedError) return undefined;
      throw error;
    });
    const flashSize = (flashId === undefined ? undefined : flashSizeFromId(flashId)) ?? options.flashSize;
    if (flashSize === undefined) {
      throw new BootloaderProtocolError('esp', 'Flash size', `the flash id ${flashId === undefined ? '(unreadable)' : `0x${flashId.toString(16)}`} does not tell the size; set flashSize`);
    }
    for (const p of parts) {
      if (p.address + p.data.length > flashSize) {
        throw new ImageTooLargeError('esp', 'Size check', `${p.data.length} bytes at ${hex32(p.address)} would end at ${hex32(p.address + p.data.length)}, `
          + `past the end of the ${chip.title}'s ${flashSize} bytes of flash; nothing was erased`);
      }
    }
    await loader.setParams(flashSize);
    let baud: number | undefined;
    if (options.flashBaud !== undefined && await loader.changeBaud(options.flashBaud, options.baud ?? 115200)) baud = options.flashBaud;
    const compressed = (options.compress ?? true) && chip.hasDeflate;
    const total = parts.reduce((n, p) => n + p.data.length, 0);
    let passes = 1;
    let before = 0;
    for (const part of parts) {
      const onBlock = (bytes: number): void => options.onProgress?.(before + bytes, total);
      // After a lost answer the write restarts from the last sector known
      // written: bounded by `tries` restarts that made no progress (and by
      // the part's sectors). After an MD5 mismatch, one full rewrite.
      let mismatches = 0;
      let stalls = 0;
      let from = 0;
      for (;;) {
        erased = true;
        try {
          const rest = { address: part.address + from, data: part.data.subarray(from) };
          const offset = from;
          await writePart(loader, rest, compressed, (bytes) => onBlock(offset + bytes));
        } catch (error) {
          if (!(error instanceof PartRestart)) throw error;
          if (error.written === 0 && ++stalls >= loader.tries) throw error.cause;
          from += error.written;
          passes++;
          await loader.sync(3);
          continue;
        }
        if (verifiedBy === 'checksums') break;
        const want = md5hex(part.data);
        const got = await loader.md5(part.address, part.data.length);
        if (got === want) break;
        if (++mismatches >= 2) {
          throw new BootloaderVerifyError('esp', 'Verify', `the ROM's MD5 of ${part.data.length} bytes at ${hex32(part.address)} is ${got}, the image's is ${want}, after two full writes`);
        }
        from = 0;
        passes++;
      }
      before += part.data.length;
    }
    if (options.start ?? true) await loader.flashEnd(true);
    return {
      chip: chip.name, chipTitle: chip.title, flashSize, flashId, compressed, verifiedBy, retries: loader.retries, passes, baud, resetSkipped,
    };
  } catch (error) {
    if (error instanceof BootloaderError && !error.deviceState) error.deviceState = erased ? 'erased' : 'untouched';
    throw error;
  }
}
