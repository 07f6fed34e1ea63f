// MCUboot serial recovery client: SMP (mcumgr) over the UART console.
// The device's upload offset is the source of truth: every answer says where
// to continue, lost requests and answers are simply re-sent, and success means
// the device lists the image with the SHA-256 TLV we sent. The one request
// that is not safe to repeat is the first chunk (off 0): each one MCUboot
// receives erases the whole slot again, so it is sent once, its erase waited
// out, and the device asked where it stands before it is ever sent again.
import { createHash } from 'node:crypto';
import type { SerialLink } from './link.js';
import { hex } from '../../protocol/hex.js';
import { SerialOverrunError, SerialTimeoutError } from './link.js';
import {
  asCborMap, ConsoleFrameDecoder, decodeCborMap, decodeSmpPacket, encodeCbor, encodeConsoleFrame, encodeSmpPacket,
  MalformedSmpPacketError, SMP_HEADER_SIZE, SMP_VERSION_2, SmpOp, type CborValue,
} from './smp-frame.js';
import { parseMcubootImage, McubootImageError, type McubootImageInfo } from './mcuboot-image.js';
import { decodeImageStates, type ImageSlotState } from './smp-image-state.js';
import {
  BootloaderError, BootloaderProtocolError, BootloaderRefusedError, BootloaderTimeoutError, BootloaderVerifyError, ImageTooLargeError,
} from './bootloader-error.js';

export { McubootImageError };
export type { ImageSlotState };

/** SMP groups and command ids used here (Zephyr mcumgr numbering). */
export const SMP = {
  GROUP_OS: 0,
  GROUP_IMAGE: 1,
  OS_ECHO: 0,
  OS_RESET: 5,
  OS_MCUMGR_PARAMS: 6,
  IMAGE_STATE: 0,
  IMAGE_UPLOAD: 1,
  IMAGE_SLOT_INFO: 6,
} as const;

const RC_NAMES: Record<number, string> = { 0: 'OK', 1: 'EUNKNOWN', 2: 'ENOMEM', 3: 'EINVAL', 4: 'ETIMEOUT', 5: 'ENOENT', 6: 'EBADSTATE', 7: 'EMSGSIZE', 8: 'ENOTSUP' };
/** The image group's own codes (Zephyr enum img_mgmt_err_code_t) that a test-and-confirm meets. */
export const IMG_MGMT_ERR = {
  UNKNOWN: 1, NO_IMAGE: 3, HASH_NOT_FOUND: 8, NO_FREE_SLOT: 9, INVALID_IMAGE_HEADER_MAGIC: 23, INVALID_HASH: 24,
  IMAGE_ALREADY_PENDING: 28, INVALID_IMAGE_TOO_LARGE: 30, IMAGE_CONFIRMATION_DENIED: 32, IMAGE_SETTING_TEST_TO_ACTIVE_DENIED: 33,
} as const;
const IMG_RC_NAMES: Record<number, string> = Object.fromEntries(Object.entries(IMG_MGMT_ERR).map(([name, code]) => [code, name]));

/** MCUboot's default receive buffer when it cannot tell us (no params command). */
export const DEFAULT_BUF_SIZE = 512;
/** Framing and the per-line decode estimate eat into buf_size: the recorded MCUboot took 1016 of 1024. */
export const BUF_MARGIN = 16;

/**
 * What imgtool reserves at the end of a slot for MCUboot's trailer when it
 * is not told otherwise (swap upgrades, 8-byte writes, 128 sectors: status
 * 128 × 3 × 8, four flags × 8, magic 16). Used only when the device does not
 * report its largest image itself.
 */
export const DEFAULT_TRAILER_SIZE = 128 * 3 * 8 + 4 * 8 + 16;

/**
 * How long the first chunk may take to be answered: MCUboot erases the whole
 * slot before it answers. 100 ms per KiB covers slow external NOR flash;
 * never less than 10 s.
 */
export function defaultEraseWaitMs(slotSize: number | undefined): number {
  return Math.max(10_000, Math.ceil((slotSize ?? 0) / 1024) * 100);
}

/** What the image group's slot info command (newer MCUboot builds) says of image 0. */
export interface SlotInfo {
  /** Size of slot 0, the slot serial recovery writes. */
  slotSize?: number;
  /** Largest image the device accepts: the slot less its trailer. */
  maxImageSize?: number;
}

