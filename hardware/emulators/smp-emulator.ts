// MCUboot serial recovery, device side, answering as upstream boot_serial.c
// does byte for byte (checked against the recorded transcript in
// shared/context): indefinite-length CBOR maps, rc codes, silent drops of
// anything it cannot decode, upload offset semantics, 8-byte write alignment.
// (A device running an SMP application on MCUboot's swap, for test-and-confirm:
// smp-app-emulator.ts, which shares this file's line handling.)
//
//   npx tsx hardware/emulators/smp-emulator.ts --port /tmp/dev --flash /tmp/slot0.bin
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { openSerialPort, SerialClosedError, SerialOverrunError, SerialTimeoutError, type SerialLink } from '../../device-agent/serial/link.js';
import {
  ConsoleFrameDecoder, decodeCborMap, decodeSmpPacket, encodeCbor, encodeConsoleFrame, encodeSmpPacket, SmpOp,
  type CborValue, type SmpHeader,
} from '../../device-agent/serial/smp-frame.js';
import { createDecipheriv } from 'node:crypto';
import { parseMcubootImage } from '../../device-agent/serial/mcuboot-image.js';
import { FlashFile, memoryFlash, type FlashMemory } from './flash-file.js';

/** MCUboot / mcumgr return codes seen on the wire. */
export const MGMT_ERR = { OK: 0, ENOMEM: 2, EINVAL: 3, ENOTSUP: 8 } as const;

export interface SmpEmulatorInit {
  /** Slot 0 contents; default 256 KiB of erased flash in memory only. */
  flash?: FlashMemory;
  /** MCUBOOT_SERIAL_MAX_RECEIVE_SIZE; default 1024 as in the transcript. */
  receiveSize?: number;
  /** Largest response CBOR payload; 212 in the recorded build. */
  responseBufferSize?: number;
  writeAlignment?: number;
  /** Build options: session B has both, session A neither. */
  reportImageHash?: boolean;
  mcumgrParams?: boolean;
  /** Called after the reset response is sent. */
  onReset?: () => void;
  /** How long erasing the slot takes (answering the off 0 chunk waits for it); default 0. */
  eraseMs?: number;
  /** Answer the image group's slot info command (id 6), as newer MCUboot builds can; default false, as recorded. */
  slotInfo?: boolean;
  /** Bytes at the end of the slot that MCUboot keeps for its image trailer; default one 4 KiB sector. */
  trailerSize?: number;
  /**
   * An MCUboot built with encrypted images (MCUBOOT_ENC_IMAGES): the AES key
   * it would unwrap from an uploaded image's key TLV with its own private key
   * (the emulator skips that unwrap). Once an upload flagged ENCRYPTED is
   * complete, the payload is decrypted in place (AES-CTR, counter from 0), as
   * serial recovery does (boot_serial_encryption.c).
   */
  imageKey?: Uint8Array;
}

/**
 * One console line in, the framed answer out: the request is decoded as
 * MCUboot and Zephyr's SMP transport do (anything that does not make a
 * packet, or is not a read or write, is dropped without a word) and
 * `dispatch`'s payload is sent back as the matching response.
 */
export function answerSmpLine(
  decoder: ConsoleFrameDecoder, line: Uint8Array, dispatch: (header: SmpHeader, body: Record<string, unknown>) => { [key: string]: CborValue },
): Uint8Array | undefined {
  const outcome = decoder.pushLine(line);
  if (outcome.kind !== 'packet') return undefined;
  let packet;
  try { packet = decodeSmpPacket(outcome.packet); } catch { return undefined; }
  const { header } = packet;
  if (header.op !== SmpOp.Read && header.op !== SmpOp.Write) return undefined;
  let body: Record<string, unknown>;
  try { body = header.length ? decodeCborMap(packet.payload) : {}; } catch { body = {}; }
  const payload = dispatch(header, body);
  const response = encodeSmpPacket(
    { op: header.op + 1, version: header.version, flags: 0, group: header.group, seq: header.seq, id: header.id },
    encodeCbor(payload, true),
  );
  return encodeConsoleFrame(response);
}

