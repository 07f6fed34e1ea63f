/** Reading root documents (protocol/root.ts) from files, with errors that say which file and why. */
import { readFileSync } from 'node:fs';
import { ConfigError, FwcastError } from '../protocol/errors.js';
import { decodeSignedRoot, encodeRootChain, MAX_ROOT_CHAIN, trustRoot } from '../protocol/root.js';

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
