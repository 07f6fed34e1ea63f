import test from 'ava';
import { Carousel } from '../carousel/carousel.js';
import { Pacer, type Send } from '../carousel/pacer.js';
import { Publisher } from '../carousel/publisher.js';
import { HALTS_PER_SECOND, HaltCarousel } from '../carousel/halt-carousel.js';
import { hex } from '../protocol/hex.js';
import { HEADER_SIZE, RELEASE_ID_SIZE } from '../protocol/packet.js';
import { buildRelease, type Release } from '../server/release.js';
import type { Channel } from '../transport/transport.js';
import { MemoryHub, MemoryTransport } from '../transport/memory.js';
import { makeImage, makeKey, prng } from './helpers/fixtures.js';

/** Bytes of IPv6 and UDP headers in front of every datagram on the link. */
const HEADERS = 48;

const channelOf = (name: string, i: number): Channel => ({ name, group: `ff1e::${i + 1}`, port: 4242 });

/** What the pacer handed out, in order: channel, wire bytes, release. */
class Wire {
  readonly sent: Array<{ channel: string; cost: number; release: string }> = [];
  total = 0;
  largest = 0;
  readonly perChannel = new Map<string, number>();
  readonly send: Send = (channel, datagram) => {
    const cost = datagram.length + HEADERS;
    this.sent.push({ channel: channel.name, cost, release: hex(datagram.subarray(HEADER_SIZE - RELEASE_ID_SIZE, HEADER_SIZE)) });
    this.total += cost;
    this.perChannel.set(channel.name, (this.perChannel.get(channel.name) ?? 0) + cost);
    this.largest = Math.max(this.largest, cost);
  };

  /** Wire bytes of the datagrams sent[from .. to), on one channel or all. */
  bytes(channel?: string, from = 0, to = this.sent.length): number {
    let sum = 0;
    for (let i = from; i < to; i++) if (channel === undefined || this.sent[i]!.channel === channel) sum += this.sent[i]!.cost;
    return sum;
  }

  get lastCost(): number {
    return this.sent.at(-1)!.cost;
  }
}

async function releases(sizes: number[]): Promise<Release[]> {
  const key = await makeKey();
  return sizes.map((size, i) => buildRelease({ image: makeImage(size, i + 1), seed: key.seed, model: `model-${i}`, version: '1', seq: 1 }));
}

/** How many datagrams of a fresh carousel of `release` fit in `credit` bytes, each counted as its payload + `headers`, the last one overdrawing. */
function datagramsWithin(release: Release, credit: number, headers: number): number {
  const carousel = new Carousel({ ...release });
  let n = 0;
  for (let spent = 0; spent <= credit; n++) spent += carousel.next().length + headers;
  return n;
}

test('eight models share one rate budget fairly, and by any time the bytes sent are the rate\'s credit, up to one datagram', async (t) => {
  const rate = 40e6; // 5000 bytes per ms
  const pacer = new Pacer({ rate });
  // Different sizes, so rounds end at different times.
  const all = await releases([1, 2, 3, 4, 5, 6, 7, 8].map((i) => 100_000 * i));
  all.forEach((release, i) => pacer.set({ channel: channelOf(`fw/model-${i}`, i), carousel: new Carousel({ ...release }) }));
  const wire = new Wire();
  const step = prng(7);
  let unfair = 0;
  let offRate = 0;
  // Calls at uneven times, 0 to 19 ms apart (within one burst), as a loaded timer would.
  for (let now = 0; now < 2000; now += Math.floor(step() * 20)) {
    pacer.due(now, wire.send);
    const credit = 5000 * now;
    if (!(wire.total > credit && wire.total - wire.lastCost <= credit)) offRate++;
    const levels = all.map((_, i) => wire.perChannel.get(`fw/model-${i}`) ?? 0);
    if (Math.max(...levels) - Math.min(...levels) > wire.largest) unfair++;
  }
  pacer.due(2000, wire.send);
  t.is(offRate, 0, 'calls at which the bytes sent were not the credit rounded up to a whole datagram');
  t.is(unfair, 0, 'calls after which two channels\' bytes differed by more than one datagram');
  // 2 s at 40 Mbit/s: 10 MB on the wire, within the last datagram.
  const total = wire.total;
  t.true(total > 10_000_000 && total - wire.lastCost <= 10_000_000, `${total} bytes`);
  const stats = pacer.stats();
  t.is(stats.length, 8);
  t.is(stats.reduce((a, s) => a + s.bytes + s.packets * HEADERS, 0), total, 'stats count what was sent');
  for (const s of stats) t.true(Math.abs((s.bytes + s.packets * HEADERS) / total - 1 / 8) < 0.001, `${s.channel}: share ${((s.bytes + s.packets * HEADERS) / total).toFixed(4)}`);
});

