/**
 * Librecast's message framing (liblibrecast 0.5.1 `lc_msg_send`/`lc_msg_recv`):
 * a fixed 33-byte header before the payload, all integers big-endian, packed.
 *
 *   offset size field
 *        0    8 timestamp  ns since the epoch (CLOCK_REALTIME)
 *        8    8 seq        per-channel counter, first message 1
 *       16    8 rnd        random nonce
 *       24    1 op         0 DATA, 1 PING, 2 PONG, 3 GET, 4 SET, 5 DEL, 6 RET
 *       25    8 len        payload length
 *       33  len payload
 *
 * No version, hash or signature: authenticity is the application's business.
 * Decoding is stricter than Librecast's receiver (which ignores `len` and the
 * opcode): a datagram whose `len` disagrees with its size, or whose opcode
 * Librecast does not define, is refused with a typed error, so the channel
 * API can drop and count it instead of handing garbage to the application.
 */
import { LimitExceededError, MalformedPacketError } from './errors.js';
import { MAX_DATAGRAM } from './packet.js';

export const LIBRECAST_HEADER_SIZE = 33;

/** The largest payload one UDP datagram carries behind the header. */
export const LIBRECAST_MAX_PAYLOAD = MAX_DATAGRAM - LIBRECAST_HEADER_SIZE;

/**
 * The largest payload liblibrecast 0.5.1's `lc_msg_recv` hands over whole: it
 * reads at most 8192 bytes of a datagram (observed, C to C as well), so a
 * longer message reaches a Librecast receiver cut to this size. Senders that
 * want Librecast programs to read them keep their messages within it.
 */
export const LIBRECAST_RECV_MAX_PAYLOAD = 8192 - LIBRECAST_HEADER_SIZE;

export const LibrecastOp = {
  DATA: 0,
  PING: 1,
  PONG: 2,
  GET: 3,
  SET: 4,
  DEL: 5,
  RET: 6,
} as const;

export type LibrecastOpcode = (typeof LibrecastOp)[keyof typeof LibrecastOp];

export interface LibrecastMessage {
  /** Nanoseconds since the epoch, as the sender stamped it. */
  timestamp: bigint;
  seq: bigint;
  /** The sender's 8-byte nonce, as an unsigned integer. */
  rnd: bigint;
  op: LibrecastOpcode;
  /** A view into the datagram (no copy). */
  payload: Uint8Array;
}

const U64_MAX = (1n << 64n) - 1n;

function checkU64(name: string, v: bigint): void {
  if (v < 0n || v > U64_MAX) throw new RangeError(`${name}: ${v} is not an unsigned 64-bit integer`);
}

/**
 * The datagram Librecast's `lc_msg_send` would send for `message`. Throws
 * RangeError for values that cannot be encoded (a programming error, not
 * network input), LimitExceededError for a payload above `maxPayload`.
 */
export function encodeLibrecastMessage(message: LibrecastMessage, maxPayload = LIBRECAST_MAX_PAYLOAD): Uint8Array {
  const { payload } = message;
  if (payload.length > maxPayload) {
    throw new LimitExceededError(`a message of ${payload.length} bytes is longer than the ${maxPayload} bytes a datagram carries behind Librecast's header`, { size: payload.length, max: maxPayload });
  }
  checkU64('timestamp', message.timestamp);
  checkU64('seq', message.seq);
  checkU64('rnd', message.rnd);
  if (!Number.isInteger(message.op) || message.op < 0 || message.op > LibrecastOp.RET) throw new RangeError(`op: ${message.op} is not a Librecast opcode`);
  const out = new Uint8Array(LIBRECAST_HEADER_SIZE + payload.length);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, message.timestamp);
  view.setBigUint64(8, message.seq);
  view.setBigUint64(16, message.rnd);
  view.setUint8(24, message.op);
  view.setBigUint64(25, BigInt(payload.length));
  out.set(payload, LIBRECAST_HEADER_SIZE);
  return out;
}

/**
 * Reads one datagram as a Librecast message. Throws MalformedPacketError
 * (shorter than the header, `len` not the payload's size, unknown opcode) or
 * LimitExceededError (above `maxDatagram`); never anything else.
 */
export function decodeLibrecastMessage(datagram: Uint8Array, maxDatagram = MAX_DATAGRAM): LibrecastMessage {
  if (datagram.length > maxDatagram) {
    throw new LimitExceededError(`a datagram of ${datagram.length} bytes is longer than the ${maxDatagram} accepted`, { size: datagram.length, max: maxDatagram });
  }
  if (datagram.length < LIBRECAST_HEADER_SIZE) {
    throw new MalformedPacketError(`a datagram of ${datagram.length} bytes is shorter than Librecast's ${LIBRECAST_HEADER_SIZE}-byte message header`, { size: datagram.length });
  }
  const view = new DataView(datagram.buffer, datagram.byteOffset, datagram.byteLength);
  const len = view.getBigUint64(25);
  const actual = datagram.length - LIBRECAST_HEADER_SIZE;
  if (len !== BigInt(actual)) {
    throw new MalformedPacketError(`Librecast message header says ${len} payload bytes, the datagram has ${actual}`, { declared: len.toString(), size: actual });
  }
  const op = view.getUint8(24);
  if (op > LibrecastOp.RET) throw new MalformedPacketError(`Librecast opcode ${op} is not defined`, { op });
  return {
    timestamp: view.getBigUint64(0),
    seq: view.getBigUint64(8),
    rnd: view.getBigUint64(16),
    op: op as LibrecastOpcode,
    payload: datagram.subarray(LIBRECAST_HEADER_SIZE),
  };
}
