/**
 * The CBOR settings fwcast uses everywhere: maps keep integer keys (Map, not
 * object), no cbor-x record extensions, so the output is plain RFC 8949 CBOR
 * that any decoder (a C receiver included) reads.
 */
import { Decoder, Encoder, Tag } from 'cbor-x';
import { MalformedPacketError } from './errors.js';

const encoder = new Encoder({ useRecords: false, mapsAsObjects: false, tagUint8Array: false, variableMapSize: true });
const decoder = new Decoder({ useRecords: false, mapsAsObjects: false });

export { Tag };

export function encodeCbor(value: unknown): Uint8Array {
  return new Uint8Array(encoder.encode(value));
}

/** Decodes exactly one CBOR item; any decoder failure becomes a MalformedPacketError naming `what`. */
export function decodeCbor(bytes: Uint8Array, what: string): unknown {
  try {
    return decoder.decode(bytes);
  } catch (err) {
    throw new MalformedPacketError(`${what} is not valid CBOR: ${(err as Error).message}`);
  }
}