test('the budget counts 48 bytes of IPv6 and UDP headers per datagram', async (t) => {
  const [release] = await releases([300_000]);
  const pacer = new Pacer({ rate: 8_192_000 }); // 1024 bytes per ms
  pacer.set({ channel: channelOf('fw/a', 0), carousel: new Carousel({ ...release! }) });
  const wire = new Wire();
  for (let now = 0; now <= 1000; now++) pacer.due(now, wire.send);
  const expected = datagramsWithin(release!, 1_024_000, 48);
  t.is(wire.sent.length, expected);
  t.is(pacer.stats()[0]!.packets, expected);
  // Counting payloads only would send a different number: the test tells the two apart.
  t.not(datagramsWithin(release!, 1_024_000, 0), expected);
});

test('a caller held up gets one burst at most: 20 ms of sending, at least two 1500-byte packets', async (t) => {
  const [release] = await releases([2_000_000]);
  for (const { rate, burst } of [{ rate: 40e6, burst: 100_000 }, { rate: 400e3, burst: 3000 }]) {
    const pacer = new Pacer({ rate });
    t.is(pacer.burstBytes, burst);
    pacer.set({ channel: channelOf('fw/a', 0), carousel: new Carousel({ ...release! }) });
    const wire = new Wire();
    pacer.due(0, wire.send);
    t.is(wire.sent.length, 1, 'the first datagram goes out at once');
    const first = wire.sent.length;
    pacer.due(10_000, wire.send); // 10 s late
    const burstBytes = wire.bytes(undefined, first);
    t.true(burstBytes > burst && burstBytes - wire.lastCost <= burst, `${rate} bit/s: a burst of ${burstBytes} bytes`);
    // Then the pace is the rate again, from the end of the burst.
    for (let now = 10_001; now <= 10_100; now++) pacer.due(now, wire.send);
    const after = wire.bytes(undefined, first);
    const credit = burst + (rate / 8000) * 100;
    t.true(after > credit && after - wire.lastCost <= credit, `${rate} bit/s: ${after} bytes by 100 ms after the burst`);
  }
});

test('due says when the next datagram is due, and nothing is due before then', async (t) => {
  const [release] = await releases([100_000]);
  t.is(new Pacer({ rate: 8_192_000 }).due(0, () => t.fail('no channel')), Infinity, 'no channel, nothing due');
  const pacer = new Pacer({ rate: 8_192_000 }); // 1024 bytes per ms: the times below are exact in binary
  pacer.set({ channel: channelOf('fw/a', 0), carousel: new Carousel({ ...release! }) });
  const wire = new Wire();
  let next = pacer.due(5, wire.send);
  for (let i = 0; i < 50; i++) {
    const sent = wire.sent.length;
    // The datagram just sent is paid off exactly when the next one is due.
    t.is(next, 5 + wire.total / 1024);
    t.is(pacer.due(next - 1 / 1024, wire.send), next);
    t.is(wire.sent.length, sent, 'nothing before it is due');
    next = pacer.due(next, wire.send);
    t.is(wire.sent.length, sent + 1, 'one datagram when it is due');
  }
  t.throws(() => pacer.due(next - 2, wire.send), { instanceOf: RangeError, message: /time went backwards/ });
});

test('the rounds limit retires channels; a channel replaced before it starts sends only the new release', async (t) => {
  const key = await makeKey();
  const a = buildRelease({ image: makeImage(20_000, 1), seed: key.seed, model: 'a', version: '1', seq: 1 });
  const b = buildRelease({ image: makeImage(20_000, 2), seed: key.seed, model: 'a', version: '2', seq: 2 });
  const pacer = new Pacer({ rate: 50e6, rounds: 2 });
  const channel = channelOf('fw/a', 0);
  pacer.set({ channel, carousel: new Carousel({ ...a }) });
  pacer.set({ channel, carousel: new Carousel({ ...b }) });
  const wire = new Wire();
  let next = 0;
  for (let now = 0; now < 1000 && next !== Infinity; now += 10) next = pacer.due(now, wire.send);
  t.is(next, Infinity, 'nothing more is due');
  t.true(pacer.idle, 'retired after 2 rounds');
  const stats = pacer.stats();
  t.is(stats.length, 1);
  t.is(stats[0]!.releaseId, hex(b.releaseId));
  t.is(stats[0]!.rounds, 2);
  // Exactly the datagrams of two rounds of b.
  const twin = new Carousel({ ...b });
  let twoRounds = 0;
  for (; twin.round < 2; twoRounds++) twin.next();
  t.is(stats[0]!.packets, twoRounds);
  t.deepEqual(new Set(wire.sent.map((s) => s.release)), new Set([hex(b.releaseId)]));
});

