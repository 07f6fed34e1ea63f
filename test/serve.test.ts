/**
 * `fwcast serve` and `fwcast push` end to end, in lab namespaces: the server
 * publishes on its host's eth0 and answers HTTP on fd00:fc::1; pushes and HTTP
 * requests come from the same namespace; agents install over real multicast.
 */
import test from 'ava';
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetLab } from '../scripts/lab/netlab.js';
import { makeImage, sha256hex } from './helpers/fixtures.js';
import { events, exitCode, FWCAST, FWCAST_AGENT, track, waitForEvent, waitForEvents } from './helpers/processes.js';
import { fwcastAsync, httpGet, push, serveConfig, startServe, TOKEN } from './helpers/serve.js';

const SERVER = 'http://[fd00:fc::1]:8080';

function workdir(): string {
  return mkdtempSync(join(tmpdir(), 'fwcast-serve-'));
}

async function sign(dir: string, keyDir: string, name: string, opts: { size?: number; model?: string; seq: number; seed?: number; extra?: string[] }): Promise<{ file: string; image: Uint8Array }> {
  const image = makeImage(opts.size ?? 100_000, opts.seed ?? opts.seq);
  const imagePath = join(dir, `${name}.img`);
  writeFileSync(imagePath, image);
  const file = join(dir, `${name}.fwc`);
  await fwcastAsync('sign', imagePath, '--key', join(keyDir, 'publisher.key'), '--model', opts.model ?? 'rpi4', '--version', `1.0.${opts.seq}`, '--seq', String(opts.seq), '--out', file, ...(opts.extra ?? []));
  return { file, image };
}

const storedFiles = (dir: string, sub: string): string[] => (existsSync(join(dir, 'store', sub)) ? readdirSync(join(dir, 'store', sub)) : []);

test('sign → push → serve → agents install; the server restarted mid-carousel resumes from its store', async (t) => {
  const lab = NetLab.create(['srv', 'a', 'b']);
  t.teardown(() => lab.destroy());
  const dir = workdir();
  await fwcastAsync('keygen', '--out', dir);
  // 3 MiB at 6 Mbit/s: a round takes about 4.5 s, so a restart after the first symbols lands mid-round.
  const { file, image } = await sign(dir, dir, 'rpi4-1', { size: 3 * 1024 * 1024, seq: 1 });
  const config = serveConfig({ dir, pub: join(dir, 'publisher.pub'), rate: '6mbit' });
  let server = await startServe(lab, 'srv', config);

  const pushed = await push(lab, 'srv', file, TOKEN);
  t.is(pushed.code, 0, pushed.stderr);
  t.like(pushed.json, { ok: true, status: 201, stored: true, release: { seq: 1, version: '1.0.1' } });
  await waitForEvent(server, 'serve.on-air', { model: 'rpi4', version: '1.0.1', seq: 1 }, 10_000);

  const agents = ['a', 'b'].map((h) => track(lab.spawn(h, process.execPath, [
    FWCAST_AGENT, '--model', 'rpi4', '--key', join(dir, 'publisher.pub'), '--iface', 'eth0', '--store', join(dir, `agent-${h}`),
    '--once', '--json', '--timeout', '50', '--progress-interval', '0.3', '--log-format', 'json',
  ])));
  await Promise.all(agents.map((a) => waitForEvent(a, 'release.progress', (l) => Number(l.symbols) > 0, 20_000)));
  server.child.kill('SIGKILL');
  t.is(await exitCode(server, 5000), null, 'server killed');
  await new Promise((r) => setTimeout(r, 500));
  t.true(agents.every((a) => a.child.exitCode === null), `the agents had not finished when the server died:\n${agents.map((a) => `exit ${a.child.exitCode}\n${a.stderr}`).join('\n')}`);

  server = await startServe(lab, 'srv', config);
  t.like(events(server.stderr, 'serve.store-opened')[0], { releases: 1 });
  await waitForEvent(server, 'serve.on-air', { model: 'rpi4', version: '1.0.1', seq: 1, symbols: 'cache' }, 10_000); // not encoded again
  const codes = await Promise.all(agents.map((a) => exitCode(a, 50_000)));
  t.deepEqual(codes, [0, 0], agents.map((a) => a.stderr).join('\n'));
  for (const a of agents) {
    const r = JSON.parse(a.stdout.trim()) as { sha256: string; path: string; seq: number };
    t.is(r.seq, 1);
    t.is(sha256hex(readFileSync(r.path)), sha256hex(image));
  }
  const metrics = await httpGet(lab, 'srv', `${SERVER}/metrics`);
  t.regex(metrics.body, /fwcast_channel_packets_total\{channel="fw\/rpi4",release="[0-9a-f]{16}"\} [1-9]\d*/);
  server.child.kill('SIGTERM');
  t.is(await exitCode(server, 10_000), 0, 'server stops cleanly on SIGTERM');
});

