// AVR STK500 version 1, the subset Arduino bootloaders (optiboot,
// ATmegaBOOT) implement and `avrdude -c arduino` speaks. Every command ends
// with CRC_EOP (0x20); the answer is INSYNC (0x14), any data, then OK (0x10).
// Flash addresses on the wire are 16-bit word addresses, little-endian.
// STK500v1 has no checksums: a flipped data byte is written as is, so success
// is only claimed after every page reads back identical.
import type { SerialLink } from './link.js';
import { hex } from '../../protocol/hex.js';
import { SerialTimeoutError } from './link.js';
import { BootloaderError, BootloaderProtocolError, BootloaderTimeoutError, BootloaderVerifyError } from './bootloader-error.js';

export const STK = {
  OK: 0x10,
  FAILED: 0x11,
  UNKNOWN: 0x12,
  NODEVICE: 0x13,
  INSYNC: 0x14,
  NOSYNC: 0x15,
  CRC_EOP: 0x20,
  GET_SYNC: 0x30,
  GET_PARAMETER: 0x41,
  ENTER_PROGMODE: 0x50,
  LEAVE_PROGMODE: 0x51,
  LOAD_ADDRESS: 0x55,
  PROG_PAGE: 0x64,
  READ_PAGE: 0x74,
  READ_SIGN: 0x75,
  MEMTYPE_FLASH: 0x46, // 'F'
} as const;

export interface AvrPart { name: string; pageSize: number; flashSize: number; bootloaderSize: number }

/** Parts by signature; the bootloader size is the Arduino default (BOOTSZ). */
export const AVR_PARTS: Record<string, AvrPart> = {
  '1e950f': { name: 'ATmega328P', pageSize: 128, flashSize: 32 * 1024, bootloaderSize: 512 },
  '1e9514': { name: 'ATmega328', pageSize: 128, flashSize: 32 * 1024, bootloaderSize: 512 },
  '1e9406': { name: 'ATmega168', pageSize: 128, flashSize: 16 * 1024, bootloaderSize: 512 },
  '1e930a': { name: 'ATmega88', pageSize: 64, flashSize: 8 * 1024, bootloaderSize: 512 },
};

export interface Stk500Init {
  link: SerialLink;
  /** Answer timeout; default 500 ms (a page write takes ~5 ms on the chip). */
  timeoutMs?: number;
  /** Attempts per operation; default 4. */
  tries?: number;
  signal?: AbortSignal;
}

export class Stk500Bootloader {
  private readonly link: SerialLink;
  private readonly timeoutMs: number;
  private readonly tries: number;
  private readonly signal: AbortSignal | undefined;
  retries = 0;

  constructor(init: Stk500Init) {
    this.link = init.link;
    this.timeoutMs = init.timeoutMs ?? 500;
    this.tries = init.tries ?? 4;
    this.signal = init.signal;
  }

  /** Sends `request` + CRC_EOP; returns the `answerLength` bytes between INSYNC and OK. */
  async command(operation: string, request: Uint8Array, answerLength = 0): Promise<Uint8Array> {
    await this.link.flushInput();
    const frame = new Uint8Array(request.length + 1);
    frame.set(request);
    frame[request.length] = STK.CRC_EOP;
    await this.link.write(frame);
    let answer: Uint8Array;
    try {
      answer = await this.link.read(answerLength + 2, { timeoutMs: this.timeoutMs, signal: this.signal });
    } catch (error) {
      if (error instanceof SerialTimeoutError) {
        throw new BootloaderTimeoutError('stk500', operation, `no complete answer within ${this.timeoutMs} ms (${error.received.length} of ${answerLength + 2} bytes)`);
      }
      throw error;
    }
    if (answer[0] !== STK.INSYNC || answer[answerLength + 1] !== STK.OK) {
      throw new BootloaderProtocolError('stk500', operation, `expected INSYNC … OK, got ${hex(answer)}`);
    }
    return answer.subarray(1, answerLength + 1);
  }

  /**
   * Regains sync after noise or a dropped line: GET_SYNC until answered, as
   * avrdude does after a reset. A bootloader that lost track of a command
   * resets itself (watchdog) and comes back waiting for one.
   */
  async sync(): Promise<void> {
    let lastError: unknown;
    for (let n = 0; n < this.tries * 3; n++) {
      this.signal?.throwIfAborted();
      try {
        await this.command('Get sync', Uint8Array.of(STK.GET_SYNC));
        return;
      } catch (error) {
        if (!(error instanceof BootloaderError)) throw error;
        lastError = error;
        await this.link.readAvailable({ timeoutMs: 50, signal: this.signal });
      }
    }
    throw new BootloaderTimeoutError('stk500', 'Get sync', `no answer after ${this.tries * 3} tries (${(lastError as Error).message}); is the board reset into its bootloader?`);
  }

  private async withRetries<T>(operation: () => Promise<T>): Promise<T> {
    for (let n = 1; ; n++) {
      this.signal?.throwIfAborted();
      try {
        return await operation();
      } catch (error) {
        if (!(error instanceof BootloaderTimeoutError || error instanceof BootloaderProtocolError) || n >= this.tries) throw error;
        this.retries++;
        await this.sync();
        try {
          await this.command('Enter programming mode', Uint8Array.of(STK.ENTER_PROGMODE));
        } catch (recovery) {
          // Noise on this answer too: the next try fails fast and recovers again.
          if (!(recovery instanceof BootloaderError)) throw recovery;
        }
      }
    }
  }

