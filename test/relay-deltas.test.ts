/**
 * device-agent/relay-deltas.ts and the relay's delta carousels (relay.ts),
 * over memory transports: a relay receives the delta its relayed release
 * lists upstream, keeps it checked against its signed digest, and carousels
 * it downstream on its sub-channel; a kept delta that no longer matches is
 * refused, removed and received again. The same over real multicast:
 * test/relay-delta.test.ts.
 */
import test, { type ExecutionContext } from 'ava';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { channelGroup } from '../protocol/channel.js';
import * as ed25519 from '../protocol/ed25519.js';
import { deltaChannelName } from '../protocol/delta.js';
import { hex } from '../protocol/hex.js';
import type { Logger } from '../protocol/log.js';
import { buildRelease } from '../protocol/release.js';
import { Relay } from '../device-agent/relay.js';
import { Store } from '../device-agent/store.js';
import { buildDelta, deltaCarousels } from '../server/delta-build.js';
import { CodecPool } from '../server/codec-pool.js';
import { MemoryHub, MemoryTransport } from '../transport/memory.js';
import { makeImage } from './helpers/fixtures.js';
import { fixedKey } from './helpers/fuzz.js';

test.before(() => ed25519.ready());

const channel = { name: 'fw/rpi4', group: 'ff1e::1', port: 4242 };

/** Release 2 with a delta from release 1, kept in a relay's store as the agent keeps what it installed. */
async function relayedRelease(t: ExecutionContext) {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-relay-deltas-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const key = fixedKey(11);
  const old = makeImage(60_000, 70);
  const v1 = buildRelease({ image: old, seed: key.seed, model: 'rpi4', version: '1', seq: 1 });
  const next = Uint8Array.from([...old.subarray(0, 30_000), ...makeImage(3000, 71), ...old.subarray(30_000)]);
  const pool = new CodecPool();
  const built = await buildDelta({ image: next, model: 'rpi4', version: '2', seq: 2 }, { releaseId: v1.releaseId, image: old, model: 'rpi4' }, pool).finally(() => pool.close());
  const v2 = { ...buildRelease({ image: next, seed: key.seed, model: 'rpi4', version: '2', seq: 2, deltas: [built.entry] }), deltaObjects: [built.object] };
  const store = new Store(join(dir, 'store'));
  writeFileSync(join(dir, 'v2.img'), next);
  const id = hex(v2.releaseId);
  store.keepRelease('rpi4', id, join(dir, 'v2.img'), v2.signed);
  const lines: Array<Record<string, unknown>> = [];
  const log: Logger = { event: (event, fields) => lines.push({ event, ...fields }), child: () => log };
  const sub = deltaChannelName('rpi4', v1.releaseId);
  return { key, v2, id, baseId: hex(v1.releaseId), object: built.object, store, lines, log, sub };
}

/** Counts what reaches each channel of `hub`. */
async function listen(hub: MemoryHub, names: string[]): Promise<Map<string, number>> {
  const counts = new Map(names.map((n) => [n, 0]));
  const t = new MemoryTransport(hub);
  for (const name of names) {
    const ch = name === channel.name ? channel : { name, group: channelGroup(name), port: channel.port };
    await t.join(ch, () => counts.set(name, counts.get(name)! + 1));
  }
  return counts;
}

/** Upstream, the publisher's carousel of the delta on its sub-channel, until `done` (or 2000 bursts). */
async function publishDelta(up: MemoryHub, r: Awaited<ReturnType<typeof relayedRelease>>, done: () => boolean): Promise<void> {
  const [entry] = deltaCarousels(r.v2, channel.port);
  const publisher = new MemoryTransport(up);
  await publisher.open();
  for (let i = 0; i < 2000 && !done(); i++) {
    for (let j = 0; j < 20; j++) publisher.send(entry!.channel, entry!.carousel.next());
    await new Promise((res) => setTimeout(res, 5));
  }
  await publisher.close();
}

async function until(what: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!what() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  return what();
}

test('the relay receives the listed delta upstream, keeps it beside the release and carousels it downstream on its sub-channel', async (t) => {
  const r = await relayedRelease(t);
  const up = new MemoryHub();
  const down = new MemoryHub();
  const relay = new Relay({ transport: new MemoryTransport(down), rate: 50e6, store: r.store, models: [{ model: 'rpi4', channel }], log: r.log, upstream: { transport: new MemoryTransport(up), trusted: [r.key], root: () => undefined } });
  t.teardown(() => relay.stop());
  const heard = await listen(down, [channel.name, r.sub]);
  await relay.start();
  await until(() => r.lines.some((l) => l.event === 'relay.delta-joined'), 5000);
  t.like(r.lines.find((l) => l.event === 'relay.delta-joined'), { model: 'rpi4', release: r.id, baseRelease: r.baseId, channel: r.sub });
  await until(() => heard.get(channel.name)! > 100, 5000);
  t.is(heard.get(r.sub), 0, 'nothing on the sub-channel before the delta is kept');

  const kept = r.store.keptDelta('rpi4', r.id, r.baseId);
  await publishDelta(up, r, () => existsSync(kept));
  t.deepEqual(new Uint8Array(readFileSync(kept)), r.object, 'the kept delta is the signed object');
  t.like(r.lines.find((l) => l.event === 'relay.delta-kept'), { release: r.id, baseRelease: r.baseId, size: r.object.length, path: kept });
  t.like(r.lines.find((l) => l.event === 'relay.delta-serving'), { release: r.id, seq: 2, baseRelease: r.baseId, channel: r.sub });
  t.true(await until(() => heard.get(r.sub)! > 50, 5000), `the delta goes out downstream: ${heard.get(r.sub)} datagrams`);
  t.false(existsSync(join(r.store.relayDeltaTransfers('rpi4'), `${r.id}.${r.baseId}`)), 'its transfer directory is gone');

  // Once the release is pruned for a newer one, its delta goes with it.
  r.store.pruneReleases('rpi4', 'ffffffffffffffffffffffffffffffff');
  t.false(existsSync(kept));
});

