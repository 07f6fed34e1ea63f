/**
 * Time to deliver one image over IPv6 multicast and over MQTT (mosquitto), at
 * the same publisher rate cap, with the real CLIs in lab namespaces:
 *
 *   [pub] fwcast publish (+ mosquitto for MQTT) ── bridge ── [dev] fwcast-agent --once
 *
 *   bash scripts/lab.sh npx tsx bench/mqtt-transfer.ts [--size-mib 16] [--rate 50mbit] [--runs 1]
 *
 * The time is from starting the publisher to the agent's verified install
 * (agent already listening). One line per transport and run.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { NetLab } from '../scripts/lab/netlab.js';
import { Broker } from '../test/helpers/broker.js';
import { makeImage } from '../test/helpers/fixtures.js';
import { events, exitCode, FWCAST, FWCAST_AGENT, fwcast, track, waitForEvent } from '../test/helpers/processes.js';

const { values } = parseArgs({ options: { 'size-mib': { type: 'string', default: '16' }, rate: { type: 'string', default: '50mbit' }, runs: { type: 'string', default: '1' } } });
const size = Number(values['size-mib']) * 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), 'fwcast-bench-'));
fwcast('keygen', '--out', dir);
writeFileSync(join(dir, 'image.bin'), makeImage(size, 77));
const release = join(dir, 'release.fwc');
fwcast('sign', join(dir, 'image.bin'), '--key', join(dir, 'publisher.key'), '--model', 'rpi4', '--version', '1.0.0', '--seq', '1', '--out', release);
const PORT = 18830;

async function once(kind: 'multicast' | 'mqtt', run: number): Promise<void> {
  const lab = NetLab.create(['pub', 'dev']);
  let broker: Broker | undefined;
  try {
    if (kind === 'mqtt') broker = await Broker.start({ port: PORT, address: '::', spawn: (cmd, args) => lab.spawn('pub', cmd, args) });
    const via = kind === 'mqtt' ? ['--mqtt', `mqtt://[fd00:fc::1]:${PORT}`] : ['--iface', 'eth0'];
    const agent = track(lab.spawn('dev', process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--key', join(dir, 'publisher.pub'), ...via,
      '--store', join(dir, `store-${kind}-${run}`), '--once', '--json', '--timeout', '300', '--log-format', 'json']));
    await waitForEvent(agent, 'agent.listening', { channel: 'fw/rpi4' }, 30_000);
    const start = performance.now();
    const pubVia = kind === 'mqtt' ? ['--mqtt', `mqtt://[::1]:${PORT}`] : ['--iface', 'eth0'];
    const publisher = track(lab.spawn('pub', process.execPath, [FWCAST, 'publish', release, ...pubVia, '--rate', values.rate!, '--duration', '300s', '--log-format', 'json']));
    const code = await exitCode(agent, 300_000);
    const seconds = (performance.now() - start) / 1000;
    publisher.child.kill('SIGTERM');
    await exitCode(publisher, 10_000);
    // The lines' messages, shown as they are (for people).
    const stats = events(agent.stderr, 'agent.stats', { model: 'rpi4' })[0]?.msg ?? '';
    const mq = events(publisher.stderr, 'mqtt.stats')[0]?.msg ?? '';
    console.log(`${kind.padEnd(9)} run ${run}: ${values['size-mib']} MiB at ${values.rate}: exit ${code}, ${seconds.toFixed(1)} s to verified install | agent ${stats}${mq ? ` | publisher ${mq}` : ''}`);
  } finally {
    await broker?.stop();
    lab.destroy();
  }
}

for (let run = 1; run <= Number(values.runs); run++) {
  await once('multicast', run);
  await once('mqtt', run);
}
