/**
 * How a root of trust reaches devices besides `fwcast publish --root`, over
 * real multicast (and MQTT) in lab namespaces, through the CLIs:
 *  - `fwcast push ROOT` to serve: serve checks it as an agent would, keeps
 *    it, authorizes uploads by it and carries it on every channel; its status
 *    and log warn before the root expires.
 *  - the chain inside a release file (`fwcast sign --root`), carried by
 *    `fwcast publish` without --root, and by a relay agent onward.
 */
import test from 'ava';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetLab } from '../scripts/lab/netlab.js';
import { Broker, requireMosquitto } from './helpers/broker.js';
import { makeImage, sha256hex } from './helpers/fixtures.js';
import { events, exitCode, FWCAST, FWCAST_AGENT, track, waitForEvent } from './helpers/processes.js';
import { fwcastAsync, httpGet, push, serveConfig, startServe, TOKEN } from './helpers/serve.js';

/**
 * Root keys r1 (root) and publisher keys p1, p2. v1 delegates p1 for rpi4;
 * v2 revokes p1 and delegates p2. `expires` is the roots' expiry.
 */
async function rootsIn(dir: string, expires: string): Promise<{ f: (name: string) => string; v1: string; v2: string }> {
  const f = (name: string): string => join(dir, name);
  await Promise.all(['r1', 'p1', 'p2'].map((k) => fwcastAsync('keygen', '--out', f(k))));
  const pub = (k: string): string => f(`${k}/publisher.pub`);
  const sign = async (draft: string, out: string): Promise<void> => {
    await fwcastAsync('root', 'sign', draft, '--key', f('r1/publisher.key'), '--out', `${draft}.sig`);
    await fwcastAsync('root', 'merge', draft, `${draft}.sig`, '--out', out);
  };
  await fwcastAsync('root', 'create', '--root-key', pub('r1'), '--expires', expires, '--out', f('v1.draft'));
  await fwcastAsync('root', 'delegate', f('v1.draft'), '--key', pub('p1'), '--model', 'rpi4', '--out', f('v1.draft'));
  await sign(f('v1.draft'), f('v1.cbor'));
  await fwcastAsync('root', 'revoke', f('v1.cbor'), '--key', pub('p1'), '--out', f('v2.draft'));
  await fwcastAsync('root', 'delegate', f('v2.draft'), '--key', pub('p2'), '--model', 'rpi4', '--out', f('v2.draft'));
  await sign(f('v2.draft'), f('v2.cbor'));
  return { f, v1: f('v1.cbor'), v2: f('v2.cbor') };
}

async function signImage(f: (name: string) => string, signer: string, seq: number, extra: string[] = []): Promise<{ file: string; image: Uint8Array }> {
  const image = makeImage(90_000 + seq, seq);
  writeFileSync(f(`image-${seq}.bin`), image);
  await fwcastAsync('sign', f(`image-${seq}.bin`), '--key', f(`${signer}/publisher.key`), '--model', 'rpi4', '--version', `1.0.${seq}`, '--seq', String(seq), '--out', f(`release-${seq}.fwc`), ...extra);
  return { file: f(`release-${seq}.fwc`), image };
}

