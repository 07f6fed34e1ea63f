/**
 * fwcast over MQTT through a real broker (Debian's mosquitto, on loopback with
 * a port per test, configured from test/mqtt/): the real CLIs, a broker
 * restart in the middle of a transfer, and an ACL that keeps agents from
 * writing to the release topics.
 */
import test from 'ava';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { resolveAgentConfig } from '../device-agent/config.js';
import { ConfigError } from '../protocol/errors.js';
import { MemoryHub, MemoryTransport } from '../transport/memory.js';
import { MqttTransport } from '../transport/mqtt.js';
import { MultiTransport } from '../transport/multi.js';
import { Broker, freePort, requireMosquitto } from './helpers/broker.js';
import { sha256hex } from './helpers/fixtures.js';
import { events, exitCode, FWCAST, FWCAST_AGENT, track, waitForEvent, type LogLine, type Tracked, signedRelease } from './helpers/processes.js';

// Fails (not skips) with the apt-get line when the broker is missing.
test.before(() => {
  requireMosquitto();
});

const setupRelease = (size: number, seed: number) => signedRelease('fwcast-mqtt-', size, { seed, version: '2.0.0', seq: 2 });

function agent(dir: string, name: string, pub: string, url: string, extra: string[] = []): Tracked {
  return track(spawn(process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--key', pub, '--mqtt', url, '--store', join(dir, `store-${name}`),
    '--once', '--json', '--timeout', '120', '--progress-interval', '0.5', '--log-format', 'json', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] }));
}

function publish(release: string, url: string, extra: string[] = []): Tracked {
  return track(spawn(process.execPath, [FWCAST, 'publish', release, '--mqtt', url, '--rate', '20mbit', '--duration', '120s', '--log-format', 'json', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] }));
}

/** The MQTT counters a CLI logs at exit. */
function mqttCounters(p: Tracked): LogLine | undefined {
  return events(p.stderr, 'mqtt.stats')[0];
}

