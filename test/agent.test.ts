/** The agent with an in-memory transport: installation, retries, store. */
import test from 'ava';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from '../device-agent/agent.js';
import { CommandInstaller } from '../device-agent/installers/command-installer.js';
import { Store, type InstalledRecord } from '../device-agent/store.js';
import { nullLogger, type Logger } from '../protocol/log.js';
import { Carousel } from '../carousel/carousel.js';
import { buildRelease } from '../server/release.js';
import { MemoryHub, MemoryTransport } from '../transport/memory.js';
import { makeImage, makeKey, sha256hex } from './helpers/fixtures.js';

test('a failed install is retried from the kept image, without receiving it again', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-agent-'));
  const key = await makeKey();
  const image = makeImage(200_000, 4);
  const release = buildRelease({ image, seed: key.seed, model: 'rpi4', version: '1.2.3', seq: 4 });
  const hub = new MemoryHub();
  const channel = { name: 'fw/rpi4', group: 'ff1e::1', port: 4242 };
  // Fails the first time (the board is "unplugged"), then copies the image.
  const marker = join(dir, 'plugged-in');
  const target = join(dir, 'flashed.img');
  const installer = new CommandInstaller(`test -f ${marker} || { touch ${marker}; exit 1; }; cp "$FWCAST_IMAGE" ${target}`);
  const agent = new Agent({ models: [{ model: 'rpi4', channel, installer }], trusted: [key], store: new Store(join(dir, 'store')), transport: new MemoryTransport(hub), log: nullLogger, retryBaseMs: 100 });
  t.teardown(() => agent.stop());
  const failures: Error[] = [];
  agent.on('failed', (f) => failures.push(f.error));
  const installed = new Promise<InstalledRecord>((resolve) => agent.once('installed', resolve));
  await agent.start();
  const carousel = new Carousel({ ...release });
  const publisher = new MemoryTransport(hub);
  await publisher.open();
  let sent = 0;
  // The storage thread and the install command run meanwhile: the loop gives them time, bounded.
  const deadline = Date.now() + 30_000;
  while (failures.length === 0 && Date.now() < deadline) {
    publisher.send(channel, carousel.next());
    sent++;
    if (sent % 200 === 0) await new Promise((r) => setTimeout(r, 5));
  }
  t.is(failures.length, 1, 'the first install failed');
  const usedBeforeRetry = agent.stats().rpi4!.symbolsAccepted;
  for (let i = 0; i < 500; i++) publisher.send(channel, carousel.next());
  const record = await installed;
  t.is(record.seq, 4);
  t.is(sha256hex(readFileSync(target)), sha256hex(image));
  t.is(agent.stats().rpi4!.symbolsAccepted, usedBeforeRetry, 'the retry took no new symbols');
  t.true((agent.stats().rpi4!.dropped['install-pending'] ?? 0) > 0, 'the release was not received again meanwhile');
  t.true(existsSync(record.path));
});

/** An installer that records what it installs and, while `gate` is set, waits for it. */
class GatedInstaller {
  readonly description = 'gated test installer';
  readonly installs: number[] = [];
  gate: Promise<void> | undefined;
  /** Called as an install reaches the gate. */
  onGate: ((seq: number) => void) | undefined;
  async install(req: { seq: number; imagePath: string }): Promise<void> {
    // The image must still be there, whole, while the install runs.
    readFileSync(req.imagePath);
    this.onGate?.(req.seq);
    if (this.gate) await this.gate;
    this.installs.push(req.seq);
  }
}

