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

/** Integers of 2^32 and above as BigInt, so cbor-x writes them as CBOR integers (major type 0), not floats. */
function integersAsBigInt(value: unknown): unknown {
  if (typeof value === 'number') return Number.isInteger(value) && value >= 2 ** 32 ? BigInt(value) : value;
  if (Array.isArray(value)) return value.map(integersAsBigInt);
  if (value instanceof Map) return new Map([...value].map(([k, v]) => [k, integersAsBigInt(v)]));
  if (value instanceof Tag) return new Tag(integersAsBigInt(value.value), value.tag);
  return value;
}

export function encodeCbor(value: unknown): Uint8Array {
  return new Uint8Array(encoder.encode(integersAsBigInt(value)));
}

/** Decodes exactly one CBOR item; any decoder failure becomes a MalformedPacketError naming `what`. */
export function decodeCbor(bytes: Uint8Array, what: string): unknown {
  try {
    return decoder.decode(bytes);
  } catch (err) {
    throw new MalformedPacketError(`${what} is not valid CBOR: ${(err as Error).message}`);
  }
}