export class SmpEmulator {
  /** Slot 0, the primary slot serial recovery writes directly. */
  readonly flash: FlashMemory;
  private readonly slotSize: number;
  private readonly receiveSize: number;
  private readonly responseBufferSize: number;
  private readonly alignment: number;
  private readonly reportImageHash: boolean;
  private readonly mcumgrParams: boolean;
  private readonly onReset: (() => void) | undefined;
  private readonly eraseMs: number;
  private readonly slotInfo: boolean;
  private readonly trailerSize: number;
  private readonly imageKey: Uint8Array | undefined;
  /** What the last complete upload wrote, before any in-place decryption: the bytes that reached the device. */
  uploaded: Uint8Array | undefined;
  private uploadSize = 0;
  private uploadOffset = 0;
  readonly decoder: ConsoleFrameDecoder;
  /** Packets answered, for tests and the CLI log. */
  answered = 0;
  /** Upload requests whose off was not the one expected (answered with the expected off). */
  offsetMismatches = 0;
  /** Whole-slot erases done (one per off 0 chunk received). */
  erases = 0;

  constructor(init: SmpEmulatorInit = {}) {
    this.flash = init.flash ?? memoryFlash(256 * 1024);
    this.slotSize = this.flash.size;
    this.receiveSize = init.receiveSize ?? 1024;
    this.responseBufferSize = init.responseBufferSize ?? 212;
    this.alignment = init.writeAlignment ?? 8;
    this.reportImageHash = init.reportImageHash ?? true;
    this.mcumgrParams = init.mcumgrParams ?? true;
    this.onReset = init.onReset;
    this.eraseMs = init.eraseMs ?? 0;
    this.slotInfo = init.slotInfo ?? false;
    this.trailerSize = init.trailerSize ?? 4096;
    this.imageKey = init.imageKey;
    // The decoder's size check reproduces the recorded cut-off (1016-byte packets).
    this.decoder = new ConsoleFrameDecoder({ maxDecoded: this.receiveSize - 2 });
  }

  /** One console line (without '\n') in; the response bytes on the line out, or nothing. */
  receiveLine(line: Uint8Array): { response?: Uint8Array; reset?: boolean; busyMs?: number } {
    const erasesBefore = this.erases;
    let reset: boolean | undefined;
    const response = answerSmpLine(this.decoder, line, (header, body) => {
      const answer = this.dispatch(header, body);
      reset = answer.reset;
      return answer.payload;
    });
    if (!response) return {};
    this.answered++;
    const busyMs = this.erases > erasesBefore ? this.eraseMs : 0;
    return { response, reset, ...(busyMs ? { busyMs } : {}) };
  }

  private dispatch(header: SmpHeader, body: Record<string, unknown>): { payload: { [key: string]: CborValue }; reset?: boolean } {
    const rc = (code: number): { payload: { rc: number } } => ({ payload: { rc: code } });
    if (header.group === 0) {
      switch (header.id) {
        case 0: {
          if (typeof body.d !== 'string') return rc(MGMT_ERR.EINVAL);
          const payload = { r: body.d };
          return encodeCbor(payload, true).length > this.responseBufferSize ? rc(MGMT_ERR.ENOMEM) : { payload };
        }
        case 1: return rc(MGMT_ERR.OK);
        case 5:
          this.uploadSize = 0;
          this.uploadOffset = 0;
          return { payload: { rc: MGMT_ERR.OK }, reset: true };
        case 6:
          return this.mcumgrParams ? { payload: { buf_size: this.receiveSize, buf_count: 1 } } : rc(MGMT_ERR.ENOTSUP);
        default: return rc(MGMT_ERR.ENOTSUP);
      }
    }
    if (header.group === 1) {
      if (header.id === 0) return { payload: { images: this.listImages() } };
      if (header.id === 1) return this.upload(body);
      if (header.id === 6 && this.slotInfo) return { payload: this.slotInfoPayload() };
    }
    return rc(MGMT_ERR.ENOTSUP);
  }

  /** What upstream's bs_slot_info answers: image 0's two slots, the one serial recovery uploads to, and the largest image. */
  private slotInfoPayload(): { [key: string]: CborValue } {
    return {
      images: [{
        image: 0,
        slots: [{ slot: 0, size: this.slotSize, upload_image_id: 0 }, { slot: 1, size: this.slotSize }],
        max_image_size: this.slotSize - this.trailerSize,
      }],
    };
  }

  private listImages(): CborValue[] {
    let info;
    try { info = parseMcubootImage(this.flash.bytes); } catch { return []; }
    // An encrypted image it could not decrypt is listed by no one.
    if (info.encrypted && !this.imageKey) return [];
    // MCUboot lists only an image whose hash checks; booleans only when true.
    // An image reaching into the trailer does not check either.
    if (!info.hashValid || info.totalSize > this.slotSize - this.trailerSize) return [];
    const entry: { [key: string]: CborValue } = { bootable: true, confirmed: true, active: true, slot: 0 };
    if (this.reportImageHash) entry.hash = info.sha256Tlv;
    entry.version = info.version;
    return [entry];
  }

