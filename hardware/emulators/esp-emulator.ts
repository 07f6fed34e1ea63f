// ESP ROM serial loader, device side, over a file-backed SPI flash. Speaks
// what the mask ROM of an ESP32, ESP32-S3, ESP32-C3 or ESP8266 speaks (the
// ESP8266's lacks SPI_ATTACH, SET_PARAMS, MD5, deflate and baud change, and
// erases with its known miscount), answers the SPI controller's RDID user
// command through its registers, and flash behaves like NOR: erased to 0xFF
// by sectors, a write can only clear bits. Uploading esptool's flasher stub
// (MEM_BEGIN/DATA/END) switches to the stub's dialect — 2 status bytes, raw
// MD5, READ_FLASH — without running it: enough for esptool-js to read back.
// A command a ROM lacks is answered "invalid message" under op 0, which
// esptool takes as "unsupported".
//
//   npx tsx hardware/emulators/esp-emulator.ts --port /tmp/dev --flash /tmp/esp.bin --chip esp32
import { createHash } from 'node:crypto';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { constants as zlibConstants, inflateSync } from 'node:zlib';
import { openSerialPort, SerialClosedError, SerialTimeoutError, type SerialLink } from '../../device-agent/serial/link.js';
import {
  decodeRequest, encodeResponse, espChecksum, ESP_OP, readWord, SLIP_END, slipDecode, slipEncode, SYNC_PAYLOAD, words,
} from '../../device-agent/serial/esp-slip.js';
import { CHIP_CLASSES, CHIP_DETECT_MAGIC_REG, ESP_CHIPS, type EspChip, type EspChipName } from '../../device-agent/serial/esp-chips.js';
import { FlashFile, type FlashMemory } from './flash-file.js';

export interface EspEmulatorInit {
  chip: EspChipName;
  flash: FlashMemory;
  /** Which of the chip's magic words to report (ESP32-C3 revisions differ); default the first. */
  magic?: number;
  /** Called with each command accepted (op), for logs and tests. */
  onCommand?: (op: number) => void;
  /** Called when FLASH_END asks for a reboot into the firmware. */
  onReboot?: () => void;
}

const WAIT = { timeoutMs: 2 ** 31 - 1 };
const SECTOR = 0x1000;
const MAX_FRAME = 0x8000;

const enum Status { Ok = 0, InvalidMessage = 0x05, FailedToAct = 0x06, BadChecksum = 0x07, FlashWrite = 0x08, Deflate = 0x0b }

interface FlashWrite {
  offset: number;
  blockSize: number;
  blocks: number;
  next: number;
  eraseEnd: number;
  compressed: boolean;
  /** Deflated bytes so far, and how much of their output is in flash. */
  input: Buffer[];
  written: number;
}

export class EspEmulator {
  readonly chip: EspChip;
  private readonly registers = new Map<number, number>();
  private write: FlashWrite | undefined;
  private stub = false;
  /** Erases done, as [offset, length], for tests. */
  readonly erases: [number, number][] = [];

  constructor(private readonly init: EspEmulatorInit) {
    this.chip = CHIP_CLASSES[init.chip];
  }

  /** JEDEC id of a Winbond-like part whose capacity byte is log2(size). */
  get flashId(): number {
    return 0x40ef | (Math.log2(this.init.flash.size) << 16);
  }

  async serve(link: SerialLink): Promise<void> {
    try {
      for (;;) {
        const frame = await link.readUntil(SLIP_END, { ...WAIT, maxBytes: MAX_FRAME }).catch((error: unknown) => {
          if (error instanceof SerialClosedError) throw error;
          return undefined; // an overrun: noise without delimiters
        });
        if (!frame) continue;
        const packet = slipDecode(frame);
        if (!packet) {
          // A broken escape (line noise): still a message, and an invalid one.
          const raw = frame.filter((b) => b !== SLIP_END);
          if (raw.length >= 8 && raw[0] === 0x00) await this.reply(link, raw[1]!, 0, new Uint8Array(0), Status.InvalidMessage);
          continue;
        }
        if (packet.length < 2 || packet[0] !== 0x00) continue;
        const request = decodeRequest(packet);
        if (!request) {
          // A framed message whose length field is wrong: the ROM says so under the op it read.
          if (packet.length >= 8) await this.reply(link, packet[1]!, 0, new Uint8Array(0), Status.InvalidMessage);
          continue;
        }
        await this.handle(link, request.op, request.data, request.checksum);
      }
    } catch (error) {
      if (error instanceof SerialClosedError) return;
      throw error;
    }
  }

