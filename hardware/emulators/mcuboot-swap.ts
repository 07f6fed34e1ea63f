// MCUboot's swap upgrade, as its trailers drive it (docs/design.md "Image
// trailer" and "Image trailers", bootutil_public.c): two slots of one image,
// each ending in a trailer whose last bytes are, with 8-byte alignment,
//
//   … | swap size | swap info | copy done | image ok | magic (16) |   ← slot end
//        −48         −40         −32         −24        −16
//
// At boot the trailers give the swap type: the secondary's magic good and
// image-ok unset is TEST, image-ok set is PERM; the primary's magic good,
// image-ok unset and copy-done set (a test image nobody confirmed) is
// REVERT. TEST and PERM swap the secondary in, REVERT swaps it back out.
// The swap itself is one step here; MCUboot's status area (resume after a
// power cut mid-swap) is not modelled.
import { parseMcubootImage, type McubootImageInfo } from '../../device-agent/serial/mcuboot-image.js';
import type { FlashMemory } from './flash-file.js';

/** boot_img_magic as it sits in flash with 8-byte alignment. */
export const BOOT_MAGIC = Uint8Array.from([0x77, 0xc2, 0x95, 0xf3, 0x60, 0xd2, 0xef, 0x7f, 0x35, 0x52, 0x50, 0x0f, 0x2c, 0xb6, 0x79, 0x80]);
const MAX_ALIGN = 8;
/** Offsets of the trailer fields from the slot's end. */
export const TRAILER = { magic: 16, imageOk: 16 + MAX_ALIGN, copyDone: 16 + 2 * MAX_ALIGN, swapInfo: 16 + 3 * MAX_ALIGN } as const;
export const BOOT_FLAG_SET = 0x01;
/** swap_info's low nibble (BOOT_SWAP_TYPE_*). */
export const SWAP_TYPE = { none: 1, test: 2, perm: 3, revert: 4, fail: 5 } as const;
export type SwapType = keyof typeof SWAP_TYPE;

export type Magic = 'good' | 'unset' | 'bad';
export type Flag = 'set' | 'unset' | 'bad';

export interface TrailerState { magic: Magic; imageOk: Flag; copyDone: Flag }

/** The primary and secondary slots of image 0, back to back in `flash`. */
export class McubootSwapSlots {
  constructor(readonly flash: FlashMemory, readonly slotSize: number, readonly trailerSize: number) {
    if (flash.size < 2 * slotSize) throw new RangeError(`flash of ${flash.size} bytes cannot hold two slots of ${slotSize}`);
    if (trailerSize < TRAILER.swapInfo + MAX_ALIGN || trailerSize >= slotSize) throw new RangeError(`trailer of ${trailerSize} bytes does not fit the slot`);
  }

  slot(n: 0 | 1): Uint8Array {
    return this.flash.bytes.subarray(n * this.slotSize, (n + 1) * this.slotSize);
  }

  private end(n: 0 | 1): number { return (n + 1) * this.slotSize; }

  trailer(n: 0 | 1): TrailerState {
    const bytes = this.flash.bytes;
    const at = (field: keyof typeof TRAILER): number => this.end(n) - TRAILER[field];
    const magicBytes = bytes.subarray(at('magic'), at('magic') + BOOT_MAGIC.length);
    const magic: Magic = magicBytes.every((b) => b === 0xff) ? 'unset' : Buffer.from(magicBytes).equals(BOOT_MAGIC) ? 'good' : 'bad';
    const flag = (v: number): Flag => (v === 0xff ? 'unset' : v === BOOT_FLAG_SET ? 'set' : 'bad');
    return { magic, imageOk: flag(bytes[at('imageOk')]!), copyDone: flag(bytes[at('copyDone')]!) };
  }

