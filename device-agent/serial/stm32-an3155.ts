// STM32 ROM bootloader over USART, ST application note AN3155.
// 8E1 on real UARTs (a pty cannot carry parity). Every command is the opcode
// and its complement, answered ACK 0x79 or NACK 0x1f; addresses are 4 bytes
// big-endian plus their XOR; data blocks carry N-1, the bytes and an XOR.
// Success is only ever claimed after reading the whole image back.
// Nothing is erased before the chip has shown that the image fits and that
// its flash can be read; what is erased is read first, and written back if
// the install then fails.
import type { SerialLink } from './link.js';
import { SerialTimeoutError } from './link.js';
import {
  BootloaderError, BootloaderProtocolError, BootloaderRefusedError, BootloaderTimeoutError, BootloaderVerifyError, ImageTooLargeError, withBootloaderRetries,
} from './bootloader-error.js';

export const AN3155 = {
  SYNC: 0x7f,
  ACK: 0x79,
  NACK: 0x1f,
  GET: 0x00,
  GET_VERSION: 0x01,
  GET_ID: 0x02,
  READ_MEMORY: 0x11,
  GO: 0x21,
  WRITE_MEMORY: 0x31,
  ERASE: 0x43,
  EXTENDED_ERASE: 0x44,
  /** Largest Read/Write Memory block. */
  MAX_BLOCK: 256,
} as const;

export const STM32_FLASH_BASE = 0x08000000;

/** Flash page sizes by product id, for page-wise erase (mass erase otherwise). */
export const STM32_PAGE_SIZES: Record<number, number> = {
  0x410: 1024, // F1 medium density
  0x412: 1024, // F1 low density
  0x414: 2048, // F1 high density
  0x418: 2048, // F1 connectivity line
  0x420: 1024, // F1 value line
  0x430: 2048, // F1 XL density
  0x440: 1024, // F05x
  0x444: 1024, // F03x
  0x448: 2048, // F07x
};

const hex32 = (n: number): string => `0x${n.toString(16).padStart(8, '0')}`;

/** Silence that counts as a quiet line: the ROM bootloader only ever speaks when spoken to. */
const QUIET_MS = 150;

