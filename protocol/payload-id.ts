/**
 * FEC Payload ID, RFC 6330 §3.2: source block number (8 bits) then encoding
 * symbol ID (24 bits), big-endian. Repair symbols have ESI ≥ K.
 *
 *    0                   1                   2                   3
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |     SBN       |               Encoding Symbol ID              |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 */
export const PAYLOAD_ID_SIZE = 4;
export const MAX_ESI = 0xffffff;

export interface PayloadId {
  sbn: number;
  esi: number;
}

export function writePayloadId(out: Uint8Array, offset: number, id: PayloadId): void {
  out[offset] = id.sbn;
  out[offset + 1] = id.esi >>> 16;
  out[offset + 2] = (id.esi >>> 8) & 0xff;
  out[offset + 3] = id.esi & 0xff;
}

export function readPayloadId(bytes: Uint8Array, offset: number): PayloadId {
  return {
    sbn: bytes[offset]!,
    esi: (bytes[offset + 1]! << 16) | (bytes[offset + 2]! << 8) | bytes[offset + 3]!,
  };
}