  /** boot_swap_type: what the next boot does. */
  swapType(): SwapType {
    const primary = this.trailer(0);
    const secondary = this.trailer(1);
    if (secondary.magic === 'good' && secondary.imageOk === 'unset') return 'test';
    if (secondary.magic === 'good' && secondary.imageOk === 'set') return 'perm';
    if (primary.magic === 'good' && secondary.magic === 'unset' && primary.imageOk === 'unset' && primary.copyDone === 'set') return 'revert';
    return 'none';
  }

  /** A flag is written as one aligned write: the value, then erased bytes. */
  private writeField(n: 0 | 1, field: keyof typeof TRAILER, value: Uint8Array): void {
    const padded = new Uint8Array(field === 'magic' ? BOOT_MAGIC.length : MAX_ALIGN).fill(0xff);
    padded.set(value);
    this.flash.write(this.end(n) - TRAILER[field], padded);
  }

  private eraseTrailer(n: 0 | 1): void {
    this.flash.erase(this.end(n) - this.trailerSize, this.trailerSize);
  }

  /** boot_set_pending: the application asks for the secondary image at the next boot, once (test) or for good. */
  setPending(permanent: boolean): void {
    const secondary = this.trailer(1);
    if (secondary.magic === 'bad') throw new Error('secondary trailer magic is corrupt');
    if (secondary.magic === 'good') return;
    this.writeField(1, 'magic', BOOT_MAGIC);
    this.writeField(1, 'swapInfo', Uint8Array.of(permanent ? SWAP_TYPE.perm : SWAP_TYPE.test));
    if (permanent) this.writeField(1, 'imageOk', Uint8Array.of(BOOT_FLAG_SET));
  }

  /** boot_set_confirmed: the running (primary) image keeps itself. */
  setConfirmed(): void {
    const primary = this.trailer(0);
    if (primary.magic === 'bad') throw new Error('primary trailer magic is corrupt');
    // Never swapped in (magic unset or copy not done): it is permanent already.
    if (primary.magic === 'unset' || primary.copyDone !== 'set' || primary.imageOk !== 'unset') return;
    this.writeField(0, 'imageOk', Uint8Array.of(BOOT_FLAG_SET));
  }

  /** The image in slot `n` as MCUboot validates it (hash checks, clear of the trailer), or undefined. */
  image(n: 0 | 1): McubootImageInfo | undefined {
    try {
      const info = parseMcubootImage(this.slot(n));
      return info.hashValid && info.totalSize <= this.slotSize - this.trailerSize ? info : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * One boot: swap as the trailers say, then the image MCUboot jumps to
   * (undefined: no valid image, MCUboot halts). A secondary image that does
   * not validate is erased instead of swapped in ('fail').
   */
  boot(): { swap: SwapType; image?: McubootImageInfo } {
    let swap: SwapType = this.swapType();
    if ((swap === 'test' || swap === 'perm') && !this.image(1)) {
      this.flash.erase(this.slotSize, this.slotSize);
      swap = 'fail';
    } else if (swap === 'test' || swap === 'perm' || swap === 'revert') {
      this.exchange(swap);
    }
    const image = this.image(0);
    return image ? { swap, image } : { swap };
  }

  /** The swap: image areas exchanged, then fresh trailers (secondary erased, so a later boot finds nothing pending). */
  private exchange(swap: 'test' | 'perm' | 'revert'): void {
    const area = this.slotSize - this.trailerSize;
    const primary = new Uint8Array(this.slot(0).subarray(0, area));
    const secondary = new Uint8Array(this.slot(1).subarray(0, area));
    this.flash.write(0, secondary);
    this.flash.write(this.slotSize, primary);
    this.eraseTrailer(0);
    this.eraseTrailer(1);
    this.writeField(0, 'magic', BOOT_MAGIC);
    this.writeField(0, 'swapInfo', Uint8Array.of(SWAP_TYPE[swap]));
    this.writeField(0, 'copyDone', Uint8Array.of(BOOT_FLAG_SET));
    // A permanent image and an image swapped back in are kept; a test image waits for the application's confirm.
    if (swap !== 'test') this.writeField(0, 'imageOk', Uint8Array.of(BOOT_FLAG_SET));
  }
}
