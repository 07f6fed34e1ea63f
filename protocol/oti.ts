/**
 * FEC Object Transmission Information, RFC 6330 §3.3.2 and §3.3.3, 12 bytes:
 *
 *    0                   1                   2                   3
 *    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |                      Transfer Length (F)                      |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |     F (cont.)     |   Reserved    |        Symbol Size (T)    |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |       Z       |              N                |       Al      |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *
 * F is 40 bits, T 16, Z (source blocks) 8, N (sub-blocks) 16, Al 8.
 */
import { MalformedPacketError } from './errors.js';

export interface Oti {
  transferLength: number;
  symbolSize: number;
  sourceBlocks: number;
  subBlocks: number;
  alignment: number;
}

export const OTI_SIZE = 12;
const MAX_TRANSFER_LENGTH = 946270874880; // RFC 6330 §4.4.1.2

export function encodeOti(oti: Oti): Uint8Array {
  const out = new Uint8Array(OTI_SIZE);
  const view = new DataView(out.buffer);
  const f = oti.transferLength;
  view.setUint8(0, Math.floor(f / 2 ** 32));
  view.setUint32(1, f >>> 0);
  view.setUint8(5, 0);
  view.setUint16(6, oti.symbolSize);
  view.setUint8(8, oti.sourceBlocks);
  view.setUint16(9, oti.subBlocks);
  view.setUint8(11, oti.alignment);
  return out;
}

export function decodeOti(bytes: Uint8Array): Oti {
  if (bytes.length !== OTI_SIZE) throw new MalformedPacketError(`OTI must be ${OTI_SIZE} bytes, got ${bytes.length}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const oti: Oti = {
    transferLength: view.getUint8(0) * 2 ** 32 + view.getUint32(1),
    symbolSize: view.getUint16(6),
    sourceBlocks: view.getUint8(8),
    subBlocks: view.getUint16(9),
    alignment: view.getUint8(11),
  };
  if (oti.transferLength === 0 || oti.transferLength > MAX_TRANSFER_LENGTH) {
    throw new MalformedPacketError(`OTI transfer length ${oti.transferLength} out of range`);
  }
  if (oti.alignment === 0 || oti.symbolSize === 0 || oti.symbolSize % oti.alignment !== 0) {
    throw new MalformedPacketError(`OTI symbol size ${oti.symbolSize} is not a multiple of alignment ${oti.alignment}`);
  }
  return oti;
}
