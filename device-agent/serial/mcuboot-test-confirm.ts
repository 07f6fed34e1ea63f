// MCUboot test-and-confirm through a running application's SMP server
// (Zephyr mcumgr over the UART console): upload to the secondary slot, mark
// it for one test boot, reset, and confirm only once the device is back,
// runs the new image and answers the health probe. A test image that is not
// confirmed is swapped back by MCUboot at the next reset, so every failure
// after the reset ends with a reset and a look at what runs then.
//
// Where the device stands is read from its image list, never assumed: right
// after the reset request the old application may still answer for a moment
// (Zephyr resets ~250 ms after answering), so a list that still shows the
// test pending means "not rebooted yet", not "refused".
import { createHash, randomBytes } from 'node:crypto';
import { hex } from '../../protocol/hex.js';
import { SmpOp } from './smp-frame.js';
import { parseMcubootImage, McubootImageError } from './mcuboot-image.js';
import {
  BUF_MARGIN, checkRc, DEFAULT_BUF_SIZE, defaultEraseWaitMs, McubootClient, sizeLimit, SMP, type McubootFlashOptions,
} from './mcuboot-smp.js';
import { activeSlot, decodeImageStates, imageStateWrite, type ImageSlotState } from './smp-image-state.js';
import {
  BootloaderError, BootloaderRefusedError, BootloaderTimeoutError, BootloaderVerifyError, ImageTooLargeError, McubootTestFailedError, type DeviceState,
} from './bootloader-error.js';

export const MCUBOOT_HEALTH_PROBES = ['echo', 'none'] as const;
export type McubootHealthProbe = (typeof MCUBOOT_HEALTH_PROBES)[number];

/** Default wait for the device to answer again after a reset: MCUboot's swap of a large slot on slow flash takes tens of seconds. */
export const DEFAULT_BOOT_TIMEOUT_MS = 60_000;

/** The upload's options as serial recovery takes them (timeoutMs is also the interval of the polls after a reset), and the test boot's. */
export interface McubootTestConfirmOptions extends Omit<McubootFlashOptions, 'reset'> {
  /** How long the device may take after a reset to answer again; default DEFAULT_BOOT_TIMEOUT_MS. */
  bootTimeoutMs?: number;
  /** The same after the reset that reverts a failed test; default bootTimeoutMs. */
  revertTimeoutMs?: number;
  /** What proves the test image healthy besides answering its image list: 'echo' (default) a random text echoed back. */
  health?: McubootHealthProbe;
}

export interface McubootTestConfirmResult {
  /** What the device listed before anything was sent. */
  before: ImageSlotState[];
  /** The answer to the confirm: slot 0 runs the image, confirmed. */
  after: ImageSlotState[];
  /** The image that ran before, if the device listed one. */
  previousHash?: Uint8Array;
  /** How it ended: a full test boot, or an image found already running (a test boot left unconfirmed, or confirmed before). */
  outcome: 'confirmed' | 'resumed' | 'already-confirmed';
  /** From the reset to the first answer of the test image, when there was a reset. */
  bootMs?: number;
  retries: number;
}

function testFailed(detail: string, deviceState: DeviceState): McubootTestFailedError {
  const error = new McubootTestFailedError('mcuboot', 'Test boot', detail);
  error.deviceState = deviceState;
  return error;
}

const sameHash = (a: Uint8Array | undefined, b: Uint8Array): boolean => a !== undefined && hex(a) === hex(b);