async function churnAgent(t: { teardown: (fn: () => void) => void }, storageThread: boolean) {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-agent-'));
  const key = await makeKey();
  const hub = new MemoryHub();
  const channel = { name: 'fw/rpi4', group: 'ff1e::1', port: 4242 };
  const installer = new GatedInstaller();
  const agent = new Agent({ models: [{ model: 'rpi4', channel, installer }], trusted: [key], store: new Store(join(dir, 'store')), transport: new MemoryTransport(hub), log: nullLogger, retryBaseMs: 100, storageThread });
  t.teardown(() => agent.stop());
  const failures: Error[] = [];
  agent.on('failed', (f) => failures.push(f.error));
  await agent.start();
  const publisher = new MemoryTransport(hub);
  await publisher.open();
  const release = (seq: number, size: number) => buildRelease({ image: makeImage(size, seq), seed: key.seed, model: 'rpi4', version: `1.0.${seq}`, seq, segmentSize: 64 << 10 });
  /** Sends one release's carousel until the agent has received all of it (its storage thread answers between turns). */
  const sendAll = async (r: ReturnType<typeof release>): Promise<void> => {
    const carousel = new Carousel({ ...r });
    let seen = false;
    for (let i = 0; i < 20_000; i++) {
      publisher.send(channel, carousel.next());
      if (i % 50 === 49) await new Promise((resolve) => setImmediate(resolve));
      const receiving = agent.progress().some((p) => p.seq === r.manifest.seq);
      if (seen && !receiving) return;
      seen ||= receiving;
    }
    throw new Error(`release ${r.manifest.seq} was not received in 20,000 datagrams`);
  };
  return { agent, installer, failures, release, sendAll, dir };
}

for (const storageThread of [false, true]) {
  const mode = storageThread ? ' (storage thread)' : '';
  test(`regression: a newer release completing while an older one is verified is installed, never before it${mode}`, async (t) => {
    const { agent, installer, failures, release, sendAll } = await churnAgent(t, storageThread);
    const a = release(5, 300_000);
    const b = release(6, 300_000);
    const installed = new Promise<InstalledRecord>((resolve) => agent.on('installed', (r) => r.seq === 6 && resolve(r)));
    // A completes and is verified and installed (asynchronously) while B arrives and completes.
    await sendAll(a);
    await sendAll(b);
    const record = await installed;
    t.is(record.seq, 6);
    t.true([[6], [5, 6]].some((order) => JSON.stringify(order) === JSON.stringify(installer.installs)), `installed ${installer.installs.join(', ')}: B, after A or instead of it`);
    t.deepEqual(failures, []);
    t.is(agent.store.installed('rpi4')?.seq, 6);
  });

  test(`regression: a newer release completing while an older one installs is installed right after it; never older after newer${mode}`, async (t) => {
    const { agent, installer, failures, release, sendAll } = await churnAgent(t, storageThread);
    let open!: () => void;
    installer.gate = new Promise((resolve) => (open = resolve));
    const installing = new Promise<number>((resolve) => (installer.onGate = resolve));
    await sendAll(release(5, 300_000));
    t.is(await installing, 5);
    // A's installer waits at the gate: B and then C complete meanwhile; only the newest waits its turn.
    await sendAll(release(6, 200_000));
    await new Promise((r) => setTimeout(r, 200));
    await sendAll(release(7, 200_000));
    await new Promise((r) => setTimeout(r, 200));
    const done = new Promise<InstalledRecord>((resolve) => agent.on('installed', (r) => r.seq === 7 && resolve(r)));
    open();
    installer.gate = undefined;
    await done;
    t.deepEqual(installer.installs, [5, 7]);
    t.deepEqual(failures, []);
    t.is(agent.store.installed('rpi4')?.seq, 7);
  });
}

