// MCUboot image format (bootutil/image.h), enough to know what a device will
// report for an image: its version and its SHA-256 TLV.
//
//   0   ih_magic u32 = 0x96f3b83d     16  ih_flags u32
//   4   ih_load_addr u32              20  ih_ver: major u8, minor u8, revision u16, build u32
//   8   ih_hdr_size u16               28  pad u32
//   10  ih_protect_tlv_size u16
//   12  ih_img_size u32               (all little-endian)
//
// After header + payload: optional protected TLV area (info magic 0x6908),
// then the TLV area (info magic 0x6907): info {magic u16, tlv_tot u16}, then
// entries {type u16, len u16, value}. The SHA-256 TLV (type 0x10) covers the
// header, payload and protected TLVs.
import { createHash } from 'node:crypto';

export const IMAGE_MAGIC = 0x96f3b83d;
export const TLV_INFO_MAGIC = 0x6907;
export const TLV_PROT_INFO_MAGIC = 0x6908;
export const TLV_SHA256 = 0x10;
/** ih_flags: the payload is encrypted (AES-CTR), with AES-128 or AES-256 (bootutil/image.h). */
export const IMAGE_F_ENCRYPTED_AES128 = 0x04;
export const IMAGE_F_ENCRYPTED_AES256 = 0x08;
/** Key TLVs of an encrypted image: RSA-OAEP, AES-KW, ECIES-P256, ECIES-X25519 (SHA-256 and SHA-512). */
export const TLV_ENC_KEYS = [0x30, 0x31, 0x32, 0x33, 0x34] as const;
const HEADER_SIZE = 32;

export interface McubootImageInfo {
  /** As MCUboot lists it: "major.minor.revision", plus ".build" when build is non-zero. */
  version: string;
  /** The SHA-256 TLV value, which is what MCUboot reports as `hash`. */
  sha256Tlv: Uint8Array;
  /**
   * Whether the TLV matches the bytes it covers. For an encrypted image it
   * covers the plaintext, which only the device's bootloader sees: false here.
   */
  hashValid: boolean;
  /** The ENCRYPTED flag is set: MCUboot decrypts the payload itself, with the key in the image's key TLV. */
  encrypted: boolean;
  /** The encrypted image's key TLV type (0x30…0x34), if any. */
  encryptionKeyTlv?: number;
  /** Header + payload + all TLV areas. */
  totalSize: number;
}

export class McubootImageError extends Error {
  override readonly name = 'McubootImageError';
}

/** Parses an MCUboot image; throws McubootImageError naming what is wrong. */
export function parseMcubootImage(bytes: Uint8Array): McubootImageInfo {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < HEADER_SIZE || view.getUint32(0, true) !== IMAGE_MAGIC) {
    throw new McubootImageError('not an MCUboot image (no 0x96f3b83d header magic); sign it with imgtool first');
  }
  const hdrSize = view.getUint16(8, true);
  const protectSize = view.getUint16(10, true);
  const imgSize = view.getUint32(12, true);
  const encrypted = (view.getUint32(16, true) & (IMAGE_F_ENCRYPTED_AES128 | IMAGE_F_ENCRYPTED_AES256)) !== 0;
  const version = formatVersion(view.getUint8(20), view.getUint8(21), view.getUint16(22, true), view.getUint32(24, true));
  const covered = hdrSize + imgSize + protectSize;
  let at = hdrSize + imgSize;
  if (protectSize > 0) {
    if (at + 4 > bytes.length || view.getUint16(at, true) !== TLV_PROT_INFO_MAGIC) throw new McubootImageError('protected TLV area missing');
    at += protectSize;
  }
  if (at + 4 > bytes.length || view.getUint16(at, true) !== TLV_INFO_MAGIC) throw new McubootImageError(`no TLV area at offset ${at}`);
  const end = at + view.getUint16(at + 2, true);
  if (end > bytes.length) throw new McubootImageError(`TLV area runs past the end of the image (${end} > ${bytes.length})`);
  let sha256Tlv: Uint8Array | undefined;
  let encryptionKeyTlv: number | undefined;
  for (let p = at + 4; p + 4 <= end; ) {
    const type = view.getUint16(p, true);
    const len = view.getUint16(p + 2, true);
    if (type === TLV_SHA256 && len === 32) sha256Tlv = bytes.slice(p + 4, p + 4 + len);
    if ((TLV_ENC_KEYS as readonly number[]).includes(type)) encryptionKeyTlv = type;
    p += 4 + len;
  }
  if (!sha256Tlv) throw new McubootImageError('image has no SHA-256 TLV');
  const actual = createHash('sha256').update(bytes.subarray(0, covered)).digest();
  return { version, sha256Tlv, hashValid: actual.equals(sha256Tlv), totalSize: end, encrypted, ...(encryptionKeyTlv !== undefined ? { encryptionKeyTlv } : {}) };
}

function formatVersion(major: number, minor: number, revision: number, build: number): string {
  return build ? `${major}.${minor}.${revision}.${build}` : `${major}.${minor}.${revision}`;
}

export interface ImageVersion { major: number; minor: number; revision: number; build?: number }

/**
 * Wraps a payload as a hash-only (unsigned) MCUboot image, as
 * `imgtool sign` does without a key: for tests and emulator fixtures.
 */
export function buildMcubootImage(payload: Uint8Array, version: ImageVersion): Uint8Array {
  const tlvSize = 4 + 4 + 32;
  const out = new Uint8Array(HEADER_SIZE + payload.length + tlvSize);
  const view = new DataView(out.buffer);
  view.setUint32(0, IMAGE_MAGIC, true);
  view.setUint16(8, HEADER_SIZE, true);
  view.setUint32(12, payload.length, true);
  view.setUint8(20, version.major);
  view.setUint8(21, version.minor);
  view.setUint16(22, version.revision, true);
  view.setUint32(24, version.build ?? 0, true);
  out.set(payload, HEADER_SIZE);
  const at = HEADER_SIZE + payload.length;
  view.setUint16(at, TLV_INFO_MAGIC, true);
  view.setUint16(at + 2, tlvSize, true);
  view.setUint16(at + 4, TLV_SHA256, true);
  view.setUint16(at + 6, 32, true);
  out.set(createHash('sha256').update(out.subarray(0, at)).digest(), at + 8);
  return out;
}
