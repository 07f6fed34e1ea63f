// A microcontroller running an SMP-capable application (Zephyr mcumgr over
// the UART console) on top of MCUboot's swap: the application answers the
// image group (state read and write, upload to the secondary slot) and the
// OS group (echo, reset, params) as Zephyr's img_mgmt and os_mgmt do with an
// SMP version 2 client: group errors in `err: {group, rc}`, every flag
// listed. A reset runs McubootSwapSlots.boot(), so a test image nobody
// confirmed is swapped back out at the next reset.
//
// Images can misbehave on purpose, by a marker in their bytes:
//   HANG_MARKER     the application never answers (a hung main loop); with
//                   watchdogMs the emulated watchdog resets the device
//   NO_ECHO_MARKER  it answers the image group but not echo (unhealthy)
//   SELF_CONFIRM_MARKER  it confirms itself as soon as it starts, as many
//                   applications do (boot_write_img_confirmed at boot)
//
//   npx tsx hardware/emulators/smp-app-emulator.ts --port /tmp/dev --flash /tmp/slots.bin [--slot-size N] [--watchdog-ms MS]
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { openSerialPort, type SerialLink } from '../../device-agent/serial/link.js';
import { ConsoleFrameDecoder, type CborValue, type SmpHeader } from '../../device-agent/serial/smp-frame.js';
import { parseMcubootImage, type McubootImageInfo } from '../../device-agent/serial/mcuboot-image.js';
import { IMG_MGMT_ERR } from '../../device-agent/serial/mcuboot-smp.js';
import { answerSmpLine, MGMT_ERR, serveLines } from './smp-emulator.js';
import { McubootSwapSlots, type SwapType } from './mcuboot-swap.js';
import { FlashFile, type FlashMemory } from './flash-file.js';
import { hex } from '../../protocol/hex.js';

export const HANG_MARKER = 'FWCAST-EMULATOR:HANG';
export const NO_ECHO_MARKER = 'FWCAST-EMULATOR:NO-ECHO';
export const SELF_CONFIRM_MARKER = 'FWCAST-EMULATOR:SELF-CONFIRM';

export interface SmpAppEmulatorInit {
  /** Both slots back to back: primary at 0, secondary at slotSize. */
  flash: FlashMemory;
  slotSize: number;
  /** The end of each slot kept for MCUboot's trailer; default 4096. */
  trailerSize?: number;
  /** SMP receive buffer (reported by the params command); default 1024. */
  receiveSize?: number;
  /** How long after answering a reset the device resets (Zephyr: CONFIG_MCUMGR_GRP_OS_RESET_MS, 250). */
  resetDelayMs?: number;
  /** From reset to the application answering (MCUboot's swap and the application's start); default 100. */
  bootMs?: number;
  /** A hung application stops feeding the watchdog, which resets the device this long after boot; default: no watchdog. */
  watchdogMs?: number;
  /** After every boot: what MCUboot did and what runs. */
  onBoot?: (boot: BootRecord) => void;
}

export interface BootRecord {
  swap: SwapType;
  /** What runs: the application, a hung one, or nothing (no valid image: MCUboot halts). */
  running: 'app' | 'hung' | 'halted';
  version?: string;
  hash?: Uint8Array;
}

type Payload = { [key: string]: CborValue };

const contains = (bytes: Uint8Array, marker: string): boolean => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).includes(marker, 0, 'latin1');

export class SmpAppEmulator {
  readonly slots: McubootSwapSlots;
  readonly boots: BootRecord[] = [];
  private readonly decoder: ConsoleFrameDecoder;
  private readonly receiveSize: number;
  private readonly resetDelayMs: number;
  private readonly bootMs: number;
  private readonly watchdogMs: number | undefined;
  private readonly onBoot: ((boot: BootRecord) => void) | undefined;
  private state: 'app' | 'hung' | 'halted' | 'resetting' = 'halted';
  private running: McubootImageInfo | undefined;
  private timers = new Set<NodeJS.Timeout>();
  private upload: { size: number; off: number } | undefined;

