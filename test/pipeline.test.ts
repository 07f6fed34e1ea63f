import test from 'ava';
import { Carousel } from '../carousel/carousel.js';
import { buildRelease } from '../server/release.js';
import { Receiver, type ReceiverEvent } from '../device-agent/receiver/receiver.js';
import { decodePacket, PacketType } from '../protocol/packet.js';
import { makeImage, makeKey, prng, sha256hex } from './helpers/fixtures.js';

const NOW = 1_800_000_000;

function receive(receiver: Receiver, carousel: Carousel, lossRate: number, seed: number, maxDatagrams: number) {
  const lose = prng(seed);
  const image = new Uint8Array(carousel.manifest.imageSize);
  const events: ReceiverEvent[] = [];
  let sent = 0;
  while (sent < maxDatagrams) {
    const datagram = carousel.next();
    sent++;
    if (lose() < lossRate) continue;
    for (const e of receiver.push(datagram, NOW)) {
      events.push(e);
      if (e.kind === 'segment') image.set(e.bytes!, e.segment.offset);
      if (e.kind === 'complete') return { image, events, sent };
    }
  }
  return { image: undefined, events, sent };
}

test('a receiver rebuilds a multi-segment image through 30% loss, from symbols of later rounds', async (t) => {
  const key = await makeKey();
  const source = makeImage(3 * 1024 * 1024 + 777, 7);
  const release = buildRelease({ image: source, seed: key.seed, model: 'rpi4', version: '1.0.0', seq: 1, created: NOW, segmentSize: 1 << 20 });
  t.is(release.manifest.segments.length, 3, '1 MiB segments: 3 MiB and 777 bytes make 3 segments of 869 symbols');
  const carousel = new Carousel({ ...release });
  const receiver = new Receiver({ model: 'rpi4', trusted: [key] });
  const result = receive(receiver, carousel, 0.3, 42, carousel.roundLength * 4);
  t.truthy(result.image, 'image completed');
  t.is(sha256hex(result.image!), sha256hex(source));
  t.true(carousel.round >= 1, 'needed repair symbols beyond round 0');
  t.is(result.events.filter((e) => e.kind === 'accepted').length, 1);
  t.is(receiver.stats.dropped['segment-digest-mismatch'] ?? 0, 0);
});

test('a lossless receiver completes within the first round; authentication costs under 3% of the bytes', async (t) => {
  const key = await makeKey();
  const source = makeImage(2 * 1024 * 1024 + 5, 3);
  const release = buildRelease({ image: source, seed: key.seed, model: 'm', version: '1', seq: 1, created: NOW });
  const carousel = new Carousel({ ...release });
  const receiver = new Receiver({ model: 'm', trusted: [key] });
  const bytes = { [PacketType.Manifest]: 0, [PacketType.Symbol]: 0, [PacketType.Auth]: 0, [PacketType.Root]: 0, [PacketType.Halt]: 0 };
  let image: Uint8Array | undefined;
  const assembled = new Uint8Array(source.length);
  while (!image && carousel.round === 0) {
    const datagram = carousel.next();
    bytes[decodePacket(datagram).type] += datagram.length;
    for (const e of receiver.push(datagram, NOW)) {
      if (e.kind === 'segment') assembled.set(e.bytes!, e.segment.offset);
      if (e.kind === 'complete') image = assembled;
    }
  }
  t.truthy(image, 'complete within round 0');
  t.is(sha256hex(image!), sha256hex(source));
  const k = release.manifest.segments.reduce((n, s) => n + s.sourceSymbols, 0);
  t.is(receiver.stats.symbolsAccepted, k, 'exactly K symbols were needed');
  const authShare = bytes[PacketType.Auth] / bytes[PacketType.Symbol];
  t.true(authShare <= 0.03, `AUTH bytes are ${(authShare * 100).toFixed(2)}% of symbol bytes`);
  t.true(bytes[PacketType.Manifest] / bytes[PacketType.Symbol] <= 0.015, 'manifest repeats cost under 1.5%');
});

test('coded AUTH: over one cycle of the carousel every parity piece goes out once, and round 0 carries only the parity of groups that start in it', async (t) => {
  const key = await makeKey();
  const release = buildRelease({ image: makeImage(3 * 1024 * 1024 + 777, 8), seed: key.seed, model: 'm', version: '1', seq: 1, created: NOW });
  const layout = release.symbolSet!.layout;
  const m = release.manifest;
  t.true(m.segments.every((s) => s.published === 3 * s.sourceSymbols), 'R = 200: three rounds make one cycle');
  const carousel = new Carousel({ ...release });
  const sent = new Map<number, number>();
  const inRound0 = new Set<number>();
  while (carousel.round < 3) {
    const round = carousel.round;
    const p = decodePacket(carousel.next());
    if (p.type !== PacketType.Auth || p.leaf < layout.chunkLeaves) continue;
    sent.set(p.leaf, (sent.get(p.leaf) ?? 0) + 1);
    if (round === 0) inRound0.add(p.leaf);
  }
  t.is(sent.size, layout.leaves - layout.chunkLeaves, 'every parity leaf');
  t.true([...sent.values()].every((n) => n === 1), 'each once');
  for (const leaf of inRound0) {
    const { first } = layout.parity(leaf);
    const chunk = layout.chunk(first);
    t.true(chunk.firstEsi < m.segments[chunk.segment]!.sourceSymbols, `parity leaf ${leaf} belongs to a group of round 0`);
  }
});

test('regression: a round counts as done only once its last datagram has been handed out (publish --rounds N sends every symbol of N rounds)', async (t) => {
  const key = await makeKey();
  // Small enough that the round's last symbol is queued behind AUTH datagrams.
  for (const size of [20_000, 150_000, 1_100_000]) {
    const release = buildRelease({ image: makeImage(size, 3), seed: key.seed, model: 'rpi4', version: '1', seq: 1, created: NOW });
    const carousel = new Carousel({ ...release });
    const m = release.manifest;
    for (let round = 1; round <= 2; round++) {
      const heard = m.segments.map(() => new Set<number>());
      while (carousel.round < round) {
        const p = decodePacket(carousel.next());
        if (p.type === PacketType.Symbol) heard[p.segment]!.add(p.esi);
      }
      for (const seg of m.segments) {
        const expected = Array.from({ length: seg.sourceSymbols }, (_, i) => ((round - 1) * seg.sourceSymbols + i) % seg.published);
        t.deepEqual([...heard[seg.index]!].sort((a, b) => a - b), expected.sort((a, b) => a - b), `${size} bytes, round ${round - 1}, segment ${seg.index}`);
      }
    }
  }
});
