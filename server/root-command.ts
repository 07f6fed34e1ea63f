/**
 * `fwcast root`: make and sign root documents (protocol/root.ts).
 *
 *   create    a draft root (version 1 unless --version) naming the root keys and threshold
 *   delegate  add a delegation: a publisher key, the models it may sign for, a window
 *   revoke    remove a publisher key from every delegation
 *   rotate    add and remove root keys, change the threshold
 *   sign      a detached signature over a root, by one root key (each holder on their machine)
 *   merge     add detached signatures to a root
 *   inspect   what a root says and who signed it (--json), with an expiry warning
 *
 * An edit of a draft (no signatures yet) keeps its version; an edit of a
 * signed root makes the next version, unsigned, to be signed by a threshold of
 * the old root keys and of the new ones (TUF rotation).
 */
import type { Command } from 'commander';
import { UsageError } from '../cli/fail.js';
import { readTrustedKey } from '../cli/key-files.js';
import { readBytes } from '../cli/root-files.js';
import { parseDuration } from '../cli/units.js';
import { ConfigError, FwcastError } from '../protocol/errors.js';
import { hex } from '../protocol/hex.js';
import { keyId } from '../protocol/keys.js';
import {
  checkModelPattern, decodeSignedRoot, expiryWarnings, mergeRootSignatures, rootSigners, signRootDetached, unsignedRoot,
  type Delegation, type RootDocument, type SignedRoot,
} from '../protocol/root.js';
import { writeFileAtomic } from '../storage/durable-file.js';
import { addSignerOptions, openSigner, type SignerFlags } from './signer/signer-options.js';

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

function readRoot(path: string): SignedRoot {
  try {
    return decodeSignedRoot(readBytes(path, 'root document'), { unsigned: true });
  } catch (err) {
    if (err instanceof FwcastError && !(err instanceof ConfigError)) throw new ConfigError(`root document ${path}: ${err.message} (${err.reason})`);
    throw err;
  }
}

/** A point in time: Unix seconds, an ISO date, or a duration from now ("90d"). */
function when(flag: string) {
  return (value: string): number => {
    if (/^\d{9,}$/.test(value)) return Number(value);
    const date = Date.parse(value);
    if (/^\d{4}-\d\d-\d\d/.test(value) && !Number.isNaN(date)) return Math.floor(date / 1000);
    try {
      return Math.floor(Date.now() / 1000 + parseDuration(value) / 1000);
    } catch {
      throw new UsageError(`${flag}: expected Unix seconds, an ISO date or a duration from now (e.g. 365d), got "${value}"`);
    }
  };
}

function publicKeys(specs: readonly string[]): Uint8Array[] {
  return specs.map((s) => readTrustedKey(s).publicKey);
}

/** The next document: a draft's own version, or a signed root's version + 1. */
function nextVersion(from: SignedRoot, edit: (doc: RootDocument) => RootDocument, expires?: number): RootDocument {
  const doc = edit({ ...from.root, delegations: [...from.root.delegations] });
  return { ...doc, version: from.signatures.length === 0 ? from.root.version : from.root.version + 1, ...(expires !== undefined ? { expires } : {}) };
}

function write(path: string, bytes: Uint8Array, what: string): void {
  writeFileAtomic(path, bytes);
  process.stdout.write(`${path}: ${what}\n`);
}

function writeDraft(path: string, doc: RootDocument): void {
  try {
    write(path, unsignedRoot(doc), `root version ${doc.version}, unsigned: sign it with \`fwcast root sign\` (a threshold of the previous version's root keys and of its own), then \`fwcast root merge\``);
  } catch (err) {
    if (err instanceof FwcastError) throw new UsageError(err.message);
    throw err;
  }
}

const iso = (seconds: number): string => new Date(seconds * 1000).toISOString();

