// STM32 ROM bootloader, device side of ST AN3155, over a file-backed flash.
// Modelled on an STM32F1 medium-density part (product id 0x410, bootloader
// v2.2, 128 KiB flash in 1 KiB pages) so that stm32flash recognises it.
// Like the real ROM it waits forever between bytes, ignores everything before
// the 0x7F autobaud byte, NACKs bad checksums and returns to "waiting for a
// command" after every answer. Flash can only be written where it is erased.
//
//   npx tsx hardware/emulators/stm32-emulator.ts --port /tmp/dev --flash /tmp/stm32.bin
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { openSerialPort, SerialClosedError, type SerialLink } from '../../device-agent/serial/link.js';
import { AN3155, STM32_FLASH_BASE } from '../../device-agent/serial/stm32-an3155.js';
import { FlashFile, type FlashMemory } from './flash-file.js';

export interface Stm32EmulatorInit {
  flash: FlashMemory;
  productId?: number;
  pageSize?: number;
  /** Offer Extended Erase (0x44) instead of Erase (0x43), as newer parts do. */
  extendedErase?: boolean;
  /** Called for each command byte accepted, for logs and tests. */
  onCommand?: (opcode: number) => void;
  /**
   * Not in the bootloader at all: the application runs (BOOT0 low) and prints
   * a line every `lineEveryMs`, ignoring whatever it is sent.
   */
  application?: { lineEveryMs: number };
  /** Flash offset from which pages no longer program (worn or write-protected): Write Memory there is NACKed. */
  failWritesFrom?: number;
}

const RAM_BASE = 0x20000000;
const RAM_SIZE = 20 * 1024;
const WAIT = { timeoutMs: 2 ** 31 - 1 };

export class Stm32Emulator {
  private readonly ram = new Uint8Array(RAM_SIZE);
  private readonly productId: number;
  private readonly pageSize: number;
  private readonly eraseOpcode: number;
  /** Where the last Go jumped, if any. */
  lastGo: number | undefined;

  constructor(private readonly init: Stm32EmulatorInit) {
    this.productId = init.productId ?? 0x410;
    this.pageSize = init.pageSize ?? 1024;
    this.eraseOpcode = init.extendedErase ? AN3155.EXTENDED_ERASE : AN3155.ERASE;
  }

  get commands(): number[] {
    return [AN3155.GET, AN3155.GET_VERSION, AN3155.GET_ID, AN3155.READ_MEMORY, AN3155.GO, AN3155.WRITE_MEMORY, this.eraseOpcode];
  }

  /** Serves the link until it closes. */
  async serve(link: SerialLink): Promise<void> {
    if (this.init.application) return this.runApplication(link, this.init.application.lineEveryMs);
    const byte = async (): Promise<number> => (await link.read(1, WAIT))[0]!;
    const ack = (): Promise<void> => link.write(Uint8Array.of(AN3155.ACK));
    const nack = (): Promise<void> => link.write(Uint8Array.of(AN3155.NACK));
    const address = async (): Promise<number | undefined> => {
      const b = await link.read(5, WAIT);
      if ((b[0]! ^ b[1]! ^ b[2]! ^ b[3]!) !== b[4]) return undefined;
      return new DataView(b.buffer, b.byteOffset).getUint32(0) >>> 0;
    };
    try {
      // Autobaud: anything but 0x7F is noise to a bootloader that has not locked on.
      while ((await byte()) !== AN3155.SYNC) { /* wait for sync */ }
      await ack();
      for (;;) {
        const opcode = await byte();
        const complement = await byte();
        if ((opcode ^ complement) !== 0xff || !this.commands.includes(opcode)) { await nack(); continue; }
        await ack();
        this.init.onCommand?.(opcode);
        switch (opcode) {
          case AN3155.GET:
            await link.write(Uint8Array.from([this.commands.length, 0x22, ...this.commands, AN3155.ACK]));
            break;
          case AN3155.GET_VERSION:
            await link.write(Uint8Array.of(0x22, 0x00, 0x00, AN3155.ACK));
            break;
          case AN3155.GET_ID:
            await link.write(Uint8Array.of(1, this.productId >> 8, this.productId & 0xff, AN3155.ACK));
            break;
          case AN3155.READ_MEMORY: {
            const at = await address();
            if (at === undefined || !this.region(at, 1)) { await nack(); break; }
            await ack();
            const [n, nc] = await link.read(2, WAIT);
            const length = n! + 1;
            const region = this.region(at, length);
            if ((n! ^ nc!) !== 0xff || !region) { await nack(); break; }
            await ack();
            await link.write(region.memory.slice(region.offset, region.offset + length));
            break;
          }
          case AN3155.WRITE_MEMORY: {
            const at = await address();
            if (at === undefined || !this.region(at, 1)) { await nack(); break; }
            await ack();
            const n = await byte();
            const data = await link.read(n + 2, WAIT);
            const payload = data.subarray(0, n + 1);
            const region = this.region(at, n + 1);
            let x = n;
            for (const b of payload) x ^= b;
            if (x !== data[n + 1] || !region || !this.write(region, payload)) { await nack(); break; }
            await ack();
            break;
          }
          case AN3155.ERASE:
          case AN3155.EXTENDED_ERASE:
            (await (opcode === AN3155.ERASE ? this.erase(link) : this.extendedErase(link))) ? await ack() : await nack();
            break;
          case AN3155.GO: {
            const at = await address();
            if (at === undefined || !this.region(at, 1)) { await nack(); break; }
            await ack();
            this.lastGo = at;
            // The application now runs; with BOOT0 still high, its next reset
            // lands in this bootloader again, which wants a fresh 0x7F.
            while ((await byte()) !== AN3155.SYNC) { /* application running */ }
            await ack();
            break;
          }
        }
      }
    } catch (error) {
      if (error instanceof SerialClosedError) return;
      throw error;
    }
  }

