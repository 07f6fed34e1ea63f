/**
 * What goes wrong talking to a bootloader, for all the serial clients
 * (STK500, STM32 AN3155, MCUboot SMP, ESP ROM): one family that names the protocol and
 * the operation. Subclasses exist where callers act on the difference: a
 * timeout or a garbled or refused answer is retried (after a resync), a
 * failed read-back is final, and an MCUboot reset may go unanswered.
 */

/** The serial installer's protocol names (installer.ts SERIAL_PROTOCOLS). */
export type BootloaderProtocol = 'stk500' | 'stm32' | 'mcuboot' | 'esp';

/**
 * What a failed flash left on the device, where the client knows: nothing
 * touched yet, the old contents written back and verified, or erased with
 * no complete image in place. After an MCUboot test boot: the old image
 * runs again ('reverted'), the test image may still run unconfirmed and
 * MCUboot reverts it at the next reset ('unconfirmed'), or the device
 * confirmed the failing image itself and keeps it ('self-confirmed').
 */
export type DeviceState = 'untouched' | 'restored' | 'erased' | 'reverted' | 'unconfirmed' | 'self-confirmed';

export class BootloaderError extends Error {
  /** Set by the flash functions when they give up; undefined for a single operation's failure. */
  deviceState?: DeviceState;

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

/** An MCUboot test image ran (or MCUboot refused to run it) and did not end healthy and confirmed; deviceState says where the device stands. */
export class McubootTestFailedError extends BootloaderError {}

/** The image does not fit where it would go; refused before anything is erased. */
export class ImageTooLargeError extends BootloaderError {}

/**
 * Runs `attempt` up to `tries` times. Only a BootloaderError other than a
 * failed verification is worth another try, after `recover` (drain or resync
 * the line, which may be half-way through a command); `onRetry` counts it.
 */
export async function withBootloaderRetries<T>(
  tries: number, signal: AbortSignal | undefined, attempt: () => Promise<T>, recover: () => Promise<unknown>, onRetry: () => void,
): Promise<T> {
  for (let n = 1; ; n++) {
    signal?.throwIfAborted();
    try {
      return await attempt();
    } catch (error) {
      if (!(error instanceof BootloaderError) || error instanceof BootloaderVerifyError || n >= tries) throw error;
      onRetry();
      await recover();
    }
  }
}
