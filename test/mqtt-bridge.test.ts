/**
 * Bridged brokers, the transitional path for sites multicast does not reach:
 * the publisher sends to a central mosquitto; a site mosquitto bridges the
 * release topics in from it (mosquitto's own bridge, configured as
 * docs/mqtt.md gives it, read from there); agents connect only to the site
 * broker and install.
 *
 *   fwcast publish --mqtt central ──► [central] ══bridge (topic fwcast/# in)══► [site] ──► agents --mqtt site
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Broker, freePort, requireMosquitto } from './helpers/broker.js';
import { sha256hex } from './helpers/fixtures.js';
import { events, exitCode, FWCAST, FWCAST_AGENT, ROOT, signedRelease, track, waitForEvent } from './helpers/processes.js';
import { spawn } from 'node:child_process';

test.before(() => {
  requireMosquitto();
});

/** The bridge section of the site broker's mosquitto.conf, as docs/mqtt.md gives it, pointed at `centralPort`. */
function siteBridge(centralPort: number): string {
  const doc = readFileSync(join(ROOT, 'docs', 'mqtt.md'), 'utf8');
  const block = /```mosquitto\n([\s\S]*?)```/.exec(doc)?.[1];
  if (!block?.includes('address central.example:1883')) throw new Error('docs/mqtt.md has no ```mosquitto block bridging to central.example:1883');
  return block.replace('address central.example:1883', `address 127.0.0.1:${centralPort}`);
}

test('a site broker bridged to a central one: agents on the site broker install a release published to the central broker', async (t) => {
  const central = await Broker.start({ port: await freePort() });
  t.teardown(() => central.stop());
  const site = await Broker.start({ port: await freePort(), extraConfig: siteBridge(central.port) });
  t.teardown(() => site.stop());
  // The central broker logs the site's bridge as a client connecting (client id HOSTNAME.central).
  const bridged = /New client connected from \S+ as \S*\.central\b/;
  const deadline = Date.now() + 30_000;
  while (!bridged.test(central.log) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  t.regex(central.log, bridged, `the bridge connected:\n${site.log}\n${central.log}`);

  const { dir, image, release, pub } = signedRelease('fwcast-bridge-', 700_000, { seed: 61, version: '5.0.0', seq: 5 });
  const agents = ['s1', 's2'].map((n) => track(spawn(process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--key', pub, '--mqtt', site.url, '--store', join(dir, `store-${n}`),
    '--once', '--json', '--timeout', '90', '--log-format', 'json'], { stdio: ['ignore', 'pipe', 'pipe'] })));
  t.teardown(() => agents.forEach((a) => a.child.kill('SIGKILL')));
  await Promise.all(agents.map((a) => waitForEvent(a, 'agent.listening', { channel: 'fw/rpi4', transport: new RegExp(`^MQTT mqtt://127\\.0\\.0\\.1:${site.port} `) }, 60_000)));
  const publisher = track(spawn(process.execPath, [FWCAST, 'publish', release, '--mqtt', central.url, '--rate', '8mbit', '--duration', '90s', '--no-cache', '--log-format', 'json'], { stdio: ['ignore', 'pipe', 'pipe'] }));
  t.teardown(() => publisher.child.kill('SIGKILL'));
  const codes = await Promise.all(agents.map((a) => exitCode(a, 90_000)));
  t.deepEqual(codes, [0, 0], agents.map((a) => a.stderr).join('\n') + site.log);
  for (const a of agents) {
    const r = JSON.parse(a.stdout.trim().split('\n').pop()!) as { path: string };
    t.is(sha256hex(readFileSync(r.path)), sha256hex(image));
    t.like(events(a.stderr, 'release.accepted')[0], { version: '5.0.0' });
  }
  publisher.child.kill('SIGTERM');
  t.is(await exitCode(publisher, 20_000), 0, publisher.stderr);
  // Only the central broker got the publisher's messages: everything the agents heard came over the bridge.
  t.like(events(publisher.stderr, 'mqtt.connected')[0], { url: central.url });
});
