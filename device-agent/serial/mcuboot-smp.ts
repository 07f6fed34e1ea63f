// MCUboot serial recovery client: SMP (mcumgr) over the UART console.
// The device's upload offset is the source of truth: every answer says where
// to continue, lost requests and answers are simply re-sent, and success means
// the device lists the image with the SHA-256 TLV we sent.
import { createHash } from 'node:crypto';
import type { SerialLink } from './link.js';
import { hex } from '../../protocol/hex.js';
import { SerialOverrunError, SerialTimeoutError } from './link.js';
import {
  ConsoleFrameDecoder, decodeCborMap, decodeSmpPacket, encodeCbor, encodeConsoleFrame, encodeSmpPacket,
  MalformedSmpPacketError, SMP_HEADER_SIZE, SMP_VERSION_2, SmpOp, type CborValue,
} from './smp-frame.js';
import { parseMcubootImage, McubootImageError, type McubootImageInfo } from './mcuboot-image.js';
import { BootloaderProtocolError, BootloaderRefusedError, BootloaderTimeoutError, BootloaderVerifyError } from './bootloader-error.js';

export { McubootImageError };

/** SMP groups and command ids used here (Zephyr mcumgr numbering). */
export const SMP = {
  GROUP_OS: 0,
  GROUP_IMAGE: 1,
  OS_ECHO: 0,
  OS_RESET: 5,
  OS_MCUMGR_PARAMS: 6,
  IMAGE_STATE: 0,
  IMAGE_UPLOAD: 1,
} as const;

const RC_NAMES: Record<number, string> = { 0: 'OK', 1: 'EUNKNOWN', 2: 'ENOMEM', 3: 'EINVAL', 4: 'ETIMEOUT', 5: 'ENOENT', 6: 'EBADSTATE', 7: 'EMSGSIZE', 8: 'ENOTSUP' };

/** MCUboot's default receive buffer when it cannot tell us (no params command). */
const DEFAULT_BUF_SIZE = 512;
/** Framing and the per-line decode estimate eat into buf_size: the recorded MCUboot took 1016 of 1024. */
const BUF_MARGIN = 16;

/** Throws BootloaderRefusedError for an answer carrying a non-zero rc. */
export function checkRc(operation: string, answer: Record<string, unknown>): void {
  const rc = answer.rc ?? 0;
  if (typeof rc !== 'number') throw new BootloaderProtocolError('mcuboot', operation, 'rc is not a number');
  if (rc !== 0) throw new BootloaderRefusedError('mcuboot', operation, `rc ${rc} (${RC_NAMES[rc] ?? 'unknown'})`, rc);
}

export interface ImageSlotState {
  slot: number;
  version?: string;
  hash?: Uint8Array;
  bootable: boolean;
  pending: boolean;
  confirmed: boolean;
  active: boolean;
  permanent: boolean;
}

export interface McubootClientInit {
  link: SerialLink;
  /** Per-request answer timeout; default 1000 ms (MCUboot answers in ~1-10 ms, erase of a slot takes longer). */
  timeoutMs?: number;
  /** Sends per request before giving up; default 5. */
  tries?: number;
  /** First SMP sequence number (then +1 per request, mod 256); default 0. */
  firstSeq?: number;
  signal?: AbortSignal;
}

export class McubootClient {
  private readonly link: SerialLink;
  private readonly timeoutMs: number;
  private readonly tries: number;
  private readonly signal: AbortSignal | undefined;
  private seq = 0;
  /** Requests re-sent because an answer was lost or unreadable. */
  retries = 0;

  constructor(init: McubootClientInit) {
    this.link = init.link;
    this.timeoutMs = init.timeoutMs ?? 1000;
    this.tries = init.tries ?? 5;
    this.signal = init.signal;
    this.seq = (init.firstSeq ?? 0) & 0xff;
  }

  /**
   * One request/answer exchange. Re-sends on silence: MCUboot drops anything
   * it cannot decode without a word, and every request used here is safe to
   * repeat (uploads are keyed by offset).
   */
  async command(
    operation: string, op: number, group: number, id: number, body: { [key: string]: CborValue },
    options: { timeoutMs?: number; tries?: number } = {},
  ): Promise<Record<string, unknown>> {
    const tries = options.tries ?? this.tries;
    const seq = this.seq;
    this.seq = (this.seq + 1) & 0xff;
    const frame = encodeConsoleFrame(encodeSmpPacket({ op, version: SMP_VERSION_2, flags: 0, group, seq, id }, encodeCbor(body)));
    let lastError: unknown;
    for (let attempt = 1; attempt <= tries; attempt++) {
      this.signal?.throwIfAborted();
      if (attempt > 1) this.retries++;
      await this.link.flushInput();
      await this.link.write(frame);
      try {
        return await this.awaitAnswer(op + 1, group, id, seq, options.timeoutMs ?? this.timeoutMs);
      } catch (error) {
        if (!(error instanceof SerialTimeoutError || error instanceof SerialOverrunError)) throw error;
        lastError = error;
      }
    }
    throw new BootloaderTimeoutError('mcuboot', operation, `no answer from the device after ${tries} tries (${(lastError as Error)?.message ?? lastError})`, { cause: lastError });
  }

