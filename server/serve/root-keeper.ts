/**
 * serve's root of trust: the chain it carries on every channel, and the root
 * that authorizes uploads. It starts from the configured root documents
 * ("roots", oldest first: the first is trusted as provisioned) and the newer
 * versions pushed since (`fwcast push ROOT`, or carried inside an uploaded
 * release file), kept in STORE/roots/. A newer version is accepted exactly as
 * an agent accepts it (verifyRootChain: a threshold of the previous version's
 * root keys and of its own), so serve never carries a root its agents refuse.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readRootChainFiles } from '../../cli/root-files.js';
import { ConfigError, FwcastError } from '../../protocol/errors.js';
import { errorFields, type Logger } from '../../protocol/log.js';
import {
  decodeRootChain, decodeSignedRoot, encodeRootChain, ExpiredRootUpdateError, expiryWarnings, MAX_ROOT_CHAIN, trustRoot, verifyRootChain, type TrustedRoot,
} from '../../protocol/root.js';
import { writeFileAtomic } from '../../storage/durable-file.js';

export interface RootState {
  version: number;
  expires: number;
  expiresAt: string;
  /** Versions carried on the channels, oldest first. */
  carried: number[];
  /** What the operator must renew soon, or should have (empty: nothing). */
  warnings: string[];
}

/** A CBOR array (major type 4) is a chain; anything else is taken as one signed root. */
const isChain = (bytes: Uint8Array): boolean => bytes.length > 0 && bytes[0]! >> 5 === 4;

export class RootKeeper {
  #root: TrustedRoot;
  /** Signed roots carried, oldest first. */
  #chain: Uint8Array[];
  #encoded: Uint8Array;
  readonly #dir: string;
  readonly #log: Logger;

  private constructor(anchor: Uint8Array[], dir: string, log: Logger) {
    this.#root = trustRoot(anchor[0]!);
    this.#chain = [anchor[0]!];
    this.#dir = dir;
    this.#log = log;
    this.#encoded = encodeRootChain(this.#chain);
  }

  /**
   * The configured chain (files, oldest first), brought forward by the
   * versions kept in `dir`. Configuration errors throw ConfigError.
   */
  static open(files: readonly string[], dir: string, log: Logger, nowSeconds: number): RootKeeper {
    const configured = decodeRootChain(readRootChainFiles(files));
    let keeper: RootKeeper;
    try {
      keeper = new RootKeeper(configured, dir, log);
      if (configured.length > 1) keeper.#adopt(configured.slice(1), nowSeconds, false);
    } catch (err) {
      if (err instanceof FwcastError) throw new ConfigError(`"roots": the configured chain does not verify from its oldest root: ${err.message} (${err.reason})`);
      throw err;
    }
    mkdirSync(dir, { recursive: true });
    const kept = readdirSync(dir).filter((n) => /^root-v\d+\.cbor$/.test(n))
      .map((n) => ({ n, v: Number(/\d+/.exec(n)![0]) })).sort((a, b) => a.v - b.v).filter((k) => k.v > keeper.version)
      .map((k) => new Uint8Array(readFileSync(join(dir, k.n))));
    if (kept.length > 0) {
      try {
        keeper.#adopt(kept, nowSeconds, false);
      } catch (err) {
        // E.g. the configuration now names another root altogether: the configured one wins.
        log.event('serve.root-ignored', { dir, ...errorFields(err) }, `the roots kept in ${dir} do not follow from the configured ones and are not carried: ${(err as Error).message}`);
      }
    }
    return keeper;
  }

  get version(): number {
    return this.#root.signed.root.version;
  }

  /** The root that authorizes uploads. */
  get root(): TrustedRoot {
    return this.#root;
  }

  /** The chain carried on every channel (encodeRootChain). */
  get chain(): Uint8Array {
    return this.#encoded;
  }

  /**
   * Offers a signed root or a chain (a push, or the chain inside an uploaded
   * release). Returns the versions newly trusted (empty: nothing newer); throws
   * the FwcastError an agent would refuse it with. What is trusted is kept
   * durably before it is carried.
   */
  offer(bytes: Uint8Array, nowSeconds: number): number[] {
    const roots = isChain(bytes) ? decodeRootChain(bytes) : [bytes];
    for (const r of roots) decodeSignedRoot(r);
    return this.#adopt(roots, nowSeconds, true);
  }

  #adopt(roots: Uint8Array[], nowSeconds: number, keep: boolean): number[] {
    let result;
    try {
      result = verifyRootChain(this.#root, roots, nowSeconds);
    } catch (err) {
      // An expired newest root: agents would trust it and install nothing (TUF keeps it); serve refuses to carry it.
      if (err instanceof ExpiredRootUpdateError && !keep) result = err.result;
      else throw err;
    }
    if (result.applied.length === 0) return [];
    const appliedBytes = result.applied.map((s) => s.bytes);
    if (keep) {
      if (!existsSync(this.#dir)) mkdirSync(this.#dir, { recursive: true });
      for (const s of result.applied) writeFileAtomic(join(this.#dir, `root-v${s.root.version}.cbor`), s.bytes);
    }
    this.#root = result.root;
    this.#chain = [...this.#chain, ...appliedBytes].slice(-MAX_ROOT_CHAIN);
    this.#encoded = encodeRootChain(this.#chain);
    return result.applied.map((s) => s.root.version);
  }

  state(nowSeconds: number): RootState {
    const doc = this.#root.signed.root;
    return {
      version: doc.version,
      expires: doc.expires,
      expiresAt: new Date(doc.expires * 1000).toISOString(),
      carried: this.#chain.map((b) => decodeSignedRoot(b).root.version),
      warnings: expiryWarnings(doc, nowSeconds),
    };
  }

  /** Logs the warnings of `state` (at start, and when a root is adopted). */
  warn(nowSeconds: number): void {
    for (const warning of this.state(nowSeconds).warnings) {
      this.#log.event('serve.root-expiring', { rootVersion: this.version, expires: this.#root.signed.root.expires, warning }, warning);
    }
  }
}
