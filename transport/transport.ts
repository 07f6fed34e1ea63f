/**
 * The one interface between fwcast and a network. A transport moves opaque
 * datagrams to and from channels; it never parses them. UDP multicast is the
 * main transport; others (in-memory for unit tests) implement the same contract.
 */
export interface Channel {
  /** Channel name, e.g. "fw/rpi4". */
  name: string;
  /** IPv6 multicast group carrying the channel. */
  group: string;
  port: number;
}

/** `from` names the sender (e.g. its address) so receivers can bound state per sender. */
export type DatagramHandler = (data: Uint8Array, from: string) => void;

export interface Transport {
  readonly description: string;
  /**
   * Starts delivering the channel's datagrams to `onDatagram` until the signal
   * aborts or the transport closes. Resolves once the membership is active.
   */
  join(channel: Channel, onDatagram: DatagramHandler, signal?: AbortSignal): Promise<void>;
  /** Prepares for sending (opens sockets, connects). Call once before send(). */
  open(): Promise<void>;
  /**
   * Queues one datagram for the channel. Never throws for network errors:
   * they are counted in `sendErrors` and the carousel goes on.
   */
  send(channel: Channel, data: Uint8Array): void;
  readonly sendErrors: number;
  /** Stops every membership and closes sockets; safe to call twice. */
  close(): Promise<void>;
}