  constructor(init: SmpAppEmulatorInit) {
    this.slots = new McubootSwapSlots(init.flash, init.slotSize, init.trailerSize ?? 4096);
    this.receiveSize = init.receiveSize ?? 1024;
    this.resetDelayMs = init.resetDelayMs ?? 250;
    this.bootMs = init.bootMs ?? 100;
    this.watchdogMs = init.watchdogMs;
    this.onBoot = init.onBoot;
    this.decoder = new ConsoleFrameDecoder({ maxDecoded: this.receiveSize - 2 });
  }

  /** Power on: MCUboot runs, then the application. */
  powerOn(): BootRecord {
    const { swap, image } = this.slots.boot();
    this.running = image;
    this.upload = undefined;
    const slot0 = this.slots.slot(0);
    const code = image ? slot0.subarray(0, image.totalSize) : new Uint8Array(0);
    const running: BootRecord['running'] = !image ? 'halted' : contains(code, HANG_MARKER) ? 'hung' : 'app';
    this.state = running;
    if (running === 'app' && contains(code, SELF_CONFIRM_MARKER)) this.slots.setConfirmed();
    const record: BootRecord = { swap, running, ...(image ? { version: image.version, hash: image.sha256Tlv } : {}) };
    this.boots.push(record);
    if (running === 'hung' && this.watchdogMs !== undefined) this.later(this.watchdogMs, () => this.reset(0));
    this.onBoot?.(record);
    return record;
  }

  /** A reset `afterMs` from now; the device is deaf from then until it has booted. */
  reset(afterMs = this.resetDelayMs): void {
    this.later(afterMs, () => {
      this.state = 'resetting';
      this.later(this.bootMs, () => this.powerOn());
    });
  }

  private later(ms: number, fn: () => void): void {
    const timer = setTimeout(() => { this.timers.delete(timer); fn(); }, ms);
    this.timers.add(timer);
  }

  /** Stops pending resets and the watchdog (the emulator's end, not the device's). */
  close(): void {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
  }

  /** One console line in; the answer out, or nothing (a device not running an answering application stays silent). */
  receiveLine(line: Uint8Array): Uint8Array | undefined {
    if (this.state !== 'app') return undefined;
    let reset = false;
    const response = answerSmpLine(this.decoder, line, (header, body) => {
      const answer = this.dispatch(header, body);
      reset = answer.reset ?? false;
      return answer.payload;
    });
    if (reset) this.reset();
    return response;
  }

  private dispatch(header: SmpHeader, body: Record<string, unknown>): { payload: Payload; reset?: boolean } {
    const rc = (code: number): { payload: Payload } => ({ payload: { rc: code } });
    if (header.group === 0) {
      switch (header.id) {
        case 0:
          if (this.running && contains(this.slots.slot(0).subarray(0, this.running.totalSize), NO_ECHO_MARKER)) return rc(MGMT_ERR.ENOTSUP);
          return typeof body.d === 'string' ? { payload: { r: body.d } } : rc(MGMT_ERR.EINVAL);
        case 5: return { payload: {}, reset: true };
        case 6: return { payload: { buf_size: this.receiveSize, buf_count: 4 } };
        default: return rc(MGMT_ERR.ENOTSUP);
      }
    }
    if (header.group === 1) {
      if (header.id === 0) return { payload: header.op === 0 ? this.stateRead() : this.stateWrite(body) };
      if (header.id === 1 && header.op === 2) return { payload: this.uploadChunk(body) };
    }
    return rc(MGMT_ERR.ENOTSUP);
  }

  private imageErr(code: number): Payload {
    return { err: { group: 1, rc: code } };
  }