  /** An application's debug console: a line every few ms, input ignored, until the link closes. */
  private async runApplication(link: SerialLink, lineEveryMs: number): Promise<void> {
    let tick = 0;
    while (link.isOpen) {
      // Text with 'y' (0x79 = ACK) in it, as real logs have.
      try {
        await link.write(Buffer.from(`app: ready, tick ${tick++}\r\n`, 'latin1'));
        await link.flushInput();
      } catch (error) {
        if (error instanceof SerialClosedError || !link.isOpen) return;
        throw error;
      }
      await new Promise((resolve) => setTimeout(resolve, lineEveryMs));
    }
  }

  private region(address: number, length: number): { memory: Uint8Array; offset: number; flash: boolean } | undefined {
    const flashSize = this.init.flash.size;
    if (address >= STM32_FLASH_BASE && address + length <= STM32_FLASH_BASE + flashSize) {
      return { memory: this.init.flash.bytes, offset: address - STM32_FLASH_BASE, flash: true };
    }
    if (address >= RAM_BASE && address + length <= RAM_BASE + RAM_SIZE) return { memory: this.ram, offset: address - RAM_BASE, flash: false };
    return undefined;
  }

  private write(region: { memory: Uint8Array; offset: number; flash: boolean }, data: Uint8Array): boolean {
    if (!region.flash) { region.memory.set(data, region.offset); return true; }
    if (data.length % 4 !== 0 || region.offset % 4 !== 0) return false;
    if (this.init.failWritesFrom !== undefined && region.offset + data.length > this.init.failWritesFrom) return false;
    // Programming a word that is not erased fails on STM32 flash, unless it
    // already holds exactly these bytes.
    for (let i = 0; i < data.length; i++) {
      const current = region.memory[region.offset + i]!;
      if (current !== 0xff && current !== data[i]) return false;
    }
    this.init.flash.write(region.offset, data);
    return true;
  }

  private erasePages(pages: number[]): boolean {
    const count = this.init.flash.size / this.pageSize;
    if (pages.some((p) => p >= count)) return false;
    for (const p of pages) this.init.flash.erase(p * this.pageSize, this.pageSize);
    return true;
  }

  private async erase(link: SerialLink): Promise<boolean> {
    const [n] = await link.read(1, WAIT);
    if (n === 0xff) {
      const [c] = await link.read(1, WAIT);
      return c === 0x00 && this.erasePages(Array.from({ length: this.init.flash.size / this.pageSize }, (_, i) => i));
    }
    const data = await link.read(n! + 2, WAIT);
    const pages = [...data.subarray(0, n! + 1)];
    let x = n!;
    for (const p of pages) x ^= p;
    return x === data[n! + 1] && this.erasePages(pages);
  }

  private async extendedErase(link: SerialLink): Promise<boolean> {
    const head = await link.read(2, WAIT);
    const n = (head[0]! << 8) | head[1]!;
    if (n >= 0xfff0) {
      const [c] = await link.read(1, WAIT);
      // 0xFFFF mass erase, 0xFFFE bank 1, 0xFFFD bank 2: one bank here.
      return c === (head[0]! ^ head[1]!) && n >= 0xfffd && this.erasePages(Array.from({ length: this.init.flash.size / this.pageSize }, (_, i) => i));
    }
    const data = await link.read((n + 1) * 2 + 1, WAIT);
    let x = head[0]! ^ head[1]!;
    const pages: number[] = [];
    for (let i = 0; i < (n + 1) * 2; i += 2) {
      x ^= data[i]! ^ data[i + 1]!;
      pages.push((data[i]! << 8) | data[i + 1]!);
    }
    return x === data[data.length - 1] && this.erasePages(pages);
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string' },
      flash: { type: 'string' },
      'flash-size': { type: 'string', default: String(128 * 1024) },
      'extended-erase': { type: 'boolean', default: false },
      'product-id': { type: 'string', default: '0x410' },
      'page-size': { type: 'string', default: '1024' },
      'application-line-ms': { type: 'string' },
    },
  });
  if (!values.port || !values.flash) {
    process.stderr.write('usage: stm32-emulator --port PTY --flash FILE [--flash-size N] [--extended-erase] [--product-id 0xNNN] [--page-size N] [--application-line-ms MS]\n');
    process.exit(2);
  }
  const flash = new FlashFile(values.flash, Number(values['flash-size']));
  const link = await openSerialPort({ path: values.port });
  const productId = Number(values['product-id']);
  const lineEveryMs = values['application-line-ms'] === undefined ? undefined : Number(values['application-line-ms']);
  const emulator = new Stm32Emulator({
    flash, extendedErase: values['extended-erase'], productId, pageSize: Number(values['page-size']),
    ...(lineEveryMs === undefined ? {} : { application: { lineEveryMs } }),
  });
  process.on('SIGTERM', () => { void link.close().then(() => process.exit(0)); });
  process.stderr.write(`stm32-emulator: serving ${lineEveryMs === undefined ? 'AN3155' : 'a chatty application'} (pid 0x${productId.toString(16)}) on ${values.port}\n`);
  await emulator.serve(link);
  flash.close();
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error: unknown) => { process.stderr.write(`stm32-emulator: ${(error as Error).message}\n`); process.exit(1); });
}
