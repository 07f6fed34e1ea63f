/**
 * `npm run demo:mcu`: the serial bridge. A publisher multicasts a signed MCU
 * image on a private network (namespaces inside scripts/lab.sh: nothing
 * leaves it); a bridge agent receives and verifies it, then flashes an
 * emulated STM32 (AN3155 ROM bootloader) through a socat pty pair, as it
 * would a real board on /dev/ttyUSB0. Shows reception and flashing progress,
 * then compares the flash region with the signed image.
 *
 *   [publisher] fwcast publish ── bridge ── [bridge] fwcast-agent ── pty ══ pty ── STM32 emulator ── flash file
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openSerialPort, type SerialLink } from '../device-agent/serial/link.js';
import { AN3155, STM32_FLASH_BASE } from '../device-agent/serial/stm32-an3155.js';
import { FlashFile, type FlashMemory } from '../hardware/emulators/flash-file.js';
import { Stm32Emulator } from '../hardware/emulators/stm32-emulator.js';
import type { LogEvent } from '../protocol/log.js';
import { NetLab } from './lab/netlab.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const FWCAST = join(ROOT, 'bin/fwcast.js');
const AGENT = join(ROOT, 'bin/fwcast-agent.js');
const KEY = join(ROOT, 'firmware-samples/demo-keys/DEMO-ONLY-publisher.key');
const PUB = join(ROOT, 'firmware-samples/demo-keys/DEMO-ONLY-publisher.pub');
const IMAGE = join(ROOT, 'firmware-samples/sample-mcu-20k.bin');
const MODEL = 'stm32f103';
const VERSION = '1.2.0';
// Slow enough that reception takes a few seconds and its progress is visible.
const RATE = '100kbit';
const LOSS = 10;
const FLASH_SIZE = 128 * 1024;
const DEADLINE_MS = 50_000;

const tty = process.stdout.isTTY;
const sha256 = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

function bar(fraction: number, width = 30): string {
  const full = Math.round(Math.min(1, Math.max(0, fraction)) * width);
  return '█'.repeat(full) + '░'.repeat(width - full);
}

function hexdump(bytes: Uint8Array, base: number, lines = 4): string[] {
  const out: string[] = [];
  for (let i = 0; i < Math.min(bytes.length, lines * 16); i += 16) {
    const row = bytes.subarray(i, i + 16);
    const hex = [...row].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    const ascii = [...row].map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
    out.push(`  ${(base + i).toString(16).padStart(8, '0')}  ${hex.padEnd(47)}  |${ascii}|`);
  }
  return out;
}

/** A socat pty pair: `device` for the emulated MCU, `host` for the agent (like /dev/ttyUSB0). */
async function ptyPair(dir: string): Promise<{ device: string; host: string; socat: ChildProcess }> {
  const device = join(dir, 'mcu-uart');
  const host = join(dir, 'ttyUSB0');
  const socat = spawn('socat', ['-d', '-d', `pty,raw,echo=0,link=${device}`, `pty,raw,echo=0,link=${host}`], { stdio: ['ignore', 'ignore', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    let log = '';
    const timer = setTimeout(() => reject(new Error(`socat not ready within 5 s:\n${log}`)), 5000);
    socat.on('error', (e) => { clearTimeout(timer); reject(new Error(`cannot run socat (apt-get install -y socat): ${e.message}`)); });
    socat.stderr!.setEncoding('utf8').on('data', (d: string) => {
      log += d;
      if (log.includes('starting data transfer loop')) { clearTimeout(timer); resolve(); }
    });
  });
  return { device, host, socat };
}

/** SIGTERM, then wait (up to 2 s) so the child is reaped before we exit. */
function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); resolve(); }, 2000);
    child.once('exit', () => { clearTimeout(timer); resolve(); });
    child.kill('SIGTERM');
  });
}

interface BridgeView {
  state: 'starting' | 'listening' | 'receiving' | 'verified' | 'flashing' | 'installed' | 'failed';
  symbols: number;
  needed: number;
  segments: string;
  sha256?: string;
  lastError?: string;
}

/** "0/1" → "1/1": the last progress line comes before the final segment. */
function allSegments(segments: string): string {
  const total = segments.split('/')[1];
  return total ? `${total}/${total}` : segments;
}

interface McuView { phase: 'waiting' | 'erasing' | 'writing' | 'verifying' | 'done'; written: number; readBack: number }

