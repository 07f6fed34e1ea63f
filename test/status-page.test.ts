/**
 * The status page of `fwcast serve` as a person sees it: Debian's Chromium,
 * headless, driven by playwright-core, reading the rendered tables. The server
 * publishes on the lab's loopback, where multicast stays inside the lab (on its
 * own UDP port, so no other test's agent hears it).
 */
import test from 'ava';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { chromium } from 'playwright-core';
import { makeImage } from './helpers/fixtures.js';
import { exitCode, FWCAST, fwcast, track, waitForEvent } from './helpers/processes.js';
import { TOKEN } from './helpers/serve.js';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

test('the status page shows every channel with its release, the stored releases, and the root of trust with its expiry warning', async (t) => {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium`);
  if (process.env.FWCAST_LAB !== '1') throw new Error('this test publishes multicast on loopback: run it in the lab (`bash scripts/lab.sh npx ava test/status-page.test.ts`)');
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-status-'));
  fwcast('keygen', '--out', dir);
  const sign = (model: string, seq: number): string => {
    writeFileSync(join(dir, `${model}-${seq}.img`), makeImage(60_000 + seq, seq));
    const out = join(dir, `${model}-${seq}.fwc`);
    fwcast('sign', join(dir, `${model}-${seq}.img`), '--key', join(dir, 'publisher.key'), '--model', model, '--version', `1.0.${seq}`, '--seq', String(seq), '--out', out);
    return out;
  };
  // A root of trust that delegates the publisher key and expires in 20 days: the page warns.
  fwcast('keygen', '--out', join(dir, 'root-key'));
  fwcast('root', 'create', '--root-key', join(dir, 'root-key', 'publisher.pub'), '--expires', '20d', '--out', join(dir, 'root.draft'));
  fwcast('root', 'delegate', join(dir, 'root.draft'), '--key', join(dir, 'publisher.pub'), '--model', 'rpi4', '--model', 'sensor-v2', '--model', 'gateway', '--out', join(dir, 'root.draft'));
  fwcast('root', 'sign', join(dir, 'root.draft'), '--key', join(dir, 'root-key', 'publisher.key'), '--out', join(dir, 'root.sig'));
  fwcast('root', 'merge', join(dir, 'root.draft'), join(dir, 'root.sig'), '--out', join(dir, 'root-v1.cbor'));
  writeFileSync(join(dir, 'serve.json'), JSON.stringify({
    listen: '127.0.0.1:0', store: join(dir, 'store'), interface: 'lo', port: 4799, rate: '2mbit', roots: [join(dir, 'root-v1.cbor')],
    models: ['rpi4', 'sensor-v2', 'gateway'], logFormat: 'json',
  }));
  const server = track(spawn(process.execPath, [FWCAST, 'serve', '--config', join(dir, 'serve.json')], { env: { ...process.env, FWCAST_TOKEN: TOKEN }, stdio: ['ignore', 'pipe', 'pipe'] }));
  t.teardown(() => server.child.kill('SIGKILL'));
  const base = String((await waitForEvent(server, 'serve.listening', { url: /^http:\/\/127\.0\.0\.1:\d+$/ }, 20_000)).url);
  for (const file of [sign('rpi4', 1), sign('rpi4', 2), sign('sensor-v2', 7)]) {
    const p = track(spawn(process.execPath, [FWCAST, 'push', file, '--server', base, '--token', TOKEN], { stdio: ['ignore', 'pipe', 'pipe'] }));
    t.is(await exitCode(p, 20_000), 0, p.stderr);
  }

  const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'fwcast-chromium-')), {
    executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1100, height: 640 },
  });
  t.teardown(() => context.close());
  const page = await context.newPage();
  await page.goto(`${base}/`);
  const channelRows = page.locator('#channels tbody tr');
  await channelRows.first().waitFor({ timeout: 10_000 });
  // Wait until both channels on the air show a rate (a channel needs two 1-s samples for one), as a person would.
  const rows = async (): Promise<string[][]> => (await channelRows.allInnerTexts()).map((r) => r.split('\t').map((c) => c.trim()));
  const deadline = Date.now() + 10_000;
  while (!(await rows()).filter((c) => /seq/.test(c[2] ?? '')).every((c) => c[5] && !/^0\.0 kbit/.test(c[5])) && Date.now() < deadline) await page.waitForTimeout(200);

  const channels = await rows();
  t.is(channels.length, 3);
  const byChannel = Object.fromEntries(channels.map((c) => [c[0], c]));
  t.is(byChannel['fw/rpi4']?.[2], 'rpi4 1.0.2 (seq 2)');
  t.is(byChannel['fw/sensor-v2']?.[2], 'sensor-v2 1.0.7 (seq 7)');
  t.is(byChannel['fw/gateway']?.[2], 'gateway: no release');
  t.regex(byChannel['fw/rpi4']?.[1] ?? '', /^\[ff1e:[0-9a-f:]+\]:4799$/);
  for (const c of ['fw/rpi4', 'fw/sensor-v2']) {
    t.regex(byChannel[c]?.[5] ?? '', /^\d+\.\d (k|M)bit\/s$/, `${c} rate`);
    t.notRegex(byChannel[c]?.[5] ?? '', /^0\.0 /, `${c} is sending`);
  }
  t.true(Number(byChannel['fw/rpi4']?.[4]) > 0, 'packets counted');

  const releases = (await page.locator('#releases tbody tr').allInnerTexts()).map((r) => r.split('\t').map((c) => c.trim()));
  t.deepEqual(releases.map((r) => [r[0], r[1], r[3]]), [['rpi4', '1.0.2', 'live'], ['rpi4', '1.0.1', 'superseded'], ['sensor-v2', '1.0.7', 'live']]);
  t.regex(await page.locator('#summary').innerText(), /^3 channel\(s\) on lo, budget 2\.0 Mbit\/s, sending/);
  t.regex(await page.locator('#root-summary').innerText(), /^version 1, expires \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC; carried on every channel: versions 1$/);
  t.deepEqual((await page.locator('#root-warnings li').allInnerTexts()).map((w) => /^root version 1 expires at .*, in (\d+) days/.exec(w)?.[1]), ['20']);

  const shot = join(tmpdir(), 'fwcast-status-page.png');
  await page.screenshot({ path: shot, fullPage: true });
  t.log(`screenshot: ${shot}`);
  server.child.kill('SIGTERM');
  t.is(await exitCode(server, 10_000), 0);
});
