// A Web Serial port (the W3C SerialPort shape esptool-js's Transport drives)
// over node-serialport, so that Espressif's own client can talk to our ESP
// emulator through a pty. Modem lines cannot be driven on a pty: setSignals
// records the failure instead of throwing, and the loader runs in no_reset
// mode, as a board strapped into download mode by hand would be flashed.
import { SerialPort } from 'serialport';

export interface WebSerialLikePort {
  readable: ReadableStream<Uint8Array> | null;
  writable: WritableStream<Uint8Array> | null;
  open(options: { baudRate: number }): Promise<void>;
  close(): Promise<void>;
  setSignals(signals: { dataTerminalReady?: boolean; requestToSend?: boolean; break?: boolean }): Promise<void>;
  setBaudRate(baudRate: number): Promise<void>;
  getInfo(): { usbVendorId?: number; usbProductId?: number };
  /** Modem-line changes that the port refused (every one, on a pty). */
  readonly signalFailures: string[];
}

export function webSerialPort(path: string): WebSerialLikePort {
  let port: SerialPort | undefined;
  const signalFailures: string[] = [];
  // Web Serial opens with both lines asserted.
  let dtr = true;
  let rts = true;
  const self: WebSerialLikePort = {
    readable: null,
    writable: null,
    signalFailures,
    async open({ baudRate }) {
      const opened = new SerialPort({ path, baudRate, autoOpen: false });
      await new Promise<void>((resolve, reject) => opened.open((error) => (error ? reject(error) : resolve())));
      port = opened;
      let closed = false;
      self.readable = new ReadableStream<Uint8Array>({
        start(controller) {
          opened.on('data', (chunk: Buffer) => { if (!closed) controller.enqueue(new Uint8Array(chunk)); });
          opened.on('close', () => { if (!closed) { closed = true; controller.close(); } });
        },
        cancel() { closed = true; },
      });
      self.writable = new WritableStream<Uint8Array>({
        write: (chunk) => new Promise<void>((resolve, reject) => {
          opened.write(Buffer.from(chunk), (error) => {
            if (error) { reject(error); return; }
            opened.drain((drainError) => (drainError ? reject(drainError) : resolve()));
          });
        }),
      });
    },
    async close() {
      const closing = port;
      port = undefined;
      self.readable = null;
      self.writable = null;
      if (closing?.isOpen) await new Promise<void>((resolve) => closing.close(() => resolve()));
    },
    async setSignals(signals) {
      // node-serialport asserts any line left out; Web Serial leaves it as it was.
      const wanted = { dtr: signals.dataTerminalReady ?? dtr, rts: signals.requestToSend ?? rts, brk: signals.break ?? false };
      try {
        await new Promise<void>((resolve, reject) => port?.set(wanted, (error) => (error ? reject(error) : resolve())));
      } catch (error) {
        signalFailures.push((error as Error).message);
        return;
      }
      dtr = wanted.dtr;
      rts = wanted.rts;
    },
    async setBaudRate(baudRate) {
      await new Promise<void>((resolve, reject) => port?.update({ baudRate }, (error) => (error ? reject(error) : resolve())));
    },
    getInfo: () => ({}),
  };
  return self;
}
