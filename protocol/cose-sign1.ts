/**
 * COSE_Sign1 (RFC 9052 §4.2) with EdDSA (RFC 9053 §2.2, alg −8):
 *
 *   COSE_Sign1 = #6.18([ protected: bstr .cbor {1: -8, 4: kid},
 *                        unprotected: {},
 *                        payload: bstr,
 *                        signature: bstr .size 64 ])
 *   Sig_structure = ["Signature1", protected, external_aad = h'', payload]
 *
 * A release that a delegation with a threshold above 1 must authorize carries
 * co-signatures: full countersignatures, version 2 (RFC 9338), in the
 * otherwise empty unprotected header, each by another key over the payload
 * and the first signature:
 *
 *   unprotected = {11: [+ [protected: bstr .cbor {1: -8, 4: kid}, unprotected: {}, signature: bstr]]}
 *   Countersign_structure = ["CounterSignatureV2", body_protected, sign_protected, h'', payload, [signature]]
 *
 * Verification rebuilds every signed structure from the bytes exactly as
 * received; nothing is re-encoded from decoded values.
 */
import { decodeCbor, encodeCbor, Tag } from './cbor.js';
import * as ed25519 from './ed25519.js';
import { InvalidSignatureError, MalformedPacketError } from './errors.js';
import { keyId } from './keys.js';
import { quote } from './quote.js';
import type { Signer } from './signer.js';

export const COSE_SIGN1_TAG = 18;
export const ALG_EDDSA = -8;
const HDR_ALG = 1;
const HDR_KID = 4;
/** RFC 9338: Countersignature version 2. */
const HDR_COUNTERSIGNATURE_V2 = 11;
/** Co-signatures a manifest may carry: more than any delegation's threshold needs (root.ts MAX_DELEGATION_KEYS). */
export const MAX_COSIGNATURES = 15;

/** One co-signature: a full countersignature (RFC 9338) by another key. */
export interface Countersignature {
  protectedBytes: Uint8Array;
  kid: Uint8Array;
  signature: Uint8Array;
}

export interface CoseSign1 {
  protectedBytes: Uint8Array;
  alg: number;
  kid: Uint8Array;
  payload: Uint8Array;
  signature: Uint8Array;
  /** Co-signatures, in the order they were added (none for a release signed once). */
  countersignatures: Countersignature[];
}

function sigStructure(protectedBytes: Uint8Array, payload: Uint8Array): Uint8Array {
  return encodeCbor(['Signature1', protectedBytes, new Uint8Array(0), payload]);
}

function countersignStructure(target: Pick<CoseSign1, 'protectedBytes' | 'payload' | 'signature'>, signProtected: Uint8Array): Uint8Array {
  return encodeCbor(['CounterSignatureV2', target.protectedBytes, signProtected, new Uint8Array(0), target.payload, [target.signature]]);
}

const protectedHeader = (kid: Uint8Array): Uint8Array => encodeCbor(new Map<number, unknown>([[HDR_ALG, ALG_EDDSA], [HDR_KID, kid]]));
const assemble = (protectedBytes: Uint8Array, payload: Uint8Array, signature: Uint8Array, countersignatures: readonly Countersignature[] = []): Uint8Array =>
  encodeCbor(new Tag([
    protectedBytes,
    countersignatures.length === 0 ? new Map() : new Map([[HDR_COUNTERSIGNATURE_V2, countersignatures.map((c) => [c.protectedBytes, new Map(), c.signature])]]),
    payload,
    signature,
  ], COSE_SIGN1_TAG));

export function signCoseSign1(payload: Uint8Array, seed: Uint8Array): Uint8Array {
  const protectedBytes = protectedHeader(keyId(ed25519.publicKeyFromSeed(seed)));
  return assemble(protectedBytes, payload, ed25519.sign(sigStructure(protectedBytes, payload), seed));
}

/** The same COSE_Sign1, signed through a Signer (a key file, an HSM, a command): byte-identical for the same key. */
export async function signCoseSign1With(payload: Uint8Array, signer: Signer): Promise<Uint8Array> {
  const protectedBytes = protectedHeader(signer.kid);
  return assemble(protectedBytes, payload, await signer.sign(sigStructure(protectedBytes, payload)));
}

/**
 * Adds a co-signature through `signer` to a signed manifest; returns the new
 * COSE_Sign1 (its bytes, hence the release id, change). Refuses a key that
 * signed it already.
 */
