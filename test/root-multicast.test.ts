/**
 * The root of trust over real IPv6 multicast (lab namespaces), driven through
 * the CLIs as an operator would: agents provisioned only with root v1
 * (`fwcast-agent --root`), roots made with `fwcast root`, carried by
 * `fwcast publish --root`. A delegated key installs; the publisher key is
 * rotated (v2 delegates a new key and drops the old): the new key's release
 * installs and the old key's, with a higher seq, is refused as revoked-key;
 * a device that slept through v2 and v3 (v3 also rotates a root key) walks
 * the chain and installs the v3-signed release. The attacks, each with its
 * counter, are in test/root-channel.test.ts (in memory) and test/root.test.ts.
 */
import test from 'ava';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetLab } from '../scripts/lab/netlab.js';
import { makeImage, sha256hex } from './helpers/fixtures.js';
import { exitCode, FWCAST, FWCAST_AGENT, fwcast, track, waitForEvent, type Tracked } from './helpers/processes.js';
import { fwcastAsync, push, serveConfig, startServe, TOKEN } from './helpers/serve.js';

test('rotation over multicast: delegated key installs, new key installs, old key revoked-key, a sleeper catches up through v2 and v3', async (t) => {
  const lab = NetLab.create(['pub', 'awake', 'sleeper']);
  t.teardown(() => lab.destroy());
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-root-'));
  const key = (name: string): { key: string; pub: string } => {
    fwcast('keygen', '--out', join(dir, name));
    return { key: join(dir, name, 'publisher.key'), pub: join(dir, name, 'publisher.pub') };
  };
  const [r1, r2, r3, p1, p2, p3] = ['r1', 'r2', 'r3', 'p1', 'p2', 'p3'].map(key) as Array<{ key: string; pub: string }>;
  const f = (name: string): string => join(dir, name);
  /** Signs a draft with these root keys (detached, then merged, as separate holders would). */
  const signRoot = (draft: string, out: string, signers: Array<{ key: string }>): void => {
    const sigs = signers.map((s, i) => {
      fwcast('root', 'sign', draft, '--key', s.key, '--out', `${draft}.sig${i}`);
      return `${draft}.sig${i}`;
    });
    fwcast('root', 'merge', draft, ...sigs, '--out', out);
  };

  // v1: root keys r1 r2, 2 of 2; p1 may sign rpi4.
  fwcast('root', 'create', '--root-key', r1!.pub, '--root-key', r2!.pub, '--threshold', '2', '--expires', '365d', '--out', f('v1.draft'));
  fwcast('root', 'delegate', f('v1.draft'), '--key', p1!.pub, '--model', 'rpi4', '--out', f('v1.draft'));
  signRoot(f('v1.draft'), f('v1.cbor'), [r1!, r2!]);
  // v2: p1 revoked, p2 delegated.
  fwcast('root', 'revoke', f('v1.cbor'), '--key', p1!.pub, '--out', f('v2.draft'));
  fwcast('root', 'delegate', f('v2.draft'), '--key', p2!.pub, '--model', 'rpi4', '--out', f('v2.draft'));
  signRoot(f('v2.draft'), f('v2.cbor'), [r1!, r2!]);
  // v3: root key r1 replaced by r3 (2 of r2 r3), p2 revoked, p3 delegated; signed by 2 of v2's keys and 2 of its own.
  fwcast('root', 'rotate', f('v2.cbor'), '--remove-root-key', r1!.pub, '--add-root-key', r3!.pub, '--out', f('v3.draft'));
  fwcast('root', 'revoke', f('v3.draft'), '--key', p2!.pub, '--out', f('v3.draft'));
  fwcast('root', 'delegate', f('v3.draft'), '--key', p3!.pub, '--model', 'rpi4', '--out', f('v3.draft'));
  signRoot(f('v3.draft'), f('v3.cbor'), [r1!, r2!, r3!]);
  const inspected = JSON.parse(fwcast('root', 'inspect', f('v3.cbor'), '--previous', f('v2.cbor'), '--json')) as { version: number; validOwnSignatures: number; validPreviousSignatures: number; warnings: string[] };
  t.like(inspected, { version: 3, validOwnSignatures: 2, validPreviousSignatures: 2, warnings: [] });

  const images = new Map<number, Uint8Array>();
  const release = (seq: number, by: { key: string }): string => {
    const image = makeImage(150_000 + seq, seq);
    images.set(seq, image);
    writeFileSync(f(`image-${seq}.bin`), image);
    fwcast('sign', f(`image-${seq}.bin`), '--key', by.key, '--model', 'rpi4', '--version', `1.0.${seq}`, '--seq', String(seq), '--out', f(`release-${seq}.fwc`));
    return f(`release-${seq}.fwc`);
  };
  const agent = (host: string): Tracked => track(lab.spawn(host, process.execPath, [
    FWCAST_AGENT, '--model', 'rpi4', '--root', f('v1.cbor'), '--iface', 'eth0', '--store', f(`store-${host}`), '--log-format', 'json',
  ]));
  const publish = async (file: string, roots: string[], until: () => Promise<unknown>): Promise<void> => {
    const p = track(lab.spawn('pub', process.execPath, [FWCAST, 'publish', file, ...roots.flatMap((r) => ['--root', f(r)]), '--iface', 'eth0', '--rate', '20mbit', '--duration', '60s', '--log-format', 'json', '--quiet']));
    try {
      await until();
    } finally {
      p.child.kill('SIGTERM');
      await exitCode(p, 10_000);
    }
  };
  const installed = (a: Tracked, seq: number) => waitForEvent(a, 'release.installed', { seq }, 30_000);

  const awake = agent('awake');
  t.teardown(() => awake.child.kill('SIGTERM'));
  await waitForEvent(awake, 'root.trusted', { rootVersion: 1, source: 'provisioned' }, 20_000);
  await waitForEvent(awake, 'agent.listening', { channel: 'fw/rpi4' }, 20_000);

  // v1: p1's release installs.
  await publish(release(1, p1!), ['v1.cbor'], () => installed(awake, 1));
  // v2 on the channel: p2's release installs.
  await publish(release(2, p2!), ['v1.cbor', 'v2.cbor'], () => installed(awake, 2));
  t.like(await waitForEvent(awake, 'root.updated', { rootVersion: 2 }, 1000), { previousVersion: 1, applied: 1 });
  // p1, revoked, signs seq 3 (higher): refused with the named reason.
  await publish(release(3, p1!), ['v1.cbor', 'v2.cbor'], () => waitForEvent(awake, 'release.refused', { seq: 3 }, 30_000).then((line) => t.is(line.reason, 'revoked-key')));

  // The sleeper wakes up with v1 only, on a channel that carries v1..v3.
  const sleeper = agent('sleeper');
  t.teardown(() => sleeper.child.kill('SIGTERM'));
  await waitForEvent(sleeper, 'agent.listening', { channel: 'fw/rpi4' }, 20_000);
  await publish(release(4, p3!), ['v1.cbor', 'v2.cbor', 'v3.cbor'], () => Promise.all([installed(sleeper, 4), installed(awake, 4)]));
  t.like(await waitForEvent(sleeper, 'root.updated', { rootVersion: 3 }, 1000), { previousVersion: 1, applied: 2 });
  for (const a of [awake, sleeper]) {
    const line = await waitForEvent(a, 'release.installed', { seq: 4 }, 1000);
    t.is(sha256hex(readFileSync(line.path as string)), sha256hex(images.get(4)!));
  }

  // The newest root survives a restart: the store kept the chain.
  sleeper.child.kill('SIGTERM');
  await exitCode(sleeper, 10_000);
  const again = agent('sleeper');
  t.teardown(() => again.child.kill('SIGTERM'));
  t.like(await waitForEvent(again, 'root.trusted', {}, 20_000), { rootVersion: 3, source: 'store' });
});