/** Up to 32 bytes of what the line said, quoted, with everything but printable ASCII as \xNN. */
function quoteLine(bytes: Uint8Array): string {
  let out = '';
  for (const b of bytes.subarray(0, 32)) out += b >= 0x20 && b < 0x7f && b !== 0x22 && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`;
  return `"${out}"${bytes.length > 32 ? '…' : ''}`;
}

function xor(bytes: Iterable<number>, seed = 0): number {
  let x = seed;
  for (const b of bytes) x ^= b;
  return x & 0xff;
}

function addressBytes(address: number): Uint8Array {
  const out = new Uint8Array(5);
  new DataView(out.buffer).setUint32(0, address);
  out[4] = xor(out.subarray(0, 4));
  return out;
}

export interface Stm32BootloaderInit {
  link: SerialLink;
  /** Answer timeout; default 1000 ms. */
  timeoutMs?: number;
  /** Timeout for erase, which takes seconds on big parts; default 30000 ms. */
  eraseTimeoutMs?: number;
  /** Attempts per operation before giving up; default 4. */
  tries?: number;
  /** Longest a line may keep talking before it is judged not to be a bootloader; default 2000 ms. */
  quietLimitMs?: number;
  signal?: AbortSignal;
}

export interface Stm32Info {
  bootloaderVersion: number;
  commands: number[];
  productId: number;
}

export class Stm32Bootloader {
  private readonly link: SerialLink;
  private readonly timeoutMs: number;
  private readonly eraseTimeoutMs: number;
  private readonly tries: number;
  private readonly quietLimitMs: number;
  private readonly signal: AbortSignal | undefined;
  private commands: number[] = [];
  /** Operations repeated after a NACK, timeout or garbled answer. */
  retries = 0;

  constructor(init: Stm32BootloaderInit) {
    this.link = init.link;
    this.timeoutMs = init.timeoutMs ?? 1000;
    this.eraseTimeoutMs = init.eraseTimeoutMs ?? 30_000;
    this.tries = init.tries ?? 4;
    this.quietLimitMs = init.quietLimitMs ?? 2000;
    this.signal = init.signal;
  }

  private async readByte(operation: string, timeoutMs = this.timeoutMs): Promise<number> {
    try {
      const [byte] = await this.link.read(1, { timeoutMs, signal: this.signal });
      return byte!;
    } catch (error) {
      if (error instanceof SerialTimeoutError) throw new BootloaderTimeoutError('stm32', operation, `no answer within ${timeoutMs} ms`);
      throw error;
    }
  }

  private async expectAck(operation: string, timeoutMs?: number): Promise<void> {
    const byte = await this.readByte(operation, timeoutMs);
    if (byte === AN3155.ACK) return;
    if (byte === AN3155.NACK) throw new BootloaderRefusedError('stm32', operation, 'NACK');
    throw new BootloaderProtocolError('stm32', operation, `expected ACK, got 0x${byte.toString(16).padStart(2, '0')}`);
  }

  /** Opcode + complement, then ACK. */
  async command(opcode: number, operation: string): Promise<void> {
    await this.link.flushInput();
    await this.link.write(Uint8Array.of(opcode, opcode ^ 0xff));
    await this.expectAck(operation);
  }

  /**
   * Runs `attempt` until it succeeds or tries run out, resyncing before each
   * retry: after a timeout or a garbled byte the device may be half-way
   * through a command, and even a NACK can be the answer to a pair made of a
   * stale byte and our opcode, which leaves our complement pending as the
   * next "command".
   */
  private async withRetries<T>(operation: string, attempt: () => Promise<T>): Promise<T> {
    return withBootloaderRetries(this.tries, this.signal, attempt, () => this.resync(operation), () => this.retries++);
  }

  /**
   * Brings a synced device back to "waiting for a command" from any state.
   * 0xff is safe filler: it completes any pending address, count or data
   * phase with a checksum that fails (or, for a 256-byte data phase, writes
   * 0xff = erased flash), and pairs of 0xff are NACKed as commands. A final
   * probe settles whether a half command byte is still pending.
   */
  async resync(operation: string): Promise<void> {
    // A few rounds, so that a line that drops out briefly can come back.
    for (let round = 0; round < 3; round++) {
      await this.link.write(new Uint8Array(AN3155.MAX_BLOCK + 4).fill(0xff));
      // A late NACK from the burst must not be taken for the probe's answer.
      await this.drainUntilQuiet(operation);
      for (let probe = 0; probe < 2; probe++) {
        await this.link.write(Uint8Array.of(0xff));
        const answer = await this.link.readAvailable({ timeoutMs: 200, signal: this.signal });
        if (answer.length > 0) {
          await this.link.readAvailable({ timeoutMs: 20, signal: this.signal });
          return;
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    throw new BootloaderTimeoutError('stm32', operation, 'device silent while resynchronising (line dropped or bootloader left)');
  }

  /**
   * Reads and discards until the line has been silent for QUIET_MS. A line
   * that is still talking after quietLimitMs carries an application, not the
   * bootloader, and waiting for it to stop would never end.
   */
  private async drainUntilQuiet(operation: string): Promise<void> {
    const deadline = Date.now() + this.quietLimitMs;
    let heard = 0;
    let first: Uint8Array | undefined;
    for (;;) {
      const chunk = await this.link.readAvailable({ timeoutMs: QUIET_MS, signal: this.signal });
      if (chunk.length === 0) return;
      heard += chunk.length;
      first ??= chunk;
      if (Date.now() >= deadline) {
        throw new BootloaderProtocolError('stm32', operation, `the line never went quiet (${heard} bytes in ${this.quietLimitMs} ms, starting ${quoteLine(first)}): `
          + 'an application is talking, not the ROM bootloader; set BOOT0 high and reset the device');
      }
    }
  }

  /** Autobaud sync. A NACK means the device was already synced (0x7f taken as a command). */
  async sync(): Promise<void> {
    // An application's chatter would be read as answers to 0x7F.
    await this.drainUntilQuiet('Sync');
    let unprompted = 0;
    let sample: Uint8Array | undefined;
    for (let n = 1; n <= this.tries * 2; n++) {
      this.signal?.throwIfAborted();
      await this.link.flushInput();
      await this.link.write(Uint8Array.of(AN3155.SYNC));
      let byte: number;
      try {
        byte = await this.readByte('Sync', this.timeoutMs);
      } catch (error) {
        if (error instanceof BootloaderTimeoutError) { this.retries++; continue; }
        throw error;
      }
      // The bootloader answers with one byte and then says nothing; more is
      // an application that paused long enough to pass for quiet.
      const more = await this.link.readAvailable({ timeoutMs: QUIET_MS, signal: this.signal });
      if (more.length > 0) {
        unprompted += 1 + more.length;
        sample ??= Uint8Array.of(byte, ...more);
        this.retries++;
        await this.drainUntilQuiet('Sync');
        continue;
      }
      if (byte === AN3155.ACK || byte === AN3155.NACK) return;
      // Something answered, garbled: the device is synced, the line is noisy.
      this.retries++;
      await this.resync('Sync');
      return;
    }
    if (sample) {
      throw new BootloaderProtocolError('stm32', 'Sync', `the line never went quiet after 0x7F (${unprompted} bytes besides any answer, starting ${quoteLine(sample)}): `
        + 'an application is talking, not the ROM bootloader; set BOOT0 high and reset the device');
    }
    throw new BootloaderTimeoutError('stm32', 'Sync', 'no ACK to 0x7F; is BOOT0 high and the device reset, and is TX/RX crossed?');
  }

  async get(): Promise<{ version: number; commands: number[] }> {
    return this.withRetries('Get', async () => {
      await this.command(AN3155.GET, 'Get');
      const count = await this.readByte('Get');
      const body = await this.link.read(count + 1, { timeoutMs: this.timeoutMs, signal: this.signal });
      await this.expectAck('Get');
      this.commands = [...body.subarray(1)];
      return { version: body[0]!, commands: this.commands };
    });
  }

  async getId(): Promise<number> {
    return this.withRetries('Get ID', async () => {
      await this.command(AN3155.GET_ID, 'Get ID');
      const count = await this.readByte('Get ID');
      const body = await this.link.read(count + 1, { timeoutMs: this.timeoutMs, signal: this.signal });
      await this.expectAck('Get ID');
      if (body.length < 2) throw new BootloaderProtocolError('stm32', 'Get ID', 'product id shorter than 2 bytes');
      return (body[0]! << 8) | body[1]!;
    });
  }

  async readMemory(address: number, length: number): Promise<Uint8Array> {
    if (length < 1 || length > AN3155.MAX_BLOCK) throw new RangeError(`Read Memory length ${length} outside 1..256`);
    const operation = `Read Memory at ${hex32(address)}`;
    return this.withRetries(operation, async () => {
      await this.command(AN3155.READ_MEMORY, operation);
      await this.link.write(addressBytes(address));
      await this.expectAck(operation);
      await this.link.write(Uint8Array.of(length - 1, (length - 1) ^ 0xff));
      await this.expectAck(operation);
      try {
        return await this.link.read(length, { timeoutMs: this.timeoutMs, signal: this.signal });
      } catch (error) {
        if (error instanceof SerialTimeoutError) throw new BootloaderTimeoutError('stm32', operation, `${error.received.length} of ${length} bytes arrived`);
        throw error;
      }
    });
  }

  /**
   * Whether the bootloader takes `address` for Read Memory: it NACKs any
   * address outside the chip's memory map, which is how the flash size of a
   * part we have no table entry for is learnt. A NACKed opcode (read-out
   * protection) is an error, not an answer.
   */
  async readable(address: number): Promise<boolean> {
    const operation = `Read Memory at ${hex32(address)}`;
    let refusals = 0;
    return this.withRetries(operation, async () => {
      await this.command(AN3155.READ_MEMORY, operation);
      await this.link.write(addressBytes(address));
      const answer = await this.readByte(operation);
      if (answer === AN3155.NACK) {
        // Twice, so that an address broken by noise is not taken for the end of flash.
        if (++refusals >= Math.min(2, this.tries)) return false;
        throw new BootloaderRefusedError('stm32', operation, 'NACK to the address');
      }
      if (answer !== AN3155.ACK) throw new BootloaderProtocolError('stm32', operation, `expected ACK, got 0x${answer.toString(16).padStart(2, '0')}`);
      await this.link.write(Uint8Array.of(0x00, 0xff));
      await this.expectAck(operation);
      await this.readByte(operation);
      return true;
    });
  }

  /** One block (≤ 256 bytes, padded with 0xff to a multiple of 4). */
  async writeMemory(address: number, data: Uint8Array): Promise<void> {
    if (data.length < 1 || data.length > AN3155.MAX_BLOCK) throw new RangeError(`Write Memory length ${data.length} outside 1..256`);
    const padded = new Uint8Array(Math.ceil(data.length / 4) * 4).fill(0xff);
    padded.set(data);
    const operation = `Write Memory at ${hex32(address)}`;
    const frame = new Uint8Array(padded.length + 2);
    frame[0] = padded.length - 1;
    frame.set(padded, 1);
    frame[frame.length - 1] = xor(padded, padded.length - 1);
    let attempt = 0;
    await this.withRetries(operation, async () => {
      attempt++;
      try {
        await this.command(AN3155.WRITE_MEMORY, operation);
        await this.link.write(addressBytes(address));
        await this.expectAck(operation);
        await this.link.write(frame);
        await this.expectAck(operation);
      } catch (error) {
        // A lost ACK leaves the block written, and flash cannot be written
        // twice without an erase: if it reads back right, it is done.
        if (attempt > 1 && error instanceof BootloaderError && await this.blockMatches(address, padded)) return;
        throw error;
      }
    });
  }

  private async blockMatches(address: number, expected: Uint8Array): Promise<boolean> {
    try {
      await this.resync('Write Memory check');
      const actual = await this.readMemory(address, expected.length);
      return Buffer.from(actual).equals(expected);
    } catch {
      return false;
    }
  }

  /**
   * Erases flash pages, with whichever erase command Get reported. `pages`
   * 'all' is a mass erase.
   */
  async erase(pages: number[] | 'all'): Promise<void> {
    if (this.commands.length === 0) await this.get();
    const extended = this.commands.includes(AN3155.EXTENDED_ERASE);
    if (!extended && !this.commands.includes(AN3155.ERASE)) throw new BootloaderError('stm32', 'Erase', 'the bootloader offers neither Erase nor Extended Erase');
    const operation = pages === 'all' ? 'Mass erase' : `Erase of ${pages.length} page(s) from page ${pages[0]}`;
    let payload: Uint8Array;
    if (extended) {
      if (pages === 'all') {
        payload = Uint8Array.of(0xff, 0xff, 0x00);
      } else {
        payload = new Uint8Array(2 + pages.length * 2 + 1);
        const view = new DataView(payload.buffer);
        view.setUint16(0, pages.length - 1);
        pages.forEach((p, i) => view.setUint16(2 + i * 2, p));
        payload[payload.length - 1] = xor(payload.subarray(0, payload.length - 1));
      }
    } else if (pages === 'all') {
      payload = Uint8Array.of(0xff, 0x00);
    } else {
      if (pages.length > 255 || pages.some((p) => p > 255)) throw new RangeError('Erase (0x43) addresses at most 255 pages numbered below 256');
      payload = Uint8Array.from([pages.length - 1, ...pages, xor(pages, pages.length - 1)]);
    }
    await this.withRetries(operation, async () => {
      await this.command(extended ? AN3155.EXTENDED_ERASE : AN3155.ERASE, operation);
      await this.link.write(payload);
      await this.expectAck(operation, this.eraseTimeoutMs);
    });
  }

  async go(address: number): Promise<void> {
    const operation = `Go to ${hex32(address)}`;
    await this.withRetries(operation, async () => {
      await this.command(AN3155.GO, operation);
      await this.link.write(addressBytes(address));
      await this.expectAck(operation);
    });
  }
}

export interface Stm32FlashOptions {
  link: SerialLink;
  image: Uint8Array;
  /** Default 0x08000000. Must be page aligned. */
  address?: number;
  /** Overrides the page size table (bytes). */
  pageSize?: number;
  /** Jump to `address` after the verified write; default false. */
  go?: boolean;
  timeoutMs?: number;
  /** Answer timeout of an erase; default 30000 ms. */
  eraseTimeoutMs?: number;
  tries?: number;
  /**
   * Read what is about to be erased, and write it back (and verify it) if the
   * install fails after the erase; default true. Costs one read pass.
   */
  restore?: boolean;
  signal?: AbortSignal;
  /** Called with bytes written then bytes verified: total is 2 × image length. */
  onProgress?: (done: number, total: number) => void;
}

export interface Stm32FlashResult extends Stm32Info {
  retries: number;
  /** Full erase/write/verify passes needed (1 unless a verify failed). */
  passes: number;
}

/** A flash range read before it was erased. */
interface Backup { address: number; bytes: Uint8Array }

/**
 * Checks, before any erase, that the image fits: the bootloader must take
 * both its first and its last address. Throws ImageTooLargeError naming the
 * chip's flash size (searched for by address) when it does not.
 */
async function checkFits(boot: Stm32Bootloader, address: number, length: number): Promise<void> {
  let first: boolean;
  try {
    first = await boot.readable(address);
  } catch (error) {
    if (error instanceof BootloaderRefusedError) {
      error.message += ' (read-out protection is probably on; removing it mass-erases the chip, which fwcast never does)';
    }
    throw error;
  }
  if (!first) throw new BootloaderRefusedError('stm32', 'Size check', `the bootloader refuses address ${hex32(address)}: it is not in this chip's flash`);
  const last = address + length - 1;
  if (await boot.readable(last)) return;
  // The flash size is worth a few probes for the message, when the image is in flash at all.
  const size = address >= STM32_FLASH_BASE
    ? `this chip's ${await flashSize(boot, Math.floor((address - STM32_FLASH_BASE) / 1024) + 1, Math.ceil((last + 1 - STM32_FLASH_BASE) / 1024))} bytes of flash`
    : 'the memory region it starts in';
  throw new ImageTooLargeError('stm32', 'Size check', `the image is ${length} bytes; from ${hex32(address)} it would end at ${hex32(last)}, `
    + `past the end of ${size} (its bootloader refuses that address); nothing was erased`);
}

