/**
 * The root of trust on the channel, in memory: a Receiver provisioned with a
 * root hears ROOT datagrams from a Carousel (protocol/packet.ts type 4) and
 * judges manifests under the newest root. One test per attack of issue 16,
 * each refused with its named reason and counted under it.
 */
import test from 'ava';
import { Carousel } from '../carousel/carousel.js';
import { Receiver, type ReceiverEvent } from '../device-agent/receiver/receiver.js';
import { encodeCbor } from '../protocol/cbor.js';
import * as ed25519 from '../protocol/ed25519.js';
import { decodePacket, encodeRootFragment, PacketType } from '../protocol/packet.js';
import { encodeRootChain, trustRoot } from '../protocol/root.js';
import type { Release } from '../server/release.js';
import { fixedKey } from './helpers/fuzz.js';
import { signedRoot, T0 } from './helpers/roots.js';
import { testRelease } from './helpers/releases.js';
import { createHash } from 'node:crypto';

await ed25519.ready();
const NOW = T0 + 100;
const [r1, r2, r3, r4] = [1, 2, 3, 4].map(fixedKey) as Array<ReturnType<typeof fixedKey>>;
const A = fixedKey(11);
const B = fixedKey(12);
const C = fixedKey(13);

// v1: root keys r1 r2 (2 of 2) delegate A for rpi4; v2 rotates to B (A dropped); v3 rotates root keys to r3 r4 and delegates C.
const v1 = await signedRoot({ version: 1, keys: [r1!, r2!], threshold: 2, delegations: [{ keys: [A], models: ['rpi4'] }] }, [r1!, r2!]);
const v2 = await signedRoot({ version: 2, keys: [r1!, r2!], threshold: 2, delegations: [{ keys: [B], models: ['rpi4'] }] }, [r1!, r2!]);
const v3 = await signedRoot({ version: 3, keys: [r3!, r4!], threshold: 2, delegations: [{ keys: [C], models: ['rpi4'] }] }, [r1!, r2!, r3!, r4!]);

const receiverAt = (...chain: Uint8Array[]): Receiver => {
  const r = new Receiver({ model: 'rpi4', trusted: [], root: trustRoot(v1) });
  if (chain.length > 0) run(r, rootDatagrams(encodeRootChain(chain)));
  return r;
};

function rootDatagrams(chain: Uint8Array, size = 1232): Uint8Array[] {
  const id = createHash('sha256').update(chain).digest().subarray(0, 8);
  const out: Uint8Array[] = [];
  for (let offset = 0; offset < chain.length; offset += size - 20) out.push(encodeRootFragment({ releaseId: id, totalLength: chain.length, offset, bytes: chain.subarray(offset, offset + size - 20) }));
  return out;
}

function run(r: Receiver, datagrams: Iterable<Uint8Array>, now = NOW): ReceiverEvent[] {
  const events: ReceiverEvent[] = [];
  for (const d of datagrams) events.push(...r.push(d, now));
  return events;
}

/** A carousel's datagrams until the receiver completes or refuses the release (bounded). */
function deliver(r: Receiver, release: Release, rootChain?: Uint8Array[], now = NOW): ReceiverEvent[] {
  const c = new Carousel({ ...release, manifestEvery: 50, ...(rootChain ? { rootChain: encodeRootChain(rootChain) } : {}) });
  const events: ReceiverEvent[] = [];
  for (let i = 0; i < 5000; i++) {
    events.push(...r.push(c.next(), now));
    if (events.some((e) => e.kind === 'complete' || e.kind === 'rejected')) break;
  }
  return events;
}

const outcome = (events: ReceiverEvent[]): string => {
  const e = events.find((x) => x.kind === 'complete' || x.kind === 'rejected');
  return e?.kind === 'rejected' ? e.error.reason : e?.kind ?? 'nothing';
};
const releaseBy = (key: ReturnType<typeof fixedKey>, seq: number, model = 'rpi4'): Release => testRelease(key, { seq, model, imageSeed: seq });

test('a release signed by a delegated key installs; one by an undelegated key is unknown-key', (t) => {
  t.is(outcome(deliver(receiverAt(), releaseBy(A, 1))), 'complete');
  const r = receiverAt();
  t.is(outcome(deliver(r, releaseBy(fixedKey(99), 1))), 'unknown-key', 'a mix of a valid root with a release from another root');
  t.is(r.stats.dropped['unknown-key'], 1);
});

test('rotation on the channel: the new key installs, the old key is revoked-key even with a higher seq', (t) => {
  const r = receiverAt();
  const events = deliver(r, releaseBy(B, 2), [v1, v2]);
  t.is(events.find((e) => e.kind === 'root')?.kind, 'root');
  t.is(r.root?.signed.root.version, 2);
  t.is(outcome(events), 'complete');
  t.is(outcome(deliver(r, releaseBy(A, 9), [v1, v2])), 'revoked-key');
  t.is(r.stats.dropped['revoked-key'], 1);
  t.true((r.stats.dropped['root-repeat'] ?? 0) > 0, 'the chain heard again is counted, not walked again');
});

test('a release refused before its root arrived is judged again under the new root', (t) => {
  const r = receiverAt();
  t.is(outcome(deliver(r, releaseBy(B, 2))), 'unknown-key');
  t.is(outcome(deliver(r, releaseBy(B, 2), [v1, v2])), 'complete');
});