/** Uploads, test-boots and confirms `image`, or reverts and throws McubootTestFailedError saying what runs. */
export async function testAndConfirmMcuboot(options: McubootTestConfirmOptions): Promise<McubootTestConfirmResult> {
  const info = parseMcubootImage(options.image);
  if (!info.hashValid) throw new McubootImageError('the image SHA-256 TLV does not match its contents; MCUboot would refuse it');
  const ours = info.sha256Tlv;
  const client = new McubootClient({ link: options.link, timeoutMs: options.timeoutMs, tries: options.tries, signal: options.signal });
  const bootTimeoutMs = options.bootTimeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS;
  const flow = new TestBoot(client, ours, options.timeoutMs ?? 1000, options.tries ?? 5, options.signal);
  let reset = false;
  try {
    const before = await client.imageList();
    const running = activeSlot(before);
    const previousHash = sameHash(running?.hash, ours) ? undefined : running?.hash;
    let outcome: McubootTestConfirmResult['outcome'] = 'confirmed';
    let bootMs: number | undefined;
    if (running && sameHash(running.hash, ours)) {
      // img_mgmt lists the running image unconfirmed only while MCUboot would revert it.
      if (running.confirmed) return { before, after: before, outcome: 'already-confirmed', retries: client.retries };
      // A test boot of this image that nobody confirmed (the agent stopped midway): check it and confirm it now.
      outcome = 'resumed';
      reset = true;
    } else {
      const pending = before.find((s) => s.slot === 1 && s.pending);
      if (!(pending && sameHash(pending.hash, ours))) await upload(client, options);
      const marked = decodeImageStates('Image test', await flow.state('Image test', imageStateWrite({ hash: ours, confirm: false })));
      const slot1 = marked.find((s) => s.slot === 1 && sameHash(s.hash, ours));
      if (!slot1?.pending) throw new BootloaderVerifyError('mcuboot', 'Image test', 'the device does not list the image as pending in slot 1 after marking it for test');
      const resetAt = Date.now();
      reset = true;
      const boot = await flow.resetAndWait(bootTimeoutMs, (list) => !list.some((s) => s.pending && sameHash(s.hash, ours)));
      if (!boot.list) return await flow.revert(`the device did not answer within ${bootTimeoutMs} ms of the reset into the test image`, options, bootTimeoutMs);
      // Not the image's fault: it never ran.
      if (!boot.settled) throw new BootloaderTimeoutError('mcuboot', 'Reset', `the device still lists the test image as pending ${bootTimeoutMs} ms after the reset: it does not reset`);
      const now = activeSlot(boot.list);
      if (!sameHash(now?.hash, ours)) {
        throw testFailed(`MCUboot did not boot the test image: slot 0 runs ${now?.hash ? hex(now.hash) : 'no listed image'} (it refused the image, or reverted it at once)`, 'reverted');
      }
      bootMs = Date.now() - resetAt;
    }
    const unhealthy = await flow.health(options.health ?? 'echo');
    if (unhealthy) return await flow.revert(unhealthy, options, bootTimeoutMs);
    let after: ImageSlotState[];
    try {
      // Confirm what runs, without a hash: a hash would confirm that image wherever it is, even one MCUboot already swapped back out.
      after = decodeImageStates('Image confirm', await flow.state('Image confirm', imageStateWrite({ confirm: true })));
    } catch (error) {
      if (!(error instanceof BootloaderError)) throw error;
      return await flow.revert(`the device did not confirm the image: ${error.message}`, options, bootTimeoutMs);
    }
    const slot0 = activeSlot(after);
    if (!sameHash(slot0?.hash, ours) || !slot0!.confirmed) {
      throw new BootloaderVerifyError('mcuboot', 'Image confirm', `after the confirm slot 0 runs ${slot0?.hash ? hex(slot0.hash) : 'no listed image'}${slot0?.confirmed ? '' : ', unconfirmed'}`);
    }
    return { before, after, outcome, retries: client.retries, ...(previousHash ? { previousHash } : {}), ...(bootMs === undefined ? {} : { bootMs }) };
  } catch (error) {
    if (error instanceof BootloaderError && !error.deviceState) error.deviceState = reset ? 'unconfirmed' : 'untouched';
    throw error;
  }
}

/** Uploads the image to the secondary slot through the application (the same offsets-led upload as serial recovery). */
async function upload(client: McubootClient, options: McubootTestConfirmOptions): Promise<void> {
  const bufSize = (await client.bufferSize()) ?? DEFAULT_BUF_SIZE;
  const limit = sizeLimit(await client.slotInfo(), options);
  const length = options.image.length;
  if (limit && length > limit.max) {
    throw new ImageTooLargeError('mcuboot', 'Size check', `the image is ${length} bytes; a slot of ${limit.slot} bytes holds at most ${limit.max} bytes before MCUboot's trailer (${limit.source}); nothing was sent`);
  }
  const sha256 = new Uint8Array(createHash('sha256').update(options.image).digest());
  await client.upload(options.image, {
    maxPacket: bufSize - BUF_MARGIN, sha256, eraseTimeoutMs: options.eraseTimeoutMs ?? defaultEraseWaitMs(limit?.slot), onProgress: options.onProgress,
  });
}

/** The steps after the upload, which talk to a device that may be rebooting. */
class TestBoot {
  constructor(
    private readonly client: McubootClient, private readonly ours: Uint8Array,
    private readonly pollMs: number, private readonly tries: number, private readonly signal: AbortSignal | undefined,
  ) {}