test('fwcast push ROOT: serve checks it like an agent, keeps it, authorizes uploads by it, carries it; an agent on v1 installs the new key\'s release', async (t) => {
  const lab = NetLab.create(['srv', 'dev']);
  t.teardown(() => lab.destroy());
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-root-push-'));
  // Expires in 20 days: inside the 30-day warning.
  const { f, v1, v2 } = await rootsIn(dir, '20d');
  const byP2 = await signImage(f, 'p2', 2);
  const byP1 = await signImage(f, 'p1', 3);

  // serve trusts no key by itself: the root decides.
  const config = serveConfig({ dir, pub: '', extra: { trustedKeys: [], roots: [v1] } });
  let server = await startServe(lab, 'srv', config);
  t.teardown(() => server.child.kill('SIGKILL'));
  t.like(await waitForEvent(server, 'serve.root-expiring', {}, 1000), { rootVersion: 1 });

  // p2 is not delegated by v1: refused with the agents' reason.
  let pushed = await push(lab, 'srv', byP2.file, TOKEN);
  t.like(pushed, { code: 3, json: { error: 'unknown-key' } }, pushed.stderr);
  // A root that is not signed by v1's root keys (here: signed by a publisher key) is refused.
  await fwcastAsync('root', 'sign', f('v2.draft'), '--key', f('p1/publisher.key'), '--out', f('v2.forged.sig'));
  await fwcastAsync('root', 'merge', f('v2.draft'), f('v2.forged.sig'), '--out', f('v2.forged.cbor'));
  pushed = await push(lab, 'srv', f('v2.forged.cbor'), TOKEN);
  t.like(pushed, { code: 3, json: { error: 'root-threshold' } }, pushed.stderr);
  // Without the token, nothing.
  pushed = await push(lab, 'srv', v2, undefined);
  t.like(pushed, { code: 4, json: { error: 'unauthorized' } });
  // v2: trusted and carried.
  pushed = await push(lab, 'srv', v2, TOKEN);
  t.is(pushed.code, 0, pushed.stderr);
  t.like(pushed.json, { applied: [2], root: { version: 2 } } as never);
  t.like(await waitForEvent(server, 'serve.root-adopted', {}, 5000), { rootVersion: 2, source: 'push' });
  // v1 again: older than what serve trusts.
  pushed = await push(lab, 'srv', v1, TOKEN);
  t.like(pushed, { code: 3, json: { error: 'root-rollback' } }, pushed.stderr);

  // Now p2's release is authorized, and p1's (revoked by v2) is not, whatever its seq.
  pushed = await push(lab, 'srv', byP1.file, TOKEN);
  t.like(pushed, { code: 3, json: { error: 'revoked-key' } }, pushed.stderr);
  pushed = await push(lab, 'srv', byP2.file, TOKEN);
  t.is(pushed.code, 0, pushed.stderr);

  // An agent provisioned with v1 only learns v2 from the channel and installs.
  const agent = track(lab.spawn('dev', process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--root', v1, '--iface', 'eth0', '--store', f('store-dev'), '--once', '--json', '--timeout', '50', '--log-format', 'json']));
  t.is(await exitCode(agent, 55_000), 0, agent.stderr);
  t.like(events(agent.stderr, 'root.updated')[0], { rootVersion: 2, previousVersion: 1 });
  t.is(sha256hex(readFileSync((JSON.parse(agent.stdout.trim()) as { path: string }).path)), sha256hex(byP2.image));

  // A restarted serve still trusts v2 (kept in its store), and its status says when it expires.
  server.child.kill('SIGTERM');
  await exitCode(server, 15_000);
  server = await startServe(lab, 'srv', config);
  t.like(await waitForEvent(server, 'serve.root-expiring', {}, 1000), { rootVersion: 2 });
  const status = JSON.parse((await httpGet(lab, 'srv', 'http://[fd00:fc::1]:8080/api/v1/status')).body) as { root: { version: number; carried: number[]; expiresAt: string; warnings: string[] } };
  t.like(status.root, { version: 2, carried: [1, 2] });
  t.is(status.root.warnings.length, 1);
  const metrics = (await httpGet(lab, 'srv', 'http://[fd00:fc::1]:8080/metrics')).body;
  t.regex(metrics, /^fwcast_root_version 2$/m);
  t.is(Number(/^fwcast_root_expiry_timestamp_seconds (\d+)$/m.exec(metrics)?.[1]) * 1000, Date.parse(status.root.expiresAt));
});

test('the chain inside a release file: fwcast sign --root embeds it, publish carries it without --root, a relay agent carries it onward', async (t) => {
  requireMosquitto();
  const lab = NetLab.create(['up', 'relay', 'dev']);
  t.teardown(() => lab.destroy());
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-root-file-'));
  const { f, v1, v2 } = await rootsIn(dir, '365d');
  const release = await signImage(f, 'p2', 2, ['--root', v1, '--root', v2]);
  t.like(JSON.parse(await fwcastAsync('inspect', release.file, '--json')), { rootChain: [1, 2], image: 'matches manifest' });
  // A chain under which agents would refuse the release (p1 is revoked by v2) makes no release file.
  const refused = await fwcastAsync('sign', f('image-2.bin'), '--key', f('p1/publisher.key'), '--model', 'rpi4', '--version', 'x', '--seq', '9', '--out', f('never.fwc'), '--root', v1, '--root', v2)
    .then(() => 0, (err: { code: number; stderr: string }) => { t.regex(err.stderr, /revoked-key/); return err.code; });
  t.is(refused, 2);

  const port = 18840;
  const broker = await Broker.start({ port, address: '::', spawn: (cmd, args) => lab.spawn('up', cmd, args) });
  t.teardown(() => broker.stop());
  const publisher = track(lab.spawn('up', process.execPath, [FWCAST, 'publish', release.file, '--mqtt', `mqtt://[::1]:${port}`, '--rate', '20mbit', '--duration', '90s', '--log-format', 'json', '--quiet']));
  t.teardown(() => publisher.child.kill('SIGTERM'));
  // Relay and downstream agent are provisioned with v1 only.
  const relay = track(lab.spawn('relay', process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--root', v1, '--mqtt', `mqtt://[fd00:fc::1]:${port}`, '--store', f('store-relay'),
    '--relay-iface', 'eth0', '--relay-rate', '20mbit', '--log-format', 'json']));
  t.teardown(() => relay.child.kill('SIGTERM'));
  t.like(await waitForEvent(relay, 'root.updated', {}, 60_000), { rootVersion: 2, previousVersion: 1 });
  await waitForEvent(relay, 'relay.serving', { model: 'rpi4', seq: 2 }, 60_000);
  // Upstream gone: what the device hears comes from the relay alone.
  publisher.child.kill('SIGTERM');
  await exitCode(publisher, 15_000);
  const agent = track(lab.spawn('dev', process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--root', v1, '--iface', 'eth0', '--store', f('store-dev'), '--once', '--json', '--timeout', '50', '--log-format', 'json']));
  t.is(await exitCode(agent, 55_000), 0, agent.stderr + relay.stderr);
  t.like(events(agent.stderr, 'root.updated')[0], { rootVersion: 2, previousVersion: 1 });
  t.is(sha256hex(readFileSync((JSON.parse(agent.stdout.trim()) as { path: string }).path)), sha256hex(release.image));
});

test('a delegation with threshold 2: one key\'s release is refused (delegation-threshold), the same release co-signed by the second key installs', async (t) => {
  const lab = NetLab.create(['pub', 'dev']);
  t.teardown(() => lab.destroy());
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-root-cosign-'));
  const f = (name: string): string => join(dir, name);
  await Promise.all(['r1', 'p1', 'p2'].map((k) => fwcastAsync('keygen', '--out', f(k))));
  await fwcastAsync('root', 'create', '--root-key', f('r1/publisher.pub'), '--expires', '365d', '--out', f('v1.draft'));
  await fwcastAsync('root', 'delegate', f('v1.draft'), '--key', f('p1/publisher.pub'), '--key', f('p2/publisher.pub'), '--threshold', '2', '--model', 'rpi4', '--name', 'two-person', '--out', f('v1.draft'));
  await fwcastAsync('root', 'sign', f('v1.draft'), '--key', f('r1/publisher.key'), '--out', f('v1.sig'));
  await fwcastAsync('root', 'merge', f('v1.draft'), f('v1.sig'), '--out', f('v1.cbor'));
  const image = makeImage(80_000, 3);
  writeFileSync(f('image.bin'), image);
  await fwcastAsync('sign', f('image.bin'), '--key', f('p1/publisher.key'), '--model', 'rpi4', '--version', '1.0.0', '--seq', '1', '--out', f('once.fwc'), '--root', f('v1.cbor'));
  const cosigned = JSON.parse(await fwcastAsync('cosign', f('once.fwc'), '--key', f('p2/publisher.key'), '--out', f('twice.fwc'), '--json')) as { authorized: boolean; cosigners: string[]; releaseId: string };
  t.true(cosigned.authorized);
  t.like(JSON.parse(await fwcastAsync('inspect', f('twice.fwc'), '--json')), { cosigners: cosigned.cosigners, releaseId: cosigned.releaseId, rootChain: [1] });

  const agent = track(lab.spawn('dev', process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--root', f('v1.cbor'), '--iface', 'eth0', '--store', f('store'), '--json', '--log-format', 'json']));
  t.teardown(() => agent.child.kill('SIGTERM'));
  await waitForEvent(agent, 'agent.listening', { channel: 'fw/rpi4' }, 20_000);
  const publish = async (file: string, until: () => Promise<unknown>): Promise<void> => {
    const p = track(lab.spawn('pub', process.execPath, [FWCAST, 'publish', file, '--iface', 'eth0', '--rate', '20mbit', '--duration', '60s', '--log-format', 'json', '--quiet']));
    try {
      await until();
    } finally {
      p.child.kill('SIGTERM');
      await exitCode(p, 10_000);
    }
  };
  await publish(f('once.fwc'), () => waitForEvent(agent, 'release.refused', { seq: 1 }, 30_000).then((line) => t.like(line, { reason: 'delegation-threshold', threshold: 2, signatures: 1 })));
  await publish(f('twice.fwc'), () => waitForEvent(agent, 'release.installed', { seq: 1 }, 30_000));
  const line = await waitForEvent(agent, 'release.installed', { seq: 1 }, 1000);
  t.is(sha256hex(readFileSync(line.path as string)), sha256hex(image));
});
