// The byte pipe every bootloader client and emulator talks through. Kept to
// what a UART gives: bytes in, bytes out, no framing. Protocol code reads with
// explicit timeouts because a bootloader that lost sync simply stays silent.
import { hex } from '../../protocol/hex.js';

export interface ReadOptions {
  /** Give up after this many milliseconds without the requested bytes. */
  timeoutMs: number;
  /** Aborting rejects the pending read with the signal's reason. */
  signal?: AbortSignal;
}

export interface SerialLink {
  /** Resolves once the bytes are handed to the OS (and drained on real ports). */
  write(data: Uint8Array): Promise<void>;
  /** Exactly `length` bytes, or a `SerialTimeoutError` with what did arrive. */
  read(length: number, options: ReadOptions): Promise<Uint8Array>;
  /** Bytes up to and including `delimiter`; at most `maxBytes` are buffered before a `SerialOverrunError`. */
  readUntil(delimiter: number, options: ReadOptions & { maxBytes: number }): Promise<Uint8Array>;
  /** Whatever has arrived within `timeoutMs` (possibly nothing); used to drain a chatty line. */
  readAvailable(options: ReadOptions): Promise<Uint8Array>;
  /** Discards received bytes not yet read: stale answers must not be taken for the next reply. */
  flushInput(): Promise<void>;
  /** Pending reads reject with `SerialClosedError`. Idempotent. */
  close(): Promise<void>;
  readonly isOpen: boolean;
  /** Drives both modem lines (true = asserted); rejects where the port cannot (a pty). Absent on links without lines. */
  setSignals?(signals: { dtr: boolean; rts: boolean }): Promise<void>;
  /** Changes the host side's baud rate (after the device was told to); absent where the link has none. */
  setBaudRate?(baudRate: number): Promise<void>;
}

export class SerialTimeoutError extends Error {
  override readonly name = 'SerialTimeoutError';
  constructor(readonly wanted: string, readonly received: Uint8Array, timeoutMs: number) {
    super(`no ${wanted} within ${timeoutMs} ms (got ${received.length} byte(s)${received.length ? ': ' + hex(received.subarray(0, 16)) : ''})`);
  }
}

export class SerialClosedError extends Error {
  override readonly name = 'SerialClosedError';
  constructor(reason = 'serial link closed') { super(reason); }
}

export class SerialOpenError extends Error {
  override readonly name = 'SerialOpenError';
  constructor(readonly path: string, cause: Error) {
    super(`cannot open ${path}: ${cause.message.replace(/^Error: /, '').replace(/, cannot open .*$/, '')}`, { cause });
  }
}

export class SerialOverrunError extends Error {
  override readonly name = 'SerialOverrunError';
}

interface Waiter { check(): boolean; fail(error: Error): void }

/**
 * Receive buffer with promise-based readers, shared by the serialport adapter
 * and the in-memory pair. One reader at a time is the contract (protocols are
 * request/response), but several are tolerated and served in order.
 */
export class ByteQueue {
  private buffer: Buffer = Buffer.alloc(0);
  private waiters: Waiter[] = [];
  private closedError: Error | undefined;

  push(data: Uint8Array): void {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, data]) : Buffer.from(data);
    this.settle();
  }

  clear(): void { this.buffer = Buffer.alloc(0); }

  close(error: Error): void {
    this.closedError ??= error;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.fail(error);
  }

  read(length: number, options: ReadOptions): Promise<Uint8Array> {
    return this.wait(`${length} byte(s)`, options, () => {
      if (this.buffer.length < length) return undefined;
      const out = this.buffer.subarray(0, length);
      this.buffer = this.buffer.subarray(length);
      return new Uint8Array(out);
    });
  }

  readUntil(delimiter: number, options: ReadOptions & { maxBytes: number }): Promise<Uint8Array> {
    return this.wait(`byte 0x${delimiter.toString(16).padStart(2, '0')}`, options, () => {
      const at = this.buffer.indexOf(delimiter);
      if (at < 0) {
        if (this.buffer.length > options.maxBytes) {
          const dropped = this.buffer;
          this.buffer = Buffer.alloc(0);
          throw new SerialOverrunError(`${dropped.length} bytes without delimiter 0x${delimiter.toString(16)}`);
        }
        return undefined;
      }
      const out = this.buffer.subarray(0, at + 1);
      this.buffer = this.buffer.subarray(at + 1);
      return new Uint8Array(out);
    });
  }

  async readAvailable(options: ReadOptions): Promise<Uint8Array> {
    try {
      return await this.read(1, options).then((first) => {
        const rest = this.buffer;
        this.buffer = Buffer.alloc(0);
        return new Uint8Array(Buffer.concat([first, rest]));
      });
    } catch (error) {
      if (error instanceof SerialTimeoutError) return new Uint8Array(0);
      throw error;
    }
  }

  private wait(wanted: string, options: ReadOptions, take: () => Uint8Array | undefined): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const finish = (): void => {
        if (timer) clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        this.waiters = this.waiters.filter((w) => w !== waiter);
      };
      const waiter: Waiter = {
        check: () => {
          let out: Uint8Array | undefined;
          try { out = take(); } catch (error) { finish(); reject(error); return true; }
          if (!out) return false;
          finish();
          resolve(out);
          return true;
        },
        fail: (error) => { finish(); reject(error); },
      };
      const onAbort = (): void => waiter.fail(options.signal?.reason instanceof Error ? options.signal.reason : new Error('aborted'));
      if (options.signal?.aborted) { onAbort(); return; }
      if (waiter.check()) return;
      if (this.closedError) { reject(this.closedError); return; }
      options.signal?.addEventListener('abort', onAbort, { once: true });
      timer = setTimeout(() => waiter.fail(new SerialTimeoutError(wanted, new Uint8Array(this.buffer), options.timeoutMs)), options.timeoutMs);
      this.waiters.push(waiter);
    });
  }

  private settle(): void {
    // Serve waiters in order; each may consume part of the buffer.
    for (const w of [...this.waiters]) if (!w.check()) break;
  }
}

