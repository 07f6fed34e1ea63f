/**
 * Hostile log: a host with no key floods the channel with unsigned manifests
 * (test/helpers/log-attacker.ts) whose every attacker-controlled field holds
 * line breaks, terminal escapes, bidi overrides and 64 KB strings. Two real
 * agents listen over real multicast in the lab, one logging text and one JSON.
 * Every line of both logs must be one line, escaped and bounded, and the log
 * must grow by a bounded number of bytes per minute however fast the flood:
 * refusals are logged 5 per reason every 10 s, the rest counted in
 * `release.refusals-suppressed`, and every refusal is either logged or counted.
 */
import test from 'ava';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetLab } from '../scripts/lab/netlab.js';
import { channelGroup } from '../protocol/channel.js';
import { REFUSAL_LOG_LIMITS } from '../cli/refusal-log.js';
import type { LogAttackerSummary } from './helpers/log-attacker.js';
import { checkLogLines, MAX_LINE_CHARACTERS, type CheckedLine } from './helpers/log-lines.js';
import { exitCode, FWCAST_AGENT, fwcast, ROOT, stderrMatch, track, type Tracked } from './helpers/processes.js';

/** The flood: 150 manifests a second (most of them 64 KB), for 12 s: two intervals of the refusal limit. */
const FLOOD_RATE = 150;
const FLOOD_SECONDS = 12;
const FLOOD_COUNT = FLOOD_RATE * FLOOD_SECONDS;
/**
 * The log may grow by at most this much per minute under the flood. What the
 * limit allows: 6 intervals a minute of 5 refusals for each of the 3 reasons an
 * unsigned manifest can get (malformed, bad-signature, unknown-key), at most
 * ~700 bytes each, and a summary: about 70 KB. Without the limit and the cut
 * strings, the first 201 datagrams of such a flood wrote 12.8 MB.
 */
const LOG_BYTES_PER_MINUTE = 128 * 1024;

interface AgentRun {
  format: 'text' | 'json';
  run: Tracked;
}

