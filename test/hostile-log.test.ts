/**
 * A stranger's bytes in the agent's log: unsigned manifests carrying line
 * breaks, terminal escapes and 64 KB strings must leave every log line single,
 * escaped and bounded, and a flood of them must leave the log's size bounded
 * per minute (refusals rate-limited per reason, summarised). The units here;
 * the flood over real multicast in test/log-flood.test.ts.
 */
import test from 'ava';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createConsoleLogger, MAX_MESSAGE_CHARACTERS, MAX_VALUE_CHARACTERS } from '../cli/console-log.js';
import { Agent } from '../device-agent/agent.js';
import { CommandInstaller } from '../device-agent/installers/command-installer.js';
import { limitRefusals, type RefusalLogClock } from '../cli/refusal-log.js';
import { Store } from '../device-agent/store.js';
import { decodeCoseSign1 } from '../protocol/cose-sign1.js';
import { InvalidSignatureError } from '../protocol/errors.js';
import { checkEventLine, type LogEvent, type LogFields, type Logger } from '../protocol/log.js';
import { quote } from '../protocol/quote.js';
import { MemoryHub, MemoryTransport } from '../transport/memory.js';
import { makeKey } from './helpers/fixtures.js';
import { FORGED_LINE, fragmentsOf, HOSTILE, hostileText, VARIANTS, type Variant } from './helpers/log-attacker.js';
import { checkLogLines } from './helpers/log-lines.js';

/** A logger writing to a string, as the CLIs do to stderr. */
function capture(format: 'text' | 'json') {
  const out = { text: '' };
  const stream = { write: (s: string) => ((out.text += s), true) } as unknown as NodeJS.WritableStream;
  return { out, log: createConsoleLogger({ format, stream }, 'agent:rpi4') };
}

/** Runs a real agent on a memory hub, sends it these unsigned manifests, and returns its log. */
async function agentLog(format: 'text' | 'json', manifests: Uint8Array[]): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-hostile-log-'));
  const key = await makeKey();
  const hub = new MemoryHub();
  const channel = { name: 'fw/rpi4', group: 'ff1e::1', port: 4242 };
  const { out, log } = capture(format);
  const agent = new Agent({ models: [{ model: 'rpi4', channel, installer: new CommandInstaller('true') }], trusted: [key], store: new Store(join(dir, 'store')), transport: new MemoryTransport(hub), log });
  await agent.start();
  const attacker = new MemoryTransport(hub);
  await attacker.open();
  for (const m of manifests) for (const d of fragmentsOf(m, 16_000)) attacker.send(channel, d);
  await new Promise((r) => setTimeout(r, 50));
  await agent.stop();
  return out.text;
}

test('regression: an unsigned manifest whose COSE alg is text with newlines logs one line, escaped and bounded', async (t) => {
  // The demonstrated attack: the algorithm's text was echoed into the message and the text log.
  t.throws(() => decodeCoseSign1(VARIANTS['alg-text'](new Uint8Array(8))), { instanceOf: InvalidSignatureError, message: /^COSE algorithm "\\n2001-01-01T00:00:00\.000Z info  agent:rpi4: installed rpi4 9\.9\.9…" \(154 characters\) is not EdDSA \(-8\)$/ });
  const nonce = (i: number) => Uint8Array.of(i, 0, 0, 0, 0, 0, 0, 1);
  for (const format of ['text', 'json'] as const) {
    const log = await agentLog(format, [VARIANTS['alg-text'](nonce(1)), VARIANTS['alg-text-64k'](nonce(2))]);
    const lines = checkLogLines(t, log, format);
    const refused = lines.filter((l) => l.event === 'release.refused');
    t.is(refused.length, 2, `${format}: each manifest refused on one line:\n${log}`);
    t.is(lines.length, 3, `${format}: listening and two refusals, nothing forged`);
    for (const l of refused) t.true(l.raw.length < 1024, `${format}: a refusal line is short (${l.raw.length} characters)`);
    t.regex(refused[1]!.raw, /\(65536 characters\)/, `${format}: the full length of the cut string is told`);
  }
});

