import test from 'ava';
import { Carousel } from '../carousel/carousel.js';
import { Publisher, IPV6_UDP_HEADERS } from '../carousel/publisher.js';
import { buildRelease } from '../server/release.js';
import { MemoryHub, MemoryTransport } from '../transport/memory.js';
import type { Channel } from '../transport/transport.js';
import { makeImage, makeKey } from './helpers/fixtures.js';

/** What the publisher puts on the wire (payload and IPv6/UDP headers), per channel, as a listener hears it. */
async function wireBytes(hub: MemoryHub, channels: Channel[]): Promise<Map<string, number>> {
  const bytes = new Map<string, number>();
  const listener = new MemoryTransport(hub);
  for (const channel of channels) {
    await listener.join(channel, (data) => bytes.set(channel.name, (bytes.get(channel.name) ?? 0) + data.length + IPV6_UDP_HEADERS));
  }
  return bytes;
}

test('eight models share one rate budget fairly, and the total stays at the rate', async (t) => {
  const key = await makeKey();
  const hub = new MemoryHub();
  const rate = 40e6;
  const publisher = new Publisher({ transport: new MemoryTransport(hub), rate });
  const channels = Array.from({ length: 8 }, (_, i) => ({ name: `fw/model-${i}`, group: `ff1e::${i + 1}`, port: 4242 }));
  const bytes = await wireBytes(hub, channels);
  for (const [i, channel] of channels.entries()) {
    // Different sizes, so rounds end at different times.
    const release = buildRelease({ image: makeImage(100_000 * (i + 1), i + 1), seed: key.seed, model: `model-${i}`, version: '1', seq: 1 });
    publisher.set({ channel, carousel: new Carousel({ ...release }) });
  }
  const started = performance.now();
  await publisher.run({ durationMs: 2000 });
  const seconds = (performance.now() - started) / 1000;
  const shares = [...bytes.values()];
  t.is(shares.length, 8);
  const total = shares.reduce((a, b) => a + b, 0);
  for (const share of shares) t.true(Math.abs(share / total - 1 / 8) < 0.01, `share ${(share / total).toFixed(4)} of the rate`);
  const achieved = (total * 8) / seconds;
  t.true(achieved <= rate * 1.05, `sent ${(achieved / 1e6).toFixed(1)} Mbit/s, cap 40`);
  t.true(achieved >= rate * 0.8, `sent ${(achieved / 1e6).toFixed(1)} Mbit/s, cap 40`);
});

test('a channel replaced while running switches to the new release; rounds limit retires channels', async (t) => {
  const key = await makeKey();
  const publisher = new Publisher({ transport: new MemoryTransport(new MemoryHub()), rate: 50e6, rounds: 2 });
  const a = buildRelease({ image: makeImage(20_000, 1), seed: key.seed, model: 'a', version: '1', seq: 1 });
  const b = buildRelease({ image: makeImage(20_000, 2), seed: key.seed, model: 'a', version: '2', seq: 2 });
  const channel = { name: 'fw/a', group: 'ff1e::a', port: 4242 };
  publisher.set({ channel, carousel: new Carousel({ ...a }) });
  publisher.set({ channel, carousel: new Carousel({ ...b }) });
  await publisher.run({ durationMs: 5000 });
  t.true(publisher.idle, 'retired after 2 rounds');
  const stats = publisher.stats();
  t.is(stats.length, 1);
  t.is(stats[0]!.releaseId, Buffer.from(b.releaseId).toString('hex'));
  t.is(stats[0]!.rounds, 2);
});