  private upload(body: Record<string, unknown>): { payload: { [key: string]: CborValue } } {
    const { off, len, data } = body;
    if (typeof off !== 'number' || !(data instanceof Uint8Array)) return { payload: { rc: MGMT_ERR.EINVAL } };
    if (off === 0) {
      if (typeof len !== 'number' || len > this.slotSize) return { payload: { rc: MGMT_ERR.EINVAL } };
      this.uploadSize = len;
      this.uploadOffset = 0;
      this.flash.erase(0, this.slotSize);
      this.erases++;
    } else if (off !== this.uploadOffset) {
      // The device's offset is the truth: tell the client where to continue.
      this.offsetMismatches++;
      return { payload: { rc: MGMT_ERR.OK, off: this.uploadOffset } };
    }
    if (this.uploadOffset + data.length > this.uploadSize) return { payload: { rc: MGMT_ERR.EINVAL } };
    const last = this.uploadOffset + data.length === this.uploadSize;
    const accepted = last ? data.length : data.length - (data.length % this.alignment);
    this.flash.write(this.uploadOffset, data.subarray(0, accepted));
    this.uploadOffset += accepted;
    if (last) this.uploadComplete();
    return { payload: { rc: MGMT_ERR.OK, off: this.uploadOffset } };
  }

  private uploadComplete(): void {
    this.uploaded = this.flash.bytes.slice(0, this.uploadSize);
    let info;
    try { info = parseMcubootImage(this.uploaded); } catch { return; }
    if (!info.encrypted || !this.imageKey) return;
    const view = new DataView(this.uploaded.buffer);
    const hdrSize = view.getUint16(8, true);
    const imgSize = view.getUint32(12, true);
    const cipher = createDecipheriv(this.imageKey.length === 32 ? 'aes-256-ctr' : 'aes-128-ctr', this.imageKey, new Uint8Array(16));
    this.flash.write(hdrSize, new Uint8Array(cipher.update(this.uploaded.subarray(hdrSize, hdrSize + imgSize))));
  }

  /** Serves lines from `link` until it closes. */
  serve(link: SerialLink): Promise<void> {
    return serveLines(link, this.receiveSize + 1, async (line) => {
      const { response, reset, busyMs } = this.receiveLine(line);
      // A device erasing flash reads nothing meanwhile: what arrives waits in the line's buffer.
      if (busyMs) await new Promise((resolve) => setTimeout(resolve, busyMs));
      if (response) await link.write(response);
      if (reset) this.onReset?.();
    });
  }
}

/** Hands each line from `link` (without its '\n') to `handle` until the link closes; quiet or overlong lines are skipped. */
export async function serveLines(link: SerialLink, maxBytes: number, handle: (line: Uint8Array) => Promise<void>): Promise<void> {
  for (;;) {
    let line: Uint8Array;
    try {
      line = await link.readUntil(0x0a, { timeoutMs: 60_000, maxBytes });
    } catch (error) {
      if (error instanceof SerialTimeoutError || error instanceof SerialOverrunError) continue;
      if (error instanceof SerialClosedError) return;
      throw error;
    }
    await handle(line.subarray(0, line.length - 1));
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string' },
      flash: { type: 'string' },
      'slot-size': { type: 'string', default: String(256 * 1024) },
      'no-hash': { type: 'boolean', default: false },
      'no-params': { type: 'boolean', default: false },
      'erase-ms': { type: 'string', default: '0' },
      'slot-info': { type: 'boolean', default: false },
      'trailer-size': { type: 'string', default: '4096' },
    },
  });
  if (!values.port || !values.flash) {
    process.stderr.write('usage: smp-emulator --port PTY --flash FILE [--slot-size N] [--no-hash] [--no-params] [--erase-ms MS] [--slot-info] [--trailer-size N]\n');
    process.exit(2);
  }
  const flash = new FlashFile(values.flash, Number(values['slot-size']));
  const link = await openSerialPort({ path: values.port });
  const emulator = new SmpEmulator({
    flash,
    reportImageHash: !values['no-hash'],
    mcumgrParams: !values['no-params'],
    eraseMs: Number(values['erase-ms']),
    slotInfo: values['slot-info'],
    trailerSize: Number(values['trailer-size']),
    onReset: () => process.stderr.write('smp-emulator: reset\n'),
  });
  process.on('SIGTERM', () => { void link.close().then(() => process.exit(0)); });
  process.stderr.write(`smp-emulator: serving MCUboot serial recovery on ${values.port}\n`);
  await emulator.serve(link);
  flash.close();
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error: unknown) => { process.stderr.write(`smp-emulator: ${(error as Error).message}\n`); process.exit(1); });
}
