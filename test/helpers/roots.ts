/** Root documents for tests: keys from fixed seeds, roots signed by whichever keys a test names. */
import type { Manifest } from '../../protocol/manifest.js';
import { mergeRootSignatures, signRootDetached, unsignedRoot, type Delegation, type RootDocument } from '../../protocol/root.js';
import { seedSigner } from '../../protocol/signer.js';
import type { TestKey } from './fixtures.js';

export const T0 = 1_800_000_000;
export const YEAR = 365 * 86400;

export interface RootSpec {
  version: number;
  keys: TestKey[];
  threshold?: number;
  expires?: number;
  delegations?: Array<Omit<Partial<Delegation>, 'keys'> & { keys: TestKey[] }>;
}

export function rootDocument(spec: RootSpec): RootDocument {
  return {
    version: spec.version,
    expires: spec.expires ?? T0 + YEAR,
    keys: spec.keys.map((k) => k.publicKey),
    threshold: spec.threshold ?? 1,
    delegations: (spec.delegations ?? []).map((d) => ({ ...d, keys: d.keys.map((k) => k.publicKey), threshold: d.threshold ?? 1, models: d.models ?? ['cam'] })),
  };
}

/** The root of `spec`, signed by `signers` (each one detached, then merged: the CLI's path). */
export async function signedRoot(spec: RootSpec, signers: TestKey[]): Promise<Uint8Array> {
  const unsigned = unsignedRoot(rootDocument(spec));
  const detached = await Promise.all(signers.map((k) => signRootDetached(unsigned, seedSigner(k.seed))));
  return mergeRootSignatures(unsigned, detached);
}

/** Just the fields authorizeRelease reads. */
export const manifestFor = (model: string): Manifest => ({ model, seq: 1 } as Manifest);
