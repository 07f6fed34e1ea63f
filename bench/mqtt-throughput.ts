/**
 * How many fwcast-sized QoS 0 messages per second pass through mosquitto
 * without loss: a broker on loopback (test/mqtt/mosquitto.conf, default
 * max_queued_messages 1000), one MqttTransport publishing 1232-byte messages
 * paced at each rate for a few seconds, and N subscriber processes (each an
 * MqttTransport, as an agent) counting what arrives.
 *
 *   bash scripts/lab.sh npx tsx bench/mqtt-throughput.ts [--subscribers 3] [--seconds 4] [--rates 2000,5000,...] [--slow-us 200]
 *
 * --slow-us N makes the first subscriber spend N µs on each message (a slow
 * device): the broker then queues for it, and drops beyond max_queued_messages.
 *
 * Prints one line per rate: sent, dropped by the publisher's transport (write
 * buffer over 1 MiB), received per subscriber, lost inside the broker, and the
 * payload rate the messages amount to.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { MqttTransport } from '../transport/mqtt.js';
import { Broker, freePort } from '../test/helpers/broker.js';

const SIZE = 1232;
const channel = { name: 'fw/bench', group: 'ff1e::1', port: 4242 };

async function subscriber(url: string, busyUs: number): Promise<void> {
  let count = 0;
  const t = new MqttTransport({ url });
  await t.join(channel, () => {
    count++;
    // A slow device: busy for busyUs per message (decoding, flash writes).
    for (const end = performance.now() + busyUs / 1000; performance.now() < end;);
  });
  process.send!({ ready: true });
  process.on('message', (m: { cmd: string }) => {
    if (m.cmd === 'count') process.send!({ count });
    if (m.cmd === 'reset') count = 0;
    if (m.cmd === 'exit') void t.close().then(() => process.exit(0));
  });
}

function ask(child: ChildProcess, cmd: string): Promise<number> {
  return new Promise((resolve) => {
    child.once('message', (m: { count?: number }) => resolve(m.count ?? 0));
    child.send({ cmd });
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      sub: { type: 'string' },
      subscribers: { type: 'string', default: '3' },
      seconds: { type: 'string', default: '4' },
      rates: { type: 'string', default: '2000,5000,10000,15000,20000,30000,40000' },
      'slow-us': { type: 'string', default: '0' },
      busy: { type: 'string', default: '0' },
    },
  });
  if (values.sub) return subscriber(values.sub, Number(values.busy));

  const broker = await Broker.start({ port: await freePort() });
  const subs: ChildProcess[] = [];
  try {
    for (let i = 0; i < Number(values.subscribers); i++) {
      // With --slow-us, the first subscriber is a slow device.
      const busy = i === 0 ? values['slow-us']! : '0';
      const child = fork(fileURLToPath(import.meta.url), ['--sub', broker.url, '--busy', busy], { execArgv: ['--import', 'tsx'] });
      await new Promise((r) => child.once('message', r));
      subs.push(child);
    }
    const pub = new MqttTransport({ url: broker.url });
    await pub.open();
    const payload = new Uint8Array(SIZE).fill(0xa5);
    console.log(`mosquitto on loopback, ${subs.length} subscriber processes, ${SIZE}-byte QoS 0 messages, ${values.seconds} s per rate`);
    console.log('rate msg/s | sent    | dropped at publisher | received per subscriber       | lost in broker, per subscriber | payload Mbit/s');
    for (const rate of values.rates!.split(',').map(Number)) {
      for (const s of subs) s.send({ cmd: 'reset' });
      await sleep(200);
      const before = pub.stats();
      const seconds = Number(values.seconds);
      const start = performance.now();
      let sent = 0;
      while (performance.now() - start < seconds * 1000) {
        const due = Math.floor(((performance.now() - start) / 1000) * rate);
        while (sent < due) {
          pub.send(channel, payload);
          sent++;
        }
        await sleep(1);
      }
      const elapsed = (performance.now() - start) / 1000;
      await sleep(1500); // let queues drain
      const counts = await Promise.all(subs.map((s) => ask(s, 'count')));
      const after = pub.stats();
      const dropped = after.sendErrorsBy.backpressure - before.sendErrorsBy.backpressure + after.sendErrorsBy.offline - before.sendErrorsBy.offline;
      const lost = counts.map((c) => sent - dropped - c).join(', ');
      console.log(`${String(rate).padStart(10)} | ${String(sent).padStart(7)} | ${String(dropped).padStart(20)} | ${counts.join(', ').padEnd(29)} | ${String(lost).padStart(14)} | ${((sent * SIZE * 8) / elapsed / 1e6).toFixed(1)}`);
    }
    await pub.close();
  } finally {
    for (const s of subs) s.send({ cmd: 'exit' });
    await sleep(300);
    for (const s of subs) s.kill('SIGKILL');
    await broker.stop();
  }
}

await main();
