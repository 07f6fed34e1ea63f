/**
 * The one interface between fwcast and a network. A transport moves opaque
 * datagrams to and from channels; it never parses them. UDP multicast is the
 * main transport; MQTT, several at once (multi) and in-memory (unit tests)
 * implement the same contract, and test/helpers/transport-compliance.ts checks
 * every implementation against it.
 *
 * Lifecycle: new → open → closed. Receiving (join) needs no open(); sending
 * does. close() is final: a closed transport never sends or delivers again.
 *
 * Counters: every send() call is counted once, either in `sent` (handed to the
 * network) or as a send error with a reason (refused here: never queued,
 * fragmented or truncated). A datagram the network fails on after it was
 * handed over is counted in `sent` and again as a `network` send error.
 */
import { FwcastError } from '../protocol/errors.js';

export interface Channel {
  /** Channel name, e.g. "fw/rpi4". */
  name: string;
  /** IPv6 multicast group carrying the channel. */
  group: string;
  port: number;
}

/** `from` names the sender (e.g. its address) so receivers can bound state per sender. */
export type DatagramHandler = (data: Uint8Array, from: string) => void;

/**
 * Why send() did not send a datagram, also the name of its counter:
 * - `not-open`: open() has not resolved yet;
 * - `closed`: close() was called;
 * - `oversize`: longer than the transport's `maxDatagramSize`;
 * - `offline`: the transport has no connection right now (MQTT, reconnecting);
 * - `backpressure`: the connection's write buffer is full (the far end is not keeping up);
 * - `network`: the operating system or the client library reported an error.
 */
export type SendErrorReason = 'not-open' | 'closed' | 'oversize' | 'offline' | 'backpressure' | 'network';

export const SEND_ERROR_REASONS: readonly SendErrorReason[] = ['not-open', 'closed', 'oversize', 'offline', 'backpressure', 'network'];

/** One datagram that send() did not send; kept as `lastSendError`, never thrown. */
export class TransportSendError extends FwcastError {
  /**
   * @param at when it happened (ms since the epoch), to tell the latest among
   *   several transports.
   */
  constructor(readonly reason: SendErrorReason, message: string, cause?: unknown, readonly at = Date.now()) {
    super(message);
    if (cause !== undefined) this.cause = cause;
  }
}

/** open() or join() on a transport that close() was called on. */
export class TransportClosedError extends FwcastError {
  readonly reason = 'closed';
}

/** One shape for every transport; a composite one (multi) sums its parts'. */
export interface TransportStats {
  /** Which kind of transport: "udp6-multicast", "mqtt", "memory", "multi". */
  kind: string;
  description: string;
  /** Datagrams handed to the network. */
  sent: number;
  /** Datagrams delivered to handlers (a datagram reaching two handlers counts twice). */
  received: number;
  /** Datagrams send() did not send, all reasons together: the sum of `sendErrorsBy`. */
  sendErrors: number;
  sendErrorsBy: Record<SendErrorReason, number>;
  /** The latest of them. */
  lastSendError: TransportSendError | undefined;
  /** Connections re-established after a loss (0 for connectionless transports). */
  reconnects: number;
  /** Each transport inside a composite one (multi); empty otherwise. */
  parts: TransportStats[];
}

export interface Transport {
  readonly description: string;
  /**
   * Largest datagram send() accepts, bytes. UDP: 1232 unless configured (the
   * IPv6 minimum MTU less headers, so a datagram is never fragmented);
   * MQTT and memory: 65527, the largest datagram a receiver accepts.
   */
  readonly maxDatagramSize: number;

  /**
   * Prepares for sending (opens the sending socket, connects to the broker).
   * Idempotent: a second call, also while the first is pending, returns the
   * same outcome. Rejects with TransportClosedError after close(), and with
   * the transport's error if it cannot send at all (then open() may be
   * retried). A transport that reconnects by itself (MQTT) resolves after its
   * connect timeout even without a connection, and keeps trying.
   */
  open(): Promise<void>;

  /**
   * Delivers the channel's datagrams to `onDatagram` until the signal aborts
   * or the transport closes. Needs no open(). Resolves once the membership is
   * active: datagrams sent to the channel from then on reach the handler
   * (a transport with a connection, MQTT, may resolve after its connect
   * timeout while unconnected and subscribes once connected). Joining a
   * channel twice gives two memberships: each handler gets every datagram.
   * Two channels with different names and groups never see each other's
   * datagrams.
   *
   * With a signal that is already aborted, or aborts before join() resolves,
   * join() rejects with the signal's reason (as AbortSignal.throwIfAborted()
   * does) and leaves no membership. Once the signal aborts, the handler is
   * never called again and the membership is left. Rejects with
   * TransportClosedError after close().
   */
  join(channel: Channel, onDatagram: DatagramHandler, signal?: AbortSignal): Promise<void>;

  /**
   * Hands one datagram to the network for the channel, or refuses it. Never
   * throws and never blocks: a datagram that cannot go out now is dropped and
   * counted (see SendErrorReason), so a carousel goes on. Refused: before
   * open() resolved (`not-open`), after close() (`closed`), longer than
   * `maxDatagramSize` (`oversize`). The caller must not change `data`
   * afterwards: it may still be on its way.
   */
  send(channel: Channel, data: Uint8Array): void;

  /** A snapshot of the counters (a new object each call). */
  stats(): TransportStats;

  /**
   * Leaves every membership, closes sockets and connections; pending open()
   * and join() calls reject with TransportClosedError. Idempotent, and safe
   * without open(). Final: afterwards send() counts `closed`, open() and
   * join() reject.
   */
  close(): Promise<void>;
}
