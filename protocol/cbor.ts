/**
 * The CBOR settings fwcast uses everywhere: maps keep integer keys (Map, not
 * object), no cbor-x record extensions, so the output is plain RFC 8949 CBOR
 * that any decoder (a C receiver included) reads.
 *
 * Received CBOR is first checked against fwcast's profile, byte by byte:
 * definite lengths only, nesting at most 8 deep, no duplicate map keys, no
 * tags except one COSE tag (COSE_Sign1's 18, COSE_Sign's 98) on the outermost item. Only then does cbor-x see it,
 * so its extensions (records, bignums, structured clones…) and deep-nesting
 * bombs never run on hostile input.
 */
import { Decoder, Encoder, Tag } from 'cbor-x';
import { MalformedPacketError } from './errors.js';
import { quote } from './quote.js';

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

const MAX_DEPTH = 8;

/** Throws unless `bytes` is exactly one CBOR item within fwcast's profile (see above). */
/** `allowCoseTag`: true for COSE_Sign1's tag 18, or the one tag number allowed on the outermost item. */
export function checkCborProfile(bytes: Uint8Array, what: string, allowCoseTag: boolean | number = false): void {
  const allowedTag = allowCoseTag === true ? 18 : allowCoseTag === false ? -1 : allowCoseTag;
  const fail = (why: string, at: number): never => {
    throw new MalformedPacketError(`${what} is not fwcast CBOR: ${why} at byte ${at}`);
  };
  let at = 0;
  // Open nesting levels: items still expected, and for maps the keys seen (no duplicates, RFC 8949 §5.6).
  const levels: Array<{ remaining: number; keys?: Set<string>; index: number }> = [{ remaining: 1, index: 0 }];
  while (levels.length > 0) {
    const level = levels[levels.length - 1]!;
    if (level.remaining === 0) {
      levels.pop();
      continue;
    }
    level.remaining--;
    const isKey = level.keys !== undefined && level.index++ % 2 === 0;
    if (at >= bytes.length) fail('truncated', at);
    const start = at;
    const major = bytes[at]! >> 5;
    const info = bytes[at++]! & 0x1f;
    let length = info;
    if (info === 24) length = bytes[at++] ?? fail('truncated', start);
    else if (info === 25) { length = ((bytes[at] ?? fail('truncated', start)) << 8) | (bytes[at + 1] ?? fail('truncated', start)); at += 2; }
    else if (info === 26) { if (at + 4 > bytes.length) fail('truncated', start); length = new DataView(bytes.buffer, bytes.byteOffset + at, 4).getUint32(0); at += 4; }
    else if (info === 27) { if (at + 8 > bytes.length) fail('truncated', start); length = Number(new DataView(bytes.buffer, bytes.byteOffset + at, 8).getBigUint64(0)); at += 8; }
    else if (info === 31) fail('indefinite length', start);
    else if (info > 27) fail('reserved additional information', start);
    switch (major) {
      case 0: case 1: case 7:
        break;
      case 2: case 3:
        if (length > bytes.length - at) fail('string longer than the input', start);
        at += length;
        break;
      case 4: case 5: {
        const items = major === 5 ? length * 2 : length;
        // Each item needs at least one byte: refuse impossible counts before looping.
        if (items > bytes.length - at) fail('more items than bytes left', start);
        if (items > 0) {
          if (levels.length > MAX_DEPTH) fail(`nesting deeper than ${MAX_DEPTH}`, start);
          levels.push({ remaining: items, index: 0, ...(major === 5 ? { keys: new Set<string>() } : {}) });
        }
        break;
      }
      case 6:
        if (!(start === 0 && length === allowedTag)) fail(`tag ${length} is not allowed`, start);
        level.remaining++;
        break;
    }
    if (isKey && major !== 4 && major !== 5) {
      const key = Buffer.from(bytes.subarray(start, at)).toString('hex');
      if (level.keys!.has(key)) fail('duplicate map key', start);
      level.keys!.add(key);
    }
  }
  if (at !== bytes.length) fail('trailing bytes after the item', at);
}

/** Decodes exactly one CBOR item; any decoder failure becomes a MalformedPacketError naming `what`. */
export function decodeCbor(bytes: Uint8Array, what: string, allowCoseTag: boolean | number = false): unknown {
  checkCborProfile(bytes, what, allowCoseTag);
  try {
    return decoder.decode(bytes);
  } catch (err) {
    throw new MalformedPacketError(`${what} is not valid CBOR: ${quote((err as Error).message)}`);
  }
}
