/**
 * Confidential firmware over real IPv6 multicast between lab namespaces:
 *  - an eavesdropper joined to the group for a whole transfer records no
 *    32-byte window of the (random) plaintext;
 *  - agents holding the group key install release 1; release 2 is encrypted
 *    for two devices' X25519 keys only: those two install it, the third,
 *    left out, refuses it (no-decryption-key, counted once) and installs nothing;
 *  - a relay holding no key re-serves an encrypted release it received over
 *    MQTT, on multicast, and a downstream agent with the key installs it.
 */
import test from 'ava';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetLab } from '../scripts/lab/netlab.js';
import { Broker, requireMosquitto } from './helpers/broker.js';
import { makeImage, prng, sha256hex } from './helpers/fixtures.js';
import { events, exitCode, FWCAST, FWCAST_AGENT, fwcast, track, waitForEvent, type Tracked } from './helpers/processes.js';

test.before(() => {
  requireMosquitto();
});

/** Publisher key, group key, device keys a, b, c, in a fresh directory. */
function keys(): { dir: string; pub: string } {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-enc-mc-'));
  fwcast('keygen', '--out', dir);
  fwcast('keygen', '--group', '--out', dir, '--name', 'fleet');
  for (const d of ['a', 'b', 'c']) fwcast('keygen', '--device', '--out', join(dir, 'devices'), '--name', d);
  return { dir, pub: join(dir, 'publisher.pub') };
}

function sign(dir: string, image: Uint8Array, seq: number, encryptFor: string[]): string {
  const imagePath = join(dir, `image-${seq}.bin`);
  writeFileSync(imagePath, image);
  const release = join(dir, `release-${seq}.fwc`);
  fwcast('sign', imagePath, '--key', join(dir, 'publisher.key'), '--model', 'rpi4', '--version', `2.0.${seq}`, '--seq', String(seq), '--out', release,
    ...encryptFor.flatMap((k) => ['--encrypt-for', k]));
  return release;
}

function agent(lab: NetLab, host: string, dir: string, decryptionKeys: string[], extra: string[] = []): Tracked {
  return track(lab.spawn(host, process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--key', join(dir, 'publisher.pub'), '--iface', 'eth0', '--store', join(dir, `store-${host}`),
    '--json', '--timeout', '120', '--log-format', 'json', ...decryptionKeys.flatMap((k) => ['--decryption-key', k]), ...extra]));
}

function publish(lab: NetLab, host: string, release: string, extra: string[] = []): Tracked {
  return track(lab.spawn(host, process.execPath, [FWCAST, 'publish', release, '--rate', '30mbit', '--duration', '120s', '--log-format', 'json', ...extra]));
}

/** Installs reported on stdout (--json), in order. */
function installs(p: Tracked): Array<{ seq: number; sha256: string; path: string }> {
  return p.stdout.trim().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { seq: number; sha256: string; path: string });
}

async function until(check: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!check() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  return check();
}

/** Joins the group on eth0 and appends every datagram to `out` until SIGTERM; prints its counts. */
const EAVESDROPPER = `
const dgram = require('node:dgram'); const fs = require('node:fs');
const [group, port, out] = process.argv.slice(1);
const fd = fs.openSync(out, 'w'); let datagrams = 0, bytes = 0;
const s = dgram.createSocket({ type: 'udp6', reuseAddr: true });
s.on('message', (m) => { fs.writeSync(fd, m); datagrams++; bytes += m.length; });
s.bind({ port: Number(port), address: group + '%eth0' }, () => { s.setRecvBufferSize(4 << 20); s.addMembership(group, '::%eth0'); process.stderr.write('eavesdropper: joined\\n'); });
process.on('SIGTERM', () => { fs.closeSync(fd); process.stdout.write(JSON.stringify({ datagrams, bytes }) + '\\n'); process.exit(0); });
`;

