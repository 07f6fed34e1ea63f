/**
 * The agent's multicast receive buffer: sized from the rate it expects, the
 * kernel's grant read back (Linux reports twice the set value), one warning
 * naming net.core.rmem_max when the kernel caps it, and the datagrams the
 * kernel dropped on the agent's own sockets counted from /proc/self/net/udp6.
 *
 * Inside the lab (a user namespace) net.core.rmem_max is the host's and
 * read-only, so these tests do not change it: they read it, and ask for less
 * or more than it.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MAX_RECEIVE_BUFFER, MIN_RECEIVE_BUFFER, receiveBufferCap, receiveBufferDrops, receiveBufferFor, ipv6Bytes } from '../transport/receive-buffer.js';
import { UdpMulticastTransport, type ReceiveBufferReport } from '../transport/udp-multicast.js';
import { events, exitCode, FWCAST_AGENT, fwcast, ROOT, track, waitForEvent } from './helpers/processes.js';

function inLab(): void {
  if (process.env.FWCAST_LAB !== '1') throw new Error('network tests run inside the lab: use `npm test` (or `bash scripts/lab.sh npx ava FILE`)');
}

/** The host's cap, which the lab inherits read-only. */
function cap(): number {
  const c = receiveBufferCap();
  if (c === undefined) throw new Error('no /proc/sys/net/core/rmem_max: these tests need Linux');
  return c;
}

test('the buffer holds 250 ms at the expected rate, between 1 MiB and 64 MiB', (t) => {
  t.is(receiveBufferFor(100e6), 3_125_000);
  t.is(receiveBufferFor(400e6), 12_500_000);
  t.is(receiveBufferFor(1e6), MIN_RECEIVE_BUFFER);
  t.is(receiveBufferFor(10e9), MAX_RECEIVE_BUFFER);
  t.throws(() => receiveBufferFor(0), { instanceOf: RangeError });
});

test('the Raspberry Pi sysctl drop-in lifts the cap to what 100 Mbit/s needs', (t) => {
  const text = readFileSync(join(ROOT, 'hardware', 'raspberry-pi', '99-fwcast-sysctl.conf'), 'utf8');
  const settings = [...text.matchAll(/^\s*([a-z0-9_.]+)\s*=\s*(\S+)\s*$/gm)].map((m) => [m[1], m[2]]);
  t.deepEqual(settings.map(([k]) => k), ['net.core.rmem_max']);
  t.true(Number(settings[0]![1]) >= receiveBufferFor(100e6));
});

test('IPv6 addresses as /proc writes them: parsed from their text form', (t) => {
  t.deepEqual([...ipv6Bytes('ff15::77')!], [0xff, 0x15, ...new Array(13).fill(0), 0x77]);
  t.deepEqual([...ipv6Bytes('ff1e:1:2:3:4:5:6:7%lo')!], [0xff, 0x1e, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7]);
  t.is(ipv6Bytes('ff15::1::2'), undefined);
  t.is(ipv6Bytes('ff15:1:2'), undefined);
  t.is(ipv6Bytes('not an address'), undefined);
});

test('the transport reports what the kernel granted: the set value, not the doubled one getsockopt returns', async (t) => {
  inLab();
  const rmemMax = cap();
  const reports: ReceiveBufferReport[] = [];
  for (const [i, wanted] of [Math.floor(rmemMax / 2), rmemMax * 2].entries()) {
    const transport = new UdpMulticastTransport({ iface: 'lo', receiveBuffer: wanted, onReceiveBuffer: (r) => reports.push(r) });
    t.teardown(() => transport.close());
    await transport.join({ name: `t/${i}`, group: `ff15::b0${i}`, port: 4400 + i }, () => {});
    t.is(transport.receiveBufferSize(), 2 * Math.min(wanted, rmemMax), 'Linux reports twice the set value');
  }
  t.deepEqual(reports.map((r) => [r.wanted, r.granted]), [[Math.floor(rmemMax / 2), Math.floor(rmemMax / 2)], [rmemMax * 2, rmemMax]]);
});

