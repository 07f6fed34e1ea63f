// SMP over a UART console, as MCUboot's serial recovery (boot_serial) and
// Zephyr's mcumgr "shell" transport frame it:
//
//   line   := marker base64-text 0x0a          (at most 127 bytes)
//   marker := 06 09 (first line of a packet) | 04 14 (each further line)
//   base64 of:  len(u16 BE) | smp-packet | crc16(BE)      len = packet + 2
//   smp-packet := header(8) | CBOR payload
//
//   header (big-endian):
//    0               1               2               3
//   +-----+---+-----+---------------+-------------------------------+
//   | res |ver| op  |     flags     |          payload len          |
//   +-----+---+-----+---------------+-------------------------------+
//   |            group              |      seq      |      id       |
//   +-------------------------------+---------------+---------------+
//
// MCUboot base64-decodes each line on its own, so lines are cut at multiples
// of 4 characters; 124 keeps a line within a 128-byte target line buffer.
import { decode as decodeCborX } from 'cbor-x';

export const FRAME_START = Uint8Array.of(0x06, 0x09);
export const FRAME_CONTINUE = Uint8Array.of(0x04, 0x14);
export const MAX_LINE_BASE64 = 124;

export const SMP_HEADER_SIZE = 8;
export const SMP_VERSION_2 = 1;

export const SmpOp = { Read: 0, ReadResponse: 1, Write: 2, WriteResponse: 3 } as const;

export interface SmpHeader {
  op: number;
  version: number;
  flags: number;
  /** CBOR payload length in bytes. */
  length: number;
  group: number;
  seq: number;
  id: number;
}

export interface SmpPacket { header: SmpHeader; payload: Uint8Array }

/** Bytes that are not a valid SMP packet (too short, length field lies). */
export class MalformedSmpPacketError extends Error {
  override readonly name = 'MalformedSmpPacketError';
}

