/**
 * A Pi-class agent in the lab: fwcast-agent limited to a quarter of a core
 * (scripts/lab/cpu-limit.ts: a cgroup CFS quota) measures its own capacity
 * with `fwcast-agent capacity` under that limit, then receives a release over
 * real multicast from a publisher sending at the rate the self-test
 * recommends, and installs it with no datagram dropped by its kernel socket.
 * In the slow target: a claim about rate needs the machine to itself (in the
 * main suite, a loaded machine made it drop datagrams the quota did not).
 */
import test from 'ava';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CapacityResult } from '../../device-agent/capacity.js';
import { channelGroup, DEFAULT_PORT } from '../../protocol/channel.js';
import { CpuLimit } from '../../scripts/lab/cpu-limit.js';
import { receiveBufferDrops } from '../../transport/receive-buffer.js';
import { NetLab } from '../../scripts/lab/netlab.js';
import { makeImage, sha256hex } from '../helpers/fixtures.js';
import { events, exitCode, FWCAST, FWCAST_AGENT, fwcast, track, waitForEvent } from '../helpers/processes.js';

const CPUS = 0.25;

for (const loss of [0, 10]) {
  test.serial(`an agent on a quarter of a core installs at its self-tested rate with no socket-buffer drops (${loss}% loss)`, async (t) => {
    const limit = CpuLimit.create(CPUS);
    const lab = NetLab.create(['pub', 'a']);
    t.teardown(async () => {
      lab.destroy();
      await limit.remove();
    });

    // Its capacity under the same limit, as an operator would measure it on the board.
    const [sh, shArgs] = limit.wrap(process.execPath, [FWCAST_AGENT, 'capacity', '--loss', String(loss), '--json']);
    const capacity = JSON.parse(execFileSync(sh, shArgs, { encoding: 'utf8', timeout: 120_000 })) as CapacityResult;
    t.true(limit.stats().throttledPeriods > 0, 'the quota bound the self-test: it ran as a slower board would');
    t.log(`self-test under ${CPUS} CPU at ${loss}% loss: ${capacity.cpuPerDatagramUs.toFixed(1)} µs/datagram, ${capacity.cpuPerMiBDecodedMs.toFixed(1)} ms/MiB decoded, ` +
      `sustains ${(capacity.wireBitsPerSecond / 1e6).toFixed(1)} Mbit/s on the wire, longest stall ${capacity.longestStallMs.toFixed(0)} ms ` +
      `(held up to ${(capacity.stallBitsPerSecond / 1e6).toFixed(1)} Mbit/s), recommends ${capacity.recommendedRate / 1e6} Mbit/s`);
    t.is(capacity.cpus, CPUS, 'the self-test sees the cgroup\'s quota');
    t.true(capacity.cpuUtilisation <= CPUS * 1.2, `CPU use ${capacity.cpuUtilisation} under a ${CPUS} CPU quota`);
    const rate = capacity.recommendedRate;
    t.true(rate > 0);

    const dir = mkdtempSync(join(tmpdir(), 'fwcast-cpulimit-'));
    fwcast('keygen', '--out', dir);
    const image = makeImage(4 * 1024 * 1024, 5);
    writeFileSync(join(dir, 'image.bin'), image);
    fwcast('sign', join(dir, 'image.bin'), '--key', join(dir, 'publisher.key'), '--model', 'rpi4', '--version', '1.0.1', '--seq', '1', '--out', join(dir, 'release.fwc'));
    if (loss > 0) lab.setLoss('a', loss);

    // The cgroup is joined outside the namespace: `ip netns exec` mounts a /sys of the namespace's own, without cgroups.
    const [agentSh, agentArgs] = limit.wrap('ip', ['netns', 'exec', lab.ns('a'), process.execPath, FWCAST_AGENT, '--model', 'rpi4', '--key', join(dir, 'publisher.pub'), '--iface', 'eth0', '--store', join(dir, 'store'),
      '--expected-rate', String(rate), '--once', '--json', '--timeout', '90', '--log-format', 'json']);
    const agent = track(spawn(agentSh, agentArgs, { stdio: ['ignore', 'pipe', 'pipe'] }));
    t.teardown(() => agent.child.kill('SIGKILL'));
    // The agent's socket as the kernel sees it, read from outside (the agent reports its own total only at exit).
    const drops = (): number | undefined => receiveBufferDrops(channelGroup('fw/rpi4'), DEFAULT_PORT, agent.child.pid!);
    await waitForEvent(agent, 'agent.listening', {}, 30_000);
    const before = limit.stats();
    const started = Date.now();
    const publisher = track(lab.spawn('pub', process.execPath, [FWCAST, 'publish', join(dir, 'release.fwc'), '--iface', 'eth0', '--rate', String(rate), '--duration', '100s', '--log-format', 'json']));
    t.teardown(() => publisher.child.kill('SIGKILL'));
    // Drops until every segment matched its digest: what FEC had to pay for. Later ones only hit a release already complete.
    let dropsWhileReceiving: number | undefined;
    const watch = setInterval(() => {
      if (events(agent.stderr, 'release.received').length === 0) dropsWhileReceiving = drops() ?? dropsWhileReceiving;
      else clearInterval(watch);
    }, 10);
    t.teardown(() => clearInterval(watch));
    const code = await exitCode(agent, 110_000);
    const seconds = (Date.now() - started) / 1000;
    publisher.child.kill('SIGTERM');
    t.is(code, 0, agent.stderr);
    const installed = JSON.parse(agent.stdout.trim().split('\n').pop()!) as { sha256: string };
    t.is(installed.sha256, sha256hex(image));
    const stats = events(agent.stderr, 'agent.stats')[0]!;
    const received = events(agent.stderr, 'release.received')[0];
    const after = limit.stats();
    const throttled = { periods: after.throttledPeriods - before.throttledPeriods, ms: after.throttledMs - before.throttledMs };
    t.log(`${(rate / 1e6).toFixed(0)} Mbit/s, ${loss}% loss: installed in ${seconds.toFixed(1)} s, ${stats.datagrams} datagrams received, ` +
      `${stats.receiveBufferDrops} dropped by the socket buffer (${dropsWhileReceiving} of them before the release was complete); ` +
      `throttled in ${throttled.periods} periods (${Math.round(throttled.ms)} ms); longest event-loop stall while receiving ${received?.stallMs} ms`);
    t.deepEqual(events(agent.stderr, 'agent.receive-buffer-capped'), [], 'the kernel granted the buffer the rate needs');
    t.is(typeof stats.receiveBufferDrops, 'number');
    t.is(stats.receiveBufferDrops, 0, 'no datagram the network delivered was lost in the agent\'s socket buffer');
  });
}
