// The real Arduino bootloader (optiboot, from Debian's arduino-core-avr)
// running in simavr behind a pty, for tests.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ptyPair, REPO, requireTools, startProcess, waitForOutput, type Scope } from './helpers.js';

export const OPTIBOOT_HEX = '/usr/share/arduino/hardware/arduino/avr/bootloaders/optiboot/optiboot_atmega328.hex';
const SOURCE = join(REPO, 'hardware/simavr/avr-uart-pty.c');
const BUILD_DIR = join(REPO, 'test/serial/build');
const BINARY = join(BUILD_DIR, 'avr-uart-pty');

/** Compiles the harness when missing or older than its source (atomically: test files run in parallel). */
export function buildHarness(t: Scope): string {
  requireTools(t, 'gcc', 'pkg-config');
  if (!existsSync('/usr/include/simavr/sim_avr.h')) {
    t.fail('simavr headers missing: apt-get install -y libsimavr-dev libelf-dev');
    throw new Error('libsimavr-dev missing');
  }
  if (existsSync(BINARY) && statSync(BINARY).mtimeMs >= statSync(SOURCE).mtimeMs) return BINARY;
  mkdirSync(BUILD_DIR, { recursive: true });
  const temp = `${BINARY}.${process.pid}`;
  const flags = execFileSync('pkg-config', ['--cflags', '--libs', 'simavr'], { encoding: 'utf8' }).trim().split(/\s+/);
  execFileSync('gcc', ['-O2', '-Wall', '-o', temp, SOURCE, ...flags, '-lelf'], { stdio: 'pipe' });
  renameSync(temp, BINARY);
  return BINARY;
}

export interface SimulatedArduino { host: string; flashOut: string; stop(): Promise<void> }

/**
 * Starts optiboot on a simulated ATmega328P wired to `deviceTty` (a new pty
 * pair when absent); `stop()` ends it and dumps its application flash to `flashOut`.
 */
export async function startArduino(t: Scope, dir: string, deviceTty?: string): Promise<SimulatedArduino> {
  requireTools(t, 'socat');
  if (!existsSync(OPTIBOOT_HEX)) {
    t.fail(`bootloader missing (${OPTIBOOT_HEX}): apt-get install -y arduino-core-avr`);
    throw new Error('arduino-core-avr missing');
  }
  const binary = buildHarness(t);
  let host = '';
  if (!deviceTty) {
    const pair = await ptyPair(t, dir, 'avr');
    deviceTty = pair.device;
    host = pair.host;
  }
  const flashOut = join(dir, 'avr-flash.bin');
  const sim = startProcess(t, binary, [OPTIBOOT_HEX, deviceTty, flashOut]);
  await waitForOutput(sim, /bootloader at 0x7e00/, 5000, 'avr-uart-pty');
  return {
    host,
    flashOut,
    stop: () => new Promise((resolve) => {
      if (sim.exitCode !== null) { resolve(); return; }
      sim.once('exit', () => resolve());
      sim.kill('SIGTERM');
    }),
  };
}

/** Intel HEX as avr-objcopy writes it: 16-byte data records, then EOF. */
export function toIntelHex(data: Uint8Array, base = 0): string {
  const lines: string[] = [];
  for (let at = 0; at < data.length; at += 16) {
    const chunk = data.subarray(at, at + 16);
    const address = base + at;
    const record = [chunk.length, (address >> 8) & 0xff, address & 0xff, 0, ...chunk];
    const sum = (0x100 - (record.reduce((a, b) => a + b, 0) & 0xff)) & 0xff;
    lines.push(':' + Buffer.from([...record, sum]).toString('hex').toUpperCase());
  }
  lines.push(':00000001FF');
  return lines.join('\n') + '\n';
}