  private async awaitAnswer(op: number, group: number, id: number, seq: number, timeoutMs: number): Promise<Record<string, unknown>> {
    const decoder = new ConsoleFrameDecoder();
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const line = await this.link.readUntil(0x0a, { timeoutMs: Math.max(1, deadline - Date.now()), maxBytes: 4096, signal: this.signal });
      const outcome = decoder.pushLine(line.subarray(0, line.length - 1));
      if (outcome.kind !== 'packet') continue;
      let answer;
      try {
        answer = decodeSmpPacket(outcome.packet);
      } catch (error) {
        if (error instanceof MalformedSmpPacketError) continue;
        throw error;
      }
      const h = answer.header;
      // Stale answers to earlier tries carry other sequence numbers: skip them.
      if (h.seq !== seq || h.op !== op || h.group !== group || h.id !== id) continue;
      try {
        return answer.payload.length ? decodeCborMap(answer.payload) : {};
      } catch {
        continue;
      }
    }
  }

  async echo(text: string): Promise<string> {
    const answer = await this.command('Echo', SmpOp.Write, SMP.GROUP_OS, SMP.OS_ECHO, { d: text });
    checkRc('Echo', answer);
    if (typeof answer.r !== 'string') throw new BootloaderProtocolError('mcuboot', 'Echo', 'answer has no text');
    return answer.r;
  }

  /** Receive buffer size, or undefined when the build lacks the params command (rc 8). */
  async bufferSize(): Promise<number | undefined> {
    const answer = await this.command('MCUmgr params', SmpOp.Read, SMP.GROUP_OS, SMP.OS_MCUMGR_PARAMS, {});
    if (answer.rc === 8) return undefined;
    checkRc('MCUmgr params', answer);
    if (typeof answer.buf_size !== 'number') throw new BootloaderProtocolError('mcuboot', 'MCUmgr params', 'no buf_size');
    return answer.buf_size;
  }

  async imageList(): Promise<ImageSlotState[]> {
    const answer = await this.command('Image list', SmpOp.Read, SMP.GROUP_IMAGE, SMP.IMAGE_STATE, {});
    checkRc('Image list', answer);
    if (!Array.isArray(answer.images)) throw new BootloaderProtocolError('mcuboot', 'Image list', 'answer has no images array');
    return answer.images.map((raw: unknown): ImageSlotState => {
      const entry = (raw instanceof Map ? Object.fromEntries(raw) : raw) as Record<string, unknown>;
      return {
        slot: typeof entry.slot === 'number' ? entry.slot : 0,
        ...(typeof entry.version === 'string' ? { version: entry.version } : {}),
        ...(entry.hash instanceof Uint8Array ? { hash: new Uint8Array(entry.hash) } : {}),
        bootable: entry.bootable === true,
        pending: entry.pending === true,
        confirmed: entry.confirmed === true,
        active: entry.active === true,
        permanent: entry.permanent === true,
      };
    });
  }

  /**
   * Asks the device to reboot into the uploaded image. Sent once: a device
   * that already reset cannot answer a repeat, so silence is reported as
   * `false` rather than retried.
   */
  async reset(): Promise<boolean> {
    try {
      const answer = await this.command('Reset', SmpOp.Write, SMP.GROUP_OS, SMP.OS_RESET, {}, { tries: 1 });
      checkRc('Reset', answer);
      return true;
    } catch (error) {
      if (error instanceof BootloaderTimeoutError) return false;
      throw error;
    }
  }

  /**
   * Uploads `image` to image 0. Starts at off 0 (which makes MCUboot erase the
   * slot) and follows the offsets the device returns until off == len.
   */
  async upload(image: Uint8Array, options: { maxPacket: number; sha256: Uint8Array; eraseTimeoutMs?: number; onProgress?: (done: number, total: number) => void }): Promise<void> {
    const total = image.length;
    // A generous bound: every chunk may be refused or lost a few times.
    let budget = 4 * Math.ceil(total / 64) + 16;
    let off = 0;
    for (;;) {
      if (budget-- <= 0) throw new BootloaderProtocolError('mcuboot', `Image upload at off ${off}`, `the device keeps asking for other offsets; giving up`);
      const first = off === 0;
      const header: { [key: string]: CborValue } = first ? { image: 0, len: total, off: 0, sha: options.sha256 } : { off };
      const room = options.maxPacket - SMP_HEADER_SIZE - encodeCbor({ ...header, data: new Uint8Array(0) }).length - 2;
      let size = Math.min(total - off, room);
      // Non-final chunks are cut to the 8-byte write alignment by MCUboot anyway.
      if (off + size < total) size -= size % 8;
      if (size <= 0) throw new BootloaderProtocolError('mcuboot', 'Image upload', `packet limit ${options.maxPacket} leaves no room for data`);
      const operation = `Image upload at off ${off}`;
      // off 0 makes the device erase the slot first, which takes a while on real flash.
      const timing = first ? { timeoutMs: options.eraseTimeoutMs } : {};
      const answer = await this.command(operation, SmpOp.Write, SMP.GROUP_IMAGE, SMP.IMAGE_UPLOAD, { ...header, data: image.subarray(off, off + size) }, timing);
      checkRc(operation, answer);
      const next = answer.off;
      if (typeof next !== 'number' || next < 0 || next > total) {
        throw new BootloaderProtocolError('mcuboot', operation, `device answered off ${String(next)} for an image of ${total} bytes`);
      }
      off = next;
      options.onProgress?.(off, total);
      if (off === total) return;
    }
  }
}