/**
 * The flash size in bytes, from which 1 KiB-multiples the bootloader takes:
 * `readableKiB` is known to be inside, `refusedKiB` (when known) outside.
 */
async function flashSize(boot: Stm32Bootloader, readableKiB: number, refusedKiB?: number): Promise<number> {
  const inside = (kib: number): Promise<boolean> => boot.readable(STM32_FLASH_BASE + kib * 1024 - 1);
  let low = readableKiB;
  let high = refusedKiB;
  // No part has more than 64 MiB of internal flash: stop doubling there.
  while (high === undefined) {
    const next = low * 2;
    if (next > 65536) throw new BootloaderProtocolError('stm32', 'Flash size', 'the bootloader takes every address up to 64 MiB; cannot tell where flash ends');
    if (await inside(next)) low = next;
    else high = next;
  }
  while (high - low > 1) {
    const middle = Math.floor((low + high) / 2);
    if (await inside(middle)) low = middle;
    else high = middle;
  }
  return low * 1024;
}

async function readRange(boot: Stm32Bootloader, address: number, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  for (let at = 0; at < length; at += AN3155.MAX_BLOCK) {
    out.set(await boot.readMemory(address + at, Math.min(AN3155.MAX_BLOCK, length - at)), at);
  }
  return out;
}

