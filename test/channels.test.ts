/**
 * The channel API's own behaviour (fwcast/channels), on the in-memory
 * transport: channels by name or group, Librecast framing and sequence
 * numbers, messages as events and as iterators (bounded, ended by signals and
 * close), part(), and invalid datagrams dropped and counted. Then one MQTT run
 * through a real mosquitto: the channel name is the topic, the bytes are
 * Librecast's message.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { Context, MemoryHub, TransportClosedError, type Drop, type Message } from '../channels/index.js';
import { channelGroup } from '../protocol/channel.js';
import { ConfigError } from '../protocol/errors.js';
import { decodeLibrecastMessage } from '../protocol/librecast-message.js';
import { Broker, freePort, requireMosquitto } from './helpers/broker.js';

const text = (m: Message): string => new TextDecoder().decode(m.payload);
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

async function pair(t: { teardown(f: () => unknown): void }) {
  const hub = new MemoryHub();
  const a = await Context.create({ memory: hub });
  const b = await Context.create({ memory: hub });
  t.teardown(() => Promise.all([a.close(), b.close()]));
  return { a, b };
}

test('channels: a name gives Librecast\'s group on port 4242; an explicit group and port are kept; bad ones are refused', async (t) => {
  const { a } = await pair(t);
  t.like(a.channel('fw/rpi4'), { name: 'fw/rpi4', group: channelGroup('fw/rpi4'), port: 4242 });
  t.like(a.channel('chat/lobby', { port: 5000 }), { port: 5000 });
  t.like(a.channel({ group: 'FF1E::12', port: 6000 }), { name: '[ff1e::12]:6000', group: 'ff1e::12', port: 6000 });
  t.throws(() => a.channel({ group: '2001:db8::1' }), { instanceOf: ConfigError });
  t.throws(() => a.channel('x', { port: 70000 }), { instanceOf: RangeError });
});

test('send and receive: events and an iterator each get every message, with Librecast sequence numbers', async (t) => {
  const { a, b } = await pair(t);
  const chan = b.channel('chat/lobby');
  const rx = b.socket();
  await rx.join(chan);
  const events: Message[] = [];
  rx.on('message', (m) => events.push(m));
  const it = rx.messages();
  const tx = a.socket();
  const out = a.channel('chat/lobby');
  for (const s of ['one', 'two', '']) t.true(tx.send(out, bytes(s)));
  t.deepEqual(events.map(text), ['one', 'two', '']);
  t.deepEqual(events.map((m) => m.seq), [1n, 2n, 3n]);
  const fromIterator: string[] = [];
  for await (const m of it) if (fromIterator.push(text(m)) === 3) break;
  t.deepEqual(fromIterator, ['one', 'two', '']);
  t.like(rx.stats(), { received: 3 });
  t.like(tx.stats(), { sent: 3 });
});

test('part() and a join signal stop delivery; close() ends iterators; join after close rejects', async (t) => {
  const { a, b } = await pair(t);
  const tx = a.socket();
  const [c1, c2] = [b.channel('one'), b.channel('two')];
  const rx = b.socket();
  const stop = new AbortController();
  await rx.join(c1);
  await rx.join(c2, { signal: stop.signal });
  const got: string[] = [];
  rx.on('message', (m) => got.push(`${m.channel.name}:${text(m)}`));
  tx.send(a.channel('one'), bytes('a'));
  tx.send(a.channel('two'), bytes('b'));
  rx.part(c1);
  stop.abort();
  tx.send(a.channel('one'), bytes('c'));
  tx.send(a.channel('two'), bytes('d'));
  t.deepEqual(got, ['one:a', 'two:b']);
  t.deepEqual(rx.channels, []);
  const it = rx.messages();
  rx.close();
  t.deepEqual(await it.next(), { value: undefined, done: true });
  await t.throwsAsync(rx.join(c1), { instanceOf: TransportClosedError });
});

test('an iterator nobody reads keeps at most maxQueued messages and counts the rest as overflow', async (t) => {
  const { a, b } = await pair(t);
  const rx = b.socket();
  await rx.join(b.channel('busy'));
  const drops: Drop[] = [];
  rx.on('drop', (d) => drops.push(d));
  const it = rx.messages({ maxQueued: 2 });
  const tx = a.socket();
  for (let i = 0; i < 5; i++) tx.send(a.channel('busy'), bytes(`m${i}`));
  t.is(rx.stats().dropped.overflow, 3);
  t.deepEqual(drops.map((d) => d.reason), ['overflow', 'overflow', 'overflow']);
  t.is(text((await it.next()).value as Message), 'm0');
  t.is(text((await it.next()).value as Message), 'm1');
  const ended = AbortSignal.abort();
  t.deepEqual(await rx.messages({ signal: ended }).next(), { value: undefined, done: true });
});

test('raw sockets carry whole datagrams; a Librecast socket drops the ones that are not messages and never throws', async (t) => {
  const { a, b } = await pair(t);
  const lc = b.socket();
  const raw = b.socket({ framing: 'raw' });
  await lc.join(b.channel('mixed'));
  await raw.join(b.channel('mixed'));
  const lcGot: string[] = [];
  const rawGot: number[] = [];
  lc.on('message', (m) => lcGot.push(text(m)));
  raw.on('message', (m) => rawGot.push(m.payload.length));
  a.socket({ framing: 'raw' }).send(a.channel('mixed'), bytes('not a message'));
  a.socket().send(a.channel('mixed'), bytes('a message'));
  t.deepEqual(lcGot, ['a message']);
  t.deepEqual(rawGot, [13, 33 + 9]);
  t.like(lc.stats(), { received: 1, dropped: { malformed: 1 } });
});

test('a message longer than the transport carries is refused and counted, not thrown', async (t) => {
  const { a } = await pair(t);
  const tx = a.socket();
  const max = a.transport.maxDatagramSize;
  t.false(tx.send(a.channel('big'), new Uint8Array(max - 32)));
  t.true(tx.send(a.channel('big'), new Uint8Array(max - 33)));
  t.like(tx.stats(), { sent: 1, oversize: 1 });
});

test('mqtt: the channel name is the topic and the payload Librecast\'s message', async (t) => {
  requireMosquitto();
  const broker = await Broker.start({ port: await freePort() });
  t.teardown(() => broker.stop());
  const a = await Context.create({ mqtt: { url: broker.url, connectTimeoutMs: 5000 } });
  const b = await Context.create({ mqtt: { url: broker.url, connectTimeoutMs: 5000 } });
  t.teardown(() => Promise.all([a.close(), b.close()]));
  const rx = b.socket();
  await rx.join(b.channel('chat/héllo'));
  const watcher = spawn('mosquitto_sub', ['-h', '127.0.0.1', '-p', String(broker.port), '-t', 'fwcast/chat/héllo', '-C', '1', '-W', '20']);
  const seen: Buffer[] = [];
  watcher.stdout.on('data', (d: Buffer) => seen.push(d));
  await new Promise((r) => setTimeout(r, 500));
  const next = rx.messages({ signal: AbortSignal.timeout(20_000) }).next();
  a.socket().send(a.channel('chat/héllo'), bytes('over mqtt'));
  const m = (await next).value as Message;
  t.is(text(m), 'over mqtt');
  t.is(m.seq, 1n);
  await new Promise((r) => watcher.on('close', r));
  const onWire = Buffer.concat(seen).subarray(0, 33 + 9);
  t.is(new TextDecoder().decode(decodeLibrecastMessage(onWire).payload), 'over mqtt');
});
