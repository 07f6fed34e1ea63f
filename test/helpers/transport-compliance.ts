/**
 * The transport contract (transport/transport.ts) as ava tests, for any
 * implementation: `transportCompliance(name, setup)` registers one test per
 * rule. Each test makes its own transports on the medium `setup` provides
 * (a hub, a loopback interface, a broker) and its own channels, so tests run
 * concurrently. Every wait is bounded; "nothing else arrived" is checked with
 * a marker sent after the datagram that must not arrive, on the same path.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { TransportClosedError, TransportSendError, type Channel, type Transport } from '../../transport/transport.js';

export interface ComplianceMedium {
  /** A new, unopened transport on the shared medium. */
  create(): Transport;
  /** A channel no other test uses. */
  channel(): Channel;
  /** The `from` of a datagram sent by a transport from create(). */
  from: RegExp;
  /** Copies of each datagram that reach a handler (and count in `sent`): 1, or a multi transport's parts. */
  copies?: number;
  teardown?(): Promise<void>;
}

const WAIT_MS = 5000;

/** Channels unique to this run: a group in ff1e::/16 (`tag`, a hex word, keeps suites apart) and a name per call. */
export function uniqueChannels(prefix: string, tag: string): () => Channel {
  const run = randomBytes(4).toString('hex');
  const port = 20_000 + randomBytes(2).readUInt16BE() % 40_000;
  let n = 0;
  return () => {
    n++;
    return { name: `${prefix}/${run}/${n}`, group: `ff1e::${tag}:${run.slice(0, 4)}:${run.slice(4)}:${n.toString(16)}`, port };
  };
}

/** Waits until `done()` holds, at most `ms`; fails the test with `what` otherwise. */
async function until(done: () => boolean, what: string, ms = WAIT_MS): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

interface Heard {
  data: Buffer;
  from: string;
}

/** A handler that records what it hears. */
function recorder(): { heard: Heard[]; handler: (data: Uint8Array, from: string) => void; texts: () => string[] } {
  const heard: Heard[] = [];
  return {
    heard,
    handler: (data, from) => heard.push({ data: Buffer.from(data), from }),
    texts: () => heard.map((h) => h.data.toString()),
  };
}