test('receiveBufferDrops counts what the kernel dropped on this process\'s socket for the group, and only that', async (t) => {
  inLab();
  const transport = new UdpMulticastTransport({ iface: 'lo', receiveBuffer: 64 * 1024 });
  t.teardown(() => transport.close());
  const channel = { name: 't/drops', group: 'ff15::b1', port: 4410 };
  const other = { name: 't/other', group: 'ff15::b2', port: 4410 };
  let received = 0;
  let otherReceived = 0;
  await transport.join(channel, () => received++);
  await transport.join(other, () => otherReceived++);
  t.is(receiveBufferDrops(channel.group, channel.port), 0);
  t.is(receiveBufferDrops('ff15::b3', channel.port), undefined, 'no socket of ours on that group');

  // Another process sends while this one's event loop is blocked: the kernel queues what the buffer holds and drops the rest.
  const count = 3000;
  const sender = spawn(process.execPath, ['-e', `
    const s = require('node:dgram').createSocket({ type: 'udp6' });
    s.bind({ port: 0, address: '::' }, () => {
      s.setMulticastInterface('::%lo');
      const b = Buffer.alloc(1232);
      let sent = 0;
      for (let i = 0; i < ${count}; i++) s.send(b, ${channel.port}, '${channel.group}%lo', (err) => { if (!err) sent++; if (i === ${count} - 1) { process.stdout.write(String(sent)); s.close(); } });
    });`], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  sender.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = once(sender, 'close');
  const until = Date.now() + 1500;
  while (Date.now() < until) { /* the agent's stall */ }
  await exited;
  const sent = Number(out);
  t.is(sent, count, 'every datagram left the sender');
  await new Promise((r) => setTimeout(r, 300));
  const drops = receiveBufferDrops(channel.group, channel.port)!;
  t.log(`${sent} sent, ${received} received, ${drops} dropped by the kernel`);
  t.true(drops > 0, 'a 64 KiB buffer cannot hold 3000 datagrams');
  t.is(received + drops, sent, 'every datagram sent was either received or counted as dropped');
  t.is(otherReceived, 0);
  t.is(receiveBufferDrops(other.group, other.port), 0, 'the other group\'s socket dropped nothing');
});

/** Runs fwcast-agent on lo with `--expected-rate rate` until it listens, stops it, and returns its log. */
async function agentLog(t: { teardown: (f: () => void) => void }, rate: string): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-rcvbuf-'));
  fwcast('keygen', '--out', dir);
  const agent = track(spawn(process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--key', join(dir, 'publisher.pub'), '--iface', 'lo', '--store', join(dir, 'store'),
    '--expected-rate', rate, '--log-format', 'json'], { stdio: ['ignore', 'pipe', 'pipe'] }));
  t.teardown(() => agent.child.kill('SIGKILL'));
  await waitForEvent(agent, 'agent.listening', { model: 'rpi4' }, 20_000);
  agent.child.kill('SIGTERM');
  await exitCode(agent, 10_000);
  return agent.stderr;
}

test('fwcast-agent warns once, naming the sysctl, when the kernel caps the buffer its expected rate needs', async (t) => {
  inLab();
  const rmemMax = cap();
  t.true(rmemMax < MAX_RECEIVE_BUFFER, `net.core.rmem_max is ${rmemMax}: no expected rate asks for more than that`);
  // Twice the cap, as a rate: the buffer it needs (250 ms of it) is twice what the kernel grants.
  const rate = Math.ceil((2 * rmemMax * 8) / 0.25);
  const wanted = receiveBufferFor(rate);
  t.true(wanted > rmemMax);
  const log = await agentLog(t, String(rate));
  const warnings = events(log, 'agent.receive-buffer-capped');
  t.is(warnings.length, 1, log);
  t.like(warnings[0], { model: 'rpi4', channel: 'fw/rpi4', wantedBytes: wanted, grantedBytes: rmemMax, rmemMax, expectedRate: rate, fix: `sysctl -w net.core.rmem_max=${wanted}` });
  t.like(events(log, 'agent.stats')[0], { model: 'rpi4', receiveBufferDrops: 0 });
});

test('fwcast-agent does not warn when the kernel grants what its expected rate needs', async (t) => {
  inLab();
  const rmemMax = cap();
  // The largest rate whose buffer fits under the cap (at least the 1 MiB floor must fit).
  t.true(rmemMax >= MIN_RECEIVE_BUFFER, `net.core.rmem_max is ${rmemMax}, below the agent's 1 MiB floor`);
  const rate = Math.floor((rmemMax * 8) / 0.25);
  t.true(receiveBufferFor(rate) <= rmemMax);
  const log = await agentLog(t, String(rate));
  t.deepEqual(events(log, 'agent.receive-buffer-capped'), [], log);
  t.like(events(log, 'agent.stats')[0], { model: 'rpi4', receiveBufferDrops: 0 });
});