  async enterProgramming(): Promise<void> {
    await this.withRetries(() => this.command('Enter programming mode', Uint8Array.of(STK.ENTER_PROGMODE)));
  }

  async leaveProgramming(): Promise<void> {
    await this.command('Leave programming mode', Uint8Array.of(STK.LEAVE_PROGMODE));
  }

  async readSignature(): Promise<string> {
    return this.withRetries(async () => hex(await this.command('Read signature', Uint8Array.of(STK.READ_SIGN), 3)));
  }

  private loadAddress(byteAddress: number): Promise<Uint8Array> {
    const word = byteAddress >> 1;
    return this.command(`Load address 0x${byteAddress.toString(16).padStart(4, '0')}`, Uint8Array.of(STK.LOAD_ADDRESS, word & 0xff, word >> 8));
  }

  async programPage(byteAddress: number, page: Uint8Array): Promise<void> {
    await this.withRetries(async () => {
      await this.loadAddress(byteAddress);
      const request = new Uint8Array(4 + page.length);
      request.set([STK.PROG_PAGE, page.length >> 8, page.length & 0xff, STK.MEMTYPE_FLASH]);
      request.set(page, 4);
      await this.command(`Program page at 0x${byteAddress.toString(16).padStart(4, '0')}`, request);
    });
  }

  async readPage(byteAddress: number, length: number): Promise<Uint8Array> {
    return this.withRetries(async () => {
      await this.loadAddress(byteAddress);
      return this.command(
        `Read page at 0x${byteAddress.toString(16).padStart(4, '0')}`,
        Uint8Array.of(STK.READ_PAGE, length >> 8, length & 0xff, STK.MEMTYPE_FLASH),
        length,
      );
    });
  }
}

export interface Stk500FlashOptions {
  link: SerialLink;
  /** Flat image starting at `address`. */
  image: Uint8Array;
  /** Byte address of image[0]; default 0, must be page aligned. */
  address?: number;
  timeoutMs?: number;
  tries?: number;
  signal?: AbortSignal;
  /** Bytes written, then bytes verified: total is 2 × image length. */
  onProgress?: (done: number, total: number) => void;
}

export interface Stk500FlashResult {
  signature: string;
  part: string;
  retries: number;
  /** Pages written again because they read back wrong. */
  rewrittenPages: number;
  /** Page reads repeated because the answer did not match (noise on the way back, or a bad page). */
  rereads: number;
}

/** Writes every page, reads every page back, rewrites what differs, then leaves programming mode. */
export async function flashStk500(options: Stk500FlashOptions): Promise<Stk500FlashResult> {
  const address = options.address ?? 0;
  const boot = new Stk500Bootloader({ link: options.link, timeoutMs: options.timeoutMs, tries: options.tries, signal: options.signal });
  await boot.sync();
  await boot.enterProgramming();
  const signature = await boot.readSignature();
  const part = AVR_PARTS[signature];
  if (!part) throw new BootloaderProtocolError('stk500', 'Read signature', `unknown part 0x${signature}`);
  if (address % part.pageSize !== 0) throw new RangeError(`address 0x${address.toString(16)} is not on a ${part.pageSize}-byte page boundary`);
  const appEnd = part.flashSize - part.bootloaderSize;
  if (address + options.image.length > appEnd) {
    throw new RangeError(`image of ${options.image.length} bytes at 0x${address.toString(16)} overlaps the bootloader (application flash ends at 0x${appEnd.toString(16)})`);
  }
  // Whole pages, padded with erased bytes: the bootloader erases each page it writes.
  const paddedLength = Math.ceil(options.image.length / part.pageSize) * part.pageSize;
  const padded = new Uint8Array(paddedLength).fill(0xff);
  padded.set(options.image);
  const pages = Array.from({ length: paddedLength / part.pageSize }, (_, i) => i * part.pageSize);
  const total = options.image.length * 2;
  const pageAt = (offset: number): Uint8Array => padded.subarray(offset, offset + part.pageSize);

  for (const offset of pages) {
    await boot.programPage(address + offset, pageAt(offset));
    options.onProgress?.(Math.min(offset + part.pageSize, options.image.length), total);
  }
  let rewrittenPages = 0;
  let rereads = 0;
  let toCheck = pages;
  for (let round = 1; ; round++) {
    const bad: number[] = [];
    for (const offset of toCheck) {
      // A mismatch may be noise on the way back: read again before rewriting.
      let same = false;
      for (let read = 0; read < 3 && !same; read++) {
        if (read > 0) rereads++;
        same = Buffer.from(await boot.readPage(address + offset, part.pageSize)).equals(pageAt(offset));
      }
      if (!same) bad.push(offset);
      else if (round === 1) options.onProgress?.(options.image.length + Math.min(offset + part.pageSize, options.image.length), total);
    }
    if (bad.length === 0) break;
    if (round === 3) throw new BootloaderVerifyError('stk500', 'Verify', `page at 0x${(address + bad[0]!).toString(16)} still differs after rewriting twice`);
    for (const offset of bad) await boot.programPage(address + offset, pageAt(offset));
    rewrittenPages += bad.length;
    toCheck = bad;
  }
  options.onProgress?.(total, total);
  await boot.leaveProgramming();
  return { signature, part: part.name, retries: boot.retries, rewrittenPages, rereads };
}