  async state(operation: string, body: ReturnType<typeof imageStateWrite>): Promise<Record<string, unknown>> {
    const answer = await this.client.command(operation, SmpOp.Write, SMP.GROUP_IMAGE, SMP.IMAGE_STATE, body);
    checkRc(operation, answer);
    return answer;
  }

  /**
   * Resets the device, then polls its image list until `settled` holds or
   * `timeoutMs` passes; when it did not settle, the answer to the last poll
   * (undefined: silent). A device that keeps answering unsettled never got
   * the reset (or lost it): it is sent again, every resendMs, up to `tries`
   * times in all.
   */
  async resetAndWait(timeoutMs: number, settled: (list: ImageSlotState[]) => boolean): Promise<{ list?: ImageSlotState[]; settled: boolean }> {
    const deadline = Date.now() + timeoutMs;
    // Zephyr resets 250 ms after answering; MCUboot's swap keeps the device silent meanwhile.
    const resendMs = Math.max(2000, 4 * this.pollMs);
    await this.client.reset();
    let resets = 1;
    let lastReset = Date.now();
    let list: ImageSlotState[] | undefined;
    while (Date.now() < deadline) {
      this.signal?.throwIfAborted();
      const started = Date.now();
      try {
        list = await this.client.imageList({ tries: 1, timeoutMs: Math.max(1, Math.min(this.pollMs, deadline - Date.now())) });
        if (settled(list)) return { list, settled: true };
        if (Date.now() - lastReset >= resendMs && resets < this.tries) {
          this.client.retries++;
          await this.client.reset();
          resets++;
          lastReset = Date.now();
          continue;
        }
      } catch (error) {
        if (!(error instanceof BootloaderTimeoutError)) throw error;
        // What counts is what the device says now: an answer from before it went silent is stale.
        list = undefined;
      }
      // Between polls of a device that answered, a short pause; a silent one already took pollMs.
      const pause = Math.min(200, deadline - Date.now()) - (Date.now() - started);
      if (pause > 0) await new Promise((resolve) => setTimeout(resolve, pause));
    }
    return { ...(list ? { list } : {}), settled: false };
  }

  /** Why the running image is not healthy, or undefined when it is. */
  async health(probe: McubootHealthProbe): Promise<string | undefined> {
    if (probe === 'none') return undefined;
    const nonce = `fwcast-${randomBytes(6).toString('hex')}`;
    try {
      const echoed = await this.client.echo(nonce);
      return echoed === nonce ? undefined : `the health probe echoed ${JSON.stringify(echoed.slice(0, 40))} for ${nonce}`;
    } catch (error) {
      if (error instanceof BootloaderRefusedError && error.returnCode === 8) {
        return `the health probe (SMP echo) failed: ${error.message}; if the application is built without echo, set "health": "none"`;
      }
      if (error instanceof BootloaderError) return `the health probe (SMP echo) failed: ${error.message}`;
      throw error;
    }
  }

  /**
   * Resets the device so MCUboot swaps the unconfirmed test image back out,
   * waits for it to answer, and throws McubootTestFailedError naming what
   * runs then.
   */
  async revert(reason: string, options: McubootTestConfirmOptions, bootTimeoutMs: number): Promise<never> {
    const timeoutMs = options.revertTimeoutMs ?? bootTimeoutMs;
    const isOurs = (s: ImageSlotState | undefined): boolean => sameHash(s?.hash, this.ours);
    // Settled: something other than our image runs, or ours runs confirmed (then no reset will undo it).
    const { list } = await this.resetAndWait(timeoutMs, (l) => !isOurs(activeSlot(l)) || (activeSlot(l)!.confirmed && !l.some((s) => s.slot === 1 && s.confirmed)));
    const running = list && activeSlot(list);
    let deviceState: DeviceState;
    let detail: string;
    if (!list || !running) {
      deviceState = 'unconfirmed';
      detail = `the device did not answer within ${timeoutMs} ms of the reset that reverts it; the test image is unconfirmed and MCUboot swaps it out at the next reset`;
    } else if (!isOurs(running)) {
      deviceState = 'reverted';
      detail = `MCUboot reverted: slot 0 runs ${running.hash ? hex(running.hash) : `version ${running.version}`} again`;
    } else if (running.confirmed && !list.some((s) => s.slot === 1 && s.confirmed)) {
      deviceState = 'self-confirmed';
      detail = 'the device confirmed the test image itself, so MCUboot keeps it';
    } else {
      deviceState = 'unconfirmed';
      detail = 'the test image still runs unconfirmed after the reset; MCUboot swaps it out at the next reset';
    }
    throw testFailed(`${reason}; ${detail}`, deviceState);
  }
}