test('hostile log: a flood of unsigned manifests full of newlines, escapes and 64 KB strings leaves every line single, escaped and bounded, and the log bounded per minute', async (t) => {
  const lab = NetLab.create(['text', 'json', 'attacker']);
  t.teardown(() => lab.destroy());
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-log-flood-'));
  fwcast('keygen', '--out', dir);
  const group = channelGroup('fw/rpi4');

  const startAgent = async (format: 'text' | 'json'): Promise<AgentRun> => {
    const run = track(lab.spawn(format, process.execPath, [
      FWCAST_AGENT, '--model', 'rpi4', '--key', join(dir, 'publisher.pub'), '--iface', 'eth0', '--store', join(dir, `store-${format}`),
      '--install-to', join(dir, `installed-${format}.img`), '--log-format', format,
    ]));
    await stderrMatch(run, format === 'json' ? /"event":"agent.listening"/ : / event=agent\.listening /, 20_000);
    return { format, run };
  };
  const agents = await Promise.all([startAgent('text'), startAgent('json')]);

  const attacker = track(lab.spawn('attacker', process.execPath, [
    '--import', 'tsx', join(ROOT, 'test/helpers/log-attacker.ts'), '--group', group, '--port', '4242', '--iface', 'eth0',
    '--rate', String(FLOOD_RATE), '--count', String(FLOOD_COUNT), '--duration', String(FLOOD_SECONDS + 5),
  ], { cwd: ROOT }));
  t.is(await exitCode(attacker, (FLOOD_SECONDS + 30) * 1000), 0, `attacker:\n${attacker.stderr}`);
  const summary = JSON.parse(attacker.stdout.trim().split('\n').pop() ?? '{}') as LogAttackerSummary;
  t.log(`attacker: ${summary.total} manifests in ${summary.datagrams} datagrams, ${(summary.bytes / 2 ** 20).toFixed(1)} MiB, ${((summary.lastSendAt! - summary.firstSendAt!) / 1000).toFixed(1)} s, ${summary.sendErrors} send errors`);
  t.is(summary.total, FLOOD_COUNT, 'the whole flood went out');

  // The last interval's summary comes at its end, at most 10 s after the flood.
  const waitUntil = summary.lastSendAt! + REFUSAL_LOG_LIMITS.intervalMs + 2000;
  await new Promise((r) => setTimeout(r, Math.max(0, waitUntil - Date.now())));
  for (const a of agents) a.run.child.kill('SIGTERM');
  const stoppedAt = Date.now();
  for (const a of agents) t.is(await exitCode(a.run, 20_000), 0, `${a.format} agent`);

  for (const { format, run } of agents) {
    const lines = checkLogLines(t, run.stderr, format);
    const bytes = Buffer.byteLength(run.stderr);
    const longest = Math.max(...lines.map((l) => l.raw.length));
    const number = (v: unknown): number => Number(v);
    const refused = lines.filter((l) => l.event === 'release.refused');
    const summaries = lines.filter((l) => l.event === 'release.refusals-suppressed');
    const stats = lines.find((l) => l.event === 'agent.stats');
    t.truthy(stats, `${format}: agent.stats at exit`);
    const dropped = (reason: string): number => number(stats?.fields[`dropped.${reason}`] ?? 0);

    // Every refusal is logged or counted in a summary, by reason; and they were many.
    const reasons = [...new Set(refused.map((l) => String(l.fields.reason)))].sort();
    t.deepEqual(reasons, ['bad-signature', 'malformed', 'unknown-key'], `${format}: the reasons an unsigned manifest gets`);
    let refusals = 0;
    for (const reason of reasons) {
      const logged = refused.filter((l) => l.fields.reason === reason).length;
      const suppressed = summaries.reduce((n, l) => n + number(l.fields[`suppressed.${reason}`] ?? 0), 0);
      t.is(logged + suppressed, dropped(reason), `${format}: ${reason}: ${logged} logged + ${suppressed} in summaries = the ${dropped(reason)} refused`);
      refusals += dropped(reason);
    }
    // Datagrams may be lost on a loaded machine (a manifest missing a fragment is never refused); most arrive.
    t.true(refusals >= FLOOD_COUNT / 4 && refusals >= 10 * refused.length, `${format}: ${refusals} of ${FLOOD_COUNT} manifests reached the agent and were refused, ${refused.length} logged`);

    // At most 5 per reason in each 10 s interval, one summary per interval.
    const span = (xs: CheckedLine[]): number => (xs.length ? xs[xs.length - 1]!.time - xs[0]!.time : 0);
    const intervals = Math.floor((span(refused) + 50) / REFUSAL_LOG_LIMITS.intervalMs) + 1;
    for (const reason of reasons) {
      const logged = refused.filter((l) => l.fields.reason === reason).length;
      t.true(logged <= REFUSAL_LOG_LIMITS.perReason * intervals, `${format}: ${reason}: ${logged} lines in ${intervals} intervals`);
    }
    t.true(summaries.length >= 1 && summaries.length <= intervals, `${format}: ${summaries.length} summaries in ${intervals} intervals`);
    for (let i = 1; i < summaries.length; i++) {
      t.true(summaries[i]!.time - summaries[i - 1]!.time >= REFUSAL_LOG_LIMITS.intervalMs - 100, `${format}: summaries ${summaries[i]!.time - summaries[i - 1]!.time} ms apart`);
    }

    // Bounded lines, and a bounded log per minute of flood.
    const minutes = (stoppedAt - summary.firstSendAt!) / 60_000;
    const perMinute = bytes / minutes;
    t.log(`${format}: ${lines.length} lines, ${bytes} bytes (${Math.round(perMinute / 1024)} KiB/min over ${(minutes * 60).toFixed(1)} s); longest line ${longest} characters; ${refused.length} refusals logged of ${refusals}, ${summaries.length} summaries`);
    t.true(longest <= MAX_LINE_CHARACTERS, `${format}: longest line ${longest} characters`);
    t.true(perMinute <= LOG_BYTES_PER_MINUTE, `${format}: ${Math.round(perMinute)} bytes per minute`);
  }
});
