/**
 * examples/sensor: a sensor in one network namespace publishes readings on a
 * channel named after it; a reader in another joins the same name and gets
 * them, in order, with no server. Like the chat example it imports the
 * package's public entry (`fwcast/channels`).
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { NetLab } from '../scripts/lab/netlab.js';
import { ROOT, track, type Tracked } from './helpers/processes.js';

const EXAMPLE = join(ROOT, 'examples/sensor/sensor.ts');

const events = (p: Tracked): Array<Record<string, unknown>> =>
  p.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);

test('the sensor example type-checks against the published declarations of fwcast/channels', (t) => {
  const tsc = spawnSync(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--types', 'node', '--skipLibCheck', EXAMPLE], { cwd: ROOT, encoding: 'utf8' });
  t.is(tsc.status, 0, tsc.stdout + tsc.stderr);
});

test('sensor: a reader in another namespace gets the readings, in order, by the sensor\'s name alone', async (t) => {
  const lab = NetLab.create(['sensor', 'reader']);
  t.teardown(() => lab.destroy());
  const name = `greenhouse-${process.pid}`;
  const reader = track(lab.spawn('reader', process.execPath, ['--import', 'tsx', EXAMPLE, '--iface', 'eth0', '--sensor', name, '--read', '--count', '5', '--seconds', '60'], { cwd: ROOT }));
  t.teardown(() => reader.child.kill('SIGKILL'));
  const deadline = Date.now() + 30_000;
  while (!events(reader).some((e) => e.event === 'sensor.joined')) {
    if (Date.now() > deadline) t.fail(`the reader did not join: ${reader.stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const sensor = track(lab.spawn('sensor', process.execPath, ['--import', 'tsx', EXAMPLE, '--iface', 'eth0', '--sensor', name, '--count', '8', '--interval', '100'], { cwd: ROOT }));
  t.teardown(() => sensor.child.kill('SIGKILL'));
  t.is(await reader.exited, 0, reader.stderr);
  t.is(await sensor.exited, 0, sensor.stderr);
  const readings = events(reader).filter((e) => e.event === 'sensor.reading');
  t.deepEqual(readings.map((r) => r.seq), [1, 2, 3, 4, 5]);
  for (const r of readings) {
    t.is(r.sensor, name);
    t.true(typeof r.celsius === 'number' && r.celsius > 15 && r.celsius < 27, `a plausible reading: ${JSON.stringify(r)}`);
  }
  t.like(events(reader).find((e) => e.event === 'sensor.left'), { heard: 5, dropped: { malformed: 0 } });
});
