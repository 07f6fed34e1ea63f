import test from 'ava';
import { Carousel } from '../carousel/carousel.js';
import { Publisher, IPV6_UDP_HEADERS } from '../carousel/publisher.js';
import { buildRelease } from '../server/release.js';
import type { Channel, Transport } from '../transport/transport.js';
import { makeImage, makeKey } from './helpers/fixtures.js';

/** Counts what the publisher hands to the network, per channel. */
class CountingTransport implements Transport {
  readonly description = 'counting';
  readonly sendErrors = 0;
  readonly bytes = new Map<string, number>();
  async join(): Promise<void> {}
  async open(): Promise<void> {}
  send(channel: Channel, data: Uint8Array): void {
    this.bytes.set(channel.name, (this.bytes.get(channel.name) ?? 0) + data.length + IPV6_UDP_HEADERS);
  }
  async close(): Promise<void> {}
}

test('eight models share one rate budget fairly, and the total stays at the rate', async (t) => {
  const key = await makeKey();
  const transport = new CountingTransport();
  const rate = 40e6;
  const publisher = new Publisher({ transport, rate });
  for (let i = 0; i < 8; i++) {
    // Different sizes, so rounds end at different times.
    const release = buildRelease({ image: makeImage(100_000 * (i + 1), i + 1), seed: key.seed, model: `model-${i}`, version: '1', seq: 1 });
    publisher.set({ channel: { name: `fw/model-${i}`, group: `ff1e::${i + 1}`, port: 4242 }, carousel: new Carousel({ ...release }) });
  }
  const started = performance.now();
  await publisher.run({ durationMs: 2000 });
  const seconds = (performance.now() - started) / 1000;
  const shares = [...transport.bytes.values()];
  t.is(shares.length, 8);
  const total = shares.reduce((a, b) => a + b, 0);
  for (const share of shares) t.true(Math.abs(share / total - 1 / 8) < 0.01, `share ${(share / total).toFixed(4)} of the rate`);
  const achieved = (total * 8) / seconds;
  t.true(achieved <= rate * 1.05, `sent ${(achieved / 1e6).toFixed(1)} Mbit/s, cap 40`);
  t.true(achieved >= rate * 0.8, `sent ${(achieved / 1e6).toFixed(1)} Mbit/s, cap 40`);
});

test('a channel replaced while running switches to the new release; rounds limit retires channels', async (t) => {
  const key = await makeKey();
  const transport = new CountingTransport();
  const publisher = new Publisher({ transport, rate: 50e6, rounds: 2 });
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
