/**
 * COSE_Sign1 (RFC 9052 §4.2) with EdDSA (RFC 9053 §2.2, alg −8):
 *
 *   COSE_Sign1 = #6.18([ protected: bstr .cbor {1: -8, 4: kid},
 *                        unprotected: {},
 *                        payload: bstr,
 *                        signature: bstr .size 64 ])
 *   Sig_structure = ["Signature1", protected, external_aad = h'', payload]
 *
 * Verification rebuilds Sig_structure from the protected and payload bytes
 * exactly as received; nothing is re-encoded from decoded values.
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

export interface CoseSign1 {
  protectedBytes: Uint8Array;
  alg: number;
  kid: Uint8Array;
  payload: Uint8Array;
  signature: Uint8Array;
}

function sigStructure(protectedBytes: Uint8Array, payload: Uint8Array): Uint8Array {
  return encodeCbor(['Signature1', protectedBytes, new Uint8Array(0), payload]);
}

const protectedHeader = (kid: Uint8Array): Uint8Array => encodeCbor(new Map<number, unknown>([[HDR_ALG, ALG_EDDSA], [HDR_KID, kid]]));
const assemble = (protectedBytes: Uint8Array, payload: Uint8Array, signature: Uint8Array): Uint8Array =>
  encodeCbor(new Tag([protectedBytes, new Map(), payload, signature], COSE_SIGN1_TAG));

export function signCoseSign1(payload: Uint8Array, seed: Uint8Array): Uint8Array {
  const protectedBytes = protectedHeader(keyId(ed25519.publicKeyFromSeed(seed)));
  return assemble(protectedBytes, payload, ed25519.sign(sigStructure(protectedBytes, payload), seed));
}

/** The same COSE_Sign1, signed through a Signer (a key file, an HSM, a command): byte-identical for the same key. */
export async function signCoseSign1With(payload: Uint8Array, signer: Signer): Promise<Uint8Array> {
  const protectedBytes = protectedHeader(signer.kid);
  return assemble(protectedBytes, payload, await signer.sign(sigStructure(protectedBytes, payload)));
}

const isBytes = (v: unknown): v is Uint8Array => v instanceof Uint8Array;

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
  // Nothing unsigned may ride along: fwcast puts every header in the protected map.
  if (unprotected.size > 0) throw new MalformedPacketError('COSE_Sign1 unprotected header must be empty');
  const headers = decodeCbor(protectedBytes, 'COSE protected header');
  if (!(headers instanceof Map)) throw new MalformedPacketError('COSE protected header is not a map');
  const alg = headers.get(HDR_ALG);
  const kid = headers.get(HDR_KID);
  if (alg !== ALG_EDDSA) throw new InvalidSignatureError(`COSE algorithm ${quote(alg)} is not EdDSA (${ALG_EDDSA})`);
  if (!isBytes(kid)) throw new InvalidSignatureError('COSE protected header has no key id (kid)');
  return { protectedBytes, alg, kid, payload, signature };
}

export function verifyCoseSign1(message: CoseSign1, publicKey: Uint8Array): boolean {
  return ed25519.verify(message.signature, sigStructure(message.protectedBytes, message.payload), publicKey);
}
