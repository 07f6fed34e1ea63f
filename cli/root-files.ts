/** Reading root documents (protocol/root.ts) from files, with errors that say which file and why. */
import { readFileSync } from 'node:fs';
import { ConfigError, DelegationThresholdError, FwcastError } from '../protocol/errors.js';
import { authorizeRelease, decodeRootChain, decodeSignedRoot, encodeRootChain, manifestKeys, MAX_ROOT_CHAIN, trustRoot, verifyRootChain } from '../protocol/root.js';
import { openSignedManifest } from '../protocol/manifest.js';
import { keyId } from '../protocol/keys.js';

export function readBytes(path: string, what: string): Uint8Array {
  try {
    return new Uint8Array(readFileSync(path));
  } catch (err) {
    throw new ConfigError(`cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** A provisioned root: its bytes, once checked to be a root signed by a threshold of its own keys. */
export function readRootFile(path: string): Uint8Array {
  const bytes = readBytes(path, 'root document');
  try {
    trustRoot(bytes);
  } catch (err) {
    if (err instanceof FwcastError) throw new ConfigError(`root document ${path}: ${err.message} (${err.reason})`);
    throw err;
  }
  return bytes;
}

/** Commander collector for a repeatable --root. */
export const collectRoots = (value: string, previous: string[] = []): string[] => [...previous, value];

/**
 * The root chain to carry on a channel (encodeRootChain) from signed root
 * files, in version order: each must parse, versions must not repeat.
 */
export function readRootChainFiles(paths: readonly string[]): Uint8Array {
  const roots = paths.map((path) => {
    const bytes = readBytes(path, 'root document');
    try {
      return { path, bytes, version: decodeSignedRoot(bytes).root.version };
    } catch (err) {
      if (err instanceof FwcastError) throw new ConfigError(`root document ${path}: ${err.message} (${err.reason})`);
      throw err;
    }
  }).sort((a, b) => a.version - b.version);
  for (let i = 1; i < roots.length; i++) {
    if (roots[i]!.version === roots[i - 1]!.version) throw new ConfigError(`${roots[i - 1]!.path} and ${roots[i]!.path} are both root version ${roots[i]!.version}`);
  }
  if (roots.length > MAX_ROOT_CHAIN) throw new ConfigError(`a root chain carries at most ${MAX_ROOT_CHAIN} versions; agents older than the oldest carried must be re-provisioned`);
  return encodeRootChain(roots.map((r) => r.bytes));
}

/**
 * Throws a ConfigError unless the chain's newest root (walked from its
 * oldest, as an agent provisioned with that one would) lets the signed
 * manifest's signers sign it at `now`: a release every agent would refuse is
 * not made. A delegation that needs more signatures than the manifest has yet
 * is not an error (the key holders co-sign it next, `fwcast cosign`): that is
 * returned as `pending`, a sentence saying how many are missing.
 */
export function checkChainAuthorizes(chain: Uint8Array, signed: Uint8Array, now: number): { pending?: string } {
  try {
    const roots = decodeRootChain(chain);
    let trusted = trustRoot(roots[0]!);
    if (roots.length > 1) trusted = verifyRootChain(trusted, roots.slice(1), now).root;
    const keys = manifestKeys(trusted).map((publicKey) => ({ publicKey, kid: keyId(publicKey) }));
    const v = openSignedManifest(signed, keys);
    authorizeRelease(trusted, v.manifest, v.kid, now, v.cosigners);
    return {};
  } catch (err) {
    if (err instanceof DelegationThresholdError) return { pending: err.message };
    if (err instanceof FwcastError) throw new ConfigError(`--root: agents would refuse this release: ${err.message} (${err.reason})`);
    throw err;
  }
}