test('a kept delta that no longer matches its signed digest is not served: it is removed, and the full release goes out alone', async (t) => {
  const r = await relayedRelease(t);
  const kept = r.store.keptDelta('rpi4', r.id, r.baseId);
  const bad = Uint8Array.from(r.object);
  bad[bad.length >> 1]! ^= 0x01;
  writeFileSync(kept, bad);
  const down = new MemoryHub();
  // No upstream: it cannot be received again here.
  const relay = new Relay({ transport: new MemoryTransport(down), rate: 50e6, store: r.store, models: [{ model: 'rpi4', channel }], log: r.log });
  t.teardown(() => relay.stop());
  const heard = await listen(down, [channel.name, r.sub]);
  await relay.start();
  t.like(r.lines.find((l) => l.event === 'relay.delta-failed'), { model: 'rpi4', release: r.id, baseRelease: r.baseId, reason: 'digest-mismatch' });
  t.false(existsSync(kept), 'removed, to be received again');
  t.true(await until(() => heard.get(channel.name)! > 200, 5000), 'the full release is relayed');
  t.is(heard.get(r.sub), 0, 'nothing on the delta sub-channel');
  t.is(r.lines.filter((l) => l.event === 'relay.delta-serving').length, 0);
});

test('a relay restarted with a kept delta serves it at once, receiving nothing', async (t) => {
  const r = await relayedRelease(t);
  writeFileSync(join(r.store.dir, 'incoming', 'delta'), r.object);
  r.store.keepDelta('rpi4', r.id, r.baseId, join(r.store.dir, 'incoming', 'delta'));
  const down = new MemoryHub();
  const relay = new Relay({ transport: new MemoryTransport(down), rate: 50e6, store: r.store, models: [{ model: 'rpi4', channel }], log: r.log, upstream: { transport: new MemoryTransport(new MemoryHub()), trusted: [r.key], root: () => undefined } });
  t.teardown(() => relay.stop());
  const heard = await listen(down, [channel.name, r.sub]);
  await relay.start();
  t.like(r.lines.find((l) => l.event === 'relay.delta-serving'), { release: r.id, baseRelease: r.baseId, channel: r.sub, size: r.object.length });
  t.is(r.lines.filter((l) => l.event === 'relay.delta-joined').length, 0);
  t.true(await until(() => heard.get(r.sub)! > 50 && heard.get(channel.name)! > 50, 5000), 'both carousels share the relay\'s rate');
});

test('a store that cannot keep the delta: store.failed once, the full release relayed meanwhile; once it can, the delta is received again and kept', async (t) => {
  const r = await relayedRelease(t);
  const up = new MemoryHub();
  const relay = new Relay({ transport: new MemoryTransport(new MemoryHub()), rate: 50e6, store: r.store, models: [{ model: 'rpi4', channel }], log: r.log, upstream: { transport: new MemoryTransport(up), trusted: [r.key], root: () => undefined } });
  t.teardown(() => relay.stop());
  // A directory where the delta goes: the rename that keeps it fails, as on a broken disk.
  const kept = r.store.keptDelta('rpi4', r.id, r.baseId);
  mkdirSync(kept);
  await relay.start();
  await publishDelta(up, r, () => r.lines.some((l) => l.event === 'store.failed'));
  // Many more rounds of the delta: each is received and fails to be kept again.
  let bursts = 0;
  await publishDelta(up, r, () => ++bursts > 300);
  t.like(r.lines.find((l) => l.event === 'store.failed'), { model: 'rpi4', store: r.store.dir, path: kept, reason: 'store-error' });
  t.is(r.lines.filter((l) => l.event === 'store.failed').length, 1, 'logged once while it fails');
  t.is(r.lines.filter((l) => l.event === 'relay.delta-serving').length, 0);
  t.like(r.lines.find((l) => l.event === 'relay.serving'), { release: r.id }, 'the full release is relayed');

  rmSync(kept, { recursive: true });
  await publishDelta(up, r, () => r.lines.some((l) => l.event === 'relay.delta-serving'));
  t.like(r.lines.find((l) => l.event === 'store.recovered'), { model: 'rpi4' });
  t.like(r.lines.find((l) => l.event === 'relay.delta-kept'), { release: r.id, path: kept });
  t.deepEqual(new Uint8Array(readFileSync(kept)), r.object);
  t.like(r.lines.find((l) => l.event === 'relay.delta-serving'), { release: r.id, baseRelease: r.baseId });
});
