/**
 * fwcast's console logger against pino (JSON) and pino-pretty (text) on the
 * agent's own lines: speed per line, and what each does with a stranger's
 * bytes (line breaks, terminal escapes, bidi overrides, 64 KB). pino is not a
 * dependency of fwcast; this benchmark is what the choice rests on. To run it:
 *
 *   npm i --no-save pino pino-pretty && npx tsx bench/log-lines.ts [LINES]
 *
 * Each logger writes into the same counting sink (no I/O), so the numbers are
 * the cost of making a line. Rounds alternate between loggers (the machine is
 * shared and noisy); the median round is reported.
 */
import { performance } from 'node:perf_hooks';
import { Writable } from 'node:stream';
import { createConsoleLogger } from '../cli/console-log.js';
import type { LogEvent, LogFields } from '../protocol/log.js';
import { quote } from '../protocol/quote.js';

const LINES = Number(process.argv[2] ?? 20_000);
const ROUNDS = 7;

/** Lines the agent writes: a progress line, a refusal carrying a quoted hostile value, the stats at exit. */
const HOSTILE = `\n2001-01-01T00:00:00.000Z info  agent:rpi4: installed\u001b[2J\u009b31m\u2028\u202eevil`;
const SAMPLES: Array<[LogEvent, LogFields, string]> = [
  ['release.progress', { model: 'rpi4', version: '1.4.2', seq: 42, symbols: 120_345, needed: 212_000, segmentsDone: 37, segments: 66 }, 'progress rpi4 1.4.2: 37/66 segments, 120345/212000 symbols (56.8%)'],
  ['release.refused', { model: 'rpi4', release: '0ac6c731833295c0', error: 'InvalidSignatureError', reason: 'bad-signature', detail: `COSE algorithm ${quote(HOSTILE)} is not EdDSA (-8)` },
    `rejected release 0ac6c731833295c0: InvalidSignatureError: COSE algorithm ${quote(HOSTILE)} is not EdDSA (-8)`],
  ['agent.stats', {
    model: 'rpi4', datagrams: 2_345_678, symbolsUsed: 212_004, duplicates: 311, segmentsDecoded: 66, authChunksVerified: 1660, decoderTraps: 0,
    ...Object.fromEntries(['malformed', 'unknown-release', 'bad-auth', 'auth-repeat', 'segment-complete', 'bad-symbol-digest', 'manifest-repeat', 'bad-signature', 'unknown-key', 'limit-exceeded'].map((r, i) => [`dropped.${r}`, i * 137])),
  }, 'stats rpi4: 2345678 datagrams, 212004 symbols used, 311 duplicates; dropped: …'],
];

/** What a stranger's bytes do to a line: the same three, carried raw (as a logger sees an unquoted value). */
const RAW_HOSTILE: Array<[LogEvent, LogFields, string]> = [
  ['release.refused', { model: 'rpi4', release: 'ff', error: 'InvalidSignatureError', reason: 'bad-signature', detail: HOSTILE }, `rejected: ${HOSTILE}`],
  ['release.refused', { model: 'rpi4', release: 'ff', error: 'InvalidSignatureError', reason: 'bad-signature', detail: HOSTILE.repeat(1000) }, `rejected: ${HOSTILE.repeat(1000)}`],
];

// eslint-disable-next-line no-control-regex
const UNSAFE = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028-\u202e]/;

interface Sink extends Writable {
  bytes: number;
  text: string;
  keep: boolean;
}

function sink(): Sink {
  const s = new Writable({
    write(chunk: Buffer | string, _enc, cb) {
      s.bytes += chunk.length;
      if (s.keep) s.text += String(chunk);
      cb();
    },
  }) as Sink;
  s.bytes = 0;
  s.text = '';
  s.keep = false;
  // pino and the console logger call write(string) directly: count without the stream machinery.
  s.write = ((chunk: string) => {
    s.bytes += chunk.length;
    if (s.keep) s.text += chunk;
    return true;
  }) as Sink['write'];
  return s;
}

type Log = (event: LogEvent, fields: LogFields, msg: string) => void;

interface Candidate {
  name: string;
  make(out: Sink): Log;
}

