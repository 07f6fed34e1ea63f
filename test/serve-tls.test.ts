/**
 * `fwcast serve` over HTTPS in lab namespaces, with self-signed certificates
 * made by openssl in the test: push over TLS, reads behind the read token,
 * SIGHUP serving a new certificate, and the token kept out of `ps`.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetLab } from '../scripts/lab/netlab.js';
import { makeImage } from './helpers/fixtures.js';
import { idleFlood, probe, reports, type FloodReport, type ProbeReport } from './helpers/http-clients.js';
import { events, exitCode, FWCAST, track, waitForEvent, type Tracked } from './helpers/processes.js';
import { fwcastAsync, push, serveConfig, startServe, TOKEN } from './helpers/serve.js';

const HOST = 'fd00:fc::1';
const URL_BASE = `https://[${HOST}]:8443`;
const READ_TOKEN = 'read-token-0123456789abcdef';

/** A self-signed certificate for the server's address (and its key), made by openssl; returns its SHA-256 fingerprint. */
function selfSigned(dir: string, name: string): { cert: string; key: string; fingerprint: string } {
  const cert = join(dir, `${name}-cert.pem`);
  const key = join(dir, `${name}-key.pem`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert,
    '-days', '2', '-subj', `/CN=fwcast-test-${name}`, '-addext', `subjectAltName=IP:${HOST}`], { stdio: 'ignore' });
  return { cert, key, fingerprint: new X509Certificate(readFileSync(cert)).fingerprint256 };
}

/** The SHA-256 fingerprint of the certificate the server presents to a new connection. */
async function servedFingerprint(lab: NetLab, host: string): Promise<string> {
  const p = track(lab.spawn(host, process.execPath, ['-e', `
    const s = require('node:tls').connect({ host: '${HOST}', port: 8443, rejectUnauthorized: false }, () => { console.log(s.getPeerCertificate().fingerprint256); s.end(); process.exit(0); });
    s.on('error', (e) => { console.error(e.message); process.exit(1); });
    setTimeout(() => process.exit(2), 10000);
  `]));
  if (await exitCode(p, 15_000) !== 0) throw new Error(`TLS connection failed: ${p.stderr}`);
  return p.stdout.trim();
}

/** Replaces a file the way certificate tools do: written aside, then renamed over it. */
function replace(path: string, from: string): void {
  writeFileSync(`${path}.new`, readFileSync(from));
  renameSync(`${path}.new`, path);
}

async function signedRelease(dir: string): Promise<string> {
  await fwcastAsync('keygen', '--out', dir);
  writeFileSync(join(dir, 'img'), makeImage(50_000, 3));
  const file = join(dir, 'r.fwc');
  await fwcastAsync('sign', join(dir, 'img'), '--key', join(dir, 'publisher.key'), '--model', 'rpi4', '--version', '1.0.1', '--seq', '1', '--out', file);
  return file;
}