/** CRC-16/XMODEM: poly 0x1021, init 0, no reflection, no final xor. */
export function crc16Xmodem(data: Uint8Array, crc = 0): number {
  for (const byte of data) {
    crc ^= byte << 8;
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

export function encodeSmpPacket(header: Omit<SmpHeader, 'length'>, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(SMP_HEADER_SIZE + payload.length);
  const view = new DataView(out.buffer);
  out[0] = ((header.version & 0x3) << 3) | (header.op & 0x7);
  out[1] = header.flags & 0xff;
  view.setUint16(2, payload.length);
  view.setUint16(4, header.group);
  out[6] = header.seq & 0xff;
  out[7] = header.id & 0xff;
  out.set(payload, SMP_HEADER_SIZE);
  return out;
}

export function decodeSmpPacket(packet: Uint8Array): SmpPacket {
  if (packet.length < SMP_HEADER_SIZE) throw new MalformedSmpPacketError(`SMP packet of ${packet.length} bytes is shorter than its header`);
  const view = new DataView(packet.buffer, packet.byteOffset, packet.byteLength);
  const header: SmpHeader = {
    op: packet[0]! & 0x7,
    version: (packet[0]! >> 3) & 0x3,
    flags: packet[1]!,
    length: view.getUint16(2),
    group: view.getUint16(4),
    seq: packet[6]!,
    id: packet[7]!,
  };
  if (header.length !== packet.length - SMP_HEADER_SIZE) {
    throw new MalformedSmpPacketError(`SMP header says ${header.length} payload bytes, packet carries ${packet.length - SMP_HEADER_SIZE}`);
  }
  return { header, payload: packet.subarray(SMP_HEADER_SIZE) };
}

/** The console envelope of one SMP packet: marker lines of base64, each ended by '\n'. */
export function encodeConsoleFrame(packet: Uint8Array, maxLineBase64 = MAX_LINE_BASE64): Uint8Array {
  const body = new Uint8Array(2 + packet.length + 2);
  const view = new DataView(body.buffer);
  view.setUint16(0, packet.length + 2);
  body.set(packet, 2);
  view.setUint16(2 + packet.length, crc16Xmodem(packet));
  const text = Buffer.from(body).toString('base64');
  const lines: Buffer[] = [];
  for (let at = 0; at < text.length; at += maxLineBase64) {
    lines.push(Buffer.from(at === 0 ? FRAME_START : FRAME_CONTINUE));
    lines.push(Buffer.from(text.slice(at, at + maxLineBase64) + '\n', 'latin1'));
  }
  return new Uint8Array(Buffer.concat(lines));
}

const BASE64_LINE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

export type LineOutcome =
  | { kind: 'packet'; packet: Uint8Array }
  | { kind: 'partial' }
  | { kind: 'dropped'; reason: string };

export interface ConsoleDecoderInit {
  /** Largest decoded envelope (len + packet + crc) accepted; MCUboot: receive size - 2. */
  maxDecoded?: number;
}

/**
 * Reassembles console lines (without their '\n') into SMP packets. Anything
 * it cannot vouch for is dropped with a reason, never guessed at: MCUboot
 * does the same, silently, so a sender must rely on timeouts and retries.
 */
export class ConsoleFrameDecoder {
  private parts: Buffer[] = [];
  private decoded = 0;
  private active = false;
  private readonly maxDecoded: number;

  constructor(init: ConsoleDecoderInit = {}) {
    this.maxDecoded = init.maxDecoded ?? 0x10000;
  }

  pushLine(line: Uint8Array): LineOutcome {
    const startsPacket = line[0] === FRAME_START[0] && line[1] === FRAME_START[1];
    const continues = line[0] === FRAME_CONTINUE[0] && line[1] === FRAME_CONTINUE[1];
    if (!startsPacket && !continues) return { kind: 'dropped', reason: 'line without a frame marker' };
    if (startsPacket) this.reset(true);
    if (!this.active) return { kind: 'dropped', reason: 'continuation line without a start line' };
    const text = Buffer.from(line.subarray(2)).toString('latin1').replace(/\r$/, '');
    if (!BASE64_LINE.test(text)) return this.drop('line is not whole base64 quanta');
    if (this.decoded + (text.length * 3) / 4 > this.maxDecoded) return this.drop('frame larger than the receive buffer');
    const bytes = Buffer.from(text, 'base64');
    this.parts.push(bytes);
    this.decoded += bytes.length;
    const all = Buffer.concat(this.parts);
    if (all.length < 2) return { kind: 'partial' };
    const length = all.readUInt16BE(0);
    if (all.length - 2 < length) return { kind: 'partial' };
    // Like MCUboot, bytes past the length prefix are ignored rather than fatal.
    this.reset(false);
    const crced = all.subarray(2, 2 + length);
    if (length <= 2 || crc16Xmodem(crced) !== 0) return { kind: 'dropped', reason: 'bad CRC16' };
    return { kind: 'packet', packet: new Uint8Array(crced.subarray(0, length - 2)) };
  }

  private drop(reason: string): LineOutcome {
    this.reset(false);
    return { kind: 'dropped', reason };
  }

  private reset(active: boolean): void {
    this.parts = [];
    this.decoded = 0;
    this.active = active;
  }
}

// --- CBOR ------------------------------------------------------------------
// Requests use definite-length items (as mcumgr clients do); MCUboot answers
// with indefinite-length maps and arrays. One small encoder covers both so the
// bytes on the wire are exactly the ones we mean.

export type CborValue = number | string | boolean | Uint8Array | CborValue[] | { [key: string]: CborValue };

function cborHead(major: number, value: number): number[] {
  const m = major << 5;
  if (value < 24) return [m | value];
  if (value < 0x100) return [m | 24, value];
  if (value < 0x10000) return [m | 25, value >> 8, value & 0xff];
  if (value < 0x100000000) return [m | 26, (value >>> 24) & 0xff, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff];
  throw new RangeError(`CBOR integer ${value} exceeds 32 bits`);
}

export function encodeCbor(value: CborValue, indefinite = false): Uint8Array {
  const out: number[] = [];
  const chunks: Uint8Array[] = [];
  const flush = (): void => { if (out.length) { chunks.push(Uint8Array.from(out)); out.length = 0; } };
  const put = (v: CborValue): void => {
    if (typeof v === 'number') {
      if (!Number.isInteger(v)) throw new TypeError(`CBOR encoder only handles integers, got ${v}`);
      out.push(...(v >= 0 ? cborHead(0, v) : cborHead(1, -1 - v)));
    } else if (typeof v === 'boolean') {
      out.push(v ? 0xf5 : 0xf4);
    } else if (typeof v === 'string') {
      const bytes = Buffer.from(v, 'utf8');
      out.push(...cborHead(3, bytes.length));
      flush();
      chunks.push(bytes);
    } else if (v instanceof Uint8Array) {
      out.push(...cborHead(2, v.length));
      flush();
      chunks.push(v);
    } else if (Array.isArray(v)) {
      out.push(...(indefinite ? [0x9f] : cborHead(4, v.length)));
      for (const item of v) put(item);
      if (indefinite) out.push(0xff);
    } else {
      const entries = Object.entries(v);
      out.push(...(indefinite ? [0xbf] : cborHead(5, entries.length)));
      for (const [key, item] of entries) { put(key); put(item); }
      if (indefinite) out.push(0xff);
    }
  };
  put(value);
  flush();
  return new Uint8Array(Buffer.concat(chunks));
}

/** A decoded CBOR map with text keys as a record, or undefined for anything else (arrays, byte strings, maps keyed otherwise). */
export function asCborMap(raw: unknown): Record<string, unknown> | undefined {
  if (raw instanceof Map) {
    if (![...raw.keys()].every((k) => typeof k === 'string')) return undefined;
    return Object.fromEntries(raw) as Record<string, unknown>;
  }
  return typeof raw === 'object' && raw !== null && !Array.isArray(raw) && !(raw instanceof Uint8Array) ? raw as Record<string, unknown> : undefined;
}

/** Decodes one CBOR map payload; throws MalformedSmpPacketError on anything else. */
export function decodeCborMap(payload: Uint8Array): Record<string, unknown> {
  let value: unknown;
  try {
    value = decodeCborX(Buffer.from(payload));
  } catch (error) {
    throw new MalformedSmpPacketError(`CBOR payload does not decode: ${(error as Error).message}`);
  }
  if (value instanceof Map) value = Object.fromEntries(value);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new MalformedSmpPacketError('CBOR payload is not a map');
  }
  return value as Record<string, unknown>;
}
