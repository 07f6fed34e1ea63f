/** The agent with an in-memory transport: installation, retries, store. */
import test from 'ava';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from '../device-agent/agent.js';
import { CommandInstaller } from '../device-agent/installers/command-installer.js';
import { Store, type InstalledRecord } from '../device-agent/store.js';
import { nullLogger } from '../protocol/log.js';
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
  while (failures.length === 0 && sent < 5000) {
    publisher.send(channel, carousel.next());
    sent++;
    if (sent % 200 === 0) await new Promise((r) => setImmediate(r));
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
