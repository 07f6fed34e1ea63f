/**
 * Serial bridge efficiency: each bootloader client flashes an image through a
 * relay that counts the bytes on the line in each direction, between two socat
 * pty pairs:
 *
 *   client ↔ pty pair ↔ counting relay ↔ pty pair ↔ device
 *
 * mcuboot talks to our SMP emulator, stm32 to our AN3155 emulator (both over
 * ptys, which are not rate-limited), stk500 to Debian's real optiboot running
 * in simavr, whose UART is simulated at optiboot's 115200 baud in real time.
 * From the byte counts follows what the wall time on a pty cannot show: the
 * payload rate on a real 115200-baud line.
 *
 *   npx tsx bench/serial.ts [--smoke]      (inside scripts/lab.sh)
 */
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { openSerialPort, type Parity } from '../device-agent/serial/link.js';
import { flashMcuboot } from '../device-agent/serial/mcuboot-smp.js';
import { buildMcubootImage } from '../device-agent/serial/mcuboot-image.js';
import { flashStm32 } from '../device-agent/serial/stm32-an3155.js';
import { flashStk500 } from '../device-agent/serial/stk500.js';
import { startArduino } from '../test/serial/avr.js';
import { patternBytes, ptyPair, requireTools, startTsx, tempDir, waitForOutput, type Scope } from '../test/serial/helpers.js';
import { startRelay } from '../test/serial/relay.js';

export const BAUD = 115200;
/** What a USB-serial adapter typically adds per request/response turnaround. */
const TURNAROUND_MS = 1;
const MCUBOOT_VERSION = { major: 1, minor: 2, revision: 3 };
/** Header and TLV area around the payload, so the MCUboot image itself is the requested size. */
const MCUBOOT_OVERHEAD = buildMcubootImage(new Uint8Array(0), MCUBOOT_VERSION).length;

export type SerialProtocol = 'mcuboot' | 'stm32' | 'stk500';

export interface SerialPhase {
  /** Bytes the relay carried host → device. */
  toDevice: number;
  /** Bytes the relay carried device → host. */
  toHost: number;
  /** Request/response turnarounds on the line. */
  roundTrips: number;
  /** Wall time from the first request. */
  ms: number;
  /** Image bytes ÷ all bytes on the line, both directions. */
  efficiency: number;
}

export interface SerialProtocolResult {
  protocol: SerialProtocol;
  device: string;
  /** 'pty': not rate-limited; 'simavr UART': simulated at 115200 baud in real time. */
  line: 'pty' | 'simavr UART';
  imageBytes: number;
  /** Character framing on a real line: AN3155 needs even parity. */
  framing: '8N1' | '8E1';
  bitsPerChar: number;
  /** What follows the write phase in `total`. */
  verifiedBy: string;
  /** From the first request to the answer to the last write. */
  write: SerialPhase;
  /** The whole flash, verification included. */
  total: SerialPhase;
  /** Image bytes per second of wall time over the whole flash. */
  measuredBps: number;
  /** Image bytes per second on a 115200-baud line, counting line time only. */
  projectedWriteBps: number;
  projectedBps: number;
  /** As projectedBps, plus TURNAROUND_MS per round trip. */
  projectedWithTurnaroundBps: number;
  retries: number;
}

export interface SerialResult {
  baud: number;
  turnaroundMs: number;
  protocols: SerialProtocolResult[];
}

export type SerialSizes = Record<SerialProtocol, number>;
export const FULL: SerialSizes = { mcuboot: 64 * 1024, stm32: 64 * 1024, stk500: 16 * 1024 };
export const SMOKE: SerialSizes = { mcuboot: 8 * 1024, stm32: 8 * 1024, stk500: 2 * 1024 };

/** A Scope without a test around it: teardowns run, newest first, in `close`. */
export function benchScope(): Scope & { close(): Promise<void> } {
  const teardowns: Array<() => unknown> = [];
  return {
    teardown: (fn) => { teardowns.push(fn); },
    fail: (message) => { throw new Error(message); },
    async close() {
      for (const fn of teardowns.reverse()) {
        try { await fn(); } catch (error) { process.stderr.write(`bench serial: clean-up: ${(error as Error).message}\n`); }
      }
    },
  };
}

interface Count { toDevice: number; toHost: number; roundTrips: number; at: number }

/** Starts the device end on `tty`; returns what it is. */
async function startDevice(scope: Scope, protocol: SerialProtocol, dir: string, tty: string): Promise<string> {
  if (protocol === 'stk500') {
    await startArduino(scope, dir, tty);
    return 'optiboot in simavr';
  }
  const script = protocol === 'mcuboot' ? 'hardware/emulators/smp-emulator.ts' : 'hardware/emulators/stm32-emulator.ts';
  const emulator = startTsx(scope, script, ['--port', tty, '--flash', join(dir, 'flash.bin')]);
  await waitForOutput(emulator, /serving/, 15_000, script);
  return protocol === 'mcuboot' ? 'SMP emulator' : 'STM32 emulator';
}