  private statusLength(): number { return this.stub ? 2 : this.chip.statusLength; }

  private async reply(link: SerialLink, op: number, value: number, body: Uint8Array, status = Status.Ok): Promise<void> {
    const data = new Uint8Array(body.length + this.statusLength());
    data.set(body);
    if (status !== Status.Ok) { data[body.length] = 1; data[body.length + 1] = status; }
    await link.write(slipEncode(encodeResponse(op, value, data)));
  }

  private unsupported(link: SerialLink): Promise<void> {
    return this.reply(link, 0x00, 0, new Uint8Array(0), Status.InvalidMessage);
  }

  private async handle(link: SerialLink, op: number, data: Uint8Array, checksum: number): Promise<void> {
    const rom8266 = !this.stub && this.chip.name === 'esp8266';
    const ok = (value = 0, body = new Uint8Array(0)): Promise<void> => this.reply(link, op, value, body);
    const fail = (status: Status): Promise<void> => this.reply(link, op, 0, new Uint8Array(0), status);
    const lengthIs = (...allowed: number[]): boolean => allowed.includes(data.length);
    this.init.onCommand?.(op);
    switch (op) {
      case ESP_OP.SYNC: {
        if (!Buffer.from(data).equals(Buffer.from(SYNC_PAYLOAD))) return fail(Status.InvalidMessage);
        // The ROM answers a SYNC eight times; the stub once, with value 0.
        for (let n = 0; n < (this.stub ? 1 : 8); n++) await ok(this.stub ? 0 : 0x20120707);
        return;
      }
      case ESP_OP.READ_REG: {
        if (!lengthIs(4)) return fail(Status.InvalidMessage);
        const address = readWord(data, 0);
        const value = address === CHIP_DETECT_MAGIC_REG ? (this.init.magic ?? this.chip.magicValues[0]!) : (this.registers.get(address) ?? 0);
        return ok(value);
      }
      case ESP_OP.WRITE_REG: {
        if (data.length === 0 || data.length % 16 !== 0) return fail(Status.InvalidMessage);
        for (let at = 0; at < data.length / 4; at += 4) {
          const address = readWord(data, at);
          const mask = readWord(data, at + 2);
          const old = this.registers.get(address) ?? 0;
          this.registers.set(address, ((old & ~mask) | (readWord(data, at + 1) & mask)) >>> 0);
          this.spiCommand(address);
        }
        return ok();
      }
      case ESP_OP.SPI_ATTACH:
        if (rom8266) return this.unsupported(link);
        return lengthIs(4, 8) ? ok() : fail(Status.InvalidMessage);
      case ESP_OP.SPI_SET_PARAMS:
        if (rom8266) return this.unsupported(link);
        return lengthIs(24) ? ok() : fail(Status.InvalidMessage);
      case ESP_OP.CHANGE_BAUDRATE:
        if (rom8266) return this.unsupported(link);
        // A pty has no baud rate: acknowledging is all there is to do.
        return lengthIs(8) ? ok() : fail(Status.InvalidMessage);
      case ESP_OP.GET_SECURITY_INFO: {
        if (this.chip.securityChipId === undefined) return this.unsupported(link);
        const body = new Uint8Array(20);
        body.set(words(this.chip.securityChipId, 0), 12);
        return ok(0, body);
      }
      case ESP_OP.FLASH_BEGIN:
      case ESP_OP.FLASH_DEFL_BEGIN: {
        const compressed = op === ESP_OP.FLASH_DEFL_BEGIN;
        if (compressed && rom8266) return this.unsupported(link);
        if (!lengthIs(16, ...(rom8266 || this.stub ? [] : [20]))) return fail(Status.InvalidMessage);
        const [size, blocks, blockSize, offset] = [0, 1, 2, 3].map((i) => readWord(data, i)) as [number, number, number, number];
        const eraseLength = compressed || this.stub ? size : this.chip.romErases(offset, size);
        const eraseStart = Math.floor(offset / SECTOR) * SECTOR;
        const eraseEnd = eraseLength === 0 ? offset : Math.ceil((offset + eraseLength) / SECTOR) * SECTOR;
        if (blockSize === 0 || blockSize > 0x10000 || eraseEnd > this.init.flash.size || offset + blocks * blockSize > this.init.flash.size + blockSize) {
          this.write = undefined;
          return fail(Status.FailedToAct);
        }
        if (eraseEnd > eraseStart) {
          this.init.flash.erase(eraseStart, eraseEnd - eraseStart);
          this.erases.push([eraseStart, eraseEnd - eraseStart]);
        }
        this.write = { offset, blockSize, blocks, next: 0, eraseEnd, compressed, input: [], written: 0 };
        return ok();
      }
      case ESP_OP.FLASH_DATA:
      case ESP_OP.FLASH_DEFL_DATA: {
        const compressed = op === ESP_OP.FLASH_DEFL_DATA;
        if (compressed && rom8266) return this.unsupported(link);
        if (data.length < 16 || readWord(data, 0) !== data.length - 16) return fail(Status.InvalidMessage);
        const block = data.subarray(16);
        if (espChecksum(block) !== checksum) return fail(Status.BadChecksum);
        const w = this.write;
        if (!w || w.compressed !== compressed || readWord(data, 1) !== w.next || w.next >= w.blocks) return fail(Status.FailedToAct);
        if (!compressed) {
          const at = w.offset + w.next * w.blockSize;
          if (at + block.length > this.init.flash.size) return fail(Status.FlashWrite);
          this.program(at, block);
        } else {
          w.input.push(Buffer.from(block));
          let out: Buffer;
          try {
            out = inflateSync(Buffer.concat(w.input), { finishFlush: zlibConstants.Z_SYNC_FLUSH });
          } catch {
            w.input.pop();
            return fail(Status.Deflate);
          }
          if (w.offset + out.length > w.eraseEnd) return fail(Status.FlashWrite);
          this.program(w.offset + w.written, out.subarray(w.written));
          w.written = out.length;
        }
        w.next++;
        return ok();
      }
      case ESP_OP.FLASH_END:
      case ESP_OP.FLASH_DEFL_END: {
        if (op === ESP_OP.FLASH_DEFL_END && rom8266) return this.unsupported(link);
        if (!lengthIs(4)) return fail(Status.InvalidMessage);
        this.write = undefined;
        await ok();
        if (readWord(data, 0) === 0) {
          // Reboot: with GPIO0 still strapped low the ROM loader comes back, waiting for SYNC.
          this.stub = false;
          this.init.onReboot?.();
        }
        return;
      }
      case ESP_OP.SPI_FLASH_MD5: {
        if (rom8266) return this.unsupported(link);
        if (!lengthIs(16)) return fail(Status.InvalidMessage);
        const [address, size] = [readWord(data, 0), readWord(data, 1)];
        if (address + size > this.init.flash.size) return fail(Status.FailedToAct);
        const digest = createHash('md5').update(this.init.flash.bytes.subarray(address, address + size)).digest();
        // The ROM answers in hex text, the stub in raw bytes.
        return ok(0, this.stub ? digest : Buffer.from(digest.toString('hex'), 'latin1'));
      }
      case ESP_OP.MEM_BEGIN:
        return lengthIs(16) ? ok() : fail(Status.InvalidMessage);
      case ESP_OP.MEM_DATA: {
        if (data.length < 16 || readWord(data, 0) !== data.length - 16) return fail(Status.InvalidMessage);
        return espChecksum(data.subarray(16)) === checksum ? ok() : fail(Status.BadChecksum);
      }
      case ESP_OP.MEM_END: {
        if (!lengthIs(8)) return fail(Status.InvalidMessage);
        await ok();
        // Flag 0 with an entry point: the uploaded code (esptool's stub) runs and greets.
        if (readWord(data, 0) === 0) {
          this.stub = true;
          await link.write(slipEncode(Buffer.from('OHAI', 'latin1')));
        }
        return;
      }
      case ESP_OP.ERASE_REGION: {
        if (!this.stub) return this.unsupported(link);
        const [offset, size] = [readWord(data, 0), readWord(data, 1)];
        if (offset % SECTOR || size % SECTOR || offset + size > this.init.flash.size) return fail(Status.FailedToAct);
        this.init.flash.erase(offset, size);
        return ok();
      }
      case ESP_OP.READ_FLASH:
        if (!this.stub) return this.unsupported(link);
        return this.readFlash(link, data);
      default:
        return this.unsupported(link);
    }
  }