async function candidates(): Promise<Candidate[]> {
  const ours: Candidate[] = (['json', 'text'] as const).map((format) => ({
    name: `fwcast ${format}`,
    make: (out) => {
      const log = createConsoleLogger({ format, stream: out }, 'agent:rpi4');
      return (e, f, m) => log.event(e, f, m);
    },
  }));
  // Not dependencies of fwcast: loaded by name, so this file typechecks without them.
  type PinoLogger = Record<'info' | 'warn', (fields: object, msg: string) => void> & { child(bindings: object): PinoLogger };
  type Pino = ((options: object, destination: object) => PinoLogger) & { stdTimeFunctions: { isoTime: () => string } };
  let pino: Pino;
  let pretty: (options: object) => object;
  try {
    const [pinoName, prettyName] = ['pino', 'pino-pretty'];
    pino = ((await import(pinoName)) as { default: Pino }).default;
    pretty = ((await import(prettyName)) as { default: (options: object) => object }).default;
  } catch {
    process.stderr.write('log-lines: pino or pino-pretty is not installed (npm i --no-save pino pino-pretty): fwcast only\n');
    return ours;
  }
  // pino set up for fwcast's line contract: level names, ISO time, a scope, the event as a field.
  const options = {
    base: undefined,
    messageKey: 'msg',
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  const levelOf = (e: LogEvent): 'info' | 'warn' => (e === 'release.refused' ? 'warn' : 'info');
  return [
    ...ours,
    {
      name: 'pino json',
      make: (out) => {
        const log = pino(options, out).child({ scope: 'agent:rpi4' });
        return (e, f, m) => log[levelOf(e)]({ event: e, ...f }, m);
      },
    },
    {
      name: 'pino-pretty text',
      make: (out) => {
        const log = pino(options, pretty({ destination: out, sync: true, colorize: false, singleLine: true, translateTime: 'SYS:standard' })).child({ scope: 'agent:rpi4' });
        return (e, f, m) => log[levelOf(e)]({ event: e, ...f }, m);
      },
    },
  ];
}

function nsPerLine(c: Candidate): { ns: number; bytes: number } {
  const out = sink();
  const log = c.make(out);
  const started = performance.now();
  for (let i = 0; i < LINES; i++) {
    const [e, f, m] = SAMPLES[i % SAMPLES.length]!;
    log(e, f, m);
  }
  return { ns: ((performance.now() - started) * 1e6) / LINES, bytes: out.bytes / LINES };
}

/** How each logger writes a stranger's raw bytes: lines, unsafe characters, longest line. */
async function hostility(c: Candidate): Promise<{ lines: number; unsafe: number; longest: number }> {
  const out = sink();
  out.keep = true;
  const log = c.make(out);
  for (const [e, f, m] of RAW_HOSTILE) log(e, f, m);
  await new Promise((r) => setTimeout(r, 50));
  const lines = out.text.split('\n').slice(0, -1);
  return { lines: lines.length, unsafe: lines.filter((l) => UNSAFE.test(l)).length, longest: Math.max(...lines.map((l) => l.length)) };
}

const list = await candidates();
for (const c of list) nsPerLine(c); // warm up
const rounds = new Map(list.map((c) => [c.name, [] as number[]]));
const sizes = new Map<string, number>();
for (let r = 0; r < ROUNDS; r++) {
  for (const c of list) {
    const { ns, bytes } = nsPerLine(c);
    rounds.get(c.name)!.push(ns);
    sizes.set(c.name, bytes);
  }
}
const median = (xs: number[]): number => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const base = median(rounds.get('fwcast json')!);
console.log(`${LINES} lines × ${ROUNDS} rounds, ${process.version}; hostile input: ${RAW_HOSTILE.length} lines whose message and detail hold LF, CR, ESC, C1, U+2028, U+202E (one of them ×1000)`);
console.log('logger             ns/line  vs fwcast json  bytes/line | hostile: lines out  with unsafe chars  longest');
for (const c of list) {
  const ns = median(rounds.get(c.name)!);
  const h = await hostility(c);
  console.log(`${c.name.padEnd(18)} ${ns.toFixed(0).padStart(7)}  ${(ns / base).toFixed(2).padStart(13)}×  ${sizes.get(c.name)!.toFixed(0).padStart(10)} | ${String(h.lines).padStart(17)}  ${String(h.unsafe).padStart(17)}  ${String(h.longest).padStart(7)}`);
}