test('every attacker-controlled field of an unsigned manifest: one short escaped line per refusal, both formats', async (t) => {
  const names = Object.keys(VARIANTS) as Variant[];
  const manifests = names.map((name, i) => VARIANTS[name](Uint8Array.of(0, 0, 0, 0, 0, 0, 2, i)));
  for (const format of ['text', 'json'] as const) {
    const log = await agentLog(format, manifests);
    const lines = checkLogLines(t, log, format);
    const refused = lines.filter((l) => l.event === 'release.refused');
    const summaries = lines.filter((l) => l.event === 'release.refusals-suppressed');
    // 11 variants, at most 5 per reason in an interval: each is logged or waits for the summary (after the test's end).
    t.true(refused.length >= 5 && refused.length <= names.length, `${format}: ${refused.length} refusals logged`);
    t.is(summaries.length, 0, 'the summary comes at the end of the interval');
    for (const l of refused) t.true(l.raw.length < 1024, `${format}: ${l.raw.length} characters: ${l.raw.slice(0, 200)}`);
  }
});

test('quote(): escaped, cut to 64 characters with its length, bytes as cut hex, other values by kind', (t) => {
  t.is(quote('rpi4'), '"rpi4"');
  t.is(quote('a\nb\u001b[2J\u009b\u202e"'), '"a\\nb\\u001b[2J\\u009b\\u202e\\""');
  const long = quote(hostileText(70_000));
  t.true(long.endsWith('…" (70000 characters)'), long);
  t.notRegex(long, /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202e]/);
  t.true(long.length < 64 * 6 + 30, `${long.length} characters`);
  t.is(quote('😀'.repeat(40)), `"${'😀'.repeat(32)}…" (80 characters)`, 'never half a surrogate pair');
  t.is(quote(Uint8Array.of(1, 2, 255)), "h'0102ff'");
  t.is(quote(new Uint8Array(1000)), `h'${'00'.repeat(32)}…' (1000 bytes)`);
  t.is(quote(-7), '-7');
  t.is(quote(2n ** 64n - 1n), '18446744073709551615');
  t.is(quote(new Map([[HOSTILE, 1]])), 'a map of 1 entries');
  t.is(quote([1, 2]), 'an array of 2 items');
  t.is(quote(undefined), 'undefined');
});

test('the console logger cuts every string at a bound, escapes included, in both formats', (t) => {
  const huge = hostileText(1_000_000);
  const quotes = '"'.repeat(10_000);
  for (const format of ['text', 'json'] as const) {
    const { out, log } = capture(format);
    log.event('serve.request-refused', { method: 'POST', url: huge, reason: quotes, status: 401, detail: 'x'.repeat(600) }, huge);
    const [line] = checkLogLines(t, out.text, format);
    // Five strings of at most 512 and a message of 1024, plus the line's own keys.
    t.true(line!.raw.length <= MAX_MESSAGE_CHARACTERS + 5 * (MAX_VALUE_CHARACTERS + 16) + 100, `${format}: ${line!.raw.length} characters`);
    t.regex(line!.raw, /…\(1000000 characters\)/);
    t.regex(line!.raw, /…\(10000 characters\)/);
    t.regex(line!.raw, /…\(600 characters\)/);
    if (format === 'json') {
      const parsed = JSON.parse(line!.raw) as Record<string, string>;
      t.true(parsed.url!.startsWith(HOSTILE.slice(0, 20)), 'JSON: the start of the value survives, unescaped by the parser');
      t.true(parsed.msg!.endsWith('…(1000000 characters)'));
    }
  }
  // Short strings are not touched.
  const { out, log } = capture('json');
  log.event('serve.request-refused', { method: 'POST', url: '/v1/releases', reason: 'unauthorized', status: 401, detail: 'wrong token' }, 'refused');
  t.like(JSON.parse(out.text), { url: '/v1/releases', detail: 'wrong token', msg: 'refused' });
});

