/**
 * Field conditions, end to end over real IPv6 multicast in lab namespaces:
 * releases replaced at random moments while agents receive and install, and
 * a store that fills up mid-transfer.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetLab } from '../scripts/lab/netlab.js';
import { makeImage, prng, sha256hex } from './helpers/fixtures.js';
import { events, exitCode, FWCAST, FWCAST_AGENT, fwcast, track, waitForEvent, type Tracked } from './helpers/processes.js';
import { fwcastAsync, push, serveConfig, startServe, TOKEN } from './helpers/serve.js';

function agent(lab: NetLab, host: string, store: string, pub: string, extra: string[] = []): Tracked {
  return track(lab.spawn(host, process.execPath, [
    FWCAST_AGENT, '--model', 'rpi4', '--key', pub, '--iface', 'eth0', '--store', store, '--log-format', 'json', ...extra,
  ]));
}

test('release churn: 20 releases replaced at random moments; every agent ends on the newest, never installs an older one after a newer, never crashes', async (t) => {
  const lab = NetLab.create(['srv', 'a', 'b', 'c']);
  t.teardown(() => lab.destroy());
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-churn-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  await fwcastAsync('keygen', '--out', dir);
  const pub = join(dir, 'publisher.pub');
  const random = prng(2026);
  const RELEASES = 20;
  const files = await Promise.all(Array.from({ length: RELEASES }, async (_, i) => {
    const seq = i + 1;
    const image = join(dir, `image-${seq}.bin`);
    writeFileSync(image, makeImage(200_000 + Math.floor(random() * 1_300_000), seq));
    const file = join(dir, `release-${seq}.fwc`);
    await fwcastAsync('sign', image, '--key', join(dir, 'publisher.key'), '--model', 'rpi4', '--version', `1.0.${seq}`, '--seq', String(seq), '--out', file);
    return { file, image };
  }));
  const server = await startServe(lab, 'srv', serveConfig({ dir, pub, rate: '8mbit' }));
  lab.setLoss('b', 20);
  const slowTarget = join(dir, 'slow-target.img');
  const agents = {
    a: agent(lab, 'a', join(dir, 'store-a'), pub),
    b: agent(lab, 'b', join(dir, 'store-b'), pub),
    // An installer that takes seconds: newer releases complete while it runs.
    c: agent(lab, 'c', join(dir, 'store-c'), pub, ['--install-command', `sleep 3 && cp "$FWCAST_IMAGE" ${slowTarget}`]),
  };
  await Promise.all(Object.values(agents).map((a) => waitForEvent(a, 'agent.listening', {}, 20_000)));

  for (const [i, { file }] of files.entries()) {
    const pushed = await push(lab, 'srv', file, TOKEN);
    t.is(pushed.code, 0, pushed.stderr);
    // Between 0.2 s and 4 s: some releases are replaced mid-transfer, some mid-install, some after.
    if (i < RELEASES - 1) await new Promise((r) => setTimeout(r, 200 + random() * 3800));
  }
  await Promise.all(Object.values(agents).map((a) => waitForEvent(a, 'release.installed', { seq: RELEASES }, 90_000)));
  server.child.kill('SIGTERM');

  const newest = sha256hex(readFileSync(files[RELEASES - 1]!.image));
  for (const [host, a] of Object.entries(agents)) {
    t.is(a.child.exitCode, null, `agent ${host} is still running`);
    const installed = events(a.stderr, 'release.installed').map((l) => Number(l.seq));
    t.true(installed.every((seq, i) => i === 0 || seq > installed[i - 1]!), `agent ${host} installed in order: ${installed.join(', ')}`);
    t.is(installed.at(-1), RELEASES);
    t.is(events(a.stderr, 'release.installed', { seq: RELEASES })[0]?.sha256, newest);
    t.deepEqual(events(a.stderr, 'release.not-installed'), [], `agent ${host}`);
    t.deepEqual(events(a.stderr, 'release.install-failed'), [], `agent ${host}`);
    a.child.kill('SIGTERM');
    t.is(await exitCode(a, 10_000), 0, `agent ${host} stops cleanly:\n${a.stderr.slice(-2000)}`);
  }
  t.is(sha256hex(readFileSync(slowTarget)), newest);
  t.log(Object.entries(agents).map(([h, a]) => `${h}: installed ${events(a.stderr, 'release.installed').map((l) => l.seq).join(',')}; superseded ${events(a.stderr, 'release.superseded').length}`).join('\n'));
});

for (const storageThread of [false, true]) {
  test(`disk full mid-transfer: one clear error, the agent stays up, the old image stays intact, and it completes once space is freed${storageThread ? ' (storage thread)' : ''}`, async (t) => {
    if (process.env.FWCAST_LAB !== '1') return t.fail('needs the lab (npm test runs in it): mounts a tmpfs');
    const lab = NetLab.create(['pub', 'dev']);
    t.teardown(() => lab.destroy());
    const dir = mkdtempSync(join(tmpdir(), 'fwcast-full-'));
    const store = join(dir, 'store');
    mkdirSync(store);
    // The store is a small file system of its own; the agent's default install target lives on it too.
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=24m', 'fwcast-store', store], { encoding: 'utf8' });
    t.is(mounted.status, 0, mounted.stderr);
    t.teardown(() => {
      spawnSync('umount', ['-l', store]);
      rmSync(dir, { recursive: true, force: true });
    });
    fwcast('keygen', '--out', dir);
    const sign = (seq: number, size: number): { file: string; image: Uint8Array } => {
      const image = makeImage(size, seq);
      writeFileSync(join(dir, `image-${seq}.bin`), image);
      const file = join(dir, `release-${seq}.fwc`);
      fwcast('sign', join(dir, `image-${seq}.bin`), '--key', join(dir, 'publisher.key'), '--model', 'rpi4', '--version', `1.0.${seq}`, '--seq', String(seq), '--out', file);
      return { file, image };
    };
    const old = sign(1, 512 * 1024);
    const next = sign(2, 6 * 1024 * 1024);
    const dev = agent(lab, 'dev', store, join(dir, 'publisher.pub'), storageThread ? ['--storage-thread'] : []);
    await waitForEvent(dev, 'agent.listening', {}, 20_000);
    const publish = (file: string): Tracked => track(lab.spawn('pub', process.execPath, [FWCAST, 'publish', file, '--iface', 'eth0', '--rate', '20mbit', '--duration', '120s', '--log-format', 'json']));

    let publisher = publish(old.file);
    const first = await waitForEvent(dev, 'release.installed', { seq: 1 }, 30_000);
    publisher.child.kill('SIGTERM');
    await exitCode(publisher, 10_000);
    const target = String(first.path);
    t.is(sha256hex(readFileSync(target)), sha256hex(old.image));

    // Leave about 2 MiB: release 2 needs 6 MiB of symbols before its image even starts.
    const free = (): number => {
      const df = spawnSync('df', ['--output=avail', '-B1', store], { encoding: 'utf8' }).stdout.trim().split('\n').pop()!;
      return Number(df);
    };
    const filler = join(store, 'filler');
    writeFileSync(filler, Buffer.alloc(free() - 2 * 1024 * 1024, 1));
    publisher = publish(next.file);
    const failed = await waitForEvent(dev, 'store.failed', {}, 30_000);
    t.is(failed.code, 'ENOSPC');
    t.true(String(failed.path).startsWith(store), String(failed.path));
    // Several seconds of a full disk under a carousel at 20 Mbit/s: still one line, the agent still up.
    await new Promise((r) => setTimeout(r, 4000));
    t.is(events(dev.stderr, 'store.failed').length, 1, 'the error is logged once');
    t.is(dev.child.exitCode, null, `the agent is still running:\n${dev.stderr.slice(-3000)}`);
    t.is(sha256hex(readFileSync(target)), sha256hex(old.image), 'the old image is intact');
    t.deepEqual(events(dev.stderr, 'release.installed', { seq: 2 }), []);

    rmSync(filler);
    await waitForEvent(dev, 'store.recovered', {}, 20_000);
    const installed = await waitForEvent(dev, 'release.installed', { seq: 2 }, 60_000);
    t.is(installed.sha256, sha256hex(next.image));
    t.is(sha256hex(readFileSync(target)), sha256hex(next.image));
    t.is(events(dev.stderr, 'store.failed').length, 1);
    publisher.child.kill('SIGTERM');
    dev.child.kill('SIGTERM');
    t.is(await exitCode(dev, 10_000), 0, dev.stderr.slice(-2000));
  });
}