test('regression: release.received counts the stall of the turn that completed the release (the last segment\'s decode)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-agent-'));
  const key = await makeKey();
  const hub = new MemoryHub();
  const channel = { name: 'fw/rpi4', group: 'ff1e::1', port: 4242 };
  const events: Array<{ event: string; fields: Record<string, unknown> }> = [];
  const log: Logger = { event: (event, fields) => void events.push({ event, fields }), child: () => log };
  const agent = new Agent({ models: [{ model: 'rpi4', channel, installer: new GatedInstaller() }], trusted: [key], store: new Store(join(dir, 'store')), transport: new MemoryTransport(hub), log });
  t.teardown(() => agent.stop());
  await agent.start();
  const publisher = new MemoryTransport(hub);
  await publisher.open();
  // One 2 MiB segment with a tenth of its datagrams lost: the datagram that completes it pays for a RaptorQ decode.
  const release = buildRelease({ image: makeImage(2 << 20, 9), seed: key.seed, model: 'rpi4', version: '1.0.9', seq: 9, segmentSize: 2 << 20 });
  const carousel = new Carousel({ ...release });
  let completingMs: number | undefined;
  // Sent in one synchronous run: the loop never turns, so a delay monitor alone would see no stall at all.
  for (let i = 0; i < 20_000 && completingMs === undefined; i++) {
    const datagram = carousel.next();
    if (i % 10 === 9) continue;
    const started = performance.now();
    publisher.send(channel, datagram);
    if (events.some((e) => e.event === 'release.received')) completingMs = performance.now() - started;
  }
  t.not(completingMs, undefined, 'the release was received');
  const received = events.find((e) => e.event === 'release.received')!.fields;
  t.log(`the completing datagram took ${completingMs!.toFixed(1)} ms; release.received says the longest stall was ${received.stallMs} ms`);
  t.true(completingMs! > 5, 'the completing datagram did measurable work');
  t.true(Number(received.stallMs) >= 0.8 * completingMs!, `stallMs ${received.stallMs} covers the completing turn (${completingMs!.toFixed(1)} ms)`);
});

test('a release the device refused itself, with a store that cannot remember it: store.failed names the path, the rollback is logged, the agent stays up and does not install it again', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-agent-'));
  const key = await makeKey();
  const release = buildRelease({ image: makeImage(120_000, 9), seed: key.seed, model: 'rpi4', version: '2.0.0', seq: 2 });
  const hub = new MemoryHub();
  const channel = { name: 'fw/rpi4', group: 'ff1e::1', port: 4242 };
  const store = join(dir, 'store');
  // lifecycle.json is a directory with something in it: the store's atomic rename onto it fails.
  mkdirSync(join(store, 'lifecycle.json'), { recursive: true });
  writeFileSync(join(store, 'lifecycle.json', 'occupied'), '');
  let installs = 0;
  // What a serial installer throws when MCUboot reverted the test image (device-agent/serial/mcuboot-test-confirm.ts).
  const installer = {
    description: 'an MCU that reverts every test image',
    async install(): Promise<void> {
      installs++;
      throw Object.assign(new Error('the test image did not answer; MCUboot reverted it'), { deviceState: 'reverted' });
    },
  };
  const events: Array<{ event: string; fields: Record<string, unknown> }> = [];
  const log: Logger = { event: (event, fields) => void events.push({ event, fields }), child: () => log };
  const agent = new Agent({ models: [{ model: 'rpi4', channel, installer }], trusted: [key], store: new Store(store), transport: new MemoryTransport(hub), log, retryBaseMs: 50 });
  t.teardown(() => agent.stop());
  await agent.start();
  const carousel = new Carousel({ ...release });
  const publisher = new MemoryTransport(hub);
  await publisher.open();
  // Keep the release on the air well past several retry periods.
  const deadline = Date.now() + 3000;
  while (Date.now() < deadline) {
    for (let i = 0; i < 100; i++) publisher.send(channel, carousel.next());
    await new Promise((r) => setTimeout(r, 5));
  }
  const failed = events.filter((e) => e.event === 'store.failed');
  t.is(failed.length, 1, JSON.stringify(events.map((e) => e.event)));
  t.like(failed[0]!.fields, { model: 'rpi4', store });
  t.regex(String(failed[0]!.fields.path), /lifecycle\.json/);
  t.like(events.find((e) => e.event === 'lifecycle.rolled-back')?.fields, { model: 'rpi4', seq: 2, cause: 'device-reverted' });
  t.is(installs, 1, 'tried once: the device reverted it, so it is not tried again while the agent runs');
  t.is(agent.stats().rpi4 !== undefined, true, 'the agent is still running');
  t.deepEqual(events.filter((e) => e.event === 'release.installed'), []);
});