/** What `inspect` prints, as JSON. */
export function describeRoot(s: SignedRoot, now: number, previous?: SignedRoot): Record<string, unknown> {
  const doc = s.root;
  const own = rootSigners(s, doc.keys);
  const byPrevious = previous ? rootSigners(s, previous.root.keys) : undefined;
  const warnings = expiryWarnings(doc, now);
  if (own.size < doc.threshold) warnings.push(`${own.size} of the ${doc.threshold} signatures of its own root keys that it needs`);
  if (previous && byPrevious!.size < previous.root.threshold) warnings.push(`${byPrevious!.size} of the ${previous.root.threshold} signatures of version ${previous.root.version}'s root keys that it needs`);
  return {
    version: doc.version,
    expires: doc.expires,
    expiresAt: iso(doc.expires),
    threshold: doc.threshold,
    rootKeys: doc.keys.map((k) => ({ kid: hex(keyId(k)), publicKey: Buffer.from(k).toString('base64'), signed: own.has(hex(k)) })),
    delegations: doc.delegations.map((d: Delegation) => ({
      ...(d.name ? { name: d.name } : {}),
      keys: d.keys.map((k) => ({ kid: hex(keyId(k)), publicKey: Buffer.from(k).toString('base64') })),
      threshold: d.threshold,
      models: d.models,
      ...(d.notBefore !== undefined ? { notBefore: d.notBefore } : {}),
      ...(d.notAfter !== undefined ? { notAfter: d.notAfter } : {}),
    })),
    signatures: s.signatures.map((x) => hex(x.kid)),
    validOwnSignatures: own.size,
    ...(byPrevious ? { validPreviousSignatures: byPrevious.size } : {}),
    warnings,
  };
}