export async function addCountersignature(signed: Uint8Array, signer: Signer): Promise<Uint8Array> {
  const message = decodeCoseSign1(signed);
  const kids = [message.kid, ...message.countersignatures.map((c) => c.kid)];
  if (kids.some((k) => Buffer.compare(k, signer.kid) === 0)) throw new InvalidSignatureError(`key ${hexOf(signer.kid)} has signed this manifest already`);
  if (message.countersignatures.length >= MAX_COSIGNATURES) throw new InvalidSignatureError(`a manifest carries at most ${MAX_COSIGNATURES} co-signatures`);
  const protectedBytes = protectedHeader(signer.kid);
  const signature = await signer.sign(countersignStructure(message, protectedBytes));
  return assemble(message.protectedBytes, message.payload, message.signature, [...message.countersignatures, { protectedBytes, kid: signer.kid, signature }]);
}

const hexOf = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const isBytes = (v: unknown): v is Uint8Array => v instanceof Uint8Array;

/** The EdDSA protected header of the signature (`of` empty) or of a co-signature: its key id. */
function signerHeader(protectedBytes: Uint8Array, of: '' | 'co-signature '): Uint8Array {
  const headers = decodeCbor(protectedBytes, `COSE ${of}protected header`);
  if (!(headers instanceof Map)) throw new MalformedPacketError(`COSE ${of}protected header is not a map`);
  const alg = headers.get(HDR_ALG);
  const kid = headers.get(HDR_KID);
  if (alg !== ALG_EDDSA) throw new InvalidSignatureError(`COSE ${of}algorithm ${quote(alg)} is not EdDSA (${ALG_EDDSA})`);
  if (!isBytes(kid)) throw new InvalidSignatureError(`COSE ${of}protected header has no key id (kid)`);
  return kid;
}

/** The unprotected header: empty, or co-signatures only (they are signed themselves). */
function decodeCountersignatures(unprotected: Map<unknown, unknown>): Countersignature[] {
  if (unprotected.size === 0) return [];
  if (unprotected.size > 1 || !unprotected.has(HDR_COUNTERSIGNATURE_V2)) throw new MalformedPacketError('COSE_Sign1 unprotected header may carry co-signatures (label 11) only');
  const value = unprotected.get(HDR_COUNTERSIGNATURE_V2);
  if (!Array.isArray(value) || value.length === 0) throw new MalformedPacketError('COSE co-signatures (label 11) must be a non-empty array');
  // RFC 9338 allows one countersignature or an array of them.
  const list = (isBytes(value[0]) ? [value] : value) as unknown[];
  if (list.length > MAX_COSIGNATURES) throw new MalformedPacketError(`a manifest carries at most ${MAX_COSIGNATURES} co-signatures, this one ${list.length}`);
  return list.map((c) => {
    if (!Array.isArray(c) || c.length !== 3) throw new MalformedPacketError('a COSE co-signature is not a 3-element array');
    const [protectedBytes, inner, signature] = c as unknown[];
    if (!isBytes(protectedBytes) || !isBytes(signature) || !(inner instanceof Map)) throw new MalformedPacketError('COSE co-signature fields have the wrong types');
    if (inner.size > 0) throw new MalformedPacketError('a COSE co-signature\'s unprotected header must be empty');
    return { protectedBytes, kid: signerHeader(protectedBytes, 'co-signature '), signature };
  });
}

/** Parses the COSE_Sign1 structure (tagged or untagged). Does not verify. */
export function decodeCoseSign1(bytes: Uint8Array): CoseSign1 {
  let item = decodeCbor(bytes, 'signed manifest', true);
  if (item instanceof Tag) {
    if (item.tag !== COSE_SIGN1_TAG) throw new MalformedPacketError(`signed manifest has CBOR tag ${item.tag}, expected ${COSE_SIGN1_TAG} (COSE_Sign1)`);
    item = item.value;
  }
  if (!Array.isArray(item) || item.length !== 4) throw new MalformedPacketError('signed manifest is not a 4-element COSE_Sign1 array');
  const [protectedBytes, unprotected, payload, signature] = item as unknown[];
  if (!isBytes(protectedBytes) || !isBytes(payload) || !isBytes(signature) || !(unprotected instanceof Map)) {
    throw new MalformedPacketError('COSE_Sign1 fields have the wrong types');
  }
  const kid = signerHeader(protectedBytes, '');
  // Nothing unsigned may ride along: fwcast puts every header in the protected map; co-signatures are signed themselves.
  const countersignatures = decodeCountersignatures(unprotected);
  return { protectedBytes, alg: ALG_EDDSA, kid, payload, signature, countersignatures };
}

export function verifyCoseSign1(message: CoseSign1, publicKey: Uint8Array): boolean {
  return ed25519.verify(message.signature, sigStructure(message.protectedBytes, message.payload), publicKey);
}

export function verifyCountersignature(message: CoseSign1, countersignature: Countersignature, publicKey: Uint8Array): boolean {
  return ed25519.verify(countersignature.signature, countersignStructure(message, countersignature.protectedBytes), publicKey);
}