test('HTTPS: push over TLS to a self-signed certificate, reads behind the read token, SIGHUP serves a new certificate and keeps it when the next is broken', async (t) => {
  const lab = NetLab.create(['srv', 'ci']);
  t.teardown(() => lab.destroy());
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-serve-tls-'));
  const release = await signedRelease(dir);
  const first = selfSigned(dir, 'first');
  const second = selfSigned(dir, 'second');
  const live = { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') };
  replace(live.cert, first.cert);
  replace(live.key, first.key);
  writeFileSync(join(dir, 'read.token'), `${READ_TOKEN}\n`);
  writeFileSync(join(dir, 'upload.token'), `${TOKEN}\n`);
  const server = await startServe(lab, 'srv', serveConfig({
    dir, pub: join(dir, 'publisher.pub'), listen: `[${HOST}]:8443`,
    extra: { tlsCert: live.cert, tlsKey: live.key, readTokenFile: join(dir, 'read.token'), headersTimeout: 3 },
  }));
  t.teardown(() => void server.child.kill('SIGKILL'));
  t.like(events(server.stderr, 'serve.listening')[0], { url: `${URL_BASE}` });
  t.deepEqual(events(server.stderr, 'serve.plain-http'), []);
  t.is(await servedFingerprint(lab, 'ci'), first.fingerprint);

  // Push over TLS: trusted through --ca, the token from a file.
  const pushed = await push(lab, 'ci', release, undefined, URL_BASE, { args: ['--ca', first.cert, '--token-file', join(dir, 'upload.token')] });
  t.is(pushed.code, 0, pushed.stderr);
  t.like(pushed.json, { ok: true, status: 201, stored: true });
  // Without trusting the certificate, push refuses to talk (and sends no token).
  const untrusted = await push(lab, 'ci', release, TOKEN, URL_BASE);
  t.is(untrusted.code, 5, untrusted.stderr);
  t.regex(untrusted.json.message ?? '', /SELF_SIGNED/);

  // Reads need the read token (or the upload token, as Basic's password for a browser); /healthz does not.
  const basic = `Basic ${Buffer.from(`admin:${TOKEN}`).toString('base64')}`;
  const asks: Array<[string, Record<string, string>, number]> = [
    ['/metrics', {}, 401],
    ['/metrics', { authorization: 'Bearer not-the-read-token-00000' }, 401],
    ['/metrics', { authorization: `Bearer ${READ_TOKEN}` }, 200],
    ['/', {}, 401],
    ['/', { authorization: basic }, 200],
    ['/api/v1/status', { authorization: `Bearer ${READ_TOKEN}` }, 200],
    ['/api/v1/releases', {}, 401],
    ['/healthz', {}, 200],
  ];
  for (const [path, headers, status] of asks) {
    const p = probe(lab, 'ci', `${URL_BASE}${path}`, 1, 5000, headers);
    await exitCode(p, 15_000);
    t.like(reports<ProbeReport>(p)[0], { status }, `GET ${path} ${JSON.stringify(headers)}`);
  }
  // Plain HTTP to the TLS port gets no answer.
  const plain = probe(lab, 'ci', `http://[${HOST}]:8443/healthz`, 1, 5000);
  await exitCode(plain, 15_000);
  t.is(reports<ProbeReport>(plain)[0]?.status, undefined, plain.stdout);

  // A TCP connection that never starts its handshake is closed by the header time-out (3 s here).
  const idle = idleFlood(lab, 'ci', { host: HOST, port: 8443 }, 1, 8);
  await exitCode(idle, 20_000);
  const closedAt = reports<FloodReport>(idle).find((r) => r.connected === 1 && r.open === 0);
  t.true(closedAt !== undefined && closedAt.ms < 5000, `idle TLS connection closed: ${JSON.stringify(closedAt ?? reports(idle).at(-1))}`);

  // New files, SIGHUP: new connections get the new certificate; the server goes on.
  replace(live.cert, second.cert);
  replace(live.key, second.key);
  server.child.kill('SIGHUP');
  await waitForEvent(server, 'serve.tls-reloaded', { fingerprint: second.fingerprint, cert: live.cert }, 10_000);
  t.is(await servedFingerprint(lab, 'ci'), second.fingerprint);
  const again = probe(lab, 'ci', `${URL_BASE}/healthz`, 1, 5000);
  await exitCode(again, 15_000);
  t.like(reports<ProbeReport>(again)[0], { status: 200 });

  // A certificate whose key does not match: refused, the working pair stays.
  replace(live.key, first.key);
  server.child.kill('SIGHUP');
  await waitForEvent(server, 'serve.tls-reload-failed', { cert: live.cert, error: 'ConfigError' }, 10_000);
  t.is(await servedFingerprint(lab, 'ci'), second.fingerprint);
  t.is(server.child.exitCode, null, 'still running');
  server.child.kill('SIGTERM');
  t.is(await exitCode(server, 10_000), 0);
});

test('push --token-file keeps the token out of the process list; --token still works and warns', async (t) => {
  const lab = NetLab.create(['srv']);
  t.teardown(() => lab.destroy());
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-push-token-'));
  const release = await signedRelease(dir);
  writeFileSync(join(dir, 'upload.token'), `${TOKEN}\n`);
  // A server that accepts and never answers, so push is still running while we look at it.
  const silent = track(lab.spawn('srv', process.execPath, ['-e', `require('node:net').createServer(() => {}).listen(8080, '${HOST}', () => console.log('up')); setTimeout(() => process.exit(0), 30000);`]));
  t.teardown(() => void silent.child.kill('SIGKILL'));
  while (!silent.stdout.includes('up')) await new Promise((r) => setTimeout(r, 50));

  const pushing = (args: string[]): Tracked => {
    const env = { ...process.env };
    delete env.FWCAST_TOKEN;
    return track(lab.spawn('srv', process.execPath, [FWCAST, 'push', release, '--server', `http://[${HOST}]:8080`, '--json', '--timeout', '20', ...args], { env }));
  };
  const cmdline = async (p: Tracked): Promise<string> => {
    // `ip netns exec` execs the command: the pid is the push process itself once node runs.
    for (let i = 0; i < 100; i++) {
      const text = readFileSync(`/proc/${p.child.pid}/cmdline`, 'utf8').split('\0').join(' ');
      if (text.includes('push')) return text;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`push did not start: ${p.stderr}`);
  };

  const viaFile = pushing(['--token-file', join(dir, 'upload.token')]);
  const seen = await cmdline(viaFile);
  await new Promise((r) => setTimeout(r, 1500)); // past the 1 s Expect fallback: push has read the file and is sending
  t.is(viaFile.child.exitCode, null, `push still waiting for the server: ${viaFile.stderr}`);
  t.false(seen.includes(TOKEN), seen);
  t.regex(seen, /--token-file/);
  viaFile.child.kill('SIGKILL');

  const viaFlag = pushing(['--token', TOKEN, '--timeout', '1']);
  t.is(await exitCode(viaFlag, 20_000), 5, viaFlag.stderr);
  t.regex(viaFlag.stderr, /--token is visible to every user in `ps`; prefer FWCAST_TOKEN or --token-file/);
  const missing = pushing(['--token-file', join(dir, 'nope.token')]);
  t.is(await exitCode(missing, 20_000), 2, missing.stderr);
  t.regex(missing.stderr, /cannot read the token file .*nope\.token: ENOENT/);
});