/** Erases again and writes `backup` back, verified. Returns why that failed, or undefined. */
async function restoreBackup(boot: Stm32Bootloader, pages: number[] | 'all', backup: Backup): Promise<string | undefined> {
  try {
    await boot.resync('Restore');
    await boot.erase(pages);
    const blocks: number[] = [];
    for (let at = 0; at < backup.bytes.length; at += AN3155.MAX_BLOCK) {
      // Erased blocks stay erased: only blocks that held something are written.
      if (!backup.bytes.subarray(at, at + AN3155.MAX_BLOCK).every((b) => b === 0xff)) blocks.push(at);
    }
    for (const at of blocks) await boot.writeMemory(backup.address + at, backup.bytes.subarray(at, at + AN3155.MAX_BLOCK));
    for (const at of blocks) {
      const expected = backup.bytes.subarray(at, at + AN3155.MAX_BLOCK);
      if (!Buffer.from(await boot.readMemory(backup.address + at, expected.length)).equals(expected)) {
        return `flash at ${hex32(backup.address + at)} differs from what was read before the erase`;
      }
    }
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}

/**
 * Checks the image fits, reads what it will erase, erases, writes in
 * 256-byte blocks, reads everything back, optionally Go. On a failure after
 * the erase the old contents are written back (`restore`, default true); the
 * thrown error's `deviceState` says what the device holds.
 */
export async function flashStm32(options: Stm32FlashOptions): Promise<Stm32FlashResult> {
  const address = options.address ?? STM32_FLASH_BASE;
  const { image } = options;
  if (image.length === 0) throw new RangeError('empty image');
  const boot = new Stm32Bootloader({
    link: options.link, timeoutMs: options.timeoutMs, eraseTimeoutMs: options.eraseTimeoutMs, tries: options.tries, signal: options.signal,
  });
  let pages: number[] | 'all' = 'all';
  let backup: Backup | undefined;
  let erased = false;
  let result: Stm32FlashResult;
  try {
    await boot.sync();
    const { version, commands } = await boot.get();
    const productId = await boot.getId();
    const pageSize = options.pageSize ?? STM32_PAGE_SIZES[productId];
    let eraseFrom = STM32_FLASH_BASE;
    if (pageSize) {
      const offset = address - STM32_FLASH_BASE;
      if (offset < 0 || offset % pageSize !== 0) throw new RangeError(`address ${hex32(address)} is not on a ${pageSize}-byte page boundary of flash`);
      const first = offset / pageSize;
      pages = Array.from({ length: Math.ceil(image.length / pageSize) }, (_, i) => first + i);
      eraseFrom = address;
    }
    await checkFits(boot, address, image.length);
    if (options.restore ?? true) {
      const length = pages === 'all'
        ? await flashSize(boot, Math.ceil((address + image.length - STM32_FLASH_BASE) / 1024))
        : pages.length * pageSize!;
      backup = { address: eraseFrom, bytes: await readRange(boot, eraseFrom, length) };
    }
    const total = image.length * 2;
    // A failed verify after a clean write means flash and image disagree: erase
    // and write once more (the safe restart), then give up loudly.
    for (let pass = 1; ; pass++) {
      erased = true;
      await boot.erase(pages);
      for (let at = 0; at < image.length; at += AN3155.MAX_BLOCK) {
        await boot.writeMemory(address + at, image.subarray(at, at + AN3155.MAX_BLOCK));
        options.onProgress?.(Math.min(at + AN3155.MAX_BLOCK, image.length), total);
      }
      const bad = await verify(boot, address, image, (done) => options.onProgress?.(image.length + done, total));
      if (bad === undefined) {
        result = { bootloaderVersion: version, commands, productId, retries: boot.retries, passes: pass };
        break;
      }
      if (pass === 2) throw new BootloaderVerifyError('stm32', 'Verify', `flash at ${hex32(bad)} differs from the image after two full passes`);
    }
  } catch (error) {
    if (!(error instanceof BootloaderError) || error.deviceState) throw error;
    if (!erased) {
      error.deviceState = 'untouched';
    } else if (!backup) {
      error.deviceState = 'erased';
    } else {
      const failed = await restoreBackup(boot, pages, backup);
      error.deviceState = failed === undefined ? 'restored' : 'erased';
      error.message += failed === undefined
        ? '; the previous flash contents were written back and verified'
        : `; writing the previous flash contents back failed too (${failed}): the device holds no complete firmware`;
    }
    throw error;
  }
  // The image is verified in place: a failed Go is reported, never undone.
  if (options.go) await boot.go(address);
  result.retries = boot.retries;
  return result;
}

/** Address of the first block that differs (after re-reads), or undefined. */
async function verify(boot: Stm32Bootloader, address: number, image: Uint8Array, onBlock: (done: number) => void): Promise<number | undefined> {
  for (let at = 0; at < image.length; at += AN3155.MAX_BLOCK) {
    const expected = image.subarray(at, at + AN3155.MAX_BLOCK);
    let same = false;
    // A mismatch may be noise on the read path: read again before believing it.
    for (let read = 0; read < 3 && !same; read++) {
      same = Buffer.from(await boot.readMemory(address + at, expected.length)).equals(expected);
    }
    if (!same) return address + at;
    onBlock(Math.min(at + AN3155.MAX_BLOCK, image.length));
  }
  return undefined;
}
