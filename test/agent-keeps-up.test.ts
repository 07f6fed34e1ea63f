/**
 * With its storage thread, the agent's receive loop is not blocked by its own
 * work: spilling, decoding, hashing and image writes run there, so the event
 * loop that reads the socket keeps running while segments decode. Measured
 * against the same agent storing in its receiving thread, in the same run.
 * Real multicast in lab namespaces, 30% loss injected on the bridge.
 */
import test from 'ava';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { NetLab } from '../scripts/lab/netlab.js';
import { sha256hex } from './helpers/fixtures.js';
import { exitCode, FWCAST, FWCAST_AGENT, signedRelease, track, waitForEvent } from './helpers/processes.js';

test('with its storage thread, an agent receiving 16 MiB at 30% loss keeps reading its socket while segments decode', async (t) => {
  const lab = NetLab.create(['pub', 'dev']);
  t.teardown(() => lab.destroy());
  const { dir, image, release, pub } = signedRelease('fwcast-keeps-up-', 16 << 20, { seed: 7 });
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  lab.setLoss('dev', 30);
  const publisher = track(lab.spawn('pub', process.execPath, [FWCAST, 'publish', release, '--iface', 'eth0', '--rate', '60mbit', '--duration', '150s', '--log-format', 'json']));
  t.teardown(() => publisher.child.kill('SIGKILL'));

  const stall = async (mode: 'inline' | 'thread'): Promise<number> => {
    const agent = track(lab.spawn('dev', process.execPath, [
      FWCAST_AGENT, '--model', 'rpi4', '--key', pub, '--iface', 'eth0', '--store', join(dir, `store-${mode}`),
      '--once', '--json', '--timeout', '120', '--log-format', 'json', ...(mode === 'thread' ? ['--storage-thread'] : []),
    ]));
    const received = await waitForEvent(agent, 'release.received', {}, 120_000);
    t.is(await exitCode(agent, 60_000), 0, agent.stderr.slice(-3000));
    t.is(JSON.parse(agent.stdout.trim()).sha256, sha256hex(image), mode);
    t.log(`${mode}: received in ${received.seconds} s, longest event-loop stall ${received.stallMs} ms`);
    return Number(received.stallMs);
  };
  const inline = await stall('inline');
  const thread = await stall('thread');
  // In its receiving thread the agent stops reading for a whole segment decode (3 MiB: ~100 ms and more).
  t.true(thread * 3 < inline, `longest stall ${thread} ms with the storage thread, ${inline} ms without`);
});