test('an eavesdropper on the group records no 32-byte window of the plaintext; the group key opens release 1; release 2, for devices a and b only, is refused by c (no-decryption-key) while a and b install it', async (t) => {
  const lab = NetLab.create(['pub', 'eve', 'a', 'b', 'c']);
  t.teardown(() => lab.destroy());
  const { dir } = keys();
  const image1 = makeImage(600_000, 41);
  const image2 = makeImage(500_000, 42);
  const release1 = sign(dir, image1, 1, [join(dir, 'fleet.key')]);
  const release2 = sign(dir, image2, 2, [join(dir, 'devices/a.pub'), join(dir, 'devices/b.pub')]);
  const inspected = JSON.parse(fwcast('inspect', release2, '--json')) as { encryption: { recipients: Array<{ kind: string; keyId: string }> } };
  t.deepEqual(inspected.encryption.recipients.map((r) => r.kind), ['device', 'device']);
  t.false(readFileSync(release2).includes(Buffer.from(image2.subarray(1000, 1032))), 'the release file itself holds ciphertext only');

  const { group, port } = JSON.parse(fwcast('channel', 'rpi4', '--json')) as { group: string; port: number };
  const capture = join(dir, 'eve.capture');
  const eve = track(lab.spawn('eve', process.execPath, ['-e', EAVESDROPPER, group, String(port), capture]));
  const hosts = ['a', 'b', 'c'];
  const agents = hosts.map((h) => agent(lab, h, dir, [join(dir, 'fleet.key'), join(dir, 'devices', `${h}.key`)]));
  await Promise.all(agents.map((a) => waitForEvent(a, 'agent.listening', { channel: 'fw/rpi4' }, 30_000)));
  await until(() => eve.stderr.includes('eavesdropper: joined'), 10_000);

  // Release 1, for the group key: every agent installs it.
  let publisher = publish(lab, 'pub', release1, ['--iface', 'eth0']);
  t.true(await until(() => agents.every((a) => installs(a).length >= 1), 90_000), agents.map((a) => a.stderr).join('\n'));
  publisher.child.kill('SIGTERM');
  await exitCode(publisher, 10_000);
  for (const a of agents) {
    t.is(installs(a)[0]!.sha256, sha256hex(image1));
    t.is(sha256hex(readFileSync(installs(a)[0]!.path)), sha256hex(image1));
    t.like(events(a.stderr, 'release.decrypted', { seq: 1 })[0], { keyKind: 'group' });
  }

  // Release 2, for devices a and b: they install it; c refuses it.
  publisher = publish(lab, 'pub', release2, ['--iface', 'eth0']);
  t.true(await until(() => agents.slice(0, 2).every((a) => installs(a).length >= 2), 90_000), agents.map((a) => a.stderr).join('\n'));
  const c = agents[2]!;
  await waitForEvent(c, 'release.refused', { reason: 'no-decryption-key' }, 30_000);
  // c hears release 2 a while longer: its refusal is still counted once.
  await new Promise((r) => setTimeout(r, 2000));
  publisher.child.kill('SIGTERM');
  await exitCode(publisher, 10_000);
  for (const a of agents.slice(0, 2)) {
    t.is(installs(a)[1]!.sha256, sha256hex(image2));
    t.is(sha256hex(readFileSync(installs(a)[1]!.path)), sha256hex(image2));
    t.like(events(a.stderr, 'release.decrypted', { seq: 2 })[0], { keyKind: 'device' });
  }
  for (const a of agents) a.child.kill('SIGTERM');
  t.deepEqual(await Promise.all(agents.map((a) => exitCode(a, 30_000))), [0, 0, 0]);
  t.deepEqual(installs(c).map((i) => i.seq), [1], 'c installed release 1 only');
  t.deepEqual(events(c.stderr, 'release.decrypted', { seq: 2 }), []);
  const stats = events(c.stderr, 'agent.stats', { model: 'rpi4' })[0]!;
  t.is(stats['dropped.no-decryption-key'], 1, 'counted once for the release');
  t.true(Number(stats['dropped.encrypted-for-others']) > 100, 'its other datagrams are counted apart');

  eve.child.kill('SIGTERM');
  t.is(await exitCode(eve, 10_000), 0, eve.stderr);
  const heard = JSON.parse(eve.stdout.trim()) as { datagrams: number; bytes: number };
  const recorded = readFileSync(capture);
  t.true(heard.datagrams > 2000 && recorded.length === heard.bytes, `the eavesdropper heard both transfers: ${JSON.stringify(heard)}`);
  // Every 32-byte window of both plaintexts, indexed by its first 4 bytes; every offset of the capture looked up.
  const starts = new Map<number, Array<[Buffer, number]>>();
  for (const image of [image1, image2]) {
    const plain = Buffer.from(image.buffer, image.byteOffset, image.byteLength);
    for (let i = 0; i + 32 <= plain.length; i++) {
      const u = plain.readUInt32LE(i);
      const list = starts.get(u);
      if (list) list.push([plain, i]);
      else starts.set(u, [[plain, i]]);
    }
  }
  let found = 0;
  for (let j = 0; j + 32 <= recorded.length; j++) {
    const list = starts.get(recorded.readUInt32LE(j));
    if (list) for (const [plain, i] of list) if (recorded.compare(plain, i, i + 32, j, j + 32) === 0) found++;
  }
  t.is(found, 0, 'no 32-byte window of either plaintext was on the wire');
  // The search finds what is there: windows of the ciphertext (RaptorQ's source symbols carry it as is).
  const file1 = readFileSync(release1);
  const ciphertext1 = file1.subarray(file1.length - (JSON.parse(fwcast('inspect', release1, '--json')) as { imageSize: number }).imageSize);
  const probes = Array.from({ length: 16 }, (_, k) => ciphertext1.subarray(k * 30_000, k * 30_000 + 32));
  // A capture on a loaded machine may miss a few datagrams (the search then finds fewer): most must be there.
  const seen = probes.filter((w) => recorded.includes(w)).length;
  t.true(seen >= 12, `${seen} of 16 ciphertext windows are in the capture`);
});

