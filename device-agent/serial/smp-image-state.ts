// The image group's state command (SMP group 1, id 0), as an application's
// SMP server (Zephyr img_mgmt) and MCUboot's serial recovery answer it:
//
//   read  (op 0)  {}                   → {images: [slot…], splitStatus?}
//   write (op 2)  {hash?, confirm?}    → the same answer, after the change
//   slot := {image?, slot, version, hash, bootable?, pending?, confirmed?, active?, permanent?}
//
// A write with a hash and confirm false marks that image for one test boot;
// confirm true without a hash confirms the image that runs. Everything here
// is bytes from a device: each field is checked for its type and size, and
// anything else is a protocol error naming the field.
import { BootloaderProtocolError } from './bootloader-error.js';
import { asCborMap, type CborValue } from './smp-frame.js';

export interface ImageSlotState {
  /** Image number (multi-image builds); 0 when the device leaves it out. */
  image: number;
  slot: number;
  version?: string;
  hash?: Uint8Array;
  bootable: boolean;
  pending: boolean;
  confirmed: boolean;
  active: boolean;
  permanent: boolean;
}

/** MCUboot's image hash TLVs: SHA-256, SHA-384, SHA-512. */
const HASH_LENGTHS = new Set([32, 48, 64]);
/** Two slots per image and at most a few images: more is not a device talking. */
const MAX_ENTRIES = 16;
/** "255.255.65535.4294967295" is the longest version img_mgmt prints. */
const MAX_VERSION_LENGTH = 32;
const FLAGS = ['bootable', 'pending', 'confirmed', 'active', 'permanent'] as const;

function smallInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= 255;
}

/**
 * The slots an image state answer lists. `slot` and `image` default to 0
 * when absent (MCUboot's serial recovery lists slot 0 alone); flags absent
 * mean false (Zephyr's frugal lists leave false flags out).
 */
export function decodeImageStates(operation: string, answer: Record<string, unknown>): ImageSlotState[] {
  const fail = (detail: string): never => { throw new BootloaderProtocolError('mcuboot', operation, detail); };
  if (!Array.isArray(answer.images)) fail('answer has no images array');
  const images = answer.images as unknown[];
  if (images.length > MAX_ENTRIES) fail(`answer lists ${images.length} slots, more than ${MAX_ENTRIES}`);
  const seen = new Set<string>();
  return images.map((raw, index): ImageSlotState => {
    const entry = asCborMap(raw) ?? fail(`images[${index}] is not a map`);
    const image = entry.image ?? 0;
    const slot = entry.slot ?? 0;
    if (!smallInteger(image)) fail(`images[${index}].image is not an image number`);
    if (!smallInteger(slot)) fail(`images[${index}].slot is not a slot number`);
    const key = `${image}/${slot}`;
    if (seen.has(key)) fail(`answer lists image ${image} slot ${slot} twice`);
    seen.add(key);
    const state: ImageSlotState = { image: image as number, slot: slot as number, bootable: false, pending: false, confirmed: false, active: false, permanent: false };
    if (entry.version !== undefined) {
      if (typeof entry.version !== 'string' || entry.version.length > MAX_VERSION_LENGTH) fail(`images[${index}].version is not a version string`);
      state.version = entry.version as string;
    }
    if (entry.hash !== undefined) {
      if (!(entry.hash instanceof Uint8Array) || !HASH_LENGTHS.has(entry.hash.length)) fail(`images[${index}].hash is not a 32, 48 or 64-byte string`);
      state.hash = new Uint8Array(entry.hash as Uint8Array);
    }
    for (const flag of FLAGS) {
      const value = entry[flag];
      if (value !== undefined && typeof value !== 'boolean') fail(`images[${index}].${flag} is not true or false`);
      state[flag] = value === true;
    }
    return state;
  });
}

/**
 * The body of an image state write: `hash` with confirm false marks that
 * image for a test boot; no hash with confirm true confirms the running one.
 */
export function imageStateWrite(request: { hash?: Uint8Array; confirm: boolean }): { [key: string]: CborValue } {
  if (request.hash === undefined) {
    // img_mgmt refuses a test without a hash (IMG_MGMT_ERR_INVALID_HASH): say so here instead.
    if (!request.confirm) throw new RangeError('marking an image for test needs its hash');
    return { confirm: true };
  }
  if (!HASH_LENGTHS.has(request.hash.length)) throw new RangeError(`an image hash is 32, 48 or 64 bytes, not ${request.hash.length}`);
  return { hash: request.hash, confirm: request.confirm };
}

/** The slot of `image` that runs, if the answer says. */
export function activeSlot(states: ImageSlotState[], image = 0): ImageSlotState | undefined {
  return states.find((s) => s.image === image && s.active);
}
