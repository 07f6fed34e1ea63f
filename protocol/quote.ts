/**
 * Text from outside (a datagram, a manifest, a client) on its way into an
 * error message or a log line. Such text may hold line breaks, terminal escape
 * sequences, bidirectional overrides and megabytes: the one way it reaches a
 * message is quote(), which escapes it and cuts it to a few dozen characters,
 * saying how long it was. The loggers escape and bound whole lines as well
 * (cli/console-log.ts), so a message that forgets quote() still cannot forge a
 * line; quote() keeps the message short and says what was there.
 */
import { hex } from './hex.js';

/**
 * C0 and C1 controls, DEL, the Unicode line and paragraph separators, and the
 * invisible format characters that reorder or hide text on a terminal
 * (bidirectional marks, embeddings, overrides and isolates; zero-width
 * characters; the byte order mark).
 */
// eslint-disable-next-line no-control-regex
export const UNSAFE_CHARACTERS = /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]/g;

/** Each unsafe character as \uXXXX; everything else unchanged. */
export const escapeUnsafe = (s: string): string =>
  s.replace(UNSAFE_CHARACTERS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);

/** How many characters of a string quote() keeps. */
export const QUOTED_CHARACTERS = 64;
/** How many bytes of a byte string quote() shows (twice as many hex digits). */
const QUOTED_BYTES = QUOTED_CHARACTERS / 2;

/** `s` cut to at most `max` UTF-16 units, never between the two halves of a surrogate pair. */
export function cutString(s: string, max: number): string {
  if (s.length <= max) return s;
  const code = s.charCodeAt(max - 1);
  return s.slice(0, code >= 0xd800 && code <= 0xdbff ? max - 1 : max);
}

/**
 * A value from outside, for a message: a string as a JSON string with every
 * unsafe character escaped, a byte string as h'hex', a number as itself,
 * anything else by its kind. Longer than QUOTED_CHARACTERS (or QUOTED_BYTES),
 * it is cut, with "…" and its full length: `"abc…" (65536 characters)`.
 */
export function quote(value: unknown): string {
  if (typeof value === 'string') {
    const head = escapeUnsafe(JSON.stringify(cutString(value, QUOTED_CHARACTERS)));
    return value.length > QUOTED_CHARACTERS ? `${head.slice(0, -1)}…" (${value.length} characters)` : head;
  }
  if (value instanceof Uint8Array) {
    const head = hexCut(value);
    return value.length > QUOTED_BYTES ? `h'${head}' (${value.length} bytes)` : `h'${head}'`;
  }
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') return cutString(String(value), QUOTED_CHARACTERS);
  if (value === null || value === undefined) return String(value);
  if (Array.isArray(value)) return `an array of ${value.length} items`;
  if (value instanceof Map) return `a map of ${value.size} entries`;
  return `a value of type ${typeof value}`;
}

/** Bytes from outside as hex for a log field: all of them up to QUOTED_BYTES, else that many and "…". */
export function hexCut(bytes: Uint8Array): string {
  const head = hex(bytes.subarray(0, QUOTED_BYTES));
  return bytes.length > QUOTED_BYTES ? `${head}…` : head;
}