/** Throws BootloaderRefusedError for an answer carrying a non-zero rc. */
export function checkRc(operation: string, answer: Record<string, unknown>): void {
  const rc = answer.rc ?? 0;
  if (typeof rc !== 'number') throw new BootloaderProtocolError('mcuboot', operation, 'rc is not a number');
  if (rc !== 0) throw new BootloaderRefusedError('mcuboot', operation, `rc ${rc} (${RC_NAMES[rc] ?? 'unknown'})`, rc);
  // SMP version 2 servers (Zephyr) put a command group's own errors in err: {group, rc}.
  if (answer.err === undefined) return;
  const err = asCborMap(answer.err);
  if (!err || typeof err.group !== 'number' || typeof err.rc !== 'number') throw new BootloaderProtocolError('mcuboot', operation, 'err is not {group, rc}');
  if (err.rc !== 0) {
    const name = err.group === SMP.GROUP_IMAGE ? IMG_RC_NAMES[err.rc] : undefined;
    throw new BootloaderRefusedError('mcuboot', operation, `group ${err.group} rc ${err.rc}${name ? ` (${name})` : ''}`, err.rc);
  }
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
   * it cannot decode without a word, and every request sent with more than
   * one try is safe to repeat (uploads past off 0 are keyed by offset). Each
   * try has its own sequence number, so a late answer to one try is never
   * taken for the answer to the next.
   */
  async command(
    operation: string, op: number, group: number, id: number, body: { [key: string]: CborValue },
    options: { timeoutMs?: number; tries?: number } = {},
  ): Promise<Record<string, unknown>> {
    const tries = options.tries ?? this.tries;
    const payload = encodeCbor(body);
    let lastError: unknown;
    for (let attempt = 1; attempt <= tries; attempt++) {
      this.signal?.throwIfAborted();
      if (attempt > 1) this.retries++;
      const seq = this.seq;
      this.seq = (this.seq + 1) & 0xff;
      const frame = encodeConsoleFrame(encodeSmpPacket({ op, version: SMP_VERSION_2, flags: 0, group, seq, id }, payload));
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

  /**
   * Slot 0's size and the largest image, from the image group's slot info
   * command; undefined when the build lacks it (rc 8, as in the recorded one)
   * or answers it in any shape without an images array.
   */
  async slotInfo(): Promise<SlotInfo | undefined> {
    const answer = await this.command('Slot info', SmpOp.Read, SMP.GROUP_IMAGE, SMP.IMAGE_SLOT_INFO, {});
    if (answer.rc === 8 || !Array.isArray(answer.images)) return undefined;
    checkRc('Slot info', answer);
    const image = answer.images.map(asCborMap).find((entry) => entry !== undefined && (entry.image ?? 0) === 0);
    if (!image) return {};
    const info: SlotInfo = {};
    const slots = Array.isArray(image.slots) ? image.slots.map(asCborMap) : [];
    const slot0 = slots.find((entry) => entry?.slot === 0);
    if (typeof slot0?.size === 'number' && slot0.size > 0) info.slotSize = slot0.size;
    if (typeof image.max_image_size === 'number' && image.max_image_size > 0) info.maxImageSize = image.max_image_size;
    return info;
  }

  async imageList(options: { timeoutMs?: number; tries?: number } = {}): Promise<ImageSlotState[]> {
    const answer = await this.command('Image list', SmpOp.Read, SMP.GROUP_IMAGE, SMP.IMAGE_STATE, {}, options);
    checkRc('Image list', answer);
    return decodeImageStates('Image list', answer);
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
      const body = { ...header, data: image.subarray(off, off + size) };
      const next = first
        ? await this.firstChunk(body, size, total, options.eraseTimeoutMs ?? defaultEraseWaitMs(undefined))
        : uploadOffset(operation, await this.command(operation, SmpOp.Write, SMP.GROUP_IMAGE, SMP.IMAGE_UPLOAD, body), total);
      off = next;
      options.onProgress?.(off, total);
      if (off === total) return;
    }
  }

  /**
   * Sends the off 0 chunk, which makes the device erase the whole slot, and
   * returns the device's offset after it. Never re-sent on silence alone: the
   * erase is waited out for `eraseWaitMs`, then the device is asked for its
   * offset; only if it shows the chunk did not land is it sent again.
   */
  private async firstChunk(body: { [key: string]: CborValue }, size: number, total: number, eraseWaitMs: number): Promise<number> {
    const operation = 'Image upload at off 0';
    for (let attempt = 1; attempt <= this.tries; attempt++) {
      if (attempt > 1) this.retries++;
      try {
        const answer = await this.command(operation, SmpOp.Write, SMP.GROUP_IMAGE, SMP.IMAGE_UPLOAD, body, { timeoutMs: eraseWaitMs, tries: 1 });
        if (answer.rc === 3) {
          throw new BootloaderRefusedError('mcuboot', operation, `rc 3 (EINVAL): the device will not start an upload of ${total} bytes; `
            + 'most likely the image is larger than slot 0 (configure slotSize to have that checked before anything is sent)', 3);
        }
        return uploadOffset(operation, answer, total);
      } catch (error) {
        if (!(error instanceof BootloaderTimeoutError)) throw error;
      }
      const where = await this.probeOffset();
      if (where === undefined) {
        throw new BootloaderTimeoutError('mcuboot', operation, `no answer within the erase wait of ${eraseWaitMs} ms, nor to ${this.tries} offset probes after it; `
          + 'if erasing the slot takes longer, raise eraseTimeoutMs');
      }
      // Anything from 1 to our chunk's size is where our first chunk left the device.
      if (where > 0 && where <= size) return where;
      // 0: the chunk never arrived (or the device restarted); more: an older upload's state. Either way ours did not land.
    }
    throw new BootloaderTimeoutError('mcuboot', operation, `the device did not take the first chunk in ${this.tries} tries`);
  }

  /**
   * Asks the device where its upload stands, without changing it: an upload
   * request of no data at offset 1, which MCUboot answers with its own offset
   * (offsets it expects are multiples of the write alignment, or the image's
   * end). Undefined when it does not answer.
   */
  private async probeOffset(): Promise<number | undefined> {
    const operation = 'Upload offset probe';
    try {
      const answer = await this.command(operation, SmpOp.Write, SMP.GROUP_IMAGE, SMP.IMAGE_UPLOAD, { off: 1, data: new Uint8Array(0) });
      checkRc(operation, answer);
      return typeof answer.off === 'number' && answer.off >= 0 ? answer.off : undefined;
    } catch (error) {
      if (error instanceof BootloaderTimeoutError) return undefined;
      throw error;
    }
  }
}

/** The offset an upload answer carries, checked. */
function uploadOffset(operation: string, answer: Record<string, unknown>, total: number): number {
  checkRc(operation, answer);
  const next = answer.off;
  if (typeof next !== 'number' || next < 0 || next > total) {
    throw new BootloaderProtocolError('mcuboot', operation, `device answered off ${String(next)} for an image of ${total} bytes`);
  }
  return next;
}

export interface McubootFlashOptions {
  link: SerialLink;
  image: Uint8Array;
  timeoutMs?: number;
  tries?: number;
  /**
   * Answer timeout for the first chunk, during which the device erases the
   * slot; default 100 ms per KiB of slot 0 (when its size is known), at
   * least 10000 ms.
   */
  eraseTimeoutMs?: number;
  /** Size of slot 0 in bytes, for devices that do not report it (no slot info command). */
  slotSize?: number;
  /** Bytes at the end of the slot kept for MCUboot's trailer, when the device does not report its largest image; default DEFAULT_TRAILER_SIZE. */
  trailerSize?: number;
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

/**
 * The largest image slot 0 takes, from the device's slot info where it
 * offers it, else from configuration; undefined when neither knows.
 */
export function sizeLimit(device: SlotInfo | undefined, options: Pick<McubootFlashOptions, 'slotSize' | 'trailerSize'>): { slot: number; max: number; source: string } | undefined {
  const trailer = options.trailerSize ?? DEFAULT_TRAILER_SIZE;
  if (device?.slotSize !== undefined && device.maxImageSize !== undefined) {
    return { slot: device.slotSize, max: device.maxImageSize, source: 'as the device reports them' };
  }
  if (device?.slotSize !== undefined) {
    return { slot: device.slotSize, max: device.slotSize - trailer, source: `slot size as the device reports it, trailer ${trailer} bytes (trailerSize)` };
  }
  if (options.slotSize !== undefined) {
    return { slot: options.slotSize, max: options.slotSize - trailer, source: `slotSize ${options.slotSize}, trailerSize ${trailer}` };
  }
  return undefined;
}

/** Uploads an MCUboot image over serial recovery and proves it landed. */
export async function flashMcuboot(options: McubootFlashOptions): Promise<McubootFlashResult> {
  const info: McubootImageInfo = parseMcubootImage(options.image);
  // An MCUboot-encrypted image goes to the MCU as is: its hash covers the plaintext, which only the bootloader sees; slot 0 listing that hash after the upload is the proof.
  if (info.encrypted && info.encryptionKeyTlv === undefined) throw new McubootImageError('the image is flagged ENCRYPTED but carries no key TLV (0x30…0x34); MCUboot could not decrypt it');
  if (!info.hashValid && !info.encrypted) throw new McubootImageError('the image SHA-256 TLV does not match its contents; MCUboot would refuse it');
  const client = new McubootClient({ link: options.link, timeoutMs: options.timeoutMs, tries: options.tries, signal: options.signal });
  let sent = false;
  try {
    const before = await client.imageList();
    const bufSize = (await client.bufferSize()) ?? DEFAULT_BUF_SIZE;
    const device = await client.slotInfo();
    const limit = sizeLimit(device, options);
    const length = options.image.length;
    if (limit && length > limit.max) {
      throw new ImageTooLargeError('mcuboot', 'Size check', length > limit.slot
        ? `the image is ${length} bytes, larger than slot 0 of ${limit.slot} bytes (${limit.source}); nothing was sent`
        : `the image is ${length} bytes; slot 0 of ${limit.slot} bytes holds at most ${limit.max} bytes before MCUboot's trailer (${limit.source}), `
          + 'which the image would overlap, and MCUboot would never list it; nothing was sent');
    }
    const sha256 = new Uint8Array(createHash('sha256').update(options.image).digest());
    const eraseTimeoutMs = options.eraseTimeoutMs ?? defaultEraseWaitMs(limit?.slot);
    sent = true;
    await client.upload(options.image, { maxPacket: bufSize - BUF_MARGIN, sha256, eraseTimeoutMs, onProgress: options.onProgress });
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
  } catch (error) {
    // Serial recovery writes slot 0 in place and cannot read it back: once the first chunk is out, the old image may be gone.
    if (error instanceof BootloaderError && !error.deviceState) error.deviceState = sent ? 'erased' : 'untouched';
    throw error;
  }
}
