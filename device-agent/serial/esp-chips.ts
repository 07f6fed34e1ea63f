// What differs between the ESP ROM loaders fwcast drives, one small class per
// chip: how the chip is recognised (the magic word at 0x40001000), what its
// ROM answers (status length, which commands exist), where its SPI flash
// controller's registers are (for the flash id), and where its second-stage
// bootloader lives. Values from Espressif's esptool / esptool-js targets.

/** The register every ESP ROM maps a chip-specific magic word to. */
export const CHIP_DETECT_MAGIC_REG = 0x40001000;

export const ESP_CHIPS = ['esp32', 'esp32s3', 'esp32c3', 'esp8266'] as const;
export type EspChipName = (typeof ESP_CHIPS)[number];

/** The SPI flash controller registers used to send the flash a command (RDID). */
export interface SpiRegisters {
  base: number;
  usr: number;
  usr1: number;
  usr2: number;
  w0: number;
  /** Absent on the ESP8266, whose data lengths live in USR1. */
  mosiDlen?: number;
  misoDlen?: number;
}

export abstract class EspChip {
  abstract readonly name: EspChipName;
  /** As Espressif writes it, for messages. */
  abstract readonly title: string;
  abstract readonly magicValues: readonly number[];
  /** Status bytes at the end of each ROM response: 4 on the ESP32 family (2 used), 2 on the ESP8266. */
  readonly statusLength: number = 4;
  /** Where esptool writes the second-stage bootloader. */
  abstract readonly bootloaderOffset: number;
  abstract readonly spi: SpiRegisters;
  /** GET_SECURITY_INFO's chip id, on chips whose ROM has the command. */
  readonly securityChipId: number | undefined = undefined;
  /** ROM commands the ESP8266's ROM lacks. */
  readonly hasSpiAttach: boolean = true;
  readonly hasMd5: boolean = true;
  readonly hasDeflate: boolean = true;
  readonly hasChangeBaud: boolean = true;
  /** FLASH_BEGIN / FLASH_DEFL_BEGIN take a fifth word (encrypted write, 0) on newer ROMs. */
  readonly beginTakesEncryptFlag: boolean = false;
  /** SPI_ATTACH's payload: the pin configuration word, which the ESP32-family ROMs want followed by 4 zero bytes. */
  attachPayload(): Uint8Array { return new Uint8Array(8); }

  /** Bytes FLASH_BEGIN must be told to erase so that `size` bytes from `offset` end up erased. */
  eraseSize(_offset: number, size: number): number { return size; }

  /** The size the ROM erases when told `requested` bytes from `offset` (the emulator's side of eraseSize). */
  romErases(_offset: number, requested: number): number { return requested; }
}

export class Esp32 extends EspChip {
  readonly name = 'esp32';
  readonly title = 'ESP32';
  readonly magicValues = [0x00f01d83];
  readonly bootloaderOffset = 0x1000;
  readonly spi = { base: 0x3ff42000, usr: 0x1c, usr1: 0x20, usr2: 0x24, w0: 0x80, mosiDlen: 0x28, misoDlen: 0x2c };
}

export class Esp32S3 extends EspChip {
  readonly name = 'esp32s3';
  readonly title = 'ESP32-S3';
  readonly magicValues = [0x9];
  readonly bootloaderOffset = 0x0;
  override readonly securityChipId = 9;
  override readonly beginTakesEncryptFlag = true;
  readonly spi = { base: 0x60002000, usr: 0x18, usr1: 0x1c, usr2: 0x20, w0: 0x58, mosiDlen: 0x24, misoDlen: 0x28 };
}

export class Esp32C3 extends EspChip {
  readonly name = 'esp32c3';
  readonly title = 'ESP32-C3';
  readonly magicValues = [0x6921506f, 0x1b31506f, 0x4881606f, 0x4361606f];
  readonly bootloaderOffset = 0x0;
  override readonly securityChipId = 5;
  override readonly beginTakesEncryptFlag = true;
  readonly spi = { base: 0x60002000, usr: 0x18, usr1: 0x1c, usr2: 0x20, w0: 0x58, mosiDlen: 0x24, misoDlen: 0x28 };
}

const SECTOR = 0x1000;
/** The ESP8266 ROM's erase works in 64 KiB blocks of 16 sectors. */
const SECTORS_PER_BLOCK = 16;

/**
 * The ESP8266 ROM: 2 status bytes, no SPI_ATTACH, SPI_SET_PARAMS, MD5,
 * deflate or baud change (those come with esptool's stub, which fwcast does
 * not upload), and an erase that takes too much when asked for whole blocks.
 */
export class Esp8266 extends EspChip {
  readonly name = 'esp8266';
  readonly title = 'ESP8266';
  readonly magicValues = [0xfff0c101];
  override readonly statusLength = 2;
  readonly bootloaderOffset = 0x0;
  override readonly hasSpiAttach = false;
  override readonly hasMd5 = false;
  override readonly hasDeflate = false;
  override readonly hasChangeBaud = false;
  readonly spi = { base: 0x60000200, usr: 0x1c, usr1: 0x20, usr2: 0x24, w0: 0x40 };

  /**
   * The ROM erases the sectors up to the next 64 KiB boundary ("head") and
   * then counts the rest twice; asking for less makes it erase what we need.
   */
  override eraseSize(offset: number, size: number): number {
    const sectors = Math.ceil(size / SECTOR);
    const head = Math.min(sectors, SECTORS_PER_BLOCK - (Math.floor(offset / SECTOR) % SECTORS_PER_BLOCK));
    return sectors < 2 * head ? Math.ceil(sectors / 2) * SECTOR : (sectors - head) * SECTOR;
  }

  override romErases(offset: number, requested: number): number {
    const sectors = Math.ceil(requested / SECTOR);
    const head = SECTORS_PER_BLOCK - (Math.floor(offset / SECTOR) % SECTORS_PER_BLOCK);
    return (sectors < head ? 2 * sectors : sectors + head) * SECTOR;
  }
}

export const CHIP_CLASSES: Record<EspChipName, EspChip> = {
  esp32: new Esp32(),
  esp32s3: new Esp32S3(),
  esp32c3: new Esp32C3(),
  esp8266: new Esp8266(),
};

export function chipByMagic(magic: number): EspChip | undefined {
  return Object.values(CHIP_CLASSES).find((c) => c.magicValues.includes(magic >>> 0));
}
