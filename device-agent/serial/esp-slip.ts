// The ESP ROM loader's wire format (Espressif, esptool "Serial Protocol"):
// SLIP frames (RFC 1055 style) around little-endian command packets.
//
//   frame    := C0 escaped(packet) C0          C0 → DB DC, DB → DB DD
//   request  := 00 op size(u16) checksum(u32) data[size]
//   response := 01 op size(u16) value(u32)    data[size]
//   data of a response ends in status bytes: failed(1) error(1) [2 reserved on
//   the ESP32-family ROMs]; failed ≠ 0 means `error` holds a ROM error code.
//
// The checksum is 0xEF XOR every data byte written (only *_DATA commands
// carry it). Pure codecs: bytes in, values out.

export const SLIP_END = 0xc0;
const SLIP_ESC = 0xdb;
const SLIP_ESC_END = 0xdc;
const SLIP_ESC_ESC = 0xdd;

export const ESP_OP = {
  FLASH_BEGIN: 0x02,
  FLASH_DATA: 0x03,
  FLASH_END: 0x04,
  MEM_BEGIN: 0x05,
  MEM_END: 0x06,
  MEM_DATA: 0x07,
  SYNC: 0x08,
  WRITE_REG: 0x09,
  READ_REG: 0x0a,
  SPI_SET_PARAMS: 0x0b,
  SPI_ATTACH: 0x0d,
  CHANGE_BAUDRATE: 0x0f,
  FLASH_DEFL_BEGIN: 0x10,
  FLASH_DEFL_DATA: 0x11,
  FLASH_DEFL_END: 0x12,
  SPI_FLASH_MD5: 0x13,
  GET_SECURITY_INFO: 0x14,
  /** Flasher stub only (esptool's stub, not the ROM). */
  ERASE_FLASH: 0xd0,
  ERASE_REGION: 0xd1,
  READ_FLASH: 0xd2,
} as const;

/** ROM error codes (the byte after a non-zero "failed" status byte). */
export const ESP_ROM_ERRORS: Record<number, string> = {
  0x05: 'invalid message',
  0x06: 'failed to act',
  0x07: 'bad data checksum',
  0x08: 'flash write error',
  0x09: 'flash read error',
  0x0a: 'read length error',
  0x0b: 'deflate error',
};

export const ESP_CHECKSUM_SEED = 0xef;

/** SYNC's payload: 07 07 12 20 and 32 × 0x55, which also lets the ROM measure the baud rate. */
export const SYNC_PAYLOAD = Uint8Array.from([0x07, 0x07, 0x12, 0x20, ...new Array<number>(32).fill(0x55)]);

export function espChecksum(data: Uint8Array): number {
  let x = ESP_CHECKSUM_SEED;
  for (const b of data) x ^= b;
  return x;
}

export function slipEncode(packet: Uint8Array): Uint8Array {
  const out: number[] = [SLIP_END];
  for (const b of packet) {
    if (b === SLIP_END) out.push(SLIP_ESC, SLIP_ESC_END);
    else if (b === SLIP_ESC) out.push(SLIP_ESC, SLIP_ESC_ESC);
    else out.push(b);
  }
  out.push(SLIP_END);
  return Uint8Array.from(out);
}

/** The packet inside one frame's bytes (delimiters optional), or undefined when an escape is broken (line noise). */
export function slipDecode(frame: Uint8Array): Uint8Array | undefined {
  const out = new Uint8Array(frame.length);
  let n = 0;
  for (let i = 0; i < frame.length; i++) {
    const b = frame[i]!;
    if (b === SLIP_END) continue;
    if (b !== SLIP_ESC) { out[n++] = b; continue; }
    const next = frame[++i];
    if (next === SLIP_ESC_END) out[n++] = SLIP_END;
    else if (next === SLIP_ESC_ESC) out[n++] = SLIP_ESC;
    else return undefined;
  }
  return out.subarray(0, n);
}

/** Little-endian u32 words, the shape of every command's parameters. */
export function words(...values: number[]): Uint8Array {
  const out = new Uint8Array(values.length * 4);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => view.setUint32(i * 4, v >>> 0, true));
  return out;
}

export function readWord(data: Uint8Array, index: number): number {
  return new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(index * 4, true);
}

export interface EspRequest { op: number; checksum: number; data: Uint8Array }
export interface EspResponse { op: number; value: number; data: Uint8Array }

/** Direction byte (00 request, 01 response), op, size, then the checksum (request) or value (response) word, then data. */
function encodePacket(direction: number, op: number, word: number, data: Uint8Array): Uint8Array {
  const packet = new Uint8Array(8 + data.length);
  const view = new DataView(packet.buffer);
  packet[0] = direction;
  packet[1] = op;
  view.setUint16(2, data.length, true);
  view.setUint32(4, word >>> 0, true);
  packet.set(data, 8);
  return packet;
}

export const encodeRequest = (op: number, data: Uint8Array, checksum = 0): Uint8Array => encodePacket(0x00, op, checksum, data);
export const encodeResponse = (op: number, value: number, data: Uint8Array): Uint8Array => encodePacket(0x01, op, value, data);

/** The packet's fields when its direction byte and size field hold, else undefined (a garbled frame). */
function decodePacket(direction: number, packet: Uint8Array): { op: number; word: number; data: Uint8Array } | undefined {
  if (packet.length < 8 || packet[0] !== direction) return undefined;
  const view = new DataView(packet.buffer, packet.byteOffset, packet.byteLength);
  if (view.getUint16(2, true) !== packet.length - 8) return undefined;
  return { op: packet[1]!, word: view.getUint32(4, true), data: packet.subarray(8) };
}

export function decodeRequest(packet: Uint8Array): EspRequest | undefined {
  const p = decodePacket(0x00, packet);
  return p && { op: p.op, checksum: p.word, data: p.data };
}

export function decodeResponse(packet: Uint8Array): EspResponse | undefined {
  const p = decodePacket(0x01, packet);
  return p && { op: p.op, value: p.word, data: p.data };
}
