/**
 * Halts through `fwcast serve`, in lab namespaces: `fwcast halt` signs one with
 * the publisher key, `fwcast push` uploads it (the upload token alone does not
 * make a halt: it must verify with a trusted key), serve keeps it across a
 * restart and carries it on the model's channel, and an agent waiting on the
 * release's ramp drops it.
 */
import test from 'ava';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetLab } from '../scripts/lab/netlab.js';
import { makeImage } from './helpers/fixtures.js';
import { FWCAST_AGENT, exitCode, track, waitForEvent } from './helpers/processes.js';
import { fwcastAsync, httpGet, push, serveConfig, startServe, TOKEN } from './helpers/serve.js';

const SERVER = 'http://[fd00:fc::1]:8080';

test('a halt pushed to serve is verified, kept, carried on the channel, and stops a waiting agent', async (t) => {
  const lab = NetLab.create(['srv', 'dev']);
  t.teardown(() => lab.destroy());
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-serve-halt-'));
  const strangerDir = join(dir, 'stranger');
  await fwcastAsync('keygen', '--out', dir);
  await fwcastAsync('keygen', '--out', strangerDir);
  writeFileSync(join(dir, 'fw.img'), makeImage(200_000, 9));
  const release = join(dir, 'fw.fwc');
  const signed = JSON.parse(await fwcastAsync('sign', join(dir, 'fw.img'), '--key', join(dir, 'publisher.key'), '--model', 'rpi4', '--version', '3.0', '--seq', '3',
    '--ramp-start', '1d', '--ramp-duration', '2h', '--out', release, '--json')) as { releaseId: string };
  const config = serveConfig({ dir, pub: join(dir, 'publisher.pub') });
  let server = await startServe(lab, 'srv', config);
  t.teardown(() => server.child.kill('SIGTERM'));
  t.is((await push(lab, 'srv', release, TOKEN)).code, 0);

  const agent = track(lab.spawn('dev', process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--key', join(dir, 'publisher.pub'), '--iface', 'eth0', '--store', join(dir, 'agent'), '--log-format', 'json']));
  t.teardown(() => agent.child.kill('SIGTERM'));
  await waitForEvent(agent, 'rollout.scheduled', { release: signed.releaseId, reason: 'ramp' }, 40_000);

  const halt = join(dir, 'fw.halt');
  const forged = join(dir, 'forged.halt');
  await fwcastAsync('halt', release, '--key', join(dir, 'publisher.key'), '--out', halt);
  await fwcastAsync('halt', signed.releaseId, '--model', 'rpi4', '--key', join(strangerDir, 'publisher.key'), '--out', forged);
  t.like((await push(lab, 'srv', halt, undefined)).json, { ok: false, status: 401, error: 'unauthorized' });
  t.like((await push(lab, 'srv', forged, TOKEN)).json, { ok: false, status: 422, error: 'unknown-key' }, 'the upload token does not make a halt');
  const stored = await push(lab, 'srv', halt, TOKEN);
  t.is(stored.code, 0, stored.stderr);
  t.like(stored.json, { ok: true, status: 201, stored: true });
  t.like((await push(lab, 'srv', halt, TOKEN)).json, { ok: true, status: 200, stored: false });
  await waitForEvent(server, 'serve.halt-stored', { release: signed.releaseId, created: true }, 5_000);

  await waitForEvent(agent, 'halt.received', { release: signed.releaseId, effect: 'dropped' }, 30_000);
  await waitForEvent(agent, 'rollout.skipped', { release: signed.releaseId, reason: 'halted' }, 5_000);

  // Kept across a restart of the server.
  server.child.kill('SIGTERM');
  t.is(await exitCode(server, 10_000), 0);
  server = await startServe(lab, 'srv', config);
  const listed = JSON.parse((await httpGet(lab, 'srv', `${SERVER}/api/v1/halts`)).body) as { halts: Array<{ model: string; releaseId: string }> };
  t.deepEqual(listed.halts.map((h) => [h.model, h.releaseId]), [['rpi4', signed.releaseId]]);
  agent.child.kill('SIGTERM');
  t.is(await exitCode(agent, 10_000), 0);
});
