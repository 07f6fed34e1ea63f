/**
 * examples/sensor: a sensor in one network namespace publishes readings on a
 * channel named after it; a reader in another joins the same name and gets
 * them, in order, with no server. Like the chat example it imports the
 * package's public entry (`fwcast/channels`).
 */
import test from 'ava';
import { join } from 'node:path';
import { NetLab } from '../scripts/lab/netlab.js';
import { jsonLines, typeCheckExample } from './helpers/examples.js';
import { ROOT, track } from './helpers/processes.js';

const EXAMPLE = join(ROOT, 'examples/sensor/sensor.ts');

test('the sensor example type-checks against the published declarations of fwcast/channels', (t) => {
  const tsc = typeCheckExample(EXAMPLE);
  t.is(tsc.status, 0, tsc.output);
});

test('sensor: a reader in another namespace gets the readings, in order, by the sensor\'s name alone', async (t) => {
  const lab = NetLab.create(['sensor', 'reader']);
  t.teardown(() => lab.destroy());
  const name = `greenhouse-${process.pid}`;
  const reader = track(lab.spawn('reader', process.execPath, ['--import', 'tsx', EXAMPLE, '--iface', 'eth0', '--sensor', name, '--read', '--count', '5', '--seconds', '60'], { cwd: ROOT }));
  t.teardown(() => reader.child.kill('SIGKILL'));
  const deadline = Date.now() + 30_000;
  while (!jsonLines(reader).some((e) => e.event === 'sensor.joined')) {
    if (Date.now() > deadline) throw new Error(`the reader did not join within 30 s: ${reader.stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const sensor = track(lab.spawn('sensor', process.execPath, ['--import', 'tsx', EXAMPLE, '--iface', 'eth0', '--sensor', name, '--count', '8', '--interval', '100'], { cwd: ROOT }));
  t.teardown(() => sensor.child.kill('SIGKILL'));
  t.is(await reader.exited, 0, reader.stderr);
  t.is(await sensor.exited, 0, sensor.stderr);
  const readings = jsonLines(reader).filter((e) => e.event === 'sensor.reading');
  t.deepEqual(readings.map((r) => r.seq), [1, 2, 3, 4, 5]);
  for (const r of readings) {
    t.is(r.sensor, name);
    t.true(typeof r.celsius === 'number' && r.celsius > 15 && r.celsius < 27, `a plausible reading: ${JSON.stringify(r)}`);
  }
  t.like(jsonLines(reader).find((e) => e.event === 'sensor.left'), { heard: 5, dropped: { malformed: 0 } });
});
