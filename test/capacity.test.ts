/**
 * `fwcast-agent capacity`: the self-test drives the real agent with a
 * synthetic signed release and reports costs and a sustained rate that agree
 * with each other.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { rateHoldingStall, type CapacityResult } from '../device-agent/capacity.js';
import { MIN_RECEIVE_BUFFER, receiveBufferCap } from '../transport/receive-buffer.js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeImage } from './helpers/fixtures.js';
import { FWCAST_AGENT, fwcast } from './helpers/processes.js';

function capacity(...args: string[]): CapacityResult {
  return JSON.parse(execFileSync(process.execPath, [FWCAST_AGENT, 'capacity', '--json', ...args], { encoding: 'utf8', timeout: 60_000 })) as CapacityResult;
}

test('the self-test prints sane JSON: positive costs, a rate the costs and the CPU used account for', (t) => {
  const r = capacity('--seconds', '1', '--loss', '10', '--segment-mib', '0.5');
  t.log(JSON.stringify(r));
  t.is(r.loss, 0.1);
  t.true(r.imageBytes >= 4 * 2 ** 19 && r.segmentSize >= 2 ** 19 && r.segmentSize < 2 ** 19 + 1208);
  t.true(r.transfers >= 1);
  for (const k of ['cpuPerDatagramUs', 'cpuPerMiBDecodedMs', 'receivedDatagramsPerSecond', 'wireBitsPerSecond', 'longestStallMs', 'stallBitsPerSecond', 'recommendedRate', 'cpuUtilisation', 'cpus'] as const) {
    t.true(Number.isFinite(r[k]) && r[k] > 0, `${k} = ${r[k]}`);
  }
  // One CPU second per wall second at most for a single-threaded agent, never more than the CPUs it has.
  t.true(r.cpuUtilisation <= r.cpus * 1.05, `utilisation ${r.cpuUtilisation} of ${r.cpus} CPUs`);
  // The costs explain the CPU used: datagrams × their cost + MiB decoded × its cost ≈ CPU per second.
  const mibPerSecond = (r.receivedDatagramsPerSecond / r.receivedDatagrams) * (r.imageBytes / 2 ** 20);
  const explained = (r.receivedDatagramsPerSecond * r.cpuPerDatagramUs) / 1e6 + (mibPerSecond * r.cpuPerMiBDecodedMs) / 1e3;
  t.true(Math.abs(explained - r.cpuUtilisation) <= 0.25 * r.cpuUtilisation, `costs explain ${explained.toFixed(3)} CPU/s, measured ${r.cpuUtilisation.toFixed(3)}`);
  // The wire carries what was received and what was lost.
  const wire = (r.receivedDatagramsPerSecond / (r.receivedDatagrams / r.wireDatagrams)) * r.datagramBytes * 8;
  t.true(Math.abs(wire - r.wireBitsPerSecond) <= 0.05 * r.wireBitsPerSecond, `wire ${wire} vs ${r.wireBitsPerSecond}`);
  t.true(r.wireDatagrams > r.receivedDatagrams && r.receivedDatagrams / r.wireDatagrams > 0.8 && r.receivedDatagrams / r.wireDatagrams < 0.99, 'about 10% lost');
  // The lower of half the sustained rate and a third of the stall-bound one, rounded down to two digits.
  const bound = Math.min(r.wireBitsPerSecond / 2, r.stallBitsPerSecond / 3);
  t.true(r.recommendedRate <= bound && r.recommendedRate >= 0.9 * bound, `${r.recommendedRate} for ${bound}`);
  t.deepEqual(r.stallBitsPerSecond, rateHoldingStall(r.longestStallMs / 1000, receiveBufferCap()));
  // What the agent dropped is what a carousel repeats after a segment is done, never a fault.
  t.deepEqual(Object.keys(r.dropped).filter((k) => !['manifest-repeat', 'auth-repeat', 'segment-complete', 'unknown-release'].includes(k)), []);
});

test('the stall-bound rate: the buffer the agent asks for at that rate, within the kernel\'s cap, holds the stall', (t) => {
  const mib = 2 ** 20;
  // Within the 250 ms budget the buffer grows with the rate: only the cap binds.
  t.is(rateHoldingStall(0.1, 4 * mib), (8 * 4 * mib) / 0.1);
  t.is(rateHoldingStall(0.1, undefined), (8 * 64 * mib) / 0.1);
  // Beyond it, only the 1 MiB floor is sure to be asked for.
  t.is(rateHoldingStall(0.5, 4 * mib), (8 * MIN_RECEIVE_BUFFER) / 0.5);
  t.is(rateHoldingStall(0.5, 0.5 * mib), (8 * 0.5 * mib) / 0.5);
});

test('the text table names the costs and the recommended publisher rate', (t) => {
  const text = execFileSync(process.execPath, [FWCAST_AGENT, 'capacity', '--seconds', '0.5', '--segment-mib', '0.25'], { encoding: 'utf8', timeout: 60_000 });
  t.regex(text, /CPU per datagram \(authenticate \+ store\) +\d+\.\d µs/);
  t.regex(text, /CPU per MiB decoded .* +\d+\.\d ms/);
  t.regex(text, /longest stall .* +\d+ ms/);
  t.regex(text, /--rate \d+mbit/);
});

test('regression: by default the self-test decodes segments as large as `fwcast sign` makes (its longest stall is one segment\'s decode)', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-capacity-'));
  fwcast('keygen', '--out', dir);
  writeFileSync(join(dir, 'image.bin'), makeImage(7 << 20, 1));
  fwcast('sign', join(dir, 'image.bin'), '--key', join(dir, 'publisher.key'), '--model', 'rpi4', '--version', '1.0.0', '--seq', '1', '--out', join(dir, 'release.fwc'));
  const signed = JSON.parse(fwcast('inspect', join(dir, 'release.fwc'), '--json')) as { fec: { segmentSize: number } };
  const r = capacity('--seconds', '0.1');
  t.is(r.segmentSize, signed.fec.segmentSize);
});

test('regression: with the storage thread, decoding is measured (the decode runs in the thread, while symbols are set aside)', (t) => {
  const r = capacity('--seconds', '1', '--loss', '10', '--segment-mib', '0.5', '--storage-thread');
  t.log(`${r.cpuPerDatagramUs.toFixed(1)} µs/datagram, ${r.cpuPerMiBDecodedMs.toFixed(1)} ms/MiB decoded, ${r.transfers} transfers`);
  t.true(r.cpuPerMiBDecodedMs > 1, `${r.cpuPerMiBDecodedMs} ms per MiB decoded at 10% loss`);
  t.true(r.recommendedRate > 0);
});

test('bad options are refused with the option named', (t) => {
  for (const [args, name] of [[['--loss', '100'], '--loss'], [['--segment-mib', '0'], '--segment-mib'], [['--seconds', '-1'], 'seconds']] as const) {
    const err = t.throws(() => execFileSync(process.execPath, [FWCAST_AGENT, 'capacity', ...args], { encoding: 'utf8', stdio: 'pipe' }));
    t.true(String((err as { stderr?: string }).stderr).includes(name), String((err as { stderr?: string }).stderr));
  }
});