export function transportCompliance(name: string, setup: () => Promise<ComplianceMedium>): void {
  let medium: Promise<ComplianceMedium> | undefined;
  const get = (): Promise<ComplianceMedium> => (medium ??= setup());
  test.after.always(async () => {
    if (medium) await (await medium).teardown?.();
  });

  /** A fresh transport, closed at the end of the test. */
  async function make(t: ExecutionContext): Promise<Transport> {
    const transport = (await get()).create();
    t.teardown(() => transport.close());
    return transport;
  }

  /** A channel, a receiver joined to it with a recorder, and a sender (opened unless `open` is false). */
  async function pair(t: ExecutionContext, open = true) {
    const medium = await get();
    const channel = medium.channel();
    const receiver = await make(t);
    const got = recorder();
    await receiver.join(channel, got.handler);
    const sender = await make(t);
    if (open) await sender.open();
    return { copies: medium.copies ?? 1, from: medium.from, channel, receiver, got, sender };
  }

  /** Sends `text` on `channel` until `heard` holds it, copies included (a marker: everything sent before it arrived). */
  async function marker(sender: Transport, channel: Channel, texts: () => string[], text = `marker-${randomBytes(4).toString('hex')}`): Promise<void> {
    const copies = (await get()).copies ?? 1;
    sender.send(channel, Buffer.from(text));
    await until(() => texts().filter((x) => x === text).length >= copies, `marker "${text}" on ${channel.name}`);
  }

  test(`${name}: open and close are idempotent; close is final`, async (t) => {
    const never = await make(t);
    await t.notThrowsAsync(never.close(), 'close() without open()');
    await t.notThrowsAsync(never.close(), 'close() twice');

    const transport = await make(t);
    await t.notThrowsAsync(Promise.all([transport.open(), transport.open()]), 'open() twice at once');
    await t.notThrowsAsync(transport.open(), 'open() again');
    await transport.close();
    await t.notThrowsAsync(transport.close(), 'close() twice');
    await t.throwsAsync(transport.open(), { instanceOf: TransportClosedError }, 'open() after close()');
    await t.throwsAsync(transport.join((await get()).channel(), () => {}), { instanceOf: TransportClosedError }, 'join() after close()');
  });

  test(`${name}: send() before open() does not throw, is counted as not-open and never sent later`, async (t) => {
    const { channel, got, sender } = await pair(t, false);
    t.notThrows(() => sender.send(channel, Buffer.from('early')));
    const s = sender.stats();
    t.is(s.sent, 0);
    t.is(s.sendErrorsBy['not-open'], 1);
    t.is(s.lastSendError?.reason, 'not-open');
    await sender.open();
    await marker(sender, channel, got.texts);
    t.false(got.texts().includes('early'), 'the datagram refused before open() was not queued');
    t.is(sender.stats().sendErrorsBy['not-open'], 1);
  });

  test(`${name}: send() after close() does not throw, is counted as closed and not sent`, async (t) => {
    const { channel, got, sender } = await pair(t);
    await sender.close();
    t.notThrows(() => sender.send(channel, Buffer.from('late')));
    const s = sender.stats();
    t.is(s.sent, 0);
    t.is(s.sendErrorsBy.closed, 1);
    t.is(s.lastSendError?.reason, 'closed');
    const other = await make(t);
    await other.open();
    await marker(other, channel, got.texts);
    t.false(got.texts().includes('late'));
  });

  test(`${name}: join() with an aborted signal rejects with the signal's reason and delivers nothing`, async (t) => {
    const channel = (await get()).channel();
    const receiver = await make(t);
    const aborted = recorder();
    const reason = new Error('stopped by the test');
    await t.throwsAsync(receiver.join(channel, aborted.handler, AbortSignal.abort(reason)), { is: reason });
    await t.throwsAsync(receiver.join(channel, aborted.handler, AbortSignal.abort()), { any: true, name: 'AbortError' }, 'the default reason: a DOMException');
    const control = recorder();
    await receiver.join(channel, control.handler);
    const sender = await make(t);
    await sender.open();
    sender.send(channel, Buffer.from('one'));
    await marker(sender, channel, control.texts);
    t.true(control.texts().includes('one'), 'the transport still works');
    t.deepEqual(aborted.heard, [], 'no membership was left behind');
  });

  test(`${name}: a signal aborted mid-listen stops delivery to that handler only`, async (t) => {
    const medium = await get();
    const copies = medium.copies ?? 1;
    const channel = medium.channel();
    const receiver = await make(t);
    const stopped = recorder();
    const kept = recorder();
    const abort = new AbortController();
    await receiver.join(channel, stopped.handler, abort.signal);
    await receiver.join(channel, kept.handler);
    const sender = await make(t);
    await sender.open();
    await marker(sender, channel, stopped.texts, 'before');
    await until(() => kept.texts().length === copies, 'the other handler');
    abort.abort();
    const receivedAtAbort = receiver.stats().received;
    sender.send(channel, Buffer.from('after'));
    await marker(sender, channel, kept.texts);
    t.deepEqual(stopped.texts(), Array(copies).fill('before'), 'nothing after the abort');
    t.deepEqual(kept.texts().filter((x) => x === 'after'), Array(copies).fill('after'));
    t.is(receiver.stats().received, receivedAtAbort + 2 * copies, 'received counts only the handler still joined');
  });

  test(`${name}: close() stops delivery to every handler`, async (t) => {
    const channel = (await get()).channel();
    const closing = await make(t);
    const closed = recorder();
    await closing.join(channel, closed.handler);
    const control = recorder();
    await (await make(t)).join(channel, control.handler);
    const sender = await make(t);
    await sender.open();
    await marker(sender, channel, closed.texts, 'before');
    await closing.close();
    await marker(sender, channel, control.texts);
    t.false(closed.texts().some((x) => x !== 'before'));
  });

  test(`${name}: datagrams above maxDatagramSize are refused and counted, the largest allowed arrives whole`, async (t) => {
    const { copies, channel, got, sender } = await pair(t);
    const max = sender.maxDatagramSize;
    t.true(Number.isInteger(max) && max >= 1232, `maxDatagramSize ${max}`);
    const over = randomBytes(max + 1);
    t.notThrows(() => sender.send(channel, over));
    const s = sender.stats();
    t.is(s.sendErrorsBy.oversize, 1);
    t.is(s.sent, 0);
    t.true(s.lastSendError instanceof TransportSendError);
    t.is(s.lastSendError?.reason, 'oversize');
    t.regex(s.lastSendError?.message ?? '', new RegExp(`${max + 1} bytes`));
    const largest = randomBytes(max);
    sender.send(channel, largest);
    await marker(sender, channel, got.texts);
    t.is(got.heard.length, 2 * copies, `only the largest datagram and the marker: ${got.heard.map((h) => h.data.length).join(', ')} bytes`);
    t.is(got.heard.filter((h) => h.data.equals(largest)).length, copies, 'the largest datagram arrived byte for byte');
  });

  test(`${name}: stats() and the last send error come through the interface`, async (t) => {
    const { copies, channel, receiver, got, sender } = await pair(t, false);
    const fresh = sender.stats();
    t.like(fresh, { sent: 0, received: 0, sendErrors: 0, lastSendError: undefined, reconnects: 0 });
    t.true(fresh.kind.length > 0 && fresh.description === sender.description);
    sender.send(channel, Buffer.from('x'));
    await sender.open();
    sender.send(channel, randomBytes(sender.maxDatagramSize + 1));
    for (let i = 0; i < 3; i++) sender.send(channel, Buffer.from(`d${i}`));
    await marker(sender, channel, got.texts);
    const s = sender.stats();
    t.is(s.sent, 4 * copies, 'three datagrams and the marker');
    t.is(s.sendErrors, 2);
    t.is(Object.values(s.sendErrorsBy).reduce((a, b) => a + b, 0), s.sendErrors, 'sendErrors is the sum by reason');
    t.like(s.sendErrorsBy, { 'not-open': 1, oversize: 1, closed: 0, offline: 0, backpressure: 0, network: 0 });
    t.is(s.lastSendError?.reason, 'oversize', 'the latest error');
    t.is(receiver.stats().received, 4 * copies);
    t.is(receiver.stats().sent, 0);
    s.sent = -1;
    t.is(sender.stats().sent, 4 * copies, 'stats() is a snapshot');
  });

  test(`${name}: a datagram round trip keeps the bytes and names the sender`, async (t) => {
    const { copies, from, channel, got, sender } = await pair(t);
    const datagrams = [randomBytes(1), randomBytes(20), randomBytes(1000), randomBytes(sender.maxDatagramSize), Buffer.alloc(300, 0)];
    for (const d of datagrams) sender.send(channel, d);
    await marker(sender, channel, got.texts);
    for (const d of datagrams) t.is(got.heard.filter((h) => h.data.equals(d)).length, copies, `${d.length} bytes`);
    for (const h of got.heard) t.regex(h.from, from);
  });

  test(`${name}: two channels are kept apart, and two joins of one channel each get every datagram`, async (t) => {
    const medium = await get();
    const copies = medium.copies ?? 1;
    const [a, b] = [medium.channel(), medium.channel()] as const;
    const receiver = await make(t);
    const onA = recorder();
    const onB = recorder();
    const onA2 = recorder();
    await receiver.join(a, onA.handler);
    await receiver.join(b, onB.handler);
    await receiver.join(a, onA2.handler);
    const sender = await make(t);
    await sender.open();
    sender.send(a, Buffer.from('for a'));
    sender.send(b, Buffer.from('for b'));
    await marker(sender, a, onA.texts, 'end a');
    await marker(sender, b, onB.texts, 'end b');
    await until(() => onA2.texts().filter((x) => x === 'end a').length >= copies, 'the second membership of a');
    const each = (x: string): string[] => Array(copies).fill(x);
    t.deepEqual([...onA.texts()].sort(), [...each('end a'), ...each('for a')].sort());
    t.deepEqual([...onB.texts()].sort(), [...each('end b'), ...each('for b')].sort());
    t.deepEqual([...onA2.texts()].sort(), [...each('end a'), ...each('for a')].sort());
  });
}
