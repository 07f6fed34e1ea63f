/**
 * The staged-rollout and halt test vectors of protocol/SPEC.md §17.6, from
 * fixed inputs (Ed25519 is deterministic): `npx tsx scripts/rollout-vectors.ts`
 * prints the section's body; test/rollout-vectors.test.ts checks SPEC.md holds
 * exactly it.
 */
import { encodeCbor } from '../protocol/cbor.js';
import * as ed25519 from '../protocol/ed25519.js';
import { signHaltWith } from '../protocol/halt.js';
import { hex } from '../protocol/hex.js';
import { keyId } from '../protocol/keys.js';
import { encodeHaltPacket } from '../protocol/packet.js';
import { encodeRolloutPolicy, jitterDraw, rampDraw } from '../protocol/rollout.js';
import { seedSigner } from '../protocol/signer.js';

const lines = (bytes: Uint8Array): string => (hex(bytes).match(/.{1,64}/g) ?? []).join('\n');

export const VECTOR_DEVICES = ['pi-0001', 'pi-0002', '3f2a9c1e5b7d4e6f8a0b1c2d3e4f5a6b', 'gerät-7'];
export const VECTOR_RELEASES = [Uint8Array.of(0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef), new Uint8Array(8).fill(0xff)];
export const RAMP = 3600;
export const JITTER = 1800;

export async function rolloutVectors(): Promise<string> {
  await ed25519.ready();
  const rows = VECTOR_RELEASES.flatMap((r) => VECTOR_DEVICES.map((d) => {
    const x = rampDraw(d, r);
    const y = jitterDraw(d, r);
    const offset = (x * BigInt(RAMP)) >> 64n;
    const jitter = (y * BigInt(JITTER)) >> 64n;
    return `| ${d} | ${hex(r)} | ${x.toString(16).padStart(16, '0')} | ${(Number(x) / 2 ** 64).toFixed(6)} | ${offset} | ${y.toString(16).padStart(16, '0')} | ${jitter} |`;
  }));
  const policy = encodeCbor(encodeRolloutPolicy({ ramp: { start: 1_800_000_000, duration: RAMP }, cohorts: ['canary'], activation: { at: 1_800_000_000, jitter: JITTER } }));
  const seed = new Uint8Array(32).fill(11);
  const signer = seedSigner(seed);
  const signed = await signHaltWith({ model: 'rpi4', releaseId: VECTOR_RELEASES[0]!, issued: 1_800_000_000 }, signer);
  const datagram = encodeHaltPacket({ releaseId: VECTOR_RELEASES[0]!, signed });
  return [
    `x and y for each device id (UTF-8) and release id; u = x / 2^64; the ramp offset is ⌊x · ${RAMP} / 2^64⌋ seconds (a 1-hour ramp), the jitter ⌊y · ${JITTER} / 2^64⌋ (30 minutes):`,
    '',
    '| device id | release id | x | u | ramp offset (s) | y | jitter (s) |',
    '|-----------|------------|---|---|----------------:|---|-----------:|',
    ...rows,
    '',
    `The rollout map { 1: [1800000000, ${RAMP}], 2: ["canary"], 3: [1800000000, ${JITTER}] } (manifest key 10) is ${policy.length} bytes:`,
    '',
    '```',
    lines(policy),
    '```',
    '',
    `A halt of model "rpi4", release ${hex(VECTOR_RELEASES[0]!)}, issued 1800000000, signed by the key of seed 0b…0b (public ${hex(signer.publicKey)}, kid ${hex(keyId(signer.publicKey))}), as its HALT datagram (${datagram.length} bytes):`,
    '',
    '```',
    lines(datagram),
    '```',
  ].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) process.stdout.write(await rolloutVectors() + '\n');
