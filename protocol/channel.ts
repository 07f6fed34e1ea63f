/**
 * Channels: a channel name maps to an IPv6 multicast group exactly as
 * Librecast does, so a Librecast program that joins the same name lands on the
 * same group.
 *
 *   digest = BLAKE3(utf8(name) || 00 00 00 00)       (32 bytes)
 *   group  = ff 1e || digest[2..15]                  (16 bytes)
 *
 * ff1e: multicast, flags 1 (transient), scope e (global). The four zero bytes
 * are Librecast's channel flags field.
 */
import { blake3 } from '@noble/hashes/blake3.js';
import { ConfigError } from './errors.js';
import { quote } from './quote.js';

/** Librecast's default port, used for every fwcast channel unless configured. */
export const DEFAULT_PORT = 4242;

/** The channel a device model's releases are published on. */
export function modelChannelName(model: string): string {
  return `fw/${model}`;
}

export function channelGroupBytes(name: string): Uint8Array {
  const utf8 = new TextEncoder().encode(name);
  const input = new Uint8Array(utf8.length + 4);
  input.set(utf8);
  const digest = blake3(input);
  const group = new Uint8Array(16);
  group[0] = 0xff;
  group[1] = 0x1e;
  group.set(digest.subarray(2, 16), 2);
  return group;
}

/** Formats 16 address bytes in RFC 5952 form (lower case, longest zero run compressed). */
export function formatIPv6(bytes: Uint8Array): string {
  if (bytes.length !== 16) throw new RangeError('an IPv6 address is 16 bytes');
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push((bytes[i]! << 8) | bytes[i + 1]!);
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = words.map((w) => w.toString(16));
  if (bestStart < 0) return hex.join(':');
  const head = hex.slice(0, bestStart).join(':');
  const tail = hex.slice(bestStart + bestLen).join(':');
  return `${head}::${tail}`;
}

export function channelGroup(name: string): string {
  return formatIPv6(channelGroupBytes(name));
}

/** Validates a configured group override: it must be an IPv6 multicast address. */
export function checkMulticastGroup(group: string): string {
  if (!/^ff[0-9a-f]{2}:[0-9a-f:]*$/i.test(group)) {
    throw new ConfigError(`${quote(group)} is not an IPv6 multicast address (ffXX:...)`);
  }
  return group.toLowerCase();
}
