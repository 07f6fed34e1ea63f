/**
 * `fwcast serve` under hostile HTTP clients, with its default limits, in lab
 * namespaces: an idle-connection flood from one address, and a slowloris that
 * never finishes its headers. The server answers on fd00:fc::1.
 */
import test from 'ava';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetLab } from '../scripts/lab/netlab.js';
import { idleFlood, probe, reports, slowHeaders, type FloodReport, type ProbeReport, type TrickleReport } from './helpers/http-clients.js';
import { events, exitCode, track, waitForEvent } from './helpers/processes.js';
import { fwcastAsync, serveConfig, startServe } from './helpers/serve.js';

const TARGET = { host: 'fd00:fc::1', port: 8080 };

async function server(lab: NetLab, extra: Record<string, unknown> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-serve-limits-'));
  await fwcastAsync('keygen', '--out', dir);
  const srv = await startServe(lab, 'srv', serveConfig({ dir, pub: join(dir, 'publisher.pub'), extra }));
  return srv;
}

test('an idle-connection flood from one address: serve stays reachable for others, the flooder keeps only its share, and idle connections are closed', async (t) => {
  const lab = NetLab.create(['srv', 'flood', 'ok']);
  t.teardown(() => lab.destroy());
  const srv = await server(lab);
  t.teardown(() => void srv.child.kill('SIGKILL'));
  const flood = idleFlood(lab, 'flood', TARGET, 300, 20);
  // Probes start once the flood is established.
  const deadline = Date.now() + 10_000;
  while (!reports<FloodReport>(flood).some((r) => r.connected >= 16) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  const probes = probe(lab, 'ok', `http://[${TARGET.host}]:${TARGET.port}/healthz`, 15, 3000);
  t.is(await exitCode(probes, 30_000), 0, probes.stderr);
  await exitCode(flood, 40_000);

  const answers = reports<ProbeReport>(probes);
  t.is(answers.length, 15, probes.stdout);
  t.deepEqual(answers.filter((a) => a.status !== 200), [], 'every probe during the flood answered 200 within 3 s');
  const seen = reports<FloodReport>(flood);
  const after2s = seen.filter((r) => r.ms >= 2000);
  t.true(after2s.length > 0 && after2s.every((r) => r.open <= 16), `the flooder held at most 16 connections (maxConnectionsPerClient) after 2 s: ${JSON.stringify(after2s.slice(0, 3))}`);
  const cleared = seen.find((r) => r.connected > 0 && r.open === 0);
  t.true(cleared !== undefined && cleared.ms < 14_000, `every idle connection was closed by the server within the header time-out (10 s): ${JSON.stringify(cleared ?? seen.at(-1))}`);
});

test('slowloris: headers sent a byte every half second are cut off by the header timeout (10 s by default)', async (t) => {
  const lab = NetLab.create(['srv', 'slow']);
  t.teardown(() => lab.destroy());
  const srv = await server(lab);
  t.teardown(() => void srv.child.kill('SIGKILL'));
  const slow = slowHeaders(lab, 'slow', TARGET, 500, 40);
  t.is(await exitCode(slow, 60_000), 0, slow.stderr);
  const [r] = reports<TrickleReport>(slow);
  t.not(r?.closedAfterMs, null, `the server kept the connection open for 40 s: ${JSON.stringify(r)}`);
  t.true(r!.closedAfterMs! >= 9000 && r!.closedAfterMs! < 13_000, `closed after ${r!.closedAfterMs} ms (header timeout 10 s)`);
  const probes = probe(lab, 'slow', `http://[${TARGET.host}]:${TARGET.port}/healthz`, 1, 3000);
  await exitCode(probes, 10_000);
  t.like(reports<ProbeReport>(probes)[0], { status: 200 }, 'and the server still answers');
});

test('regression: a stranger sending 300 unauthorized uploads gets at most 5 log lines per reason, then one summary counting the rest', async (t) => {
  const lab = NetLab.create(['srv', 'stranger']);
  t.teardown(() => lab.destroy());
  const srv = await server(lab);
  t.teardown(() => void srv.child.kill('SIGKILL'));
  const stranger = track(lab.spawn('stranger', process.execPath, ['-e', `
    (async () => {
      for (let i = 0; i < 300; i++) {
        const r = await fetch('http://[${TARGET.host}]:${TARGET.port}/api/v1/releases', { method: 'POST', headers: { authorization: 'Bearer wrong-' + i }, body: 'x' });
        await r.text();
      }
    })().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
  `]));
  t.is(await exitCode(stranger, 60_000), 0, stranger.stderr);
  const summary = await waitForEvent(srv, 'serve.refusals-suppressed', {}, 15_000);
  const refused = events(srv.stderr, 'serve.request-refused');
  t.true(refused.length <= 5, `${refused.length} serve.request-refused lines`);
  t.is(Number(summary['suppressed.unauthorized']) + refused.length, 300, JSON.stringify(summary));
});
