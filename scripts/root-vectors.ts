/**
 * The root-of-trust test vectors of protocol/SPEC.md §16.7, from fixed seeds
 * (Ed25519 is deterministic): `npx tsx scripts/root-vectors.ts` prints the
 * section's body; test/root-vectors.test.ts checks SPEC.md holds exactly it.
 */
import { createHash } from 'node:crypto';
import * as ed25519 from '../protocol/ed25519.js';
import { hex } from '../protocol/hex.js';
import { keyId } from '../protocol/keys.js';
import { encodeRootFragment } from '../protocol/packet.js';
import { encodeRootChain, mergeRootSignatures, signRootDetached, unsignedRoot, type RootDocument } from '../protocol/root.js';
import { seedSigner } from '../protocol/signer.js';

const seed = (n: number): Uint8Array => new Uint8Array(32).fill(n);

/** Hex in lines of 32 bytes, as SPEC.md prints byte strings. */
const lines = (bytes: Uint8Array): string => (hex(bytes).match(/.{1,64}/g) ?? []).join('\n');

export async function rootVectors(): Promise<string> {
  await ed25519.ready();
  const [root1, root2, root3, pubA, pubB] = [1, 2, 3, 11, 12].map((n) => ({ seed: seed(n), publicKey: ed25519.publicKeyFromSeed(seed(n)) }));
  const v1: RootDocument = {
    version: 1, expires: 1_900_000_000, keys: [root1!.publicKey, root2!.publicKey], threshold: 2,
    delegations: [{ keys: [pubA!.publicKey], threshold: 1, models: ['rpi4', 'cam/*'], notAfter: 1_850_000_000 }],
  };
  // v2 revokes A, delegates B, and rotates root key 1 out for root key 3.
  const v2: RootDocument = {
    version: 2, expires: 1_900_000_000, keys: [root2!.publicKey, root3!.publicKey], threshold: 2,
    delegations: [{ keys: [pubB!.publicKey], threshold: 1, models: ['rpi4'] }],
  };
  const sign = async (doc: RootDocument, by: typeof root1[]): Promise<Uint8Array> => {
    const draft = unsignedRoot(doc);
    return mergeRootSignatures(draft, await Promise.all(by.map((k) => signRootDetached(draft, seedSigner(k!.seed)))));
  };
  const signed1 = await sign(v1, [root1, root2]);
  const signed2 = await sign(v2, [root1, root2, root3]);
  const chain = encodeRootChain([signed1, signed2]);
  const chainId = createHash('sha256').update(chain).digest().subarray(0, 8);
  const datagram = encodeRootFragment({ releaseId: chainId, totalLength: chain.length, offset: 0, bytes: chain.subarray(0, 64) });
  const keys = [['root key 1', root1], ['root key 2', root2], ['root key 3', root3], ['publisher A', pubA], ['publisher B', pubB]] as const;
  return [
    'Keys (seed = 32 bytes of the value shown; kid = SHA-256(public key)[0..8)):',
    '',
    ...keys.map(([name, k]) => `    ${name.padEnd(12)} seed ${hex(k!.seed.subarray(0, 1))}…  public ${hex(k!.publicKey)}  kid ${hex(keyId(k!.publicKey))}`),
    '',
    `Root version 1 (root keys 1 and 2, 2 of 2; publisher A for "rpi4" and "cam/*" until 1850000000; expires 1900000000), signed by root keys 1 and 2 (${signed1.length} bytes):`,
    '',
    '```',
    lines(signed1),
    '```',
    '',
    `Root version 2 (root keys 2 and 3, 2 of 2; publisher B for "rpi4"), signed by root keys 1, 2 and 3: 2 of version 1's and 2 of its own (${signed2.length} bytes):`,
    '',
    '```',
    lines(signed2),
    '```',
    '',
    `The chain [version 1, version 2] is ${chain.length} bytes; its id (SHA-256[0..8)) is ${hex(chainId)}. Its first ROOT datagram, cut at 64 bytes of chain:`,
    '',
    '```',
    lines(datagram),
    '```',
  ].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) process.stdout.write(await rootVectors() + '\n');
