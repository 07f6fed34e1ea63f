/**
 * A halt goes on through a relay (device-agent/relay.ts): the relay agent
 * installed the release and carries it onward; a device behind it waits on
 * the release's ramp; the halt heard upstream reaches it with the relayed
 * release, and it drops the release. In-memory transports, injected clocks.
 */
import test from 'ava';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from '../device-agent/agent.js';
import { Relay } from '../device-agent/relay.js';
import { Store, type InstalledRecord } from '../device-agent/store.js';
import { Carousel } from '../carousel/carousel.js';
import { signHaltWith } from '../protocol/halt.js';
import { hex } from '../protocol/hex.js';
import type { LogEvent, LogFields, Logger } from '../protocol/log.js';
import { encodeHaltPacket } from '../protocol/packet.js';
import { seedSigner } from '../protocol/signer.js';
import { buildRelease } from '../server/release.js';
import { MemoryHub, MemoryTransport } from '../transport/memory.js';
import { makeImage, makeKey } from './helpers/fixtures.js';

const T = 1_800_000_000;
const channel = { name: 'fw/cam', group: 'ff1e::8', port: 4242 };

function recorder(): { lines: Array<{ event: LogEvent; fields: LogFields }>; log: Logger } {
  const lines: Array<{ event: LogEvent; fields: LogFields }> = [];
  const log: Logger = { event: (event, fields) => void lines.push({ event, fields }), child: () => log };
  return { lines, log };
}

const noInstall = { description: 'test installer', install: async (): Promise<void> => {} };

test('a halt heard by a relay agent reaches the devices behind it', async (t) => {
  const key = await makeKey();
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-rollout-relay-'));
  const rel = buildRelease({ image: makeImage(50_000, 5), seed: key.seed, model: 'cam', version: '5', seq: 5, created: T - 10, rollout: { ramp: { start: T + 86400, duration: 3600 } } });
  const upstream = new MemoryHub();
  const downstream = new MemoryHub();
  // The relay's clock is past the ramp, so it installs; the device's is before it, so it waits.
  const relayStore = new Store(join(dir, 'relay'));
  const relayLog = recorder();
  const relayAgent = new Agent({ models: [{ model: 'cam', channel, installer: noInstall }], trusted: [key], store: relayStore, transport: new MemoryTransport(upstream), log: relayLog.log, now: () => T + 2 * 86400, rollout: { deviceId: 'relay', cohorts: [], windows: [] } });
  const relay = new Relay({ transport: new MemoryTransport(downstream), rate: 50e6, store: relayStore, models: [{ model: 'cam', channel }], log: relayLog.log, halts: (model) => relayAgent.rollout.haltDatagrams(model) });
  relayAgent.on('installed', (r) => relay.serve(r.model, r.releaseId));
  relayAgent.on('halt', ({ model }) => void relay.serve(model, relayStore.installed(model)!.releaseId, true));
  const device = recorder();
  const deviceAgent = new Agent({ models: [{ model: 'cam', channel, installer: noInstall }], trusted: [key], store: new Store(join(dir, 'device')), transport: new MemoryTransport(downstream), log: device.log, now: () => T, rollout: { deviceId: 'device', cohorts: [], windows: [] } });
  t.teardown(async () => {
    await relay.stop();
    await Promise.all([relayAgent.stop(), deviceAgent.stop()]);
  });
  await relay.start();
  await relayAgent.start();
  await deviceAgent.start();
  const publisher = new MemoryTransport(upstream);
  await publisher.open();
  const carousel = new Carousel({ ...rel });
  const installed = new Promise<InstalledRecord>((res) => relayAgent.once('installed', res));
  const deadline = Date.now() + 20_000;
  let done = false;
  void installed.then(() => (done = true));
  for (let i = 0; !done && Date.now() < deadline; i++) {
    publisher.send(channel, carousel.next());
    if (i % 100 === 0) await new Promise((r) => setTimeout(r, 2));
  }
  t.is((await installed).seq, 5);
  const waitFor = async (lines: Array<{ event: LogEvent; fields: LogFields }>, event: LogEvent, fields: LogFields): Promise<void> => {
    const until = Date.now() + 20_000;
    while (!lines.some((l) => l.event === event && Object.entries(fields).every(([k, v]) => l.fields[k] === v)) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    t.true(lines.some((l) => l.event === event && Object.entries(fields).every(([k, v]) => l.fields[k] === v)), `${event} ${JSON.stringify(fields)}`);
  };
  await waitFor(device.lines, 'rollout.scheduled', { release: hex(rel.releaseId), reason: 'ramp' });

  publisher.send(channel, encodeHaltPacket({ releaseId: rel.releaseId, signed: await signHaltWith({ model: 'cam', releaseId: rel.releaseId, issued: T }, seedSigner(key.seed)) }));
  await waitFor(relayLog.lines, 'halt.received', { release: hex(rel.releaseId), effect: 'installed' });
  await waitFor(device.lines, 'halt.received', { release: hex(rel.releaseId), effect: 'dropped' });
  await waitFor(device.lines, 'rollout.skipped', { release: hex(rel.releaseId), reason: 'halted' });
});