/** A clock the test moves, with the timers it holds. */
function fakeClock(): RefusalLogClock & { advance(ms: number): void } {
  let now = 1_000_000;
  let timers: Array<{ at: number; fn: () => void }> = [];
  return {
    now: () => now,
    after: (ms, fn) => void timers.push({ at: now + ms, fn }),
    advance(ms) {
      now += ms;
      const due = timers.filter((x) => x.at <= now);
      timers = timers.filter((x) => x.at > now);
      for (const x of due) x.fn();
    },
  };
}

function recorder(): { lines: Array<{ event: LogEvent; fields: LogFields }>; log: Logger } {
  const lines: Array<{ event: LogEvent; fields: LogFields }> = [];
  const log: Logger = { event: (event, fields) => void lines.push({ event, fields }), child: () => log };
  return { lines, log };
}

const refuse = (log: Logger, reason: string, n: number): void => {
  for (let i = 0; i < n; i++) log.event('release.refused', { model: 'rpi4', release: `r${i}`, error: 'E', reason, detail: 'd' });
};

test('refusals: the first 5 per reason in 10 s are logged, the rest counted and summarised once at the end of the interval', (t) => {
  const clock = fakeClock();
  const { lines, log } = recorder();
  const limited = limitRefusals(log, 'rpi4', { perReason: 5, intervalMs: 10_000 }, clock);
  limited.event('agent.listening', { model: 'rpi4', channel: 'fw/rpi4', group: 'ff1e::1', port: 4242, transport: 'memory' });
  refuse(limited, 'unknown-key', 1000);
  refuse(limited, 'bad-signature', 3);
  clock.advance(3000);
  refuse(limited, 'bad-signature', 4);
  const count = (event: LogEvent, reason?: string) => lines.filter((l) => l.event === event && (reason === undefined || l.fields.reason === reason)).length;
  t.is(count('agent.listening'), 1, 'other events pass');
  t.is(count('release.refused', 'unknown-key'), 5);
  t.is(count('release.refused', 'bad-signature'), 5);
  t.is(count('release.refusals-suppressed'), 0, 'no summary before the interval ends');
  clock.advance(6999);
  t.is(count('release.refusals-suppressed'), 0);
  clock.advance(1);
  const summaries = lines.filter((l) => l.event === 'release.refusals-suppressed');
  t.deepEqual(summaries.map((l) => l.fields), [{ model: 'rpi4', seconds: 10, total: 997, 'suppressed.bad-signature': 2, 'suppressed.unknown-key': 995 }]);
  t.is(checkEventLine({ time: 't', level: 'warn', scope: 's', event: 'release.refusals-suppressed', msg: 'm', ...summaries[0]!.fields }), undefined);

  // The next interval starts afresh; a quiet one has no summary.
  refuse(limited, 'unknown-key', 5);
  clock.advance(20_000);
  t.is(count('release.refused', 'unknown-key'), 10);
  t.is(count('release.refusals-suppressed'), 1, 'nothing suppressed: no summary');

  // A flood that goes on: one summary per interval, however many refusals.
  for (let s = 0; s < 60; s++) {
    refuse(limited, 'malformed', 100);
    clock.advance(1000);
  }
  t.is(count('release.refused', 'malformed'), 30, 'a minute of flood: 5 lines per 10 s');
  t.is(count('release.refusals-suppressed'), 7, 'and one summary per 10 s');
  const suppressed = lines.filter((l) => l.event === 'release.refusals-suppressed').slice(1).reduce((n, l) => n + Number(l.fields['suppressed.malformed']), 0);
  t.is(suppressed + 30, 6000, 'every refusal is logged or counted');
});

test('refusals: a refusal after the interval ends summarises the old one before it is logged', (t) => {
  const clock = fakeClock();
  const { lines, log } = recorder();
  // A clock whose timers never fire (a busy event loop): the next refusal still closes the interval.
  const limited = limitRefusals(log, 'rpi4', { perReason: 1, intervalMs: 1000 }, { now: clock.now, after: () => {} });
  refuse(limited, 'rollback', 3);
  clock.advance(1500);
  refuse(limited, 'rollback', 1);
  t.deepEqual(lines.map((l) => [l.event, l.fields.total ?? l.fields.reason]), [
    ['release.refused', 'rollback'], ['release.refusals-suppressed', 2], ['release.refused', 'rollback'],
  ]);
});
