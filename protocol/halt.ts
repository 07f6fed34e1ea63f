/**
 * A halt: the publisher's signed statement that one release must not be
 * installed by any device that has not installed it yet (SPEC §17.5). It is a
 * COSE_Sign1 (cose-sign1.ts) over a small CBOR map, signed with a key that may
 * sign that model's releases, and travels whole in one HALT datagram (type 5)
 * on the model's channel:
 *
 *   halt = { 1: 1 (format), 2: model, 3: release id (8 bytes), 4: issued (Unix seconds) }
 *
 * It names exactly one release id: it can stop nothing else.
 */
import { decodeCbor, encodeCbor } from './cbor.js';
import { decodeCoseSign1, signCoseSign1With, verifyCoseSign1 } from './cose-sign1.js';
import { InvalidHaltError, InvalidSignatureError, LimitExceededError, UnknownKeyError } from './errors.js';
import { hex } from './hex.js';
import type { PublicKey } from './keys.js';
import { checkModelName } from './manifest.js';
import { MAX_HALT_BYTES, RELEASE_ID_SIZE } from './packet.js';
import { hexCut, quote } from './quote.js';
import type { Signer } from './signer.js';

export const HALT_FORMAT = 1;
/** Largest signed halt accepted: one is about 140 bytes with a 64-character model name. */
export const MAX_HALT_SIZE = MAX_HALT_BYTES;
const H = { format: 1, model: 2, release: 3, issued: 4 } as const;

export interface Halt {
  model: string;
  releaseId: Uint8Array;
  /** Unix seconds. */
  issued: number;
}

export interface VerifiedHalt {
  halt: Halt;
  kid: Uint8Array;
  signed: Uint8Array;
}

export function encodeHalt(h: Halt): Uint8Array {
  if (h.releaseId.length !== RELEASE_ID_SIZE) throw new RangeError(`release id must be ${RELEASE_ID_SIZE} bytes`);
  return encodeCbor(new Map<number, unknown>([[H.format, HALT_FORMAT], [H.model, checkModelName(h.model)], [H.release, h.releaseId], [H.issued, h.issued]]));
}

export function decodeHalt(payload: Uint8Array): Halt {
  const map = decodeCbor(payload, 'halt');
  if (!(map instanceof Map)) throw new InvalidHaltError('halt is not a CBOR map');
  if (map.size !== 4) throw new InvalidHaltError(`halt must have exactly keys 1-4, has ${map.size} keys`);
  if (map.get(H.format) !== HALT_FORMAT) throw new InvalidHaltError(`halt format ${quote(map.get(H.format))} is not supported (expected ${HALT_FORMAT})`);
  const model = map.get(H.model);
  if (typeof model !== 'string') throw new InvalidHaltError('halt model must be a text string');
  try {
    checkModelName(model);
  } catch (err) {
    throw new InvalidHaltError((err as Error).message);
  }
  const releaseId = map.get(H.release);
  if (!(releaseId instanceof Uint8Array) || releaseId.length !== RELEASE_ID_SIZE) throw new InvalidHaltError(`halt release id must be ${RELEASE_ID_SIZE} bytes`);
  const issued = map.get(H.issued);
  if (typeof issued !== 'number' || !Number.isSafeInteger(issued) || issued < 0) throw new InvalidHaltError(`halt issue time must be Unix seconds, got ${quote(issued)}`);
  return { model, releaseId: new Uint8Array(releaseId), issued };
}

export function signHaltWith(h: Halt, signer: Signer): Promise<Uint8Array> {
  return signCoseSign1With(encodeHalt(h), signer);
}

/**
 * Checks a signed halt against trusted keys: size first, then the key id and
 * the signature over the bytes as received, and only then its payload. Whether
 * the key may halt this model's releases under a root is the caller's
 * (protocol/root.ts authorizeRelease, as for manifests).
 */
export function openSignedHalt(signed: Uint8Array, trusted: readonly PublicKey[]): VerifiedHalt {
  if (signed.length > MAX_HALT_SIZE) throw new LimitExceededError(`signed halt of ${signed.length} bytes exceeds the limit of ${MAX_HALT_SIZE}`);
  const cose = decodeCoseSign1(signed);
  const kid = hexCut(cose.kid);
  const key = trusted.find((k) => Buffer.compare(k.kid, cose.kid) === 0);
  if (!key) throw new UnknownKeyError(`halt is signed by key ${kid}, which is not trusted`, { kid });
  if (!verifyCoseSign1(cose, key.publicKey)) throw new InvalidSignatureError(`halt signature does not verify with trusted key ${kid}`);
  return { halt: decodeHalt(cose.payload), kid: cose.kid, signed };
}

/** One line for logs and `fwcast inspect`. */
export function describeHalt(h: Halt): string {
  return `halt of ${h.model} release ${hex(h.releaseId)}, issued ${new Date(h.issued * 1000).toISOString()}`;
}