export interface McubootFlashOptions {
  link: SerialLink;
  image: Uint8Array;
  timeoutMs?: number;
  tries?: number;
  /** Answer timeout for the first chunk, during which the device erases the slot; default 10000 ms. */
  eraseTimeoutMs?: number;
  /** Reset the device after a verified upload so it boots the image; default true. */
  reset?: boolean;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

export interface McubootFlashResult {
  before: ImageSlotState[];
  after: ImageSlotState[];
  /** 'hash': slot 0 lists our SHA-256 TLV. 'version': the build reports no hashes, but lists our version (MCUboot lists only images whose hash checks). */
  verifiedBy: 'hash' | 'version';
  /** Whether the device acknowledged the reset (undefined when not asked). */
  resetAcknowledged?: boolean;
  retries: number;
}

/** Uploads an MCUboot image over serial recovery and proves it landed. */
export async function flashMcuboot(options: McubootFlashOptions): Promise<McubootFlashResult> {
  const info: McubootImageInfo = parseMcubootImage(options.image);
  if (!info.hashValid) throw new McubootImageError('the image SHA-256 TLV does not match its contents; MCUboot would refuse it');
  const client = new McubootClient({ link: options.link, timeoutMs: options.timeoutMs, tries: options.tries, signal: options.signal });
  const before = await client.imageList();
  const bufSize = (await client.bufferSize()) ?? DEFAULT_BUF_SIZE;
  const sha256 = new Uint8Array(createHash('sha256').update(options.image).digest());
  await client.upload(options.image, { maxPacket: bufSize - BUF_MARGIN, sha256, eraseTimeoutMs: options.eraseTimeoutMs ?? 10_000, onProgress: options.onProgress });
  const after = await client.imageList();
  const slot0 = after.find((s) => s.slot === 0);
  if (!slot0) throw new BootloaderVerifyError('mcuboot', 'Verify after upload', 'the device lists no image in slot 0 (its hash did not check)');
  let verifiedBy: McubootFlashResult['verifiedBy'];
  if (slot0.hash) {
    if (hex(slot0.hash) !== hex(info.sha256Tlv)) {
      throw new BootloaderVerifyError('mcuboot', 'Verify after upload', `slot 0 hash ${hex(slot0.hash)} is not the image's ${hex(info.sha256Tlv)}`);
    }
    verifiedBy = 'hash';
  } else {
    if (slot0.version !== info.version) throw new BootloaderVerifyError('mcuboot', 'Verify after upload', `slot 0 lists version ${slot0.version}, expected ${info.version}`);
    verifiedBy = 'version';
  }
  const resetAcknowledged = (options.reset ?? true) ? await client.reset() : undefined;
  return { before, after, verifiedBy, retries: client.retries, ...(resetAcknowledged === undefined ? {} : { resetAcknowledged }) };
}