test('a device that slept through v2 and v3 walks the chain in one go and installs a v3-signed release', (t) => {
  const r = receiverAt();
  const events = deliver(r, releaseBy(C, 3), [v1, v2, v3]);
  const root = events.find((e) => e.kind === 'root');
  t.deepEqual(root?.kind === 'root' ? root.result.applied.map((s) => s.root.version) : [], [2, 3]);
  t.is(outcome(events), 'complete');
});

test('a new root revokes the key of the release being received: its transfer ends', (t) => {
  const r = receiverAt();
  const c = new Carousel({ ...releaseBy(A, 1), manifestEvery: 50 });
  const first = run(r, [c.next(), c.next()]);
  t.is(first[0]?.kind, 'accepted');
  const events = run(r, rootDatagrams(encodeRootChain([v1, v2])));
  t.deepEqual(events.map((e) => e.kind), ['root', 'rejected']);
  t.is(r.current, undefined);
});

test('attack: root rollback (an older version replayed) is root-rollback', (t) => {
  const r = receiverAt(v1, v2);
  const events = run(r, rootDatagrams(encodeRootChain([v1])));
  t.is(events[0]?.kind === 'root-refused' ? events[0].error.reason : '', 'root-rollback');
  t.is(r.stats.dropped['root-rollback'], 1);
  t.is(r.root?.signed.root.version, 2);
});

test('attack: a root update signed by too few old keys is root-threshold', async (t) => {
  const bad = await signedRoot({ version: 2, keys: [r1!, r2!], threshold: 2, delegations: [{ keys: [B], models: ['rpi4'] }] }, [r1!]);
  const r = receiverAt(v1, bad);
  t.is(r.stats.dropped['root-threshold'], 1);
  t.is(r.root?.signed.root.version, 1);
});

test('attack: a root update signed only by the new keys is root-threshold', async (t) => {
  const bad = await signedRoot({ version: 2, keys: [r3!, r4!], threshold: 2, delegations: [{ keys: [B], models: ['rpi4'] }] }, [r3!, r4!]);
  const r = receiverAt(v1, bad);
  t.is(r.stats.dropped['root-threshold'], 1);
  t.is(r.root?.signed.root.version, 1);
});

test('attack: an expired root is root-expired, and nothing installs under it', async (t) => {
  const expired = await signedRoot({ version: 2, keys: [r1!, r2!], threshold: 2, expires: NOW - 1, delegations: [{ keys: [A], models: ['rpi4'] }] }, [r1!, r2!]);
  const r = receiverAt(v1, expired);
  t.is(r.stats.dropped['root-expired'], 1);
  t.is(outcome(deliver(r, releaseBy(A, 1))), 'root-expired');
});

test('attack: a release signed by a key outside its model scope is key-out-of-scope', async (t) => {
  const scoped = await signedRoot({ version: 2, keys: [r1!, r2!], threshold: 2, delegations: [{ keys: [A], models: ['cam/*'] }] }, [r1!, r2!]);
  const r = receiverAt(v1, scoped);
  t.is(outcome(deliver(r, releaseBy(A, 1))), 'key-out-of-scope');
  t.is(r.stats.dropped['key-out-of-scope'], 1);
});

test('attack: a release under an expired delegation is delegation-expired', async (t) => {
  const ended = await signedRoot({ version: 2, keys: [r1!, r2!], threshold: 2, delegations: [{ keys: [A], models: ['rpi4'], notAfter: NOW }] }, [r1!, r2!]);
  const r = receiverAt(v1, ended);
  t.is(outcome(deliver(r, releaseBy(A, 1))), 'delegation-expired');
  t.is(r.stats.dropped['delegation-expired'], 1);
});

test('attack: a forged root datagram (right id, bad signatures) is refused; a truncated one is malformed', (t) => {
  const forged = new Uint8Array(v2);
  forged[forged.length - 1]! ^= 1; // the last signature byte
  const r = receiverAt(v1, forged);
  t.is(r.stats.dropped['root-threshold'], 1);
  t.is(r.root?.signed.root.version, 1);
  const [datagram] = rootDatagrams(encodeRootChain([v1, v2]));
  run(r, [datagram!.subarray(0, 18)]);
  t.is(r.stats.dropped.malformed, 1);
  // Cut short inside its bytes: it never hashes to its id, so nothing changes.
  run(r, [datagram!.subarray(0, datagram!.length - 10)]);
  t.is(r.root?.signed.root.version, 1);
  t.is(decodePacket(datagram!).type, PacketType.Root);
});

test('attack: an endlessly long root chain is root-chain-too-long', (t) => {
  const long = encodeCbor(Array.from({ length: 100 }, () => v1));
  t.true(long.length > 1232, 'spans several datagrams');
  const r = receiverAt();
  run(r, rootDatagrams(long));
  t.is(r.stats.dropped['root-chain-too-long'], 1);
});

test('an agent trusting a key list counts ROOT datagrams as root-ignored', (t) => {
  const r = new Receiver({ model: 'rpi4', trusted: [A] });
  run(r, rootDatagrams(encodeRootChain([v1, v2])));
  t.is(r.stats.dropped['root-ignored'], 1);
});
