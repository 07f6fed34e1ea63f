/**
 * What every transport shares of the contract in transport.ts: the lifecycle
 * (new → open → closed), the checks send() makes before it touches the
 * network, the counters, and handlers that fall silent when their signal
 * aborts. Each transport keeps one and adds only its network part.
 */
import {
  SEND_ERROR_REASONS, TransportClosedError, TransportSendError,
  type DatagramHandler, type SendErrorReason, type TransportStats,
} from './transport.js';

export class Lifecycle {
  sent = 0;
  received = 0;
  reconnects = 0;
  #state: 'new' | 'open' | 'closed' = 'new';
  #opening: Promise<void> | undefined;
  #errors = Object.fromEntries(SEND_ERROR_REASONS.map((r) => [r, 0])) as Record<SendErrorReason, number>;
  /** The latest refusal, made into an error only when asked for: a transport refusing thousands a second should not build as many. */
  #last: { reason: SendErrorReason; message: string; cause: unknown; at: number } | undefined;

  constructor(readonly kind: string, readonly description: string, readonly maxDatagramSize: number) {
    if (!Number.isInteger(maxDatagramSize) || maxDatagramSize < 1) throw new RangeError(`maxDatagramSize: ${maxDatagramSize} is not a positive integer`);
  }

  get closed(): boolean {
    return this.#state === 'closed';
  }

  closedError(call: string): TransportClosedError {
    return new TransportClosedError(`${call} after close() on ${this.description}`);
  }

  /**
   * open() of the contract around the transport's `connect`: once, shared by
   * concurrent callers, again after a failure. `connect` must undo its own
   * work if the transport closed meanwhile (see `closed`).
   */
  open(connect: () => Promise<void>): Promise<void> {
    if (this.#state === 'closed') return Promise.reject(this.closedError('open()'));
    if (this.#state === 'open') return Promise.resolve();
    this.#opening ??= connect().then(
      () => {
        if (this.#state === 'closed') throw this.closedError('open()');
        this.#state = 'open';
      },
      (err: unknown) => {
        this.#opening = undefined;
        throw err;
      },
    );
    return this.#opening;
  }

  /** Marks the transport closed; false if it already was. */
  close(): boolean {
    if (this.#state === 'closed') return false;
    this.#state = 'closed';
    return true;
  }

  /** send()'s checks before the network; a refused datagram is counted and false returned. */
  admit(data: Uint8Array): boolean {
    if (this.#state === 'new') return this.refuse('not-open', `send() before open() on ${this.description}`);
    if (this.#state === 'closed') return this.refuse('closed', `send() after close() on ${this.description}`);
    if (data.length > this.maxDatagramSize) {
      return this.refuse('oversize', `a datagram of ${data.length} bytes is longer than the ${this.maxDatagramSize} bytes ${this.description} sends`);
    }
    return true;
  }

  /** Counts one datagram that did not go out; returns false for admit(). */
  refuse(reason: SendErrorReason, message: string, cause?: unknown): false {
    this.#errors[reason]++;
    this.#last = { reason, message, cause, at: Date.now() };
    return false;
  }

  /** join()'s checks: throws TransportClosedError after close(), the signal's reason once it aborted. */
  checkJoin(signal?: AbortSignal): void {
    if (this.#state === 'closed') throw this.closedError('join()');
    signal?.throwIfAborted();
  }

  /** What a failed join() rejects with: closing or aborting meanwhile explains it better than its symptom. */
  joinError(err: unknown, signal?: AbortSignal): unknown {
    if (this.#state === 'closed') return this.closedError('join()');
    return signal?.aborted ? signal.reason : err;
  }

  /** The handler as the network calls it: counted, and silent once the signal aborted or the transport closed. */
  member(handler: DatagramHandler, signal?: AbortSignal): DatagramHandler {
    return (data, from) => {
      if (signal?.aborted || this.#state === 'closed') return;
      this.received++;
      handler(data, from);
    };
  }

  stats(): TransportStats {
    const sendErrorsBy = { ...this.#errors };
    return {
      kind: this.kind,
      description: this.description,
      sent: this.sent,
      received: this.received,
      sendErrors: Object.values(sendErrorsBy).reduce((a, b) => a + b, 0),
      sendErrorsBy,
      lastSendError: this.#last && new TransportSendError(this.#last.reason, this.#last.message, this.#last.cause, this.#last.at),
      reconnects: this.reconnects,
      parts: [],
    };
  }
}
