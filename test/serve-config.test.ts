/** `fwcast serve` configuration: file, then environment, then flags; every mistake named. */
import test from 'ava';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveServeConfig } from '../server/serve/config.js';
import { ROOT } from './helpers/processes.js';

const dir = mkdtempSync(join(tmpdir(), 'fwcast-serve-config-'));
const TOKEN = 'a-token-of-enough-length';

function file(config: unknown): string {
  const path = join(dir, `c${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(path, typeof config === 'string' ? config : JSON.stringify(config));
  return path;
}

const base = { interface: 'eth0', trustedKeys: ['/etc/fwcast/publisher.pub'], models: ['rpi4'] };

test('defaults, and environment over file, flags over environment', (t) => {
  const c = resolveServeConfig({ config: file(base) }, { FWCAST_TOKEN: TOKEN });
  t.like(c, { host: '::1', httpPort: 8080, store: '/var/lib/fwcast-serve', iface: 'eth0', rate: 20e6, hops: 8, maxUploadSize: 512 * 1024 * 1024, keepReleases: 2, logFormat: 'text', token: TOKEN });
  t.deepEqual(c.models[0]?.channel, { name: 'fw/rpi4', group: 'ff1e:2bd7:ec2e:cb43:283:3ede:32a4:d45f', port: 4242 });

  const env = { FWCAST_TOKEN: TOKEN, FWCAST_RATE: '5mbit', FWCAST_LISTEN: '127.0.0.1:9000', FWCAST_MODELS: 'rpi4, sensor-v2', FWCAST_PORT: '5000', FWCAST_LOG_FORMAT: 'json' };
  const e = resolveServeConfig({ config: file({ ...base, rate: '1mbit', listen: '[::]:1' }) }, env);
  t.like(e, { host: '127.0.0.1', httpPort: 9000, rate: 5e6, logFormat: 'json' });
  t.deepEqual(e.models.map((m) => [m.model, m.channel.port]), [['rpi4', 5000], ['sensor-v2', 5000]]);

  const f = resolveServeConfig({ config: file(base), rate: '7mbit', listen: '[fd00::1]:80', iface: 'wlan0' }, env);
  t.like(f, { rate: 7e6, host: 'fd00::1', httpPort: 80, iface: 'wlan0' });

  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, `${TOKEN}-from-file\n`);
  t.is(resolveServeConfig({ config: file({ ...base, tokenFile }) }, {}).token, `${TOKEN}-from-file`);
  t.is(resolveServeConfig({ config: file(base) }, { FWCAST_TOKEN_FILE: tokenFile }).token, `${TOKEN}-from-file`);
  t.is(resolveServeConfig({ config: file({ ...base, models: [{ model: 'rpi4', group: 'ff15::5' }] }) }, { FWCAST_TOKEN: TOKEN }).models[0]?.channel.group, 'ff15::5');
});

test('HTTP limits: seconds by default, each settable; TLS files and the read token', (t) => {
  const c = resolveServeConfig({ config: file(base) }, { FWCAST_TOKEN: TOKEN });
  t.like(c, { tls: undefined, readToken: undefined, headersTimeoutMs: 10_000, requestTimeoutMs: 300_000, idleTimeoutMs: 30_000, maxConnections: 256, maxConnectionsPerClient: 16 });
  const readTokenFile = join(dir, 'read-token');
  writeFileSync(readTokenFile, `${TOKEN}-read\n`);
  const set = resolveServeConfig({ config: file({ ...base, tlsCert: '/c.pem', tlsKey: '/k.pem', readTokenFile, headersTimeout: 3, requestTimeout: 60, idleTimeout: 5, maxConnections: 10, maxConnectionsPerClient: 2 }) }, { FWCAST_TOKEN: TOKEN });
  t.like(set, { tls: { cert: '/c.pem', key: '/k.pem' }, readToken: `${TOKEN}-read`, headersTimeoutMs: 3000, requestTimeoutMs: 60_000, idleTimeoutMs: 5000, maxConnections: 10, maxConnectionsPerClient: 2 });
  const env = resolveServeConfig({ config: file(base) }, { FWCAST_TOKEN: TOKEN, FWCAST_READ_TOKEN: `${TOKEN}-env`, FWCAST_TLS_CERT: '/e.pem', FWCAST_TLS_KEY: '/ek.pem', FWCAST_HEADERS_TIMEOUT: '4', FWCAST_MAX_CONNECTIONS_PER_CLIENT: '3' });
  t.like(env, { tls: { cert: '/e.pem', key: '/ek.pem' }, readToken: `${TOKEN}-env`, headersTimeoutMs: 4000, maxConnectionsPerClient: 3 });
});

test('the example serve.json listens on all addresses only with TLS', (t) => {
  const example = resolveServeConfig({ config: join(ROOT, 'hardware', 'raspberry-pi', 'serve.json') }, { FWCAST_TOKEN: TOKEN });
  t.is(example.host, '::');
  t.deepEqual(example.tls, { cert: '/etc/fwcast/serve-cert.pem', key: '/etc/fwcast/serve-key.pem' });
});

const errors: Array<[string, unknown, Record<string, string>, RegExp]> = [
  ['not JSON', '{ nope', { FWCAST_TOKEN: TOKEN }, /is not valid JSON/],
  ['unknown field', { ...base, rates: '1mbit' }, { FWCAST_TOKEN: TOKEN }, /config: unknown field "rates"/],
  ['no interface', { ...base, interface: undefined }, { FWCAST_TOKEN: TOKEN }, /no network interface to publish on/],
  ['bad rate in the environment', base, { FWCAST_TOKEN: TOKEN, FWCAST_RATE: 'fast' }, /^FWCAST_RATE: rate "fast"/],
  ['bad port', { ...base, port: 70000 }, { FWCAST_TOKEN: TOKEN }, /config\.port must be an integer in 1\.\.65535, got 70000/],
  ['bad listen', { ...base, listen: 'localhost' }, { FWCAST_TOKEN: TOKEN }, /config\.listen must be HOST:PORT/],
  ['no keys', { ...base, trustedKeys: [] }, { FWCAST_TOKEN: TOKEN }, /no trusted publisher key/],
  ['no models', { ...base, models: [] }, { FWCAST_TOKEN: TOKEN }, /no model to serve/],
  ['bad model', { ...base, models: ['rpi4', 'bad model!'] }, { FWCAST_TOKEN: TOKEN }, /config\.models\[1\]: model "bad model!"/],
  ['bad group', { ...base, models: [{ model: 'rpi4', group: 'fe80::1' }] }, { FWCAST_TOKEN: TOKEN }, /config\.models\[0\]: /],
  ['model twice', { ...base, models: ['rpi4', 'rpi4'] }, { FWCAST_TOKEN: TOKEN }, /listed twice/],
  ['no token', base, {}, /no upload token: set FWCAST_TOKEN/],
  ['short token', base, { FWCAST_TOKEN: 'short' }, /at least 16 characters/],
  ['missing token file', { ...base, tokenFile: '/nonexistent/token' }, {}, /cannot read token file \/nonexistent\/token: ENOENT/],
  ['bad upload limit', base, { FWCAST_TOKEN: TOKEN, FWCAST_MAX_UPLOAD: '1GB' }, /FWCAST_MAX_UPLOAD must be an integer/],
  ['bad log format', { ...base, logFormat: 'xml' }, { FWCAST_TOKEN: TOKEN }, /config\.logFormat must be "text" or "json"/],
  ['certificate without key', { ...base, tlsCert: '/c.pem' }, { FWCAST_TOKEN: TOKEN }, /TLS needs both "tlsCert" and "tlsKey"/],
  ['header time-out of 0', { ...base, headersTimeout: 0 }, { FWCAST_TOKEN: TOKEN }, /config\.headersTimeout must be an integer in 1\.\.600, got 0/],
  ['request time-out shorter than the header time-out', { ...base, headersTimeout: 20, requestTimeout: 10 }, { FWCAST_TOKEN: TOKEN }, /requestTimeout \(10 s\) must not be shorter than headersTimeout \(20 s\)/],
  ['no connections allowed', base, { FWCAST_TOKEN: TOKEN, FWCAST_MAX_CONNECTIONS: '0' }, /FWCAST_MAX_CONNECTIONS must be an integer in 1\.\./],
  ['short read token', base, { FWCAST_TOKEN: TOKEN, FWCAST_READ_TOKEN: 'short' }, /the read token must be at least 16 characters/],
  ['missing read token file', { ...base, readTokenFile: '/nonexistent/read' }, { FWCAST_TOKEN: TOKEN }, /cannot read read token file \/nonexistent\/read: ENOENT/],
];

for (const [name, config, env, message] of errors) {
  test(`refused: ${name}`, (t) => {
    const err = t.throws(() => resolveServeConfig({ config: file(config) }, env));
    t.is(err?.name, 'ConfigError');
    t.regex(err?.message ?? '', message);
  });
}
