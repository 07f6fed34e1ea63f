/**
 * The agent's receive loop is never blocked by its own work: spilling,
 * decoding, hashing and image writes run in its storage thread, so the event
 * loop that reads the socket keeps running while segments decode. Real
 * multicast in lab namespaces, 30% loss injected on the bridge.
 */
import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetLab } from '../scripts/lab/netlab.js';
import { makeImage, sha256hex } from './helpers/fixtures.js';
import { exitCode, FWCAST, FWCAST_AGENT, fwcast, track, waitForEvent } from './helpers/processes.js';

test('receiving 16 MiB at 30% loss, the agent\'s event loop never stalls more than a few milliseconds', async (t) => {
  const lab = NetLab.create(['pub', 'dev']);
  t.teardown(() => lab.destroy());
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-keeps-up-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  fwcast('keygen', '--out', dir);
  const image = makeImage(16 << 20, 7);
  writeFileSync(join(dir, 'image.bin'), image);
  const release = join(dir, 'release.fwc');
  fwcast('sign', join(dir, 'image.bin'), '--key', join(dir, 'publisher.key'), '--model', 'rpi4', '--version', '1.0.0', '--seq', '1', '--out', release);
  lab.setLoss('dev', 30);
  const agent = track(lab.spawn('dev', process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--key', join(dir, 'publisher.pub'), '--iface', 'eth0', '--store', join(dir, 'store'), '--once', '--json', '--timeout', '120', '--log-format', 'json']));
  await waitForEvent(agent, 'agent.listening', {}, 20_000);
  const publisher = track(lab.spawn('pub', process.execPath, [FWCAST, 'publish', release, '--iface', 'eth0', '--rate', '60mbit', '--duration', '120s', '--log-format', 'json']));
  const received = await waitForEvent(agent, 'release.received', {}, 120_000);
  t.is(await exitCode(agent, 60_000), 0, agent.stderr.slice(-3000));
  publisher.child.kill('SIGTERM');
  t.is(JSON.parse(agent.stdout.trim()).sha256, sha256hex(image));
  t.log(`received in ${received.seconds} s, longest event-loop stall ${received.stallMs} ms`);
  t.true(Number(received.stallMs) < 20, `longest stall ${received.stallMs} ms while receiving`);
});