  /** img_mgmt's next boot slot and type from MCUboot's swap type. */
  private nextBoot(): { slot: 0 | 1; type: 'normal' | 'test' | 'revert' } {
    const swap = this.slots.swapType();
    if (swap === 'test') return { slot: 1, type: 'test' };
    if (swap === 'perm') return { slot: 1, type: 'normal' };
    if (swap === 'revert') return { slot: 1, type: 'revert' };
    return { slot: 0, type: 'normal' };
  }

  /** What img_mgmt_read_info finds in a slot: a header and a hash TLV (it does not check the hash). */
  private slotImage(n: 0 | 1): McubootImageInfo | undefined {
    try { return parseMcubootImage(this.slots.slot(n)); } catch { return undefined; }
  }

  private stateRead(): Payload {
    const next = this.nextBoot();
    const flags = [
      { active: true, confirmed: next.type !== 'revert', pending: false, permanent: false },
      next.slot === 0 ? { active: false, confirmed: false, pending: false, permanent: false }
        : { active: false, confirmed: next.type === 'revert', pending: next.type !== 'revert', permanent: next.type === 'normal' },
    ];
    const images: CborValue[] = [];
    for (const n of [0, 1] as const) {
      const info = this.slotImage(n);
      if (!info) continue;
      images.push({ slot: n, version: info.version, hash: info.sha256Tlv, bootable: true, ...flags[n]! });
    }
    return { images, splitStatus: 0 };
  }

  /** img_mgmt_state_write and img_mgmt_set_next_boot_slot, for image 0 running from the primary slot. */
  private stateWrite(body: Record<string, unknown>): Payload {
    const confirm = body.confirm ?? false;
    if (typeof confirm !== 'boolean' || (body.hash !== undefined && !(body.hash instanceof Uint8Array))) return { rc: MGMT_ERR.EINVAL };
    let slot: 0 | 1;
    if (body.hash === undefined || (body.hash as Uint8Array).length === 0) {
      if (!confirm) return this.imageErr(IMG_MGMT_ERR.INVALID_HASH);
      slot = 0;
    } else {
      const hash = Buffer.from(body.hash as Uint8Array);
      if (hash.length !== 32) return this.imageErr(IMG_MGMT_ERR.INVALID_HASH);
      const found = ([0, 1] as const).find((n) => { const info = this.slotImage(n); return info !== undefined && hash.equals(info.sha256Tlv); });
      if (found === undefined) return this.imageErr(IMG_MGMT_ERR.HASH_NOT_FOUND);
      slot = found;
    }
    const next = this.nextBoot();
    if (!confirm && slot === 0) return this.imageErr(IMG_MGMT_ERR.IMAGE_SETTING_TEST_TO_ACTIVE_DENIED);
    const unchanged = (next.type === 'test' && !confirm && slot === next.slot)
      || (next.type === 'normal' && confirm && slot === next.slot)
      || (next.type === 'revert' && confirm && slot === next.slot);
    if (!unchanged) {
      if (next.type === 'test') return this.imageErr(IMG_MGMT_ERR.IMAGE_ALREADY_PENDING);
      if (next.type === 'normal' && ((slot === 0 && next.slot !== 0) || (!confirm && slot !== 0 && slot === next.slot))) return this.imageErr(IMG_MGMT_ERR.IMAGE_ALREADY_PENDING);
      if (next.type === 'revert' && !confirm) return this.imageErr(IMG_MGMT_ERR.IMAGE_ALREADY_PENDING);
      try {
        if (slot === 0) this.slots.setConfirmed();
        else this.slots.setPending(confirm);
      } catch {
        return this.imageErr(IMG_MGMT_ERR.UNKNOWN);
      }
    }
    return this.stateRead();
  }