const BROKER_PORT = 18831;

test('a relay holding no key keeps and re-serves the encrypted release on multicast; a downstream agent with the key installs it', async (t) => {
  const lab = NetLab.create(['up', 'relay', 'd']);
  t.teardown(() => lab.destroy());
  const { dir } = keys();
  const image = makeImage(700_000, 43);
  const release = sign(dir, image, 5, [join(dir, 'devices/a.pub')]);
  const downstream = agent(lab, 'd', dir, [join(dir, 'devices/a.key')], ['--once']);
  await waitForEvent(downstream, 'agent.listening', { channel: 'fw/rpi4' }, 30_000);
  const broker = await Broker.start({ port: BROKER_PORT, address: '::', spawn: (cmd, args) => lab.spawn('up', cmd, args) });
  t.teardown(() => broker.stop());
  const publisher = publish(lab, 'up', release, ['--mqtt', `mqtt://[::1]:${BROKER_PORT}`]);
  t.teardown(() => publisher.child.kill('SIGKILL'));
  const relay = track(lab.spawn('relay', process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--key', join(dir, 'publisher.pub'), '--mqtt', `mqtt://[fd00:fc::1]:${BROKER_PORT}`,
    '--store', join(dir, 'store-relay'), '--json', '--relay-iface', 'eth0', '--relay-rate', '20mbit', '--log-format', 'json']));
  t.teardown(() => relay.child.kill('SIGKILL'));
  await waitForEvent(relay, 'release.relay-only', { seq: 5, recipients: 1 }, 90_000);
  await waitForEvent(relay, 'relay.serving', { seq: 5, transport: 'udp6 multicast on eth0' }, 30_000);
  t.is(await exitCode(downstream, 120_000), 0, downstream.stderr + relay.stderr);
  t.is(installs(downstream)[0]!.sha256, sha256hex(image));
  t.is(sha256hex(readFileSync(installs(downstream)[0]!.path)), sha256hex(image));
  relay.child.kill('SIGTERM');
  t.is(await exitCode(relay, 30_000), 0, relay.stderr);
  t.is(relay.stdout, '', 'the relay installed nothing');
  t.deepEqual([...events(relay.stderr, 'release.decrypted'), ...events(relay.stderr, 'release.installed')], []);

  // Upstream gone, the relay restarted: it serves the ciphertext it kept, to an agent that joins now.
  publisher.child.kill('SIGTERM');
  await exitCode(publisher, 10_000);
  const restarted = track(lab.spawn('relay', process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--key', join(dir, 'publisher.pub'), '--mqtt', `mqtt://[fd00:fc::1]:${BROKER_PORT}`,
    '--store', join(dir, 'store-relay'), '--json', '--relay-iface', 'eth0', '--relay-rate', '20mbit', '--log-format', 'json']));
  t.teardown(() => restarted.child.kill('SIGKILL'));
  await waitForEvent(restarted, 'relay.serving', { seq: 5 }, 30_000);
  const late = agent(lab, 'd', dir, [join(dir, 'devices/a.key')], ['--once', '--store', join(dir, 'store-late')]);
  t.is(await exitCode(late, 120_000), 0, late.stderr + restarted.stderr);
  t.is(installs(late)[0]!.sha256, sha256hex(image));
  restarted.child.kill('SIGTERM');
  await exitCode(restarted, 30_000);
});