test('fwcast serve carries its root chain on every channel: an agent provisioned with v1 installs a release by the key v2 delegates', async (t) => {
  const lab = NetLab.create(['srv', 'dev']);
  t.teardown(() => lab.destroy());
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-root-serve-'));
  const f = (name: string): string => join(dir, name);
  for (const k of ['r1', 'p1', 'p2']) await fwcastAsync('keygen', '--out', f(k));
  const pub = (k: string): string => f(`${k}/publisher.pub`);
  const sign = async (draft: string, out: string): Promise<void> => {
    await fwcastAsync('root', 'sign', draft, '--key', f('r1/publisher.key'), '--out', `${draft}.sig`);
    await fwcastAsync('root', 'merge', draft, `${draft}.sig`, '--out', out);
  };
  await fwcastAsync('root', 'create', '--root-key', pub('r1'), '--expires', '30d', '--out', f('v1.draft'));
  await fwcastAsync('root', 'delegate', f('v1.draft'), '--key', pub('p1'), '--model', 'rpi4', '--out', f('v1.draft'));
  await sign(f('v1.draft'), f('v1.cbor'));
  await fwcastAsync('root', 'revoke', f('v1.cbor'), '--key', pub('p1'), '--out', f('v2.draft'));
  await fwcastAsync('root', 'delegate', f('v2.draft'), '--key', pub('p2'), '--model', 'rpi4', '--out', f('v2.draft'));
  await sign(f('v2.draft'), f('v2.cbor'));
  const image = makeImage(120_000, 7);
  writeFileSync(f('image.bin'), image);
  await fwcastAsync('sign', f('image.bin'), '--key', f('p2/publisher.key'), '--model', 'rpi4', '--version', '2.0.0', '--seq', '2', '--out', f('release.fwc'));

  const server = await startServe(lab, 'srv', serveConfig({ dir, pub: pub('p2'), extra: { roots: [f('v2.cbor'), f('v1.cbor')] } }));
  t.teardown(() => server.child.kill('SIGTERM'));
  const pushed = await push(lab, 'srv', f('release.fwc'), TOKEN);
  t.is(pushed.code, 0, pushed.stderr);
  const agent = track(lab.spawn('dev', process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--root', f('v1.cbor'), '--iface', 'eth0', '--store', f('store'), '--once', '--json', '--timeout', '50', '--log-format', 'json']));
  t.is(await exitCode(agent, 55_000), 0, agent.stderr);
  t.like(await waitForEvent(agent, 'root.updated', {}, 1000), { rootVersion: 2, previousVersion: 1 });
  const result = JSON.parse(agent.stdout.trim()) as { path: string };
  t.is(sha256hex(readFileSync(result.path)), sha256hex(image));
});