test('a channel replaced or removed mid-run: the new release from the next datagram, and the removed one\'s share goes to the others', async (t) => {
  const [a, b, c, a2] = await releases([400_000, 400_000, 400_000, 300_000]);
  const pacer = new Pacer({ rate: 40e6 }); // 5000 bytes per ms
  const names = ['fw/a', 'fw/b', 'fw/c'];
  [a, b, c].forEach((release, i) => pacer.set({ channel: channelOf(names[i]!, i), carousel: new Carousel({ ...release! }) }));
  const wire = new Wire();
  const runTo = (from: number, to: number): void => {
    for (let now = from; now <= to; now++) pacer.due(now, wire.send);
  };
  const fair = (from: number, to: number, channels: string[], slack: number): void => {
    const shares = channels.map((name) => wire.bytes(name, from, to));
    t.true(Math.max(...shares) - Math.min(...shares) <= slack * wire.largest, `${channels.join(', ')}: ${shares.join(', ')} bytes`);
  };
  runTo(0, 100);
  const replacedAt = wire.sent.length;
  pacer.set({ channel: channelOf('fw/a', 0), carousel: new Carousel({ ...a2! }) });
  runTo(101, 200);
  const removedAt = wire.sent.length;
  pacer.remove('fw/b');
  runTo(201, 300);
  const releasesOn = (channel: string, from: number, to = wire.sent.length): string[] => [...new Set(wire.sent.slice(from, to).filter((s) => s.channel === channel).map((s) => s.release))];
  t.deepEqual(releasesOn('fw/a', 0, replacedAt), [hex(a!.releaseId)]);
  t.deepEqual(releasesOn('fw/a', replacedAt), [hex(a2!.releaseId)]);
  t.deepEqual(releasesOn('fw/b', removedAt), [], 'nothing on a removed channel');
  // Each window's bytes are shared within a datagram or two: the replacement
  // starts level with the others, neither owed nor owing the old release's bytes.
  fair(0, replacedAt, names, 1);
  fair(replacedAt, removedAt, names, 2);
  fair(removedAt, wire.sent.length, ['fw/a', 'fw/c'], 2);
  // The total stays at the rate throughout: 300 ms at 5000 bytes per ms.
  t.true(wire.total > 1_500_000 && wire.total - wire.lastCost <= 1_500_000, `${wire.total} bytes`);
  const stats = pacer.stats();
  t.deepEqual(stats.map((s) => [s.channel, s.releaseId]), [['fw/a', hex(a2!.releaseId)], ['fw/c', hex(c!.releaseId)], ['fw/b', hex(b!.releaseId)]], 'live channels, then the removed one');
  t.is(stats[0]!.packets, wire.sent.slice(replacedAt).filter((s) => s.channel === 'fw/a').length, 'a replaced channel counts its new release');
  t.is(stats[2]!.packets, wire.sent.filter((s) => s.channel === 'fw/b').length);
});

test('the run loop sends through a real transport until the rounds are done', async (t) => {
  const [release] = await releases([100_000]);
  const hub = new MemoryHub();
  const channel = channelOf('fw/a', 0);
  const heard: Uint8Array[] = [];
  const listener = new MemoryTransport(hub);
  await listener.join(channel, (d) => heard.push(d));
  const publisher = new Publisher({ transport: new MemoryTransport(hub), rate: 20e6, rounds: 1 });
  publisher.set({ channel, carousel: new Carousel({ ...release! }) });
  const ticks: number[] = [];
  // About 100 datagrams at 20 Mbit/s: some 50 ms; the duration only bounds a failure.
  await publisher.run({ durationMs: 10_000, onTick: (ms) => ticks.push(ms), tickMs: 10 });
  t.true(publisher.idle);
  const [stats] = publisher.stats();
  t.is(stats!.rounds, 1);
  t.is(heard.length, stats!.packets);
  t.is(heard.reduce((a, d) => a + d.length, 0), stats!.bytes);
  t.true(ticks.length >= 2 && ticks.at(-1)! < 10_000, `ticks at ${ticks.map(Math.round).join(', ')} ms`);
  await listener.close();
});