test('kill -9 at 8 random moments of an encrypted transfer: it resumes and installs the exact plaintext', async (t) => {
  const lab = NetLab.create(['pub', 'dev']);
  t.teardown(() => lab.destroy());
  const { dir } = keys();
  const image = makeImage(12 * 1024 * 1024 + 77, 44);
  const release = sign(dir, image, 7, [join(dir, 'devices/b.pub')]);
  // 12 MiB at 4 Mbit/s: about 26 s of carousel per round, more than 8 runs of a few seconds each.
  const publisher = publish(lab, 'pub', release, ['--iface', 'eth0', '--rate', '4mbit']);
  t.teardown(() => publisher.child.kill('SIGKILL'));
  const random = prng(18);
  let resumed = 0;
  let runs = 0;
  let finished: Tracked | undefined;
  for (let kills = 0; kills < 8 && !finished; kills++) {
    const a = agent(lab, 'dev', dir, [join(dir, 'devices/b.key')], ['--once', '--progress-interval', '0.2', ...(kills % 2 === 1 ? ['--storage-thread'] : [])]);
    runs++;
    await waitForEvent(a, 'release.accepted', { seq: 7 }, 60_000);
    // Killed once symbols are coming in, and after at least two 250 ms flushes: every run leaves progress on disk.
    await waitForEvent(a, 'release.progress', (l) => Number(l.symbols) > 0, 20_000);
    await new Promise((r) => setTimeout(r, 600 + random() * 900));
    if (a.child.exitCode === null) a.child.kill('SIGKILL');
    await a.exited;
    if (events(a.stderr, 'release.resumed', { seq: 7 }).length > 0) resumed++;
    // A run that completed before its kill landed reported its install: the transfer is over.
    if (a.stdout.trim() !== '') finished = a;
  }
  const last = finished ?? agent(lab, 'dev', dir, [join(dir, 'devices/b.key')], ['--once']);
  if (!finished) {
    runs++;
    t.is(await exitCode(last, 120_000), 0, last.stderr);
    if (events(last.stderr, 'release.resumed', { seq: 7 }).length > 0) resumed++;
  }
  t.true(resumed >= runs - 2, `${resumed} of ${runs - 1} restarts resumed what was on disk`);
  t.is(installs(last)[0]!.sha256, sha256hex(image));
  t.is(sha256hex(readFileSync(installs(last)[0]!.path)), sha256hex(image));
});
