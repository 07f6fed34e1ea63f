// `fwcast-agent flash`: put one image into a microcontroller by hand, with
// the same code the agent's serial installer uses. Exit code 0 means the
// bootloader showed the image back; anything else prints one error line.
import { readFile } from 'node:fs/promises';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { espParts, flashEspParts, flashImage, parseSerialConfig, SERIAL_PROTOCOLS, withSerialLink, type FlashReport } from './installer.js';
import type { EspPart } from './esp-rom.js';
import { BootloaderError } from './bootloader-error.js';

function parseInteger(value: string, what: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError(`${what} must be a non-negative integer (decimal or 0x hex)`);
  return n;
}

/** Renders progress on stderr: in place on a terminal, every 10% otherwise. */
function progressPrinter(stream: NodeJS.WriteStream): { update(done: number, total: number): void; end(): void } {
  let lastStep = -1;
  let drawn = false;
  return {
    update(done, total) {
      const percent = total ? Math.floor((done * 100) / total) : 100;
      if (stream.isTTY) {
        stream.write(`\rflash: ${String(percent).padStart(3)}% (${done}/${total})`);
        drawn = true;
      } else if (Math.floor(percent / 10) !== lastStep) {
        lastStep = Math.floor(percent / 10);
        stream.write(`flash: ${percent}% (${done}/${total})\n`);
      }
    },
    end() { if (drawn) stream.write('\n'); },
  };
}

/** One file (placed by the config), or ADDRESS FILE pairs like esptool write_flash. */
async function espCommandParts(args: string[], single: (image: Uint8Array) => EspPart[]): Promise<EspPart[]> {
  if (args.length === 1) return single(new Uint8Array(await readFile(args[0]!)));
  if (args.length % 2 !== 0) throw new InvalidArgumentError('esp takes one image, or ADDRESS FILE pairs (e.g. 0x1000 bootloader.bin 0x8000 partitions.bin 0x10000 app.bin)');
  const parts: EspPart[] = [];
  for (let i = 0; i < args.length; i += 2) {
    parts.push({ address: parseInteger(args[i]!, `address ${JSON.stringify(args[i])}`), data: new Uint8Array(await readFile(args[i + 1]!)) });
  }
  return parts;
}