export function addRootCommand(program: Command): void {
  const root = program.command('root').description('root of trust: create, delegate, revoke, rotate, sign, merge, inspect root documents');

  root.command('create')
    .description('a draft root: its root keys and threshold (m of n); add delegations, then sign')
    .requiredOption('--root-key <pub>', 'root public key (PEM file or base64); repeat for each', collect)
    .option('--threshold <m>', 'root signatures needed (default 1)', (v) => Number(v), 1)
    .requiredOption('--expires <when>', 'expiry: a duration from now (365d), an ISO date or Unix seconds', when('--expires'))
    .option('--root-version <n>', 'version (default 1)', (v) => Number(v), 1)
    .requiredOption('--out <file>', 'draft to write')
    .action((opts: { rootKey: string[]; threshold: number; expires: number; rootVersion: number; out: string }) => {
      writeDraft(opts.out, { version: opts.rootVersion, expires: opts.expires, keys: publicKeys(opts.rootKey), threshold: opts.threshold, delegations: [] });
    });

  root.command('delegate')
    .description('add a delegation: a publisher key and the models it may sign for')
    .argument('<root>', 'root document (a draft, or a signed root: then the next version)')
    .requiredOption('--key <pub>', 'publisher public key; repeat for a delegation of several keys', collect)
    .requiredOption('--model <pattern>', 'model name, or prefix/* for every model under prefix/; repeatable', collect)
    .option('--not-before <when>', 'start of the validity window', when('--not-before'))
    .option('--not-after <when>', 'end of the validity window (a duration from now, an ISO date or Unix seconds)', when('--not-after'))
    .option('--threshold <n>', 'keys of this delegation that must sign a release (default 1)', (v) => Number(v), 1)
    .option('--name <label>', 'a label for people')
    .option('--expires <when>', 'new expiry of the root', when('--expires'))
    .requiredOption('--out <file>', 'root to write')
    .action((path: string, opts: { key: string[]; model: string[]; notBefore?: number; notAfter?: number; threshold: number; name?: string; expires?: number; out: string }) => {
      for (const m of opts.model) {
        try {
          checkModelPattern(m);
        } catch (err) {
          throw new UsageError(`--model: ${(err as Error).message}`);
        }
      }
      const d: Delegation = {
        keys: publicKeys(opts.key), threshold: opts.threshold, models: opts.model,
        ...(opts.name ? { name: opts.name } : {}), ...(opts.notBefore !== undefined ? { notBefore: opts.notBefore } : {}), ...(opts.notAfter !== undefined ? { notAfter: opts.notAfter } : {}),
      };
      writeDraft(opts.out, nextVersion(readRoot(path), (doc) => ({ ...doc, delegations: [...doc.delegations, d] }), opts.expires));
    });

  root.command('revoke')
    .description('remove a publisher key from every delegation (a delegation left without keys goes)')
    .argument('<root>', 'root document')
    .requiredOption('--key <pub>', 'publisher public key to revoke; repeatable', collect)
    .option('--expires <when>', 'new expiry of the root', when('--expires'))
    .requiredOption('--out <file>', 'root to write')
    .action((path: string, opts: { key: string[]; expires?: number; out: string }) => {
      const gone = new Set(publicKeys(opts.key).map(hex));
      const from = readRoot(path);
      if (!from.root.delegations.some((d) => d.keys.some((k) => gone.has(hex(k))))) throw new UsageError('no delegation of this root names that key');
      writeDraft(opts.out, nextVersion(from, (doc) => ({
        ...doc,
        delegations: doc.delegations
          .map((d) => ({ ...d, keys: d.keys.filter((k) => !gone.has(hex(k))) }))
          .filter((d) => d.keys.length > 0)
          .map((d) => ({ ...d, threshold: Math.min(d.threshold, d.keys.length) })),
      }), opts.expires));
    });

  root.command('rotate')
    .description('change the root keys and threshold (the next version must be signed by a threshold of the old keys and of the new)')
    .argument('<root>', 'root document')
    .option('--add-root-key <pub>', 'root key to add; repeatable', collect)
    .option('--remove-root-key <pub>', 'root key to remove; repeatable', collect)
    .option('--threshold <m>', 'new root threshold', (v) => Number(v))
    .option('--expires <when>', 'new expiry of the root', when('--expires'))
    .requiredOption('--out <file>', 'root to write')
    .action((path: string, opts: { addRootKey?: string[]; removeRootKey?: string[]; threshold?: number; expires?: number; out: string }) => {
      const gone = new Set(publicKeys(opts.removeRootKey ?? []).map(hex));
      const added = publicKeys(opts.addRootKey ?? []);
      writeDraft(opts.out, nextVersion(readRoot(path), (doc) => ({
        ...doc,
        keys: [...doc.keys.filter((k) => !gone.has(hex(k))), ...added],
        threshold: opts.threshold ?? doc.threshold,
      }), opts.expires));
    });

  addSignerOptions(root.command('sign')
    .description('a detached signature over a root by one root key (a key file, a signer command or a PKCS#11 token): merge it with `fwcast root merge`')
    .argument('<root>', 'root document')
    .requiredOption('--out <file>', 'detached signature to write'), 'root')
    .action(async (path: string, opts: SignerFlags & { out: string }) => {
      const bytes = readBytes(path, 'root document');
      readRoot(path);
      const signer = await openSigner(opts);
      try {
        // The one place a root signature is made: signRootDetached over a Signer.
        const signature = await signRootDetached(bytes, signer);
        write(opts.out, signature, 'detached root signature');
      } finally {
        await signer.close();
      }
    });

  root.command('merge')
    .description('add detached signatures to a root')
    .argument('<root>', 'root document')
    .argument('<signatures...>', 'detached signature files (`fwcast root sign`)')
    .requiredOption('--out <file>', 'signed root to write')
    .action((path: string, signatures: string[], opts: { out: string }) => {
      let merged: Uint8Array;
      try {
        merged = mergeRootSignatures(readBytes(path, 'root document'), signatures.map((s) => readBytes(s, 'signature')));
      } catch (err) {
        if (err instanceof FwcastError) throw new UsageError(err.message);
        throw err;
      }
      const s = decodeSignedRoot(merged, { unsigned: true });
      const own = rootSigners(s, s.root.keys).size;
      write(opts.out, merged, `root version ${s.root.version}, ${s.signatures.length} signature(s), ${own} of ${s.root.threshold} needed from its own root keys`);
    });

  root.command('inspect')
    .description('what a root says, who signed it, and when it expires')
    .argument('<root>', 'root document')
    .option('--previous <root>', 'the version before: count its root keys\' signatures too')
    .option('--json', 'print JSON')
    .action((path: string, opts: { previous?: string; json?: boolean }) => {
      const s = readRoot(path);
      const d = describeRoot(s, Math.floor(Date.now() / 1000), opts.previous ? readRoot(opts.previous) : undefined);
      if (opts.json) {
        process.stdout.write(JSON.stringify(d) + '\n');
      } else {
        const lines = [
          `root version ${d.version}, expires ${d.expiresAt}`,
          `root keys (${d.threshold} of ${s.root.keys.length}): ${(d.rootKeys as Array<{ kid: string; signed: boolean }>).map((k) => `${k.kid}${k.signed ? ' (signed)' : ''}`).join(', ')}`,
          ...(d.delegations as Array<{ keys: Array<{ kid: string }>; models: string[]; threshold: number; notBefore?: number; notAfter?: number; name?: string }>).map((x) =>
            `delegation${x.name ? ` ${x.name}` : ''}: ${x.keys.map((k) => k.kid).join(', ')} for ${x.models.join(', ')}` +
            (x.threshold > 1 ? `, ${x.threshold} signatures` : '') + (x.notBefore !== undefined ? `, from ${iso(x.notBefore)}` : '') + (x.notAfter !== undefined ? `, until ${iso(x.notAfter)}` : '')),
          `signatures: ${d.validOwnSignatures} valid of its own root keys` + (d.validPreviousSignatures !== undefined ? `, ${d.validPreviousSignatures} of the previous version's` : ''),
          ...(d.warnings as string[]).map((w) => `warning: ${w}`),
        ];
        process.stdout.write(lines.join('\n') + '\n');
      }
    });
}