test('unauthenticated, forged, unknown-key, wrong-model, rollback, malformed and oversized pushes are refused with the right status, nothing stored', async (t) => {
  const lab = NetLab.create(['srv']);
  t.teardown(() => lab.destroy());
  const dir = workdir();
  const other = join(dir, 'other');
  await fwcastAsync('keygen', '--out', dir);
  await fwcastAsync('keygen', '--out', other);
  const config = serveConfig({ dir, pub: join(dir, 'publisher.pub'), extra: { maxUploadSize: 400_000 } });
  const server = await startServe(lab, 'srv', config);

  const good = await sign(dir, dir, 'good', { seq: 5 });
  const first = await push(lab, 'srv', good.file, TOKEN);
  t.is(first.code, 0, first.stderr);
  t.like(first.json, { status: 201, stored: true });
  const again = await push(lab, 'srv', good.file, TOKEN);
  t.like(again.json, { ok: true, status: 200, stored: false }, 'the same release again is accepted as already stored (CI retries)');

  // Forged: the signature's last bytes flipped.
  const forged = join(dir, 'forged.fwc');
  const bytes = readFileSync(good.file);
  const manifestEnd = 12 + bytes.readUInt32BE(8);
  bytes[manifestEnd - 5]! ^= 0xff;
  writeFileSync(forged, bytes);
  const garbage = join(dir, 'garbage.fwc');
  writeFileSync(garbage, makeImage(5000, 3));

  const cases = [
    { name: 'no token', file: good.file, token: undefined, code: 4, status: 401, error: 'unauthorized' },
    { name: 'wrong token', file: good.file, token: 'not-the-token-at-all-000', code: 4, status: 401, error: 'unauthorized' },
    { name: 'forged', file: forged, token: TOKEN, code: 3, status: 422, error: 'bad-signature' },
    { name: 'unsigned garbage', file: garbage, token: TOKEN, code: 3, status: 400, error: 'malformed' },
    { name: 'unknown key', file: (await sign(dir, other, 'unknown', { seq: 9 })).file, token: TOKEN, code: 3, status: 422, error: 'unknown-key' },
    { name: 'wrong model', file: (await sign(dir, dir, 'wrongmodel', { seq: 9, model: 'other-board' })).file, token: TOKEN, code: 3, status: 422, error: 'wrong-model' },
    { name: 'lower seq', file: (await sign(dir, dir, 'older', { seq: 3 })).file, token: TOKEN, code: 3, status: 409, error: 'rollback' },
    { name: 'same seq, other image', file: (await sign(dir, dir, 'sameseq', { seq: 5, seed: 77 })).file, token: TOKEN, code: 3, status: 409, error: 'rollback' },
    { name: 'too large', file: (await sign(dir, dir, 'large', { seq: 10, size: 500_000 })).file, token: TOKEN, code: 3, status: 413, error: 'too-large' },
  ];
  const outcomes = await Promise.all(cases.map((c) => push(lab, 'srv', c.file, c.token)));
  for (const [i, c] of cases.entries()) {
    const o = outcomes[i]!;
    t.is(o.code, c.code, `${c.name}: exit code\n${o.stderr}`);
    t.like(o.json, { ok: false, status: c.status, error: c.error }, c.name);
    t.regex(o.stderr, new RegExp(`server answered ${c.status} ${c.error}`), `${c.name}: a clear error line`);
  }
  const unreachable = await push(lab, 'srv', good.file, TOKEN, 'http://[fd00:fc::1]:8099');
  t.is(unreachable.code, 5, 'unreachable server: exit 5');
  const usage = track(lab.spawn('srv', process.execPath, [FWCAST, 'push', good.file]));
  t.is(await exitCode(usage, 15_000), 2, 'no --server: usage error, exit 2');

  const list = JSON.parse((await httpGet(lab, 'srv', `${SERVER}/api/v1/releases`)).body) as { releases: Array<{ seq: number; state: string }> };
  t.deepEqual(list.releases.map((r) => [r.seq, r.state]), [[5, 'live']], 'only the good release is stored');
  t.is(storedFiles(dir, 'releases').length, 1);
  t.deepEqual(storedFiles(dir, 'incoming'), [], 'no upload left behind');
  const metrics = (await httpGet(lab, 'srv', `${SERVER}/metrics`)).body;
  for (const reason of ['unauthorized', 'bad-signature', 'malformed', 'unknown-key', 'wrong-model', 'too-large']) {
    t.regex(metrics, new RegExp(`fwcast_upload_rejections_total\\{reason="${reason}"\\} [1-9]`), reason);
  }
  t.regex(metrics, /fwcast_upload_rejections_total\{reason="rollback"\} 2/);
  t.regex(metrics, /fwcast_uploads_total\{result="stored"\} 1/);
  server.child.kill('SIGTERM');
  await exitCode(server, 10_000);
});