async function main(): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-demo-mcu-'));
  const cleanups: (() => void | Promise<void>)[] = [() => rmSync(dir, { recursive: true, force: true })];
  // Runs once, newest step first; Ctrl-C and the normal end share the one run.
  let cleaning: Promise<void> | undefined;
  const cleanup = (): Promise<void> => cleaning ??= (async () => {
    for (const c of cleanups.reverse()) {
      try { await c(); } catch { /* best effort */ }
    }
  })();
  let stopping = false;
  const interrupted = (): void => {
    stopping = true;
    console.log('\ninterrupted: stopping the publisher, agent, emulator and socat');
    void cleanup().then(() => process.exit(130));
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);

  try {
    const image = new Uint8Array(readFileSync(IMAGE));
    const source = sha256(image);
    const releasePath = join(dir, `${MODEL}-${VERSION}.fwc`);
    execFileSync(process.execPath, [FWCAST, 'sign', IMAGE, '--key', KEY, '--model', MODEL, '--version', VERSION, '--seq', '1', '--out', releasePath], { stdio: 'inherit' });

    // The emulated board: an STM32F1 ROM bootloader on the device end of a pty,
    // its flash in a file. Run in this process so the demo can watch it work.
    const pair = await ptyPair(dir);
    cleanups.push(() => stopChild(pair.socat));
    const flashFile = new FlashFile(join(dir, 'stm32-flash.bin'), FLASH_SIZE);
    cleanups.push(() => flashFile.close());
    const mcu: McuView = { phase: 'waiting', written: 0, readBack: 0 };
    const watched: FlashMemory = {
      bytes: flashFile.bytes, size: flashFile.size,
      write: (offset, data) => { flashFile.write(offset, data); mcu.written += data.length; mcu.phase = 'writing'; },
      erase: (offset, length) => { flashFile.erase(offset, length); mcu.phase = 'erasing'; },
    };
    const emulator = new Stm32Emulator({
      flash: watched,
      onCommand: (op) => {
        if (op === AN3155.READ_MEMORY && mcu.written > 0) {
          mcu.phase = 'verifying';
          mcu.readBack = Math.min(image.length, mcu.readBack + AN3155.MAX_BLOCK);
        }
      },
    });
    const deviceLink: SerialLink = await openSerialPort({ path: pair.device });
    cleanups.push(() => deviceLink.close());
    const serving = emulator.serve(deviceLink).catch((e: unknown) => { console.error(`emulator: ${(e as Error).message}`); });

    const lab = NetLab.create(['publisher', 'bridge']);
    cleanups.push(() => lab.destroy());
    lab.setLoss('bridge', LOSS);
    const store = join(dir, 'bridge-store');
    const configPath = join(dir, 'agent.json');
    const config = {
      interface: 'eth0', store, trustedKeys: [PUB],
      models: [{ model: MODEL, installer: { type: 'serial', protocol: 'stm32', port: pair.host, baud: 115200 } }],
    };
    writeFileSync(configPath, JSON.stringify(config, null, 2));
    console.log(`private network: publisher + bridge agent on one bridge; the bridge's link loses ${LOSS}% of packets (nftables)`);
    console.log(`channel fw/${MODEL} → ${execFileSync(process.execPath, [FWCAST, 'channel', MODEL], { encoding: 'utf8' }).trim()}`);
    console.log(`emulated STM32F103 (AN3155 ROM bootloader) on ${pair.device}; the agent's serial port is ${pair.host}`);
    console.log(`agent config:\n${JSON.stringify(config.models[0], null, 2).replace(/^/gm, '  ')}\n`);

    const view: BridgeView = { state: 'starting', symbols: 0, needed: 1, segments: '' };
    const agent = lab.spawn('bridge', process.execPath, [AGENT, '--config', configPath, '--once', '--json', '--log-format', 'json', '--progress-interval', '0.2', '--timeout', String(DEADLINE_MS / 1000)]);
    let buffered = '';
    agent.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      buffered += chunk;
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        try {
          const entry = JSON.parse(line) as { event: LogEvent; msg: string; level: string; symbols?: number; needed?: number; segmentsDone?: number; segments?: number };
          if (entry.event === 'agent.listening') view.state = 'listening';
          else if (entry.event === 'release.progress' && view.state !== 'flashing') {
            Object.assign(view, { state: 'receiving', symbols: entry.symbols, needed: entry.needed, segments: `${entry.segmentsDone}/${entry.segments}` });
          } else if (entry.event === 'release.verified') Object.assign(view, { state: 'flashing', symbols: view.needed, segments: allSegments(view.segments) });
          if (entry.level === 'error' || entry.level === 'warn') view.lastError = entry.msg;
        } catch {
          view.lastError = line;
        }
      }
    });
    let installedPath: string | undefined;
    agent.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      const result = JSON.parse(chunk.trim().split('\n').pop()!) as { sha256: string; path: string };
      Object.assign(view, { state: 'installed', sha256: result.sha256, symbols: view.needed, segments: allSegments(view.segments) });
      installedPath = result.path;
      mcu.phase = 'done';
    });
    const agentExit = new Promise<number | null>((resolve) => agent.on('exit', (code) => {
      if (code !== 0) view.state = 'failed';
      resolve(code);
    }));

    // Give the agent a moment to join before the carousel starts.
    const joinDeadline = Date.now() + 15_000;
    while (view.state === 'starting' && Date.now() < joinDeadline) await new Promise((r) => setTimeout(r, 100));
    const publisher = lab.spawn('publisher', process.execPath, [FWCAST, 'publish', releasePath, '--iface', 'eth0', '--rate', RATE, '--duration', `${DEADLINE_MS / 1000}s`, '--quiet']);
    publisher.stderr!.resume();
    cleanups.push(() => stopChild(publisher));
    const started = Date.now();

    let drawn = 0;
    const draw = (): void => {
      const seconds = ((Date.now() - started) / 1000).toFixed(1);
      const rx = view.state === 'installed' || view.state === 'flashing' ? 1 : view.symbols / view.needed;
      const flashFraction = (mcu.written + mcu.readBack) / (2 * image.length);
      const lines = [
        `publisher  carousel of ${MODEL} ${VERSION} (${image.length} bytes) at ${RATE}, ${seconds} s`,
        `bridge     ${bar(rx)} ${(rx * 100).toFixed(0).padStart(3)}% ${view.state.padEnd(9)} ${view.segments ? `segments ${view.segments}` : ''} (${lab.dropped().bridge ?? 0} packets dropped)`,
        `stm32 uart ${bar(flashFraction)} ${(flashFraction * 100).toFixed(0).padStart(3)}% ${mcu.phase.padEnd(9)} written ${mcu.written}, read back ${mcu.readBack} of ${image.length} bytes`,
      ];
      if (tty) {
        if (drawn) process.stdout.write(`\x1b[${drawn}A`);
        process.stdout.write(lines.map((l) => `\x1b[2K${l}\n`).join(''));
        drawn = lines.length;
      } else {
        process.stdout.write(lines.join('\n') + '\n\n');
      }
    };
    const timer = setInterval(draw, tty ? 100 : 1000);
    const code = await Promise.race([agentExit, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), DEADLINE_MS).unref())]);
    clearInterval(timer);
    if (stopping) return 130;
    draw();
    publisher.kill('SIGTERM');

    const region = flashFile.bytes.slice(0, image.length);
    const flashSha = sha256(region);
    console.log(`\nsigned image            sha256 ${source}`);
    console.log(`agent verified          sha256 ${view.sha256 ?? '(none)'}${installedPath ? `  (${installedPath})` : ''}`);
    console.log(`${`flash 0x${STM32_FLASH_BASE.toString(16).padStart(8, '0')}+${image.length}`.padEnd(24)}sha256 ${flashSha}`);
    console.log(`\nsigned image, first bytes:`);
    console.log(hexdump(image, 0).join('\n'));
    console.log(`emulated flash at 0x${STM32_FLASH_BASE.toString(16).padStart(8, '0')}:`);
    console.log(hexdump(region, STM32_FLASH_BASE).join('\n'));

    const ok = code === 0 && view.sha256 === source && flashSha === source;
    if (!ok) {
      const why = code === 'timeout' ? `no install within ${DEADLINE_MS / 1000} s` : `agent exited ${code}`;
      console.log(`\ndemo failed: ${why}${view.lastError ? `; last agent error: ${view.lastError}` : ''}`);
    } else {
      console.log(`\nthe emulated MCU's flash holds the signed image, byte for byte (${((Date.now() - started) / 1000).toFixed(1)} s from first packet to verified flash).`);
    }
    await deviceLink.close();
    await serving;
    return ok ? 0 : 1;
  } finally {
    await cleanup();
  }
}

process.exit(await main());
