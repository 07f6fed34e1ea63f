/**
 * Releases for protocol and receiver tests: the fixed-key example release whose
 * bytes are published in protocol/SPEC.md, and small helpers to drive a
 * Receiver from a Carousel in memory.
 */
import * as ed25519 from '../../protocol/ed25519.js';
import { keyId } from '../../protocol/keys.js';
import type { Receiver, ReceiverEvent } from '../../device-agent/receiver/receiver.js';
import { Carousel } from '../../carousel/carousel.js';
import { buildRelease, type Release, type ReleaseInit } from '../../server/release.js';
import type { TestKey } from './fixtures.js';

/** Parses annotated hex: `#` starts a comment to the end of the line; whitespace is ignored. */
export function unhex(annotated: string): Uint8Array {
  const digits = annotated.replace(/#[^\n]*/g, '').replace(/\s+/g, '');
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(digits)) throw new Error(`not hex: ${digits}`);
  return new Uint8Array(Buffer.from(digits, 'hex'));
}

export const toHex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

/** RFC 8032 §7.1 TEST 1 secret key (seed), so the public key can be checked against the RFC. */
export const FIXED_SEED = unhex('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60');

export async function fixedKey(): Promise<TestKey> {
  await ed25519.ready();
  const publicKey = ed25519.publicKeyFromSeed(FIXED_SEED);
  return { seed: FIXED_SEED, publicKey, kid: keyId(publicKey) };
}

/** The example image of SPEC.md §12: byte i is i mod 251, 5000 bytes. */
export function exampleImage(): Uint8Array {
  return new Uint8Array(5000).map((_, i) => i % 251);
}

/** The parameters of the SPEC.md example release (image and key aside). */
export const EXAMPLE_INIT = {
  model: 'rpi4',
  version: '1.2.3',
  seq: 7,
  created: 1_800_000_000,
  expires: 1_900_000_000,
  segmentSize: 2416,
  repairPercent: 50,
  // The SPEC.md vectors were made with 12-byte digests and uncoded chunks (§12.2).
  digestLength: 12,
  chunkCoding: false,
} as const;

/** The SPEC.md example release, signed with FIXED_SEED (Ed25519 is deterministic). */
export function exampleRelease(): Release {
  return buildRelease({ ...EXAMPLE_INIT, image: exampleImage(), seed: FIXED_SEED });
}

/** A release for receiver tests: defaults to a multi-segment image of ~30 kB. */
export function testRelease(key: TestKey, init: Partial<ReleaseInit> & { imageSeed?: number } = {}): Release {
  const { imageSeed, ...rest } = init;
  const image = rest.image ?? new Uint8Array(30_000).map((_, i) => (i * 31 + (imageSeed ?? 0) * 7 + (i >>> 8)) & 0xff);
  return buildRelease({
    model: 'rpi4',
    version: '1.0.0',
    seq: 1,
    created: 1_800_000_000,
    segmentSize: 4 * 1208,
    repairPercent: 200,
    ...rest,
    image,
    seed: key.seed,
  });
}

export function carouselOf(release: Release, manifestEvery = 100): Carousel {
  return new Carousel({ ...release, manifestEvery });
}

/** The next `count` datagrams of a carousel. */
export function take(carousel: Carousel, count: number): Uint8Array[] {
  return Array.from({ length: count }, () => carousel.next());
}

export interface Feed {
  events: ReceiverEvent[];
  image: Uint8Array | undefined;
}

/** Pushes datagrams, collecting events and assembling segments into an image buffer. */
export function feed(receiver: Receiver, datagrams: Iterable<Uint8Array>, now: number, imageSize?: number): Feed {
  const events: ReceiverEvent[] = [];
  let image = imageSize === undefined ? undefined : new Uint8Array(imageSize);
  for (const d of datagrams) {
    for (const e of receiver.push(d, now)) {
      events.push(e);
      if (e.kind === 'accepted' && !image) image = new Uint8Array(e.release.manifest.imageSize);
      if (e.kind === 'segment') image?.set(e.bytes!, e.segment.offset);
    }
  }
  return { events, image };
}

/** Runs a carousel into a receiver until 'complete' or `max` datagrams. */
export function runUntilComplete(receiver: Receiver, carousel: Carousel, now: number, max: number): Feed & { sent: number } {
  const events: ReceiverEvent[] = [];
  const image = new Uint8Array(carousel.manifest.imageSize);
  for (let sent = 1; sent <= max; sent++) {
    for (const e of receiver.push(carousel.next(), now)) {
      events.push(e);
      if (e.kind === 'segment') image.set(e.bytes!, e.segment.offset);
      if (e.kind === 'complete') return { events, image, sent };
    }
  }
  return { events, image: undefined, sent: max };
}
