/**
 * The log contract: the events the README documents are the ones the code
 * defines (name, level, fields), the formatters keep every line one line and
 * escape what came from outside, and the agent's lines keep the contract.
 */
import test from 'ava';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createConsoleLogger } from '../cli/console-log.js';
import { Agent } from '../device-agent/agent.js';
import { CommandInstaller } from '../device-agent/installers/command-installer.js';
import { Store, type InstalledRecord } from '../device-agent/store.js';
import { Carousel } from '../carousel/carousel.js';
import { checkEventLine, LOG_EVENTS, type LogEvent, type LogFields } from '../protocol/log.js';
import { buildRelease } from '../server/release.js';
import { MemoryHub, MemoryTransport } from '../transport/memory.js';
import { makeImage, makeKey } from './helpers/fixtures.js';
import { logLines } from './helpers/processes.js';

/** A logger writing to a string, as the CLIs do to stderr. */
function capture(format: 'text' | 'json', level: 'debug' | 'info' = 'info') {
  const out = { text: '' };
  const stream = { write: (s: string) => ((out.text += s), true) } as unknown as NodeJS.WritableStream;
  return { out, log: createConsoleLogger({ format, level, stream }, 'test') };
}

test('the README lists exactly the events LOG_EVENTS defines, with the same level and fields', (t) => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const start = readme.indexOf('\n## Logs and events\n');
  t.true(start >= 0, 'README has a "Logs and events" section');
  const section = readme.slice(start + 1, readme.indexOf('\n## ', start + 1));
  const documented: Record<string, { level: string; fields: string[] }> = {};
  for (const row of section.matchAll(/^\| `([a-z-]+\.[a-z-]+)` \| (\w+) \|([^|]*)\| [^|]+ \|$/gm)) {
    t.false(row[1]! in documented, `${row[1]} is documented once`);
    documented[row[1]!] = { level: row[2]!, fields: [...row[3]!.matchAll(/`([^`]+)`/g)].map((m) => m[1]!) };
  }
  const defined = Object.fromEntries(Object.entries(LOG_EVENTS).map(([name, spec]) => [name, { level: spec.level, fields: [...spec.fields] }]));
  t.deepEqual(documented, defined);
});

test('JSON lines: the event, its level, its fields and the message; a field cannot overwrite the line\'s own keys', (t) => {
  const { out, log } = capture('json');
  log.event('release.installed', { model: 'rpi4', version: '1.0.2', seq: 2, release: '00112233aabbccdd', sha256: 'ab'.repeat(32), path: '/data/img' }, 'installed rpi4 1.0.2 (seq 2) at /data/img');
  log.event('serve.stopping', { level: 'error', event: 'forged', msg: 'forged' } as unknown as LogFields);
  log.child('mqtt').event('mqtt.disconnected', { url: 'mqtt://b', retryInMs: 1000 }); // debug: below the level
  const lines = out.text.split('\n');
  t.is(lines.pop(), '', 'each line ends with a newline');
  t.is(lines.length, 2);
  const [installed, stopping] = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  t.like(installed, { level: 'info', scope: 'test', event: 'release.installed', msg: 'installed rpi4 1.0.2 (seq 2) at /data/img', model: 'rpi4', seq: 2 });
  t.like(stopping, { level: 'info', event: 'serve.stopping', msg: 'serve.stopping' }, 'no message: the event name');
  t.is(checkEventLine(installed!), undefined);
});

test('strings from outside cannot break a line or reach a terminal as control characters, in either format', (t) => {
  const hostile = 'v1\n2024-01-01T00:00:00.000Z info  agent:rpi4: installed\r\u001b[31m\u009b2J\u2028x "q" a=b';
  const fields = { url: hostile, method: 'POST', reason: 'unauthorized', status: 401, detail: 'wrong token' };
  const json = capture('json');
  json.log.event('serve.request-refused', fields, `refused POST ${hostile}`);
  const text = capture('text');
  text.log.event('serve.request-refused', fields, `refused POST ${hostile}`);
  for (const [format, line] of [['json', json.out.text], ['text', text.out.text]] as const) {
    t.is(line.indexOf('\n'), line.length - 1, `${format}: one line`);
    t.notRegex(line.slice(0, -1), /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/, `${format}: no control characters`);
  }
  const parsed = JSON.parse(json.out.text) as Record<string, unknown>;
  t.is(parsed.url, hostile, 'JSON: the value survives, escaped');
  t.is(parsed.msg, `refused POST ${hostile}`);
  // Text: a value with spaces, quotes or "=" is a JSON string, so k=v pairs stay unambiguous.
  const pairs = text.out.text.slice(text.out.text.indexOf(' event='));
  t.true(pairs.startsWith(' event=serve.request-refused url="'), pairs);
  t.regex(pairs, / method=POST reason=unauthorized status=401 detail="wrong token"\n$/);
  const url = JSON.parse(/ url=("(?:[^"\\]|\\.)*")/.exec(pairs)![1]!) as string;
  t.is(url.replace(/\\u([0-9a-f]{4})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16))), hostile, 'text: the value can be read back');
});

test('the agent logs documented events with their fields: refused, accepted, received, verified, install failed, installed', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-events-'));
  const [key, stranger] = [await makeKey(), await makeKey()];
  const hub = new MemoryHub();
  const channel = { name: 'fw/rpi4', group: 'ff1e::1', port: 4242 };
  const marker = join(dir, 'plugged-in');
  const installer = new CommandInstaller(`test -f ${marker} || { touch ${marker}; exit 1; }; cp "$FWCAST_IMAGE" ${join(dir, 'flashed.img')}`);
  const { out, log } = capture('json');
  const agent = new Agent({ models: [{ model: 'rpi4', channel, installer }], trusted: [key], store: new Store(join(dir, 'store')), transport: new MemoryTransport(hub), log, retryBaseMs: 100 });
  t.teardown(() => agent.stop());
  const installed = new Promise<InstalledRecord>((resolve) => agent.once('installed', resolve));
  await agent.start();
  const publisher = new MemoryTransport(hub);
  await publisher.open();
  const image = makeImage(150_000, 6);
  for (const [seed, seq] of [[stranger.seed, 9], [key.seed, 3]] as const) {
    const carousel = new Carousel(buildRelease({ image, seed, model: 'rpi4', version: `1.0.${seq}`, seq }));
    for (let sent = 0; sent < 3000; sent++) {
      publisher.send(channel, carousel.next());
      if (sent % 200 === 0) await new Promise((r) => setImmediate(r));
    }
  }
  const record = await installed;

  const lines = logLines(out.text); // throws on a line that breaks the contract
  t.true(lines.length > 0 && lines.every((l) => checkEventLine(l) === undefined));
  const seen = [...new Set(lines.map((l) => l.event))];
  const expected: LogEvent[] = ['agent.listening', 'release.refused', 'release.accepted', 'release.received', 'release.verified', 'release.install-failed', 'release.installed'];
  t.deepEqual(seen, expected, 'each step once, in order');
  const by = (e: LogEvent) => lines.find((l) => l.event === e)!;
  t.like(by('release.refused'), { model: 'rpi4', reason: 'unknown-key', error: 'UnknownKeyError' });
  t.like(by('release.accepted'), { model: 'rpi4', version: '1.0.3', seq: 3, release: record.releaseId, imageSize: image.length });
  t.like(by('release.install-failed'), { attempt: 1, retryInSeconds: 0.1, error: 'Error' });
  t.like(by('release.installed'), { version: '1.0.3', seq: 3, sha256: record.sha256, path: record.path, release: record.releaseId });
});
