/**
 * Publisher pacing at high packet rates: one release sent at a target rate
 * across the lab's veth bridge to a real agent, which must install it with
 * zero receive-buffer drops (Udp6RcvbufErrors in its namespace).
 *
 *   bash scripts/lab.sh npx tsx bench/throughput.ts [PACKETS_PER_SECOND] [SIZE_MIB] [SEGMENT_MIB]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeSampleImage } from '../firmware-samples/generate.js';
import { NetLab } from '../scripts/lab/netlab.js';
import { events, onEvent, track } from '../test/helpers/processes.js';
import { agentNodeFlags } from './agent-rss.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const FWCAST = join(ROOT, 'bin/fwcast.js');
const AGENT = join(ROOT, 'bin/fwcast-agent.js');
const KEY = join(ROOT, 'firmware-samples/demo-keys/DEMO-ONLY-publisher.key');
const PUB = join(ROOT, 'firmware-samples/demo-keys/DEMO-ONLY-publisher.pub');
/** Symbol datagram on the wire: 1228 bytes of UDP payload + 48 of IPv6/UDP headers. */
const WIRE_BYTES = 1228 + 48;

export interface ThroughputResult {
  targetPps: number;
  achievedPps: number;
  datagrams: number;
  /** Receive-buffer drops until the agent logged release.received (every segment verified). */
  receiveBufferDrops: number;
  /** Drops until the agent exited: includes the carousel still arriving while it read the image back and installed. */
  receiveBufferDropsUntilExit: number;
  receiveBufferBytes: number;
  installed: boolean;
  seconds: number;
}

function udp6Counter(lab: NetLab, host: string, name: string): number {
  const text = execFileSync('ip', ['netns', 'exec', lab.ns(host), 'cat', '/proc/net/snmp6'], { encoding: 'utf8' });
  return Number(new RegExp(`^${name}\\s+(\\d+)`, 'm').exec(text)?.[1] ?? 0);
}

export async function measureThroughput(targetPps = 30_000, imageMiB = 48, segmentMiB?: number): Promise<ThroughputResult> {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-pps-'));
  const lab = NetLab.create(['pub', 'dev']);
  try {
    await writeSampleImage(join(dir, 'image'), imageMiB * 1024 * 1024, 3);
    execFileSync(process.execPath, [FWCAST, 'sign', join(dir, 'image'), '--key', KEY, '--model', 'pps', '--version', '1', '--seq', '1', '--out', join(dir, 'r.fwc'),
      ...(segmentMiB ? ['--segment-size', String(Math.round(segmentMiB * 2 ** 20))] : [])]);
    const agent = track(lab.spawn('dev', process.execPath, [...agentNodeFlags(), AGENT, '--model', 'pps', '--key', PUB, '--iface', 'eth0', '--store', join(dir, 'store'), '--once', '--json', '--timeout', '90', '--log-format', 'json']));
    let dropsAtReceived: number | undefined;
    onEvent(agent, 'release.received', { model: 'pps' }, () => (dropsAtReceived = udp6Counter(lab, 'dev', 'Udp6RcvbufErrors')));
    await new Promise((r) => setTimeout(r, 1200));
    const dropsBefore = udp6Counter(lab, 'dev', 'Udp6RcvbufErrors');
    const rate = `${Math.round((targetPps * WIRE_BYTES * 8) / 1e6)}mbit`;
    const publisher = track(lab.spawn('pub', process.execPath, [FWCAST, 'publish', join(dir, 'r.fwc'), '--iface', 'eth0', '--rate', rate, '--duration', '60s', '--cache', join(dir, 'cache'), '--log-format', 'json']));
    const started = performance.now();
    const code = await agent.exited;
    const seconds = (performance.now() - started) / 1000;
    publisher.child.kill('SIGTERM');
    await publisher.exited;
    // The publisher reports its own sending rate: datagrams over the time it was sending.
    const sent = events(publisher.stderr, 'carousel.stopped', { channel: 'fw/pps' })[0];
    const datagrams = Number(events(agent.stderr, 'agent.stats', { model: 'pps' })[0]?.datagrams ?? 0);
    return {
      targetPps,
      achievedPps: Number(sent?.datagramsPerSecond ?? 0),
      datagrams,
      receiveBufferDrops: (dropsAtReceived ?? Number.NaN) - dropsBefore,
      receiveBufferDropsUntilExit: udp6Counter(lab, 'dev', 'Udp6RcvbufErrors') - dropsBefore,
      receiveBufferBytes: Number(execFileSync('cat', ['/proc/sys/net/core/rmem_max'], { encoding: 'utf8' })),
      installed: code === 0,
      seconds,
    };
  } finally {
    lab.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(JSON.stringify(await measureThroughput(Number(process.argv[2] ?? 30_000), Number(process.argv[3] ?? 48), process.argv[4] ? Number(process.argv[4]) : undefined)));
}