export type Parity = 'none' | 'even';

export interface SerialPortLinkInit {
  /** Device path, e.g. /dev/ttyUSB0, /dev/fwcast-stm32 or a pty symlink. */
  path: string;
  /** Default 115200. A pty ignores it. */
  baudRate?: number;
  /** Default 'none'. AN3155 needs 'even' on real UARTs; a pty silently drops parity. */
  parity?: Parity;
}

/**
 * Opens a port through node-serialport. Never touches DTR/RTS by itself: a
 * pty fails those ioctls; a protocol that resets through them (the ESP ROM
 * loader) calls setSignals and copes with its failure.
 */
export async function openSerialPort(init: SerialPortLinkInit): Promise<SerialLink> {
  // Loaded here, not at start-up: serialport's native binding costs memory an agent without MCUs should not pay.
  const { SerialPort } = await import('serialport');
  const port = new SerialPort({
    path: init.path,
    baudRate: init.baudRate ?? 115200,
    dataBits: 8,
    stopBits: 1,
    parity: init.parity ?? 'none',
    autoOpen: false,
  });
  await new Promise<void>((resolve, reject) => port.open((error) => (error ? reject(new SerialOpenError(init.path, error)) : resolve())));
  const queue = new ByteQueue();
  port.on('data', (chunk: Buffer) => queue.push(chunk));
  port.on('close', () => queue.close(new SerialClosedError(`${init.path} closed`)));
  port.on('error', (error: Error) => queue.close(new SerialClosedError(`${init.path}: ${error.message}`)));
  let open = true;
  return {
    get isOpen() { return open && port.isOpen; },
    write: (data) => new Promise((resolve, reject) => {
      if (!port.isOpen) { reject(new SerialClosedError(`${init.path} is not open`)); return; }
      port.write(Buffer.from(data), (error) => {
        if (error) { reject(error); return; }
        port.drain((drainError) => (drainError ? reject(drainError) : resolve()));
      });
    }),
    read: (length, options) => queue.read(length, options),
    readUntil: (delimiter, options) => queue.readUntil(delimiter, options),
    readAvailable: (options) => queue.readAvailable(options),
    // No settling delay: it would cost every command a round of sleep. Bytes
    // still in flight are the recovery paths' business (they drain the line
    // until it is quiet before they retry).
    flushInput: async () => { queue.clear(); },
    // Both lines always: node-serialport asserts any line a set() call leaves out.
    setSignals: ({ dtr, rts }) => new Promise((resolve, reject) => {
      port.set({ dtr, rts }, (error) => (error ? reject(error) : resolve()));
    }),
    setBaudRate: (baudRate) => new Promise((resolve, reject) => {
      port.update({ baudRate }, (error) => (error ? reject(error) : resolve()));
    }),
    close: async () => {
      if (!open) return;
      open = false;
      queue.close(new SerialClosedError(`${init.path} closed`));
      if (port.isOpen) await new Promise<void>((resolve) => port.close(() => resolve()));
    },
  };
}

/** Optional hook to corrupt or drop bytes in flight (fault tests). */
export type LineFilter = (data: Uint8Array) => Uint8Array;

/**
 * Two in-memory ends wired back to back, for unit tests that run a client
 * against an emulator without ptys. Each write is delivered asynchronously, as
 * a UART would.
 */
export function createLinkPair(filter?: { aToB?: LineFilter; bToA?: LineFilter }): [SerialLink, SerialLink] {
  const queues = [new ByteQueue(), new ByteQueue()] as const;
  let open = true;
  const end = (rx: ByteQueue, tx: ByteQueue, f?: LineFilter): SerialLink => ({
    get isOpen() { return open; },
    write: async (data) => {
      if (!open) throw new SerialClosedError();
      const bytes = f ? f(data) : data;
      setImmediate(() => tx.push(bytes));
    },
    read: (length, options) => rx.read(length, options),
    readUntil: (delimiter, options) => rx.readUntil(delimiter, options),
    readAvailable: (options) => rx.readAvailable(options),
    flushInput: async () => { rx.clear(); },
    close: async () => {
      open = false;
      for (const q of queues) q.close(new SerialClosedError());
    },
  });
  return [end(queues[0], queues[1], filter?.aToB), end(queues[1], queues[0], filter?.bToA)];
}
