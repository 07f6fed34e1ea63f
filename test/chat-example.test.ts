/**
 * examples/chat: three participants, each in its own network namespace on one
 * bridge (scripts/lab/netlab.ts), join one channel name and talk with no
 * server; each one sees the other two's lines. The example imports the
 * package's public entry (`fwcast/channels`, built into dist/), so this also
 * shows the entry point and its type declarations work for an application.
 */
import test from 'ava';
import { join } from 'node:path';
import { NetLab } from '../scripts/lab/netlab.js';
import { jsonLines, typeCheckExample } from './helpers/examples.js';
import { ROOT, track, type Tracked } from './helpers/processes.js';

const EXAMPLE = join(ROOT, 'examples/chat/chat.ts');
const NICKS = ['alice', 'bob', 'carol'] as const;

async function until(done: () => boolean, what: () => string, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('the chat example type-checks against the published declarations of fwcast/channels', (t) => {
  const tsc = typeCheckExample(EXAMPLE);
  t.is(tsc.status, 0, tsc.output);
});

test('chat: three participants in three namespaces each see the others\' messages', async (t) => {
  const lab = NetLab.create([...NICKS]);
  t.teardown(() => lab.destroy());
  const channel = `room-${process.pid}`;
  const people = NICKS.map((nick) => {
    const p = track(lab.spawn(nick, process.execPath, ['--import', 'tsx', EXAMPLE, '--iface', 'eth0', '--nick', nick, '--channel', channel, '--linger', '3'], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] }));
    t.teardown(() => p.child.kill('SIGKILL'));
    return { nick, p };
  });
  await until(() => people.every(({ p }) => jsonLines(p).some((e) => e.event === 'chat.joined')), () => people.map(({ p }) => p.stderr).join('\n'), 30_000);
  for (const { nick, p } of people) p.child.stdin!.write(`hello from ${nick}\n`);
  const heard = (p: Tracked): string[] => jsonLines(p).filter((e) => e.event === 'chat.message').map((e) => String(e.text));
  await until(() => people.every(({ p }) => NICKS.every((n) => heard(p).includes(`${n}: hello from ${n}`))),
    () => people.map(({ nick, p }) => `${nick}: ${JSON.stringify(heard(p))} ${p.stderr}`).join('\n'), 20_000);
  for (const { p } of people) p.child.stdin!.end();
  for (const { nick, p } of people) {
    const others = NICKS.filter((n) => n !== nick).map((n) => `${n}: hello from ${n}`);
    for (const line of others) t.true(heard(p).includes(line), `${nick} heard "${line}"`);
    t.is(await p.exited, 0, p.stderr);
    t.like(jsonLines(p).find((e) => e.event === 'chat.left'), { dropped: { malformed: 0, 'limit-exceeded': 0, overflow: 0 } });
  }
});
