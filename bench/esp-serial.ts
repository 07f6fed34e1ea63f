/**
 * ESP ROM loader over the serial bridge: our client (device-agent/serial/
 * esp-rom.ts) flashes the ESP32 emulator through a relay that counts the
 * bytes on the line, at 115200 and 921600 baud (CHANGE_BAUDRATE is sent; a
 * pty carries any rate at its own speed), deflated and not, for incompressible
 * bytes and for machine code:
 *
 *   client ↔ pty pair ↔ counting relay ↔ pty pair ↔ esp-emulator
 *
 * Reported: wall-clock image bytes/s on the pty, efficiency (image bytes ÷
 * all bytes on the line, both directions, MD5 verification included), and
 * the image bytes/s that line time allows at each baud rate (8N1: 10 bits a
 * character), plus 1 ms per request/response turnaround of a USB adapter.
 *
 *   npx tsx bench/esp-serial.ts [--size BYTES]      (inside scripts/lab.sh; also `npm run bench`, section espSerial)
 */
import { openSync, readSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { openSerialPort } from '../device-agent/serial/link.js';
import { flashEsp } from '../device-agent/serial/esp-rom.js';
import { patternBytes, ptyPair, requireTools, startTsx, tempDir, waitForOutput } from '../test/serial/helpers.js';
import { startRelay } from '../test/serial/relay.js';
import { benchScope } from './serial.js';

const TURNAROUND_MS = 1;

export interface EspRun {
  content: 'random' | 'machine code';
  baud: number;
  compressed: boolean;
  imageBytes: number;
  toDevice: number;
  toHost: number;
  roundTrips: number;
  wallMs: number;
  efficiency: number;
  wallBps: number;
  lineBps: number;
  lineWithTurnaroundBps: number;
  retries: number;
}

/** `length` bytes of this machine's node binary from 16 MiB in: x86-64 code, a stand-in for firmware's compressibility. */
function machineCode(length: number): Uint8Array {
  const out = new Uint8Array(length);
  const fd = openSync(process.execPath, 'r');
  try { readSync(fd, out, 0, length, 16 * 1024 * 1024); } finally { closeSync(fd); }
  return out;
}

export async function measureEsp(content: EspRun['content'], image: Uint8Array, baud: number, compressed: boolean): Promise<EspRun> {
  const scope = benchScope();
  try {
    requireTools(scope, 'socat');
    const dir = tempDir(scope, 'bench-esp');
    const hostPair = await ptyPair(scope, dir, 'h');
    const devicePair = await ptyPair(scope, dir, 'd');
    const emulator = startTsx(scope, 'hardware/emulators/esp-emulator.ts', ['--port', devicePair.device, '--flash', join(dir, 'flash.bin'), '--chip', 'esp32']);
    await waitForOutput(emulator, /serving/, 15_000, 'esp-emulator');
    const relay = await startRelay({ hostSide: hostPair.device, deviceSide: devicePair.host });
    scope.teardown(() => relay.close());
    const link = await openSerialPort({ path: hostPair.host, baudRate: 115200 });
    scope.teardown(() => link.close());
    const started = performance.now();
    const result = await flashEsp({
      link, parts: [{ address: 0x10000, data: image }], chip: 'esp32', compress: compressed, reset: 'none', start: false,
      flashBaud: baud === 115200 ? undefined : baud, signal: AbortSignal.timeout(300_000),
    });
    const wallMs = performance.now() - started;
    const lineBytes = relay.toDevice + relay.toHost;
    const efficiency = image.length / lineBytes;
    const charsPerSecond = baud / 10;
    return {
      content, baud, compressed, imageBytes: image.length, toDevice: relay.toDevice, toHost: relay.toHost, roundTrips: relay.roundTrips,
      wallMs, efficiency, wallBps: image.length / (wallMs / 1000), lineBps: charsPerSecond * efficiency,
      lineWithTurnaroundBps: image.length / (lineBytes / charsPerSecond + relay.roundTrips * TURNAROUND_MS / 1000),
      retries: result.retries,
    };
  } finally {
    await scope.close();
  }
}

export function formatEsp(runs: EspRun[]): string {
  const head = ['content', 'baud', 'deflate', 'image B', '→dev/→host B', 'round trips', 'efficiency', 'wall ms', 'B/s pty', 'B/s line', `+${TURNAROUND_MS}ms/RT`];
  const rows = runs.map((r) => [
    r.content, String(r.baud), r.compressed ? 'yes' : 'no', String(r.imageBytes), `${r.toDevice}/${r.toHost}`, String(r.roundTrips),
    r.efficiency.toFixed(3), r.wallMs.toFixed(0), r.wallBps.toFixed(0), r.lineBps.toFixed(0), r.lineWithTurnaroundBps.toFixed(0),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [
    line(head), ...rows.map(line), '',
    'efficiency: image bytes ÷ all bytes on the line (both directions; connect, erase, write and the ROM\'s MD5 included).',
    'B/s pty: wall clock on the pty (not rate-limited). B/s line: line time of every counted byte at the baud rate, 8N1;',
    `+${TURNAROUND_MS}ms/RT adds a USB adapter's turnaround per request/response. The connect before CHANGE_BAUDRATE is counted at the new rate.`,
  ].join('\n');
}

export const ESP_FULL = 256 * 1024;
export const ESP_SMOKE = 32 * 1024;

/** Both contents × both baud rates × deflate on and off, one after the other. */
export async function measureEspSerial(size = ESP_FULL): Promise<EspRun[]> {
  const runs: EspRun[] = [];
  for (const [content, image] of [['random', patternBytes(size, 71)], ['machine code', machineCode(size)]] as const) {
    for (const baud of [115200, 921600]) {
      for (const compressed of [false, true]) runs.push(await measureEsp(content, image, baud, compressed));
    }
  }
  return runs;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({ options: { size: { type: 'string', default: String(ESP_FULL) } } });
  console.log(formatEsp(await measureEspSerial(Number(values.size))));
}