  /** img_mgmt upload into the secondary slot: off 0 (with len) erases it, later chunks must follow the device's offset. */
  private uploadChunk(body: Record<string, unknown>): Payload {
    const { off, len, data } = body;
    if (typeof off !== 'number' || !(data instanceof Uint8Array)) return { rc: MGMT_ERR.EINVAL };
    if (off === 0) {
      if (typeof len !== 'number' || len <= 0) return { rc: MGMT_ERR.EINVAL };
      // The secondary slot holds an image MCUboot will act on: img_mgmt refuses to overwrite it.
      if (this.nextBoot().slot === 1) return this.imageErr(IMG_MGMT_ERR.NO_FREE_SLOT);
      if (len > this.slots.slotSize - this.slots.trailerSize) return this.imageErr(IMG_MGMT_ERR.INVALID_IMAGE_TOO_LARGE);
      if (data.length >= 4 && new DataView(data.buffer, data.byteOffset).getUint32(0, true) !== 0x96f3b83d) return this.imageErr(IMG_MGMT_ERR.INVALID_IMAGE_HEADER_MAGIC);
      this.slots.flash.erase(this.slots.slotSize, this.slots.slotSize);
      this.upload = { size: len, off: 0 };
    } else if (!this.upload || off !== this.upload.off) {
      return { off: this.upload?.off ?? 0 };
    }
    const upload = this.upload!;
    if (upload.off + data.length > upload.size) return { rc: MGMT_ERR.EINVAL };
    const last = upload.off + data.length === upload.size;
    const accepted = last ? data.length : data.length - (data.length % 8);
    this.slots.flash.write(this.slots.slotSize + upload.off, data.subarray(0, accepted));
    upload.off += accepted;
    return { off: upload.off };
  }

  /** Serves lines from `link` until it closes. */
  serve(link: SerialLink): Promise<void> {
    return serveLines(link, this.receiveSize + 1, async (line) => {
      const response = this.receiveLine(line);
      if (response) await link.write(response);
    });
  }
}

/** What a boot looks like in the emulator's log (tests match these lines). */
export function describeBoot(boot: BootRecord): string {
  const what = boot.running === 'halted' ? 'no valid image, MCUboot halts' : `slot 0 runs ${boot.version} ${hex(boot.hash!)}${boot.running === 'hung' ? ', application hung' : ''}`;
  return `boot: swap ${boot.swap}, ${what}`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string' },
      flash: { type: 'string' },
      'slot-size': { type: 'string', default: String(128 * 1024) },
      'trailer-size': { type: 'string', default: '4096' },
      'watchdog-ms': { type: 'string' },
      'reset-delay-ms': { type: 'string', default: '250' },
      'boot-ms': { type: 'string', default: '100' },
    },
  });
  if (!values.port || !values.flash) {
    process.stderr.write('usage: smp-app-emulator --port PTY --flash FILE [--slot-size N] [--trailer-size N] [--watchdog-ms MS] [--reset-delay-ms MS] [--boot-ms MS]\n');
    process.exit(2);
  }
  const slotSize = Number(values['slot-size']);
  const flash = new FlashFile(values.flash, 2 * slotSize);
  const link = await openSerialPort({ path: values.port });
  const emulator = new SmpAppEmulator({
    flash, slotSize,
    trailerSize: Number(values['trailer-size']),
    resetDelayMs: Number(values['reset-delay-ms']),
    bootMs: Number(values['boot-ms']),
    ...(values['watchdog-ms'] ? { watchdogMs: Number(values['watchdog-ms']) } : {}),
    onBoot: (boot) => process.stderr.write(`smp-app-emulator: ${describeBoot(boot)}\n`),
  });
  process.on('SIGTERM', () => { emulator.close(); void link.close().then(() => process.exit(0)); });
  emulator.powerOn();
  process.stderr.write(`smp-app-emulator: serving an MCUboot application (SMP, swap) on ${values.port}\n`);
  await emulator.serve(link);
  emulator.close();
  flash.close();
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error: unknown) => { process.stderr.write(`smp-app-emulator: ${(error as Error).message}\n`); process.exit(1); });
}