export function addFlashCommand(program: Command): void {
  program
    .command('flash')
    .description('write IMAGE into a microcontroller through its serial bootloader, then verify it')
    .addOption(new Option('--protocol <protocol>', 'bootloader protocol').choices([...SERIAL_PROTOCOLS]).makeOptionMandatory())
    .requiredOption('--port <path>', 'serial port, e.g. /dev/ttyUSB0 or /dev/fwcast-mcu0')
    .option('--baud <rate>', 'baud rate (default 115200)', (v) => parseInteger(v, '--baud'))
    .option('--address <addr>', 'flash address (stm32 default 0x08000000, stk500 default 0)', (v) => parseInteger(v, '--address'))
    .option('--start', 'reset (mcuboot, default) or jump (stm32) into the image after verifying it')
    .option('--no-start', 'leave the device in its bootloader after verifying')
    .option('--parity <parity>', 'stm32 only: even (AN3155, default) or none (ptys)')
    .option('--erase-timeout <ms>', 'answer timeout of an erase (stm32 default 30000; mcuboot default 100 ms per KiB of slot, at least 10000)', (v) => parseInteger(v, '--erase-timeout'))
    .option('--slot-size <bytes>', 'mcuboot: size of slot 0, for the size check when the device does not report it', (v) => parseInteger(v, '--slot-size'))
    .option('--trailer-size <bytes>', 'mcuboot: bytes kept for MCUboot\'s trailer when the device does not report its largest image (default 3120)', (v) => parseInteger(v, '--trailer-size'))
    .option('--mcuboot-mode <mode>', 'mcuboot: recovery (serial recovery writes slot 0, default) or test-confirm (through the running application: test boot, then confirm)')
    .option('--boot-timeout <ms>', 'mcuboot test-confirm: how long the device may take to answer after a reset (default 60000)', (v) => parseInteger(v, '--boot-timeout'))
    .option('--health <probe>', 'mcuboot test-confirm: echo (default) or none')
    .option('--no-restore', 'stm32: do not read the flash before erasing it (nothing to write back if the install fails)')
    .option('--chip <chip>', 'esp: the chip the device must be (esp32, esp32s3, esp32c3, esp8266)')
    .option('--reset <mode>', 'esp: classic (DTR/RTS into download mode, default) or none')
    .option('--flash-baud <rate>', 'esp: switch to this baud rate after connecting', (v) => parseInteger(v, '--flash-baud'))
    .option('--flash-size <bytes>', 'esp: flash size, when the flash id does not tell it', (v) => parseInteger(v, '--flash-size'))
    .option('--no-compress', 'esp: send the image uncompressed (FLASH_DATA rather than FLASH_DEFL_DATA)')
    .option('--verify <how>', 'esp: md5 (default) or checksums (ESP8266, whose ROM cannot hash)')
    .argument('<image...>', 'MCUboot image (mcuboot), raw binary (stm32), Intel HEX or raw binary (stk500); esp: a binary (at --address, default 0x10000) or ADDRESS FILE pairs as esptool write_flash takes them')
    .action(async (images: string[], opts: {
      protocol: string; port: string; baud?: number; address?: number; start?: boolean; parity?: string;
      eraseTimeout?: number; slotSize?: number; trailerSize?: number; restore?: boolean;
      chip?: string; reset?: string; flashBaud?: number; flashSize?: number; compress?: boolean; verify?: string;
      mcubootMode?: string; bootTimeout?: number; health?: string;
    }) => {
      const progress = progressPrinter(process.stderr);
      try {
        const config = parseSerialConfig({
          type: 'serial', protocol: opts.protocol, port: opts.port, baud: opts.baud, address: opts.address, parity: opts.parity, start: opts.start,
          eraseTimeoutMs: opts.eraseTimeout, slotSize: opts.slotSize, trailerSize: opts.trailerSize,
          chip: opts.chip, reset: opts.reset, flashBaud: opts.flashBaud, flashSize: opts.flashSize, verify: opts.verify,
          ...(opts.mcubootMode !== undefined || opts.bootTimeout !== undefined || opts.health !== undefined
            ? { mcuboot: { mode: opts.mcubootMode, bootTimeoutMs: opts.bootTimeout, health: opts.health } } : {}),
          // commander sets restore and compress true unless --no-…: pass only the opt-outs.
          ...(opts.restore === false ? { restore: false } : {}),
          ...(opts.compress === false ? { compress: false } : {}),
        });
        const onProgress = (d: number, t: number): void => progress.update(d, t);
        let report: FlashReport;
        if (config.protocol === 'esp') {
          const parts = await espCommandParts(images, (image) => espParts(config, image));
          report = await withSerialLink(config, (link) => flashEspParts(link, config, parts, { onProgress }));
        } else {
          if (images.length !== 1) throw new InvalidArgumentError(`${config.protocol} takes one image (got ${images.length} arguments)`);
          const image = new Uint8Array(await readFile(images[0]!));
          report = await withSerialLink(config, (link) => flashImage(link, config, image, { onProgress }));
        }
        progress.end();
        process.stdout.write(`flash: ok: ${report.bytes} bytes, verified: ${report.verified}${report.retries ? `, ${report.retries} retries` : ''}\n`);
        process.exitCode = 0;
      } catch (error) {
        progress.end();
        const e = error as Error;
        const state = e instanceof BootloaderError && e.deviceState ? ` (device: ${e.deviceState})` : '';
        process.stderr.write(`flash: failed: ${e.name && e.name !== 'Error' ? `${e.name}: ` : ''}${e.message}${state}\n`);
        process.exitCode = 1;
      }
    });
}