  /** NOR flash: programming clears bits, never sets them. */
  private program(offset: number, data: Uint8Array): void {
    const current = this.init.flash.bytes.subarray(offset, offset + data.length);
    const out = new Uint8Array(data.length);
    for (let i = 0; i < data.length; i++) out[i] = current[i]! & data[i]!;
    this.init.flash.write(offset, out);
  }

  /** A write of CMD_USR to the SPI controller's command register runs the command in USR2 (RDID is the only one modelled). */
  private spiCommand(address: number): void {
    const { spi } = this.chip;
    if (address !== spi.base || ((this.registers.get(address) ?? 0) & (1 << 18)) === 0) return;
    const command = (this.registers.get(spi.base + spi.usr2) ?? 0) & 0xff;
    if (command === 0x9f) this.registers.set(spi.base + spi.w0, this.flashId);
    this.registers.set(address, 0);
  }

  /** The stub's READ_FLASH: blocks as bare SLIP frames, each acknowledged by the host with the byte count so far, then the MD5. */
  private async readFlash(link: SerialLink, data: Uint8Array): Promise<void> {
    if (data.length !== 16) return this.reply(link, ESP_OP.READ_FLASH, 0, new Uint8Array(0), Status.InvalidMessage);
    const [address, size, blockSize] = [readWord(data, 0), readWord(data, 1), readWord(data, 2)];
    if (address + size > this.init.flash.size || blockSize === 0) return this.reply(link, ESP_OP.READ_FLASH, 0, new Uint8Array(0), Status.FailedToAct);
    await this.reply(link, ESP_OP.READ_FLASH, 0, new Uint8Array(0));
    const region = this.init.flash.bytes.subarray(address, address + size);
    for (let at = 0; at < size; at += blockSize) {
      await link.write(slipEncode(region.subarray(at, at + blockSize)));
      try {
        // The acknowledgement is one SLIP frame; its opening delimiter reads as an empty frame.
        while ((slipDecode(await link.readUntil(SLIP_END, { timeoutMs: 3000, maxBytes: 64 })) ?? []).length === 0) { /* next frame */ }
      } catch (error) {
        if (error instanceof SerialTimeoutError) return; // the host gave up
        throw error;
      }
    }
    await link.write(slipEncode(createHash('md5').update(region).digest()));
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string' },
      flash: { type: 'string' },
      chip: { type: 'string', default: 'esp32' },
      'flash-size': { type: 'string', default: String(4 * 1024 * 1024) },
    },
  });
  if (!values.port || !values.flash || !ESP_CHIPS.includes(values.chip as EspChipName)) {
    process.stderr.write(`usage: esp-emulator --port PTY --flash FILE [--chip ${ESP_CHIPS.join('|')}] [--flash-size BYTES (a power of two)]\n`);
    process.exit(2);
  }
  const size = Number(values['flash-size']);
  if (!Number.isInteger(Math.log2(size))) throw new Error('--flash-size must be a power of two');
  const flash = new FlashFile(values.flash, size);
  const link = await openSerialPort({ path: values.port });
  const emulator = new EspEmulator({ chip: values.chip as EspChipName, flash, onReboot: () => process.stderr.write('esp-emulator: reboot\n') });
  process.on('SIGTERM', () => { void link.close().then(() => process.exit(0)); });
  process.stderr.write(`esp-emulator: serving the ${emulator.chip.title} ROM loader (${size} bytes of flash) on ${values.port}\n`);
  await emulator.serve(link);
  flash.close();
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error: unknown) => { process.stderr.write(`esp-emulator: ${(error as Error).message}\n`); process.exit(1); });
}
