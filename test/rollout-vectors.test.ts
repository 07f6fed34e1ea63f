/**
 * SPEC.md §17.6 prints exactly what scripts/rollout-vectors.ts generates, and
 * the printed bytes decode as the section says.
 */
import { readFileSync } from 'node:fs';
import test from 'ava';
import { decodeCbor } from '../protocol/cbor.js';
import * as ed25519 from '../protocol/ed25519.js';
import { openSignedHalt } from '../protocol/halt.js';
import { hex } from '../protocol/hex.js';
import { decodePacket, PacketType } from '../protocol/packet.js';
import { decideRollout, decodeRolloutPolicy, rampFraction } from '../protocol/rollout.js';
import { seedSigner } from '../protocol/signer.js';
import { keyId } from '../protocol/keys.js';
import { rolloutVectors, VECTOR_DEVICES, VECTOR_RELEASES } from '../scripts/rollout-vectors.js';

const SPEC = readFileSync(new URL('../protocol/SPEC.md', import.meta.url), 'utf8');
const from = SPEC.indexOf('### 17.6 Test vectors');
// Up to the next top-level section (§18 has hex blocks of its own).
const section = SPEC.slice(from, SPEC.indexOf('\n## ', from) >>> 0);
const blocks = [...section.matchAll(/```\n([0-9a-f\n]+)```/g)].map((m) => new Uint8Array(Buffer.from(m[1]!.replace(/\n/g, ''), 'hex')));

test('SPEC.md §17.6 holds exactly the generated vectors', async (t) => {
  t.true(section.includes(await rolloutVectors()));
});

test('the printed table, rollout map and halt decode as described', async (t) => {
  await ed25519.ready();
  const rows = [...section.matchAll(/^\| (\S+) \| ([0-9a-f]{16}) \| ([0-9a-f]{16}) \| ([0-9.]+) \| (\d+) \|/gm)];
  t.is(rows.length, VECTOR_DEVICES.length * VECTOR_RELEASES.length);
  for (const [, device, release, , u, offset] of rows) {
    t.is(rampFraction(device!, Buffer.from(release!, 'hex')).toFixed(6), u!);
    const d = decideRollout({ ramp: { start: 1_800_000_000, duration: 3600 } }, Buffer.from(release!, 'hex'), { deviceId: device!, cohorts: [], windows: [] }, false, 0);
    t.deepEqual(d, { install: true, at: 1_800_000_000 + Number(offset), reason: 'ramp' });
  }
  t.is(blocks.length, 2);
  t.deepEqual(decodeRolloutPolicy(decodeCbor(blocks[0]!, 'rollout')), { ramp: { start: 1_800_000_000, duration: 3600 }, cohorts: ['canary'], activation: { at: 1_800_000_000, jitter: 1800 } });
  const p = decodePacket(blocks[1]!);
  if (p.type !== PacketType.Halt) return t.fail('not a HALT datagram');
  const key = seedSigner(new Uint8Array(32).fill(11));
  const v = openSignedHalt(p.signed, [{ publicKey: key.publicKey, kid: keyId(key.publicKey) }]);
  t.is(v.halt.model, 'rpi4');
  t.is(hex(v.halt.releaseId), hex(p.releaseId));
});
