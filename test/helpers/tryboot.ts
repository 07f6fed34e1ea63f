/**
 * A stand-in for the Raspberry Pi firmware's A/B boot with tryboot, for
 * tests: a boot partition directory holding autoboot.txt, partitions as files
 * (`part2`, `part3`), the device-tree cells the firmware sets
 * (chosen/bootloader/partition and tryboot, 32-bit big-endian), and a
 * `reboot` command. `reboot "0 tryboot"` sets the one-shot tryboot flag, as
 * the real one does through the firmware mailbox; `powerOn()` then boots as
 * the firmware does: the [tryboot] section's boot_partition once if the flag
 * is set (clearing it), else the [all] section's.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export class TrybootBoard {
  readonly dir: string;
  readonly bootDir: string;
  readonly dtDir: string;
  readonly partitionPrefix: string;
  /** The stand-in `reboot` (takes the same argument as the real one). */
  readonly rebootCommand: string;
  readonly rebootRequested: string;
  readonly #flag: string;
  /** Each boot: the partition and whether it was a tryboot. */
  readonly boots: Array<{ partition: number; tryboot: boolean }> = [];

  constructor(dir: string, initialImage: Uint8Array) {
    this.dir = dir;
    this.bootDir = join(dir, 'bootfs');
    this.dtDir = join(dir, 'device-tree', 'chosen', 'bootloader');
    this.partitionPrefix = join(dir, 'part');
    this.rebootRequested = join(dir, 'reboot-requested');
    this.#flag = join(dir, 'firmware-tryboot-flag');
    mkdirSync(this.bootDir, { recursive: true });
    mkdirSync(this.dtDir, { recursive: true });
    writeFileSync(join(this.bootDir, 'autoboot.txt'), '[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n');
    writeFileSync(`${this.partitionPrefix}2`, initialImage);
    writeFileSync(`${this.partitionPrefix}3`, Buffer.alloc(initialImage.length));
    this.rebootCommand = join(dir, 'reboot');
    writeFileSync(this.rebootCommand, `#!/bin/sh
# reboot [ARG]: "0 tryboot" (one argument) sets the firmware's one-shot tryboot flag.
case "\${1:-}" in *tryboot*) touch ${this.#flag} ;; esac
touch ${this.rebootRequested}
`);
    chmodSync(this.rebootCommand, 0o755);
  }

  /** boot_partition of a section of autoboot.txt. */
  section(name: 'all' | 'tryboot'): number {
    let section = '';
    for (const line of readFileSync(join(this.bootDir, 'autoboot.txt'), 'utf8').split('\n')) {
      if (line.startsWith('[')) section = line;
      else if (section === `[${name}]` && line.startsWith('boot_partition=')) return Number(line.slice('boot_partition='.length));
    }
    throw new Error(`autoboot.txt has no boot_partition in [${name}]`);
  }

  /** Boots as the firmware does; the tryboot flag lasts one boot. */
  powerOn(): { partition: number; tryboot: boolean } {
    const tryboot = existsSync(this.#flag);
    rmSync(this.#flag, { force: true });
    rmSync(this.rebootRequested, { force: true });
    const partition = this.section(tryboot ? 'tryboot' : 'all');
    const cell = (n: number): Buffer => {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(n);
      return b;
    };
    writeFileSync(join(this.dtDir, 'partition'), cell(partition));
    writeFileSync(join(this.dtDir, 'tryboot'), cell(tryboot ? 1 : 0));
    this.boots.push({ partition, tryboot });
    return { partition, tryboot };
  }

  partition(n: number): Buffer {
    return readFileSync(`${this.partitionPrefix}${n}`);
  }

  /** Environment for the hook. */
  get env(): Record<string, string> {
    return {
      FWCAST_BOOT_DIR: this.bootDir, FWCAST_PARTITION_PREFIX: this.partitionPrefix, FWCAST_DT_BOOTLOADER: this.dtDir,
      FWCAST_TRYBOOT_REBOOT: `${this.rebootCommand} "0 tryboot"`, FWCAST_REBOOT: this.rebootCommand,
    };
  }
}