/** Flashes one image of `size` bytes through a counting relay; everything started is stopped before it returns. */
export async function measureProtocol(protocol: SerialProtocol, size: number, deadlineMs = 120_000): Promise<SerialProtocolResult> {
  const scope = benchScope();
  try {
    requireTools(scope, 'socat');
    const dir = tempDir(scope, `bench-${protocol}`);
    const hostPair = await ptyPair(scope, dir, 'h');
    const devicePair = await ptyPair(scope, dir, 'd');
    const device = await startDevice(scope, protocol, dir, devicePair.device);
    const relay = await startRelay({ hostSide: hostPair.device, deviceSide: devicePair.host });
    scope.teardown(() => relay.close());
    const parity: Parity = protocol === 'stm32' ? 'even' : 'none';
    const link = await openSerialPort({ path: hostPair.host, parity });
    scope.teardown(() => link.close());

    const image = protocol === 'mcuboot'
      ? buildMcubootImage(patternBytes(size - MCUBOOT_OVERHEAD, 61), MCUBOOT_VERSION)
      : patternBytes(size, 62);
    const count = (): Count => ({ toDevice: relay.toDevice, toHost: relay.toHost, roundTrips: relay.roundTrips, at: performance.now() });
    const start = count();
    let written: Count | undefined;
    // Every client reports the write phase done (done = image length) once its last write is answered.
    const onProgress = (done: number): void => { if (!written && done >= image.length) written = count(); };
    const signal = AbortSignal.timeout(deadlineMs);
    let retries: number;
    let verifiedBy: string;
    if (protocol === 'mcuboot') {
      const r = await flashMcuboot({ link, image, signal, onProgress });
      retries = r.retries;
      verifiedBy = `image list (device checks the ${r.verifiedBy}), reset`;
    } else if (protocol === 'stm32') {
      retries = (await flashStm32({ link, image, signal, onProgress })).retries;
      verifiedBy = 'read-back of every block';
    } else {
      const r = await flashStk500({ link, image, signal, onProgress });
      retries = r.retries + r.rereads + r.rewrittenPages;
      verifiedBy = 'read-back of every page';
    }
    const end = count();
    if (!written) throw new Error(`${protocol}: the client never reported the write phase done`);

    const phase = (to: Count): SerialPhase => {
      const toDevice = to.toDevice - start.toDevice;
      const toHost = to.toHost - start.toHost;
      return { toDevice, toHost, roundTrips: to.roundTrips - start.roundTrips, ms: to.at - start.at, efficiency: image.length / (toDevice + toHost) };
    };
    const write = phase(written);
    const total = phase(end);
    const bitsPerChar = protocol === 'stm32' ? 11 : 10;
    const charsPerSecond = BAUD / bitsPerChar;
    return {
      protocol,
      device,
      line: protocol === 'stk500' ? 'simavr UART' : 'pty',
      imageBytes: image.length,
      framing: protocol === 'stm32' ? '8E1' : '8N1',
      bitsPerChar,
      verifiedBy,
      write,
      total,
      measuredBps: image.length / (total.ms / 1000),
      projectedWriteBps: charsPerSecond * write.efficiency,
      projectedBps: charsPerSecond * total.efficiency,
      projectedWithTurnaroundBps: image.length / ((total.toDevice + total.toHost) / charsPerSecond + total.roundTrips * TURNAROUND_MS / 1000),
      retries,
    };
  } finally {
    await scope.close();
  }
}

/** All three protocols, one after the other (they would compete for the two cores). */
export async function measureSerial(sizes: SerialSizes = FULL): Promise<SerialResult> {
  const protocols: SerialProtocolResult[] = [];
  for (const protocol of ['mcuboot', 'stm32', 'stk500'] as const) protocols.push(await measureProtocol(protocol, sizes[protocol]));
  return { baud: BAUD, turnaroundMs: TURNAROUND_MS, protocols };
}

/** Raw character rate of the line: the most payload any protocol could carry. */
export const lineCapacity = (bitsPerChar: number): number => BAUD / bitsPerChar;

export function formatTable(result: SerialResult): string {
  const head = ['protocol', 'device (line)', 'image B', 'write →dev/→host B', 'w+v →dev/→host B', 'eff write', 'eff w+v', 'round trips', 'wall ms', 'B/s wall', `B/s @${result.baud}`, `+${result.turnaroundMs}ms/RT`];
  const rows = result.protocols.map((r) => [
    r.protocol,
    `${r.device} (${r.line})`,
    String(r.imageBytes),
    `${r.write.toDevice}/${r.write.toHost}`,
    `${r.total.toDevice}/${r.total.toHost}`,
    r.write.efficiency.toFixed(3),
    r.total.efficiency.toFixed(3),
    `${r.write.roundTrips}/${r.total.roundTrips}`,
    r.total.ms.toFixed(0),
    r.measuredBps.toFixed(0),
    `${r.projectedBps.toFixed(0)} ${r.framing}`,
    r.projectedWithTurnaroundBps.toFixed(0),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  const notes = result.protocols.map((r) => `${r.protocol}: verify = ${r.verifiedBy}; ${r.retries} retries`);
  return [
    line(head),
    ...rows.map(line),
    '',
    'round trips: write/write+verify. B/s wall: image bytes over the whole flash on the pty (not rate-limited)',
    `or the simavr UART (real-time 115200 baud). B/s @${result.baud}: line time of every counted byte at 10 (8N1)`,
    `or 11 (8E1) bits per character, no turnaround; +${result.turnaroundMs}ms/RT adds that per round trip.`,
    ...notes,
  ].join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(formatTable(await measureSerial(process.argv.includes('--smoke') ? SMOKE : FULL)));
}
