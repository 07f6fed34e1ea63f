/**
 * SPEC.md §16.7 prints exactly what scripts/root-vectors.ts generates, and
 * the printed roots verify as the section says: version 1 trusted on its own
 * signatures, version 2 walked from it, the ROOT datagram parsed.
 */
import { readFileSync } from 'node:fs';
import test from 'ava';
import { decodePacket, PacketType } from '../protocol/packet.js';
import { decodeSignedRoot, trustRoot, verifyRootChain } from '../protocol/root.js';
import { rootVectors } from '../scripts/root-vectors.js';

const SPEC = readFileSync(new URL('../protocol/SPEC.md', import.meta.url), 'utf8');
const section = SPEC.slice(SPEC.indexOf('### 16.7 Test vectors'), SPEC.indexOf('### 16.8'));
const blocks = [...section.matchAll(/```\n([0-9a-f\n]+)```/g)].map((m) => new Uint8Array(Buffer.from(m[1]!.replace(/\n/g, ''), 'hex')));

test('SPEC.md §16.7 holds exactly the generated vectors', async (t) => {
  t.true(section.includes(await rootVectors()));
});

test('the printed roots and datagram verify as described', (t) => {
  t.is(blocks.length, 3);
  const [v1, v2, datagram] = blocks as [Uint8Array, Uint8Array, Uint8Array];
  const trusted = trustRoot(v1);
  t.is(trusted.signed.root.version, 1);
  const walked = verifyRootChain(trusted, [v1, v2], 1_800_000_000);
  t.deepEqual(walked.applied.map((s) => s.root.version), [2]);
  t.is(decodeSignedRoot(v2).root.delegations[0]!.models[0], 'rpi4');
  const p = decodePacket(datagram);
  t.is(p.type, PacketType.Root);
});