test('a carousel whose datagrams are longer than the transport carries is refused by set(), with the sizes named', async (t) => {
  const key = await makeKey();
  const image = makeImage(200_000, 9);
  const wide = buildRelease({ image, seed: key.seed, model: 'rpi4', version: '1', seq: 1, datagramSize: 1400 });
  const plain = buildRelease({ image, seed: key.seed, model: 'rpi4', version: '1', seq: 1 });
  const longestOf: number[] = [];
  for (const [release, limit] of [[wide, 1400], [plain, 1232]] as const) {
    // largestDatagram is what the carousel really sends: the longest datagram over two rounds.
    const carousel = new Carousel({ ...release });
    let longest = 0;
    while (carousel.round < 2) longest = Math.max(longest, carousel.next().length);
    t.is(carousel.largestDatagram, longest);
    t.true(longest <= limit && longest > limit - 40, `${longest} bytes for --datagram-size ${limit}`);
    longestOf.push(longest);
  }
  const hub = new MemoryHub();
  const narrow = new Publisher({ transport: new MemoryTransport(hub, { maxDatagramSize: 1232 }), rate: 1e6 });
  const error = t.throws(() => narrow.set({ channel: channelOf('fw/rpi4', 0), carousel: new Carousel({ ...wide }) }));
  t.is((error as { reason?: string }).reason, 'limit-exceeded');
  t.true(error!.message.includes(`${longestOf[0]} bytes`) && error!.message.includes('at most 1232'), error!.message);
  t.true(narrow.idle, 'nothing was put on the air');
  const roomy = new Publisher({ transport: new MemoryTransport(hub, { maxDatagramSize: 1400 }), rate: 1e6 });
  roomy.set({ channel: channelOf('fw/rpi4', 0), carousel: new Carousel({ ...wide }) });
  t.false(roomy.idle);
});

test('a channel that carries only halts sends each halt HALTS_PER_SECOND times a second; the release channels beside it keep the rest of the rate, and a channel that comes later starts level with them', async (t) => {
  const rate = 8e6; // 1000 bytes per ms
  const pacer = new Pacer({ rate });
  const [a, b] = await releases([400_000, 400_000]);
  // Two halts of 200 bytes (their content does not matter to the pacer).
  const halts = new HaltCarousel([new Uint8Array(200).fill(1), new Uint8Array(200).fill(2)]);
  pacer.set({ channel: channelOf('fw/halted', 0), carousel: halts });
  pacer.set({ channel: channelOf('fw/a', 1), carousel: new Carousel({ ...a! }) });
  const wire = new Wire();
  let now = 0;
  for (; now <= 2000; now++) pacer.due(now, wire.send);
  const haltDatagrams = wire.sent.filter((d) => d.channel === 'fw/halted').length;
  // 2 s, two halts each HALTS_PER_SECOND times a second (the first pair at once).
  t.true(Math.abs(haltDatagrams - 2 * HALTS_PER_SECOND * 2) <= 2, `${haltDatagrams} halt datagrams in 2 s`);
  const total = wire.total;
  t.true(wire.bytes('fw/a') > total * 0.99, `the release channel sent ${wire.bytes('fw/a')} of ${total} bytes`);
  t.true(total > 2_000_000 && total - wire.lastCost <= 2_001_000, 'the rate is all used');

  // A release channel that comes now shares evenly with fw/a from its first datagram, not owed the halts' lag.
  pacer.set({ channel: channelOf('fw/b', 2), carousel: new Carousel({ ...b! }) });
  const from = wire.sent.length;
  for (; now <= 3000; now++) pacer.due(now, wire.send);
  const ab = [wire.bytes('fw/a', from), wire.bytes('fw/b', from)];
  t.true(Math.abs(ab[0]! - ab[1]!) <= wire.largest, `fw/a ${ab[0]} and fw/b ${ab[1]} bytes in the next second`);

  // Halts alone: nothing is due before the next halt, and due() says when that is.
  pacer.remove('fw/a');
  pacer.remove('fw/b');
  const before = wire.sent.length;
  const next = pacer.due(now, wire.send);
  t.true(next > now && next <= now + 1000 / HALTS_PER_SECOND, `next halt at ${next} (now ${now})`);
  pacer.due(Math.floor(next) - 1 > now ? Math.floor(next) - 1 : now, wire.send);
  t.is(wire.sent.length, before, 'nothing is sent before then');
  pacer.due(next, wire.send);
  t.true(wire.sent.length > before, 'a halt goes out when due');
});

test('a maxRate that is not a positive rate is refused', async (t) => {
  const pacer = new Pacer({ rate: 1e6 });
  for (const maxRate of [0, -1, Number.NaN, Infinity]) {
    t.throws(() => pacer.set({ channel: channelOf('fw/x', 0), carousel: { releaseId: new Uint8Array(16), round: 0, largestDatagram: 10, maxRate, next: () => new Uint8Array(10) } }), { instanceOf: RangeError });
  }
});