test('kill -9 during a slow upload: after a restart the store lists only complete releases and still serves', async (t) => {
  const lab = NetLab.create(['srv']);
  t.teardown(() => lab.destroy());
  const dir = workdir();
  await fwcastAsync('keygen', '--out', dir);
  const config = serveConfig({ dir, pub: join(dir, 'publisher.pub') });
  let server = await startServe(lab, 'srv', config);
  t.is((await push(lab, 'srv', (await sign(dir, dir, 'one', { seq: 1 })).file, TOKEN)).code, 0);

  // A slow client streams a 2 MiB release at 320 KiB/s; the server dies an eighth of the way through.
  const big = await sign(dir, dir, 'big', { seq: 2, size: 2 * 1024 * 1024 });
  const size = statSync(big.file).size;
  const slow = track(lab.spawn('srv', process.execPath, ['-e', `
    const fs = require('node:fs');
    const data = fs.readFileSync(${JSON.stringify(big.file)});
    const req = require('node:http').request('${SERVER}/api/v1/releases', { method: 'POST', headers: { authorization: 'Bearer ${TOKEN}', 'content-length': ${size} } });
    req.on('error', (e) => { console.log('client error', e.code); process.exit(0); });
    let at = 0;
    const tick = setInterval(() => { req.write(data.subarray(at, at + 32768)); at += 32768; if (at >= data.length) { clearInterval(tick); req.end(); } }, 100);
  `]));
  const incoming = join(dir, 'store', 'incoming');
  const deadline = Date.now() + 10_000;
  let partial = 0;
  while (Date.now() < deadline) {
    const parts = storedFiles(dir, 'incoming');
    partial = parts.length === 1 ? statSync(join(incoming, parts[0]!)).size : 0;
    if (partial >= 256 * 1024) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  t.true(partial >= 256 * 1024 && partial < size, `a partial upload of ${partial} bytes was on disk\nclient: ${slow.stdout}${slow.stderr}\nserver: ${server.stderr}`);
  server.child.kill('SIGKILL');
  await exitCode(server, 5000);
  await exitCode(slow, 10_000);

  server = await startServe(lab, 'srv', config);
  t.like(events(server.stderr, 'serve.uploads-dropped')[0], { count: 1 });
  t.deepEqual(storedFiles(dir, 'incoming'), []);
  const list = JSON.parse((await httpGet(lab, 'srv', `${SERVER}/api/v1/releases`)).body) as { releases: Array<{ seq: number; state: string }> };
  t.deepEqual(list.releases.map((r) => [r.seq, r.state]), [[1, 'live']], 'only the complete release');
  await new Promise((r) => setTimeout(r, 1500));
  const status = JSON.parse((await httpGet(lab, 'srv', `${SERVER}/api/v1/status`)).body) as { channels: Array<{ channel: string; release: { seq: number } | null; packets: number }> };
  t.is(status.channels[0]?.channel, 'fw/rpi4');
  t.is(status.channels[0]?.release?.seq, 1, 'the complete release is on the air again');
  t.true((status.channels[0]?.packets ?? 0) > 0, 'and being sent');
  const health = await httpGet(lab, 'srv', `${SERVER}/healthz`);
  t.is(health.status, 200);
  // The interrupted release can be pushed again in full, and replaces seq 1 on the air.
  const retry = await push(lab, 'srv', big.file, TOKEN);
  t.like(retry.json, { ok: true, status: 201 });
  await waitForEvent(server, 'serve.on-air', { model: 'rpi4', version: '1.0.2', seq: 2 }, 10_000);

  // Retiring it puts seq 1 back on the air; its sequence number cannot be pushed again.
  const id = retry.json.release!.releaseId;
  t.is((await httpGet(lab, 'srv', `${SERVER}/api/v1/releases/${id}`, { method: 'DELETE' })).status, 401, 'retiring needs the token');
  const retired = await httpGet(lab, 'srv', `${SERVER}/api/v1/releases/${id}`, { method: 'DELETE', token: TOKEN });
  t.is(retired.status, 200, retired.body);
  await waitForEvents(server, [['serve.release-retired', { model: 'rpi4', version: '1.0.2' }], ['serve.on-air', { model: 'rpi4', version: '1.0.1', seq: 1 }]], 10_000);
  const after = JSON.parse((await httpGet(lab, 'srv', `${SERVER}/api/v1/releases`)).body) as { releases: Array<{ seq: number; state: string }> };
  t.deepEqual(after.releases.map((r) => [r.seq, r.state]), [[2, 'retired'], [1, 'live']]);
  const again = await push(lab, 'srv', big.file, TOKEN);
  t.like(again.json, { ok: false, status: 409, error: 'retired' });
  t.is(again.code, 3);
  server.child.kill('SIGTERM');
  await exitCode(server, 10_000);
});

test('a network interface that does not exist stops serve at start, naming it', async (t) => {
  const lab = NetLab.create(['srv']);
  t.teardown(() => lab.destroy());
  const dir = workdir();
  await fwcastAsync('keygen', '--out', dir);
  const config = serveConfig({ dir, pub: join(dir, 'publisher.pub'), extra: { interface: 'eth9' } });
  const server = track(lab.spawn('srv', process.execPath, [FWCAST, 'serve', '--config', config], { env: { ...process.env, FWCAST_TOKEN: TOKEN } }));
  t.is(await exitCode(server, 20_000), 2, server.stderr);
  t.regex(server.stderr, /^fwcast: error: network interface "eth9" does not exist on this host \(it has: .*eth0.*\)$/m);
  t.deepEqual(events(server.stderr, 'serve.listening'), [], 'never listened, never sent');
});