/** The agent's install line; waits a little, as 'exit' can come before the last stdout data. */
async function installed(a: Tracked): Promise<{ sha256: string; path: string; seq: number }> {
  const deadline = Date.now() + 3000;
  while (a.stdout.trim() === '' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  return JSON.parse(a.stdout.trim().split('\n').pop()!) as { sha256: string; path: string; seq: number };
}

test('publisher and 3 agents through mosquitto: all install byte-identical images', async (t) => {
  const broker = await Broker.start({ port: await freePort() });
  t.teardown(() => broker.stop());
  const { dir, image, release, pub } = setupRelease(2 * 1024 * 1024 + 77, 21);
  const agents = ['a', 'b', 'c'].map((n) => agent(dir, n, pub, broker.url));
  t.teardown(() => agents.forEach((a) => a.child.kill('SIGKILL')));
  await Promise.all(agents.map((a) => waitForEvent(a, 'agent.listening', { channel: 'fw/rpi4', transport: /^MQTT mqtt:\/\/127\.0\.0\.1:\d+ topics fwcast\// }, 60_000)));
  const publisher = publish(release, broker.url);
  t.teardown(() => publisher.child.kill('SIGKILL'));
  const codes = await Promise.all(agents.map((a) => exitCode(a, 120_000)));
  publisher.child.kill('SIGTERM');
  t.deepEqual(codes, [0, 0, 0], agents.map((a) => a.stderr).join('\n'));
  for (const a of agents) {
    const r = await installed(a);
    t.is(r.sha256, sha256hex(image));
    t.is(sha256hex(readFileSync(r.path)), sha256hex(image));
  }
  t.is(await exitCode(publisher, 30_000), 0, publisher.stderr);
  t.like(mqttCounters(publisher), { droppedOffline: 0 }, publisher.stderr);
  t.true(Number(mqttCounters(publisher)?.published) > 0);
});

test('the broker is killed and restarted mid-transfer: agents reconnect, resubscribe and complete a verified install', async (t) => {
  const broker = await Broker.start({ port: await freePort() });
  t.teardown(() => broker.stop());
  // 3 MiB at 8 Mbit/s: a round takes about 3.3 s, so the kill lands mid-transfer.
  const { dir, image, release, pub } = setupRelease(3 * 1024 * 1024, 22);
  const agents = ['a', 'b'].map((n) => agent(dir, n, pub, broker.url));
  t.teardown(() => agents.forEach((a) => a.child.kill('SIGKILL')));
  await Promise.all(agents.map((a) => waitForEvent(a, 'agent.listening', { channel: 'fw/rpi4' }, 60_000)));
  const publisher = publish(release, broker.url, ['--rate', '8mbit']);
  t.teardown(() => publisher.child.kill('SIGKILL'));
  await Promise.all(agents.map((a) => waitForEvent(a, 'release.progress', (l) => Number(l.symbols) > 0, 60_000)));
  await broker.kill();
  t.deepEqual(agents.map((a) => a.stdout), ['', ''], 'nothing installed before the broker went down');
  await new Promise((r) => setTimeout(r, 1500));
  await broker.start();
  const codes = await Promise.all(agents.map((a) => exitCode(a, 120_000)));
  publisher.child.kill('SIGTERM');
  t.deepEqual(codes, [0, 0], agents.map((a) => a.stderr).join('\n'));
  for (const a of agents) {
    t.true(events(a.stderr, 'mqtt.connected', { url: /^mqtt:\/\// }).some((l) => Number(l.reconnects) >= 1), 'the agent reconnected');
    const r = await installed(a);
    t.is(r.sha256, sha256hex(image));
    t.is(sha256hex(readFileSync(r.path)), sha256hex(image));
  }
  t.is(await exitCode(publisher, 30_000), 0, publisher.stderr);
  const m = mqttCounters(publisher);
  t.truthy(m, publisher.stderr);
  t.true(Number(m?.droppedOffline) > 0, 'the publisher dropped (and counted) datagrams while the broker was down');
  t.true(Number(m?.reconnects) >= 1, 'the publisher reconnected');
});

test('with the ACL, only the publisher user writes fwcast/#: an agent user cannot publish to the release topics', async (t) => {
  const users = { publisher: 'pub-secret-1', agent: 'agent-secret-2' };
  const broker = await Broker.start({ port: await freePort(), config: 'mosquitto-acl.conf', users });
  t.teardown(() => broker.stop());
  const { dir, image, release, pub } = setupRelease(300_000, 23);
  for (const [u, p] of Object.entries(users)) writeFileSync(join(dir, `${u}.pass`), `${p}\n`, { mode: 0o600 });

  // Clients as the ACL sees them: a subscriber and a would-be forger, both "agent".
  const connect = (username: string, password: string) => mqtt.connectAsync(broker.url, { username, password, protocolVersion: 5, reconnectPeriod: 0 });
  const subscriber = await connect('agent', users.agent);
  const forger = await connect('agent', users.agent);
  const publisherClient = await connect('publisher', users.publisher);
  t.teardown(async () => {
    await Promise.all([subscriber, forger, publisherClient].map((c) => c.endAsync(true)));
  });
  const received: string[] = [];
  subscriber.on('message', (_topic, payload) => received.push(payload.toString()));
  await subscriber.subscribeAsync('fwcast/#', { qos: 0 });

  // QoS 1 so the broker answers: MQTT 5 PUBACK reason 0x87, "not authorized".
  const refused = await t.throwsAsync(forger.publishAsync('fwcast/fw/rpi4', 'forged by an agent', { qos: 1 }));
  t.is((refused as Error & { code?: number }).code, 0x87, 'the broker refuses the agent user\'s publish: Not authorized');
  await forger.publishAsync('fwcast/fw/rpi4', 'forged by an agent, qos 0', { qos: 0 });
  await publisherClient.publishAsync('fwcast/fw/rpi4', 'genuine', { qos: 1 });
  const deadline = Date.now() + 5000;
  while (!received.includes('genuine') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.deepEqual(received, ['genuine'], 'subscribers got the publisher\'s message and neither forged one');

  // Anonymous clients are refused outright.
  await t.throwsAsync(mqtt.connectAsync(broker.url, { reconnectPeriod: 0, protocolVersion: 5 }), { message: /Not authorized|Bad User Name or Password/i });

  // The real CLIs with credentials: publisher as "publisher", agent as "agent".
  const a = agent(dir, 'acl', pub, broker.url, ['--mqtt-username', 'agent', '--mqtt-password-file', join(dir, 'agent.pass')]);
  t.teardown(() => a.child.kill('SIGKILL'));
  await waitForEvent(a, 'agent.listening', { channel: 'fw/rpi4' }, 60_000);
  const p = publish(release, broker.url, ['--mqtt-username', 'publisher', '--mqtt-password-file', join(dir, 'publisher.pass')]);
  t.teardown(() => p.child.kill('SIGKILL'));
  t.is(await exitCode(a, 120_000), 0, a.stderr);
  p.child.kill('SIGTERM');
  t.is((await installed(a)).sha256, sha256hex(image));

  // The agent's credentials cannot feed the topic either: fwcast publish as "agent" delivers nothing.
  const b = agent(dir, 'acl-b', pub, broker.url, ['--mqtt-username', 'agent', '--mqtt-password-file', join(dir, 'agent.pass')]);
  t.teardown(() => b.child.kill('SIGKILL'));
  await waitForEvent(b, 'agent.listening', { channel: 'fw/rpi4' }, 60_000);
  const forgedPublish = publish(release, broker.url, ['--mqtt-username', 'agent', '--mqtt-password-file', join(dir, 'agent.pass'), '--duration', '3s']);
  t.teardown(() => forgedPublish.child.kill('SIGKILL'));
  t.is(await exitCode(forgedPublish, 60_000), 0, forgedPublish.stderr);
  t.true(Number(mqttCounters(forgedPublish)?.published) > 0, 'the broker accepted the connection and the messages were sent');
  await new Promise((r) => setTimeout(r, 500));
  b.child.kill('SIGTERM');
  t.is(await exitCode(b, 120_000), 0);
  t.like(events(b.stderr, 'agent.stats', { model: 'rpi4' })[0], { datagrams: 0 }, 'nothing reached the agent');
  t.is(b.stdout, '');
});

/** A CA, a broker certificate for 127.0.0.1, and client certificates whose CN is the MQTT user. */
function makePki(dir: string, clients: string[]): void {
  const ssl = (...args: string[]): void => {
    execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  };
  ssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', '/CN=fwcast test CA', '-keyout', 'ca.key', '-out', 'ca.pem');
  for (const [name, ext] of [['broker', 'subjectAltName=IP:127.0.0.1'], ...clients.map((c) => [c, 'extendedKeyUsage=clientAuth'])] as const) {
    writeFileSync(join(dir, `${name}.ext`), `${ext}\n`);
    ssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', `/CN=${name}`, '-keyout', `${name}.key`, '-out', `${name}.csr`);
    ssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', `${name}.ext`, '-out', `${name}.crt`);
  }
}

test('mqtts with client certificates: publisher and agent authenticate by certificate, the CN is the ACL user', async (t) => {
  const { dir, image, release, pub } = setupRelease(200_000, 24);
  makePki(dir, ['publisher', 'agent']);
  const broker = await Broker.start({
    port: await freePort(), config: 'mosquitto-tls.conf',
    files: { 'ca.pem': readFileSync(join(dir, 'ca.pem')), 'broker.crt': readFileSync(join(dir, 'broker.crt')), 'broker.key': readFileSync(join(dir, 'broker.key')) },
  });
  t.teardown(() => broker.stop());
  const tls = (user: string) => ['--mqtt-ca', join(dir, 'ca.pem'), '--mqtt-cert', join(dir, `${user}.crt`), '--mqtt-key', join(dir, `${user}.key`)];
  const a = agent(dir, 'tls', pub, broker.url, tls('agent'));
  t.teardown(() => a.child.kill('SIGKILL'));
  await waitForEvent(a, 'mqtt.connected', { url: /^mqtts:\/\/127\.0\.0\.1/ }, 60_000);
  const p = publish(release, broker.url, tls('publisher'));
  t.teardown(() => p.child.kill('SIGKILL'));
  t.is(await exitCode(a, 120_000), 0, a.stderr + broker.log);
  p.child.kill('SIGTERM');
  t.is((await installed(a)).sha256, sha256hex(image));
  t.is(await exitCode(p, 30_000), 0);

  // Without the CA the broker's certificate is not trusted: the publisher never connects, says why,
  // and exits 1 because nothing was delivered (issue 13).
  const untrusted = publish(release, broker.url, ['--mqtt-cert', join(dir, 'publisher.crt'), '--mqtt-key', join(dir, 'publisher.key'), '--duration', '2s']);
  t.is(await exitCode(untrusted, 60_000), 1);
  t.is(events(untrusted.stderr, 'publish.undelivered').length, 1, untrusted.stderr);
  t.true(events(untrusted.stderr, 'mqtt.error', { url: /^mqtts:\/\/127\.0\.0\.1:\d+$/, detail: /self[- ]signed|unable to get local issuer|certificate/i }).length > 0, untrusted.stderr);
  t.like(mqttCounters(untrusted), { published: 0 }, untrusted.stderr);
  t.true(Number(mqttCounters(untrusted)?.droppedOffline) > 0);
});

test('agent configuration: "mqtt" and "relay" are validated with errors naming the field', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-mqtt-config-'));
  const resolve = (config: object, flags: Record<string, unknown> = {}) => {
    const path = join(dir, 'agent.json');
    writeFileSync(path, JSON.stringify({ trustedKeys: ['k.pub'], models: [{ model: 'rpi4' }], ...config }));
    return resolveAgentConfig({ config: path, ...flags });
  };
  const ok = resolve({ mqtt: { url: 'mqtts://broker:8883', username: 'agent', passwordFile: '/p', topicPrefix: 'fleet' }, relay: { iface: 'eth1' } });
  t.is(ok.iface, undefined, 'MQTT alone is enough: no interface needed');
  t.deepEqual(ok.mqtt, { url: 'mqtts://broker:8883', username: 'agent', passwordFile: '/p', topicPrefix: 'fleet' });
  t.deepEqual(ok.relay, { iface: 'eth1', rate: 10e6 });
  t.deepEqual(resolve({ interface: 'eth0' }, { mqtt: 'mqtt://[fd00::1]:1883', mqttUsername: 'u', relayMqtt: 'mqtt://up:1883', relayRate: '2mbit' }).relay, { mqtt: { url: 'mqtt://up:1883' }, rate: 2e6 });
  const cases: Array<[object, RegExp]> = [
    [{}, /no network interface: set "interface" in the config or pass --iface \(or use a broker: "mqtt" or --mqtt\)/],
    [{ mqtt: 'mqtt://x' }, /config\.mqtt must be an object/],
    [{ mqtt: {} }, /config\.mqtt\.url is required/],
    [{ mqtt: { url: 'http://x' } }, /config\.mqtt\.url: scheme must be mqtt, mqtts, ws or wss/],
    [{ mqtt: { url: 'mqtt://x', pasword: 'p' } }, /config\.mqtt: unknown field "pasword"/],
    [{ mqtt: { url: 'mqtt://x', username: 7 } }, /config\.mqtt\.username must be a non-empty string/],
    [{ mqtt: { url: 'mqtt://x', cert: '/c' } }, /config\.mqtt: "cert" and "key" go together/],
    [{ interface: 'eth0', relay: {} }, /config\.relay needs "iface" or "mqtt"/],
    [{ interface: 'eth0', relay: { iface: 'eth1', rate: 'fast' } }, /config\.relay\.rate: rate "fast"/],
    [{ interface: 'eth0', relay: { iface: 'eth1', mqtt: { url: 'ftp://x' } } }, /config\.relay\.mqtt\.url: scheme/],
    [{ interface: 'eth0', relay: { ifaces: 'eth1' } }, /config\.relay: unknown field "ifaces"/],
  ];
  for (const [config, message] of cases) t.throws(() => resolve(config), { instanceOf: ConfigError, message }, JSON.stringify(config));
  t.throws(() => resolve({ interface: 'eth0' }, { mqttCa: '/ca.pem' }), { message: /--mqtt-\* options need a broker/ });
});

test('MultiTransport joins and sends on every transport; MqttTransport.send() never throws, drops and counts while offline', async (t) => {
  const hubA = new MemoryHub();
  const hubB = new MemoryHub();
  const multi = new MultiTransport([new MemoryTransport(hubA), new MemoryTransport(hubB)]);
  const channel = { name: 'fw/rpi4', group: 'ff1e::1', port: 4242 };
  const seen: string[] = [];
  const abort = new AbortController();
  await multi.join(channel, (d) => seen.push(Buffer.from(d).toString()), abort.signal);
  hubA.deliver(channel, Buffer.from('from a'), 'a');
  hubB.deliver(channel, Buffer.from('from b'), 'b');
  t.deepEqual(seen, ['from a', 'from b'], 'datagrams from both transports are merged');
  const listener: string[] = [];
  await new MemoryTransport(hubB).join(channel, (d) => listener.push(Buffer.from(d).toString()));
  await multi.open();
  multi.send(channel, Buffer.from('out'));
  t.deepEqual(listener, ['out']);
  t.deepEqual(seen.slice(2), ['out', 'out'], 'our own send, heard on both: the receiver drops such duplicates');
  abort.abort();
  hubA.deliver(channel, Buffer.from('late'), 'a');
  hubB.deliver(channel, Buffer.from('late'), 'b');
  t.is(seen.length, 4, 'abort leaves every transport');
  await multi.close();

  const port = await freePort(); // nothing listens there
  const mq = new MqttTransport({ url: `mqtt://127.0.0.1:${port}`, connectTimeoutMs: 300 });
  t.notThrows(() => mq.send(channel, new Uint8Array(10)), 'before open()');
  await mq.open(); // gives up waiting, keeps retrying in the background
  for (let i = 0; i < 5; i++) mq.send(channel, new Uint8Array(10));
  t.deepEqual(mq.stats().sendErrorsBy, { 'not-open': 1, closed: 0, oversize: 0, offline: 5, backpressure: 0, network: 0 }, 'dropped and counted: 1 before open(), 5 while offline');
  t.is(mq.stats().sendErrors, 6);
  t.is(mq.topicOf(channel), 'fwcast/fw/rpi4');
  await mq.close();
  t.throws(() => new MqttTransport({ url: 'mqtt://x', topicPrefix: 'fw/#' }), { message: /topicPrefix/ });
});
