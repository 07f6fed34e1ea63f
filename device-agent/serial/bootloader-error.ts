/**
 * What goes wrong talking to a bootloader, for all three serial clients
 * (STK500, STM32 AN3155, MCUboot SMP): one family that names the protocol and
 * the operation. Subclasses exist where callers act on the difference: a
 * timeout or a garbled or refused answer is retried (after a resync), a
 * failed read-back is final, and an MCUboot reset may go unanswered.
 */

/** The serial installer's protocol names (installer.ts SERIAL_PROTOCOLS). */
export type BootloaderProtocol = 'stk500' | 'stm32' | 'mcuboot';

export class BootloaderError extends Error {
  constructor(readonly protocol: BootloaderProtocol, readonly operation: string, detail: string, options?: ErrorOptions) {
    super(`${operation}: ${detail}`, options);
    this.name = new.target.name;
  }
}

/** No (complete) answer in time. */
export class BootloaderTimeoutError extends BootloaderError {}

/** An answer the protocol does not allow, or one of the wrong shape. */
export class BootloaderProtocolError extends BootloaderError {}

/** The device understood and said no: an STM32 NACK, an SMP answer with a non-zero rc. */
export class BootloaderRefusedError extends BootloaderError {
  constructor(protocol: BootloaderProtocol, operation: string, answer: string, readonly returnCode?: number) {
    super(protocol, operation, answer);
    this.message = `${operation} was refused: ${answer}`;
  }
}

/** Everything was written, but the device does not hold the image we sent. */
export class BootloaderVerifyError extends BootloaderError {}
