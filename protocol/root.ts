/**
 * The root of trust: a signed root document naming the root keys (m of n)
 * and the publisher keys they delegate, with each delegation's models and
 * validity window. Rotation is TUF's (tuf-spec §5.3): version N+1 is trusted
 * only if a threshold of version N's root keys AND a threshold of its own
 * signed it, versions never go back, and a device that missed several
 * versions walks the chain in one go. protocol/SPEC.md §16 has the exact
 * encoding and the verification algorithm step by step.
 *
 *   signed-root = #6.98([ protected: bstr .cbor {3: "application/fwcast-root+cbor"},
 *                         unprotected: {},
 *                         payload: bstr .cbor root,
 *                         signatures: [+ [ bstr .cbor {1: -8, 4: kid}, {}, bstr .size 64 ]] ])
 *
 * COSE_Sign (RFC 9052 §4.1) rather than several COSE_Sign1: one payload,
 * one signature per root key, and each signature stands alone, so root key
 * holders on different machines sign the same bytes and the signatures are
 * merged later (a detached signature is one COSE_Signature). A kid is only a
 * hint: a threshold counts distinct public keys whose signature verifies.
 *
 * Pure: no I/O, no clock (the caller passes `now`, Unix seconds).
 */
import { decodeCbor, encodeCbor, Tag } from './cbor.js';
import * as ed25519 from './ed25519.js';
import {
  DelegationExpiredError, DelegationNotYetValidError, DelegationThresholdError, InvalidRootError, KeyOutOfScopeError,
  RevokedKeyError, RootChainTooLongError, RootExpiredError, RootRollbackError, RootThresholdError, UnknownKeyError,
} from './errors.js';
import { hex } from './hex.js';
import { keyId } from './keys.js';
import { checkModelName, type Manifest } from './manifest.js';
import { hexCut, quote } from './quote.js';
import type { Signer } from './signer.js';

export const COSE_SIGN_TAG = 98;
export const ROOT_FORMAT = 1;
export const ROOT_CONTENT_TYPE = 'application/fwcast-root+cbor';
/** Bounds a receiver enforces before any signature is checked. */
export const MAX_ROOT_SIZE = 32 * 1024;
export const MAX_ROOT_KEYS = 16;
export const MAX_ROOT_SIGNATURES = 32;
export const MAX_DELEGATIONS = 256;
export const MAX_DELEGATION_KEYS = 16;
export const MAX_MODEL_PATTERNS = 64;
/** Root versions in one chain: a device that slept through more is re-provisioned. */
export const MAX_ROOT_CHAIN = 32;
export const MAX_ROOT_CHAIN_SIZE = 256 * 1024;
/** Former delegated keys remembered (to name a refusal `revoked-key` rather than `unknown-key`). */
const MAX_FORMER_KEYS = 1024;

const HDR_ALG = 1;
const HDR_CONTENT_TYPE = 3;
const HDR_KID = 4;
const ALG_EDDSA = -8;
const R = { format: 1, version: 2, expires: 3, keys: 4, threshold: 5, delegations: 6 } as const;
const D = { keys: 1, threshold: 2, models: 3, notBefore: 4, notAfter: 5, name: 6 } as const;

export interface Delegation {
  /** A label for people (`fwcast root inspect`); not used in decisions. */
  name?: string;
  keys: Uint8Array[];
  /** Distinct keys of this delegation that must sign a release (1 unless set). */
  threshold: number;
  /** Exact model names, or `prefix/*` for every model under `prefix/`. */
  models: string[];
  /** Unix seconds: the delegation holds from notBefore (inclusive) until notAfter (exclusive). */
  notBefore?: number;
  notAfter?: number;
}

export interface RootDocument {
  version: number;
  /** Unix seconds. */
  expires: number;
  keys: Uint8Array[];
  threshold: number;
  delegations: Delegation[];
}

export interface RootSignature {
  protectedBytes: Uint8Array;
  kid: Uint8Array;
  signature: Uint8Array;
}

export interface SignedRoot {
  root: RootDocument;
  payload: Uint8Array;
  bodyProtected: Uint8Array;
  signatures: RootSignature[];
  /** The whole COSE_Sign encoding as received. */
  bytes: Uint8Array;
}

/** A root this device trusts: verified, and what it walked to get there. */
export interface TrustedRoot {
  signed: SignedRoot;
  /** Publisher keys delegated by a root this device trusted before and not by this one. */
  formerKeys: Uint8Array[];
}

const bad = (message: string, facts: Record<string, string | number> = {}): never => {
  throw new InvalidRootError(message, facts);
};
const isBytes = (v: unknown): v is Uint8Array => v instanceof Uint8Array;

function uint(value: unknown, name: string): number {
  if (typeof value === 'bigint' && value >= 0n && value <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(value);
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) bad(`root field "${name}" must be an unsigned integer, got ${quote(value)}`);
  return value as number;
}

/** True if `pattern` (an exact name or `prefix/*`) covers `model`. */
export function modelMatches(pattern: string, model: string): boolean {
  return pattern.endsWith('/*') ? model.startsWith(pattern.slice(0, -1)) && model.length > pattern.length - 1 : model === pattern;
}

export function checkModelPattern(pattern: string): string {
  try {
    checkModelName(pattern.endsWith('/*') ? pattern.slice(0, -2) : pattern);
  } catch {
    bad(`model pattern ${quote(pattern)} must be a model name or "prefix/*"`);
  }
  return pattern;
}

function keyList(value: unknown, name: string, max: number): Uint8Array[] {
  if (!Array.isArray(value) || value.length === 0 || value.length > max) bad(`root field "${name}" must list 1..${max} keys`);
  const keys = (value as unknown[]).map((k) => (isBytes(k) && k.length === 32 ? new Uint8Array(k) : bad(`root field "${name}" must hold 32-byte Ed25519 public keys`)));
  if (new Set(keys.map(hex)).size !== keys.length) bad(`root field "${name}" lists a key twice`);
  return keys;
}

function threshold(value: unknown, name: string, keys: number): number {
  const t = uint(value, name);
  if (t < 1 || t > keys) bad(`root field "${name}" must be 1..${keys} (the number of keys), got ${t}`);
  return t;
}

/** Checks every rule of §15.2 on a document built in memory (the CLI) or decoded. */
export function checkRoot(doc: RootDocument): RootDocument {
  return decodeRoot(encodeRoot(doc));
}

export function encodeRoot(doc: RootDocument): Uint8Array {
  return encodeCbor(new Map<number, unknown>([
    [R.format, ROOT_FORMAT],
    [R.version, doc.version],
    [R.expires, doc.expires],
    [R.keys, doc.keys],
    [R.threshold, doc.threshold],
    [R.delegations, doc.delegations.map((d) => {
      const m = new Map<number, unknown>([[D.keys, d.keys]]);
      if (d.threshold !== 1) m.set(D.threshold, d.threshold);
      m.set(D.models, d.models);
      if (d.notBefore !== undefined) m.set(D.notBefore, d.notBefore);
      if (d.notAfter !== undefined) m.set(D.notAfter, d.notAfter);
      if (d.name !== undefined) m.set(D.name, d.name);
      return m;
    })],
  ]));
}

function onlyKeys(map: Map<unknown, unknown>, known: Record<string, number>, what: string): void {
  const allowed = new Set(Object.values(known));
  for (const k of map.keys()) if (!allowed.has(k as number)) bad(`${what} has unknown key ${quote(k)}`);
}

export function decodeRoot(payload: Uint8Array): RootDocument {
  const map = decodeCbor(payload, 'root document');
  if (!(map instanceof Map)) bad('root document is not a CBOR map');
  const m = map as Map<unknown, unknown>;
  onlyKeys(m, R, 'root document');
  if (m.get(R.format) !== ROOT_FORMAT) bad(`root format ${quote(m.get(R.format))} is not supported (expected ${ROOT_FORMAT})`);
  const version = uint(m.get(R.version), 'version');
  if (version < 1) bad('root version must be at least 1');
  const expires = uint(m.get(R.expires), 'expires');
  const keys = keyList(m.get(R.keys), 'keys', MAX_ROOT_KEYS);
  const t = threshold(m.get(R.threshold), 'threshold', keys.length);
  const list = m.get(R.delegations);
  if (!Array.isArray(list) || list.length > MAX_DELEGATIONS) bad(`root field "delegations" must be an array of at most ${MAX_DELEGATIONS}`);
  const delegations = (list as unknown[]).map((entry, i): Delegation => {
    const where = `delegations[${i}]`;
    if (!(entry instanceof Map)) bad(`${where} is not a map`);
    const e = entry as Map<unknown, unknown>;
    onlyKeys(e, D, where);
    const dkeys = keyList(e.get(D.keys), `${where}.keys`, MAX_DELEGATION_KEYS);
    const dt = e.has(D.threshold) ? threshold(e.get(D.threshold), `${where}.threshold`, dkeys.length) : 1;
    if (e.has(D.threshold) && dt === 1) bad(`${where}.threshold 1 must be omitted (deterministic encoding)`);
    const models = e.get(D.models);
    if (!Array.isArray(models) || models.length === 0 || models.length > MAX_MODEL_PATTERNS || !models.every((p) => typeof p === 'string')) {
      bad(`${where}.models must list 1..${MAX_MODEL_PATTERNS} model names or "prefix/*" patterns`);
    }
    for (const p of models as string[]) checkModelPattern(p);
    const notBefore = e.has(D.notBefore) ? uint(e.get(D.notBefore), `${where}.notBefore`) : undefined;
    const notAfter = e.has(D.notAfter) ? uint(e.get(D.notAfter), `${where}.notAfter`) : undefined;
    if (notBefore !== undefined && notAfter !== undefined && notAfter <= notBefore) bad(`${where}: notAfter must be after notBefore`);
    const name = e.get(D.name);
    if (e.has(D.name) && (typeof name !== 'string' || name.length === 0 || Buffer.byteLength(name) > 64)) bad(`${where}.name must be a text string of 1..64 bytes`);
    return {
      ...(name !== undefined ? { name: name as string } : {}), keys: dkeys, threshold: dt, models: [...(models as string[])],
      ...(notBefore !== undefined ? { notBefore } : {}), ...(notAfter !== undefined ? { notAfter } : {}),
    };
  });
  return { version, expires, keys, threshold: t, delegations };
}

const BODY_PROTECTED = encodeCbor(new Map<number, unknown>([[HDR_CONTENT_TYPE, ROOT_CONTENT_TYPE]]));

function sigStructure(bodyProtected: Uint8Array, signProtected: Uint8Array, payload: Uint8Array): Uint8Array {
  return encodeCbor(['Signature', bodyProtected, signProtected, new Uint8Array(0), payload]);
}

function encodeSigned(payload: Uint8Array, signatures: readonly RootSignature[]): Uint8Array {
  return encodeCbor(new Tag([BODY_PROTECTED, new Map(), payload, signatures.map((s) => [s.protectedBytes, new Map(), s.signature])], COSE_SIGN_TAG));
}

/** A root document with no signatures yet (`fwcast root create`): signatures are added by mergeRootSignatures. */
export function unsignedRoot(doc: RootDocument): Uint8Array {
  return encodeSigned(encodeRoot(checkRoot(doc)), []);
}

/** A detached signature (one COSE_Signature) over the root in `signedRoot`, for mergeRootSignatures. */
export async function signRootDetached(signedRoot: Uint8Array, signer: Signer): Promise<Uint8Array> {
  const s = decodeSignedRoot(signedRoot, { unsigned: true });
  const protectedBytes = encodeCbor(new Map<number, unknown>([[HDR_ALG, ALG_EDDSA], [HDR_KID, signer.kid]]));
  // The one place a root signature is made; the Signer checks what it returns (protocol/signer.ts).
  return encodeCbor([protectedBytes, new Map(), await signer.sign(sigStructure(s.bodyProtected, protectedBytes, s.payload))]);
}

function decodeSignature(item: unknown, where: string): RootSignature {
  if (!Array.isArray(item) || item.length !== 3) bad(`${where} is not a 3-element COSE_Signature`);
  const [protectedBytes, unprotected, signature] = item as unknown[];
  if (!isBytes(protectedBytes) || !(unprotected instanceof Map) || !isBytes(signature)) bad(`${where} fields have the wrong types`);
  if ((unprotected as Map<unknown, unknown>).size > 0) bad(`${where}: unprotected header must be empty`);
  if ((signature as Uint8Array).length !== 64) bad(`${where}: an Ed25519 signature is 64 bytes`);
  const headers = decodeCbor(protectedBytes as Uint8Array, `${where} protected header`);
  if (!(headers instanceof Map) || headers.size !== 2 || headers.get(HDR_ALG) !== ALG_EDDSA || !isBytes(headers.get(HDR_KID))) {
    bad(`${where}: protected header must be exactly {1: -8 (EdDSA), 4: kid}`);
  }
  return { protectedBytes: protectedBytes as Uint8Array, kid: (headers as Map<number, Uint8Array>).get(HDR_KID)!, signature: signature as Uint8Array };
}

/** Parses a signed root (COSE_Sign, tagged or not). Does not verify. `unsigned`: allow no signatures (files being signed). */
export function decodeSignedRoot(bytes: Uint8Array, options: { unsigned?: boolean } = {}): SignedRoot {
  if (bytes.length > MAX_ROOT_SIZE) bad(`signed root of ${bytes.length} bytes exceeds ${MAX_ROOT_SIZE}`);
  let item = decodeCbor(bytes, 'signed root', COSE_SIGN_TAG);
  if (item instanceof Tag) item = item.value;
  if (!Array.isArray(item) || item.length !== 4) bad('signed root is not a 4-element COSE_Sign array');
  const [bodyProtected, unprotected, payload, signatures] = item as unknown[];
  if (!isBytes(bodyProtected) || !(unprotected instanceof Map) || !isBytes(payload) || !Array.isArray(signatures)) bad('COSE_Sign fields have the wrong types');
  if ((unprotected as Map<unknown, unknown>).size > 0) bad('COSE_Sign unprotected header must be empty');
  if (Buffer.compare(bodyProtected as Uint8Array, BODY_PROTECTED) !== 0) bad(`COSE_Sign protected header must be exactly {3: "${ROOT_CONTENT_TYPE}"}`);
  const list = signatures as unknown[];
  if ((list.length === 0 && !options.unsigned) || list.length > MAX_ROOT_SIGNATURES) bad(`signed root must carry 1..${MAX_ROOT_SIGNATURES} signatures, has ${list.length}`);
  return {
    root: decodeRoot(payload as Uint8Array), payload: payload as Uint8Array, bodyProtected: bodyProtected as Uint8Array,
    signatures: list.map((s, i) => decodeSignature(s, `signatures[${i}]`)), bytes,
  };
}

/** Adds detached signatures (signRootDetached) to a signed or unsigned root; a signature already there is kept once. */
export function mergeRootSignatures(signedRoot: Uint8Array, detached: readonly Uint8Array[]): Uint8Array {
  const s = decodeSignedRoot(signedRoot, { unsigned: true });
  const all = [...s.signatures];
  for (const [i, d] of detached.entries()) {
    const sig = decodeSignature(decodeCbor(d, `detached signature ${i}`), `detached signature ${i}`);
    if (!all.some((x) => Buffer.compare(x.signature, sig.signature) === 0)) all.push(sig);
  }
  if (all.length > MAX_ROOT_SIGNATURES) bad(`a root carries at most ${MAX_ROOT_SIGNATURES} signatures`);
  return encodeSigned(s.payload, all);
}

/** The distinct keys of `keys` (hex) with a signature on `s` that verifies. */
export function rootSigners(s: SignedRoot, keys: readonly Uint8Array[]): Set<string> {
  const signed = new Set<string>();
  for (const sig of s.signatures) {
    for (const key of keys) {
      const k = hex(key);
      if (signed.has(k) || Buffer.compare(keyId(key), sig.kid) !== 0) continue;
      if (ed25519.verify(sig.signature, sigStructure(s.bodyProtected, sig.protectedBytes, s.payload), key)) signed.add(k);
    }
  }
  return signed;
}

function checkThreshold(s: SignedRoot, by: RootDocument, whose: 'previous' | 'own'): void {
  const count = rootSigners(s, by.keys).size;
  if (count < by.threshold) {
    throw new RootThresholdError(`root version ${s.root.version} carries ${count} valid signature(s) of ${whose === 'own' ? 'its own' : `version ${by.version}'s`} root keys; ${by.threshold} needed`, { rootVersion: s.root.version, whose, signatures: count, threshold: by.threshold });
  }
}

/**
 * A provisioned root (`--root FILE`): trusted on the operator's word, but it
 * must be signed by a threshold of its own keys. Its expiry is checked when a
 * release is authorized (TUF 5.2: a trusted root's expiry is not a reason to
 * refuse a newer one).
 */
export function trustRoot(bytes: Uint8Array): TrustedRoot {
  const s = decodeSignedRoot(bytes);
  checkThreshold(s, s.root, 'own');
  return { signed: s, formerKeys: [] };
}

/** How long before a root or a delegation ends that `fwcast root inspect` and serve's status warn of it. */
export const EXPIRY_WARNING_SECONDS = 30 * 86400;

const isoTime = (seconds: number): string => new Date(seconds * 1000).toISOString();

/** What an operator must renew soon (or should have): the root's expiry and each delegation's end, at `now`. */
export function expiryWarnings(doc: RootDocument, now: number): string[] {
  const warnings: string[] = [];
  if (doc.expires <= now) warnings.push(`root version ${doc.version} expired at ${isoTime(doc.expires)}: agents install nothing until a newer root reaches them`);
  else if (doc.expires - now < EXPIRY_WARNING_SECONDS) warnings.push(`root version ${doc.version} expires at ${isoTime(doc.expires)}, in ${Math.ceil((doc.expires - now) / 86400)} days: sign and publish a newer version before then`);
  for (const d of doc.delegations) {
    if (d.notAfter !== undefined && d.notAfter > now && d.notAfter - now < EXPIRY_WARNING_SECONDS) warnings.push(`the delegation of ${d.keys.map((k) => hex(keyId(k))).join(', ')} ends at ${isoTime(d.notAfter)}`);
  }
  return warnings;
}

/** Every publisher key the root delegates. */
export function delegatedKeys(root: RootDocument): Uint8Array[] {
  const seen = new Map<string, Uint8Array>();
  for (const d of root.delegations) for (const k of d.keys) seen.set(hex(k), k);
  return [...seen.values()];
}

/** The root chain as carried on the channel and in release files: a CBOR array of signed roots, oldest first. */
export function encodeRootChain(chain: readonly Uint8Array[]): Uint8Array {
  return encodeCbor([...chain]);
}

export function decodeRootChain(bytes: Uint8Array): Uint8Array[] {
  if (bytes.length > MAX_ROOT_CHAIN_SIZE) bad(`root chain of ${bytes.length} bytes exceeds ${MAX_ROOT_CHAIN_SIZE}`);
  const item = decodeCbor(bytes, 'root chain');
  if (!Array.isArray(item) || item.length === 0) bad('root chain is not a non-empty CBOR array');
  const list = item as unknown[];
  if (list.length > MAX_ROOT_CHAIN) throw new RootChainTooLongError(`root chain of ${list.length} versions exceeds ${MAX_ROOT_CHAIN}`, { length: list.length });
  return list.map((r) => (isBytes(r) ? r : bad('root chain entries must be byte strings (signed roots)')));
}

export interface ChainResult {
  root: TrustedRoot;
  /** Versions newly trusted, oldest first (empty: the chain held nothing newer). */
  applied: SignedRoot[];
}

/** An update whose newest root is validly signed but expired: `root` is still the newest trusted one (TUF 5.3.8 persists each step). */
export class ExpiredRootUpdateError extends RootExpiredError {
  constructor(message: string, facts: Record<string, string | number>, readonly result: ChainResult) {
    super(message, facts);
  }
}

/**
 * TUF's root update (tuf-spec 5.3.x) over a chain of signed roots, oldest
 * first. Entries not newer than `trusted` are skipped; the rest must be
 * consecutive versions, each signed by a threshold of the previous version's
 * root keys and a threshold of its own. Intermediate expiry is ignored; the
 * newest must not have expired at `now`.
 */
export function verifyRootChain(trusted: TrustedRoot, chain: readonly Uint8Array[], now: number): ChainResult {
  if (chain.length > MAX_ROOT_CHAIN) throw new RootChainTooLongError(`root chain of ${chain.length} versions exceeds ${MAX_ROOT_CHAIN}`, { length: chain.length });
  if (chain.length === 0) bad('root chain is empty');
  const decoded = chain.map((bytes) => decodeSignedRoot(bytes));
  for (let i = 1; i < decoded.length; i++) {
    if (decoded[i]!.root.version <= decoded[i - 1]!.root.version) bad('root chain versions must increase', { at: i });
  }
  let current = trusted.signed;
  const newest = decoded[decoded.length - 1]!.root.version;
  if (newest < current.root.version) {
    throw new RootRollbackError(`root version ${newest} is older than the trusted version ${current.root.version}`, { rootVersion: newest, trustedVersion: current.root.version });
  }
  const applied: SignedRoot[] = [];
  const former = new Map(trusted.formerKeys.map((k) => [hex(k), k]));
  for (const next of decoded) {
    if (next.root.version <= current.root.version) continue;
    if (next.root.version !== current.root.version + 1) {
      bad(`root chain jumps from version ${current.root.version} to ${next.root.version}`, { rootVersion: next.root.version, trustedVersion: current.root.version });
    }
    checkThreshold(next, current.root, 'previous');
    checkThreshold(next, next.root, 'own');
    for (const k of delegatedKeys(current.root)) former.set(hex(k), k);
    applied.push(next);
    current = next;
  }
  for (const k of delegatedKeys(current.root)) former.delete(hex(k));
  const root = { signed: current, formerKeys: [...former.values()].slice(-MAX_FORMER_KEYS) };
  const result = { root, applied };
  if (applied.length > 0 && current.root.expires <= now) {
    throw new ExpiredRootUpdateError(`root version ${current.root.version} expired at ${new Date(current.root.expires * 1000).toISOString()}`, { rootVersion: current.root.version, expires: current.root.expires }, result);
  }
  return result;
}

/** The keys a manifest's signature may be checked with: delegated ones, and former ones so that a refusal can be named. */
export function manifestKeys(root: TrustedRoot): Uint8Array[] {
  return [...delegatedKeys(root.signed.root), ...root.formerKeys];
}

/**
 * Whether `root` lets the key with id `signerKid` (whose signature on the
 * manifest has been verified) sign `manifest` at `now`, with the verified
 * co-signatures of `cosigners` counted towards a delegation's threshold.
 * Returns the delegation that does; throws the reason it does not.
 */
export function authorizeRelease(root: TrustedRoot, manifest: Pick<Manifest, 'model' | 'seq'>, signerKid: Uint8Array, now: number, cosigners: readonly Uint8Array[] = []): Delegation {
  const doc = root.signed.root;
  const kid = hexCut(signerKid);
  if (doc.expires <= now) {
    throw new RootExpiredError(`the trusted root (version ${doc.version}) expired at ${new Date(doc.expires * 1000).toISOString()}; a newer root is needed`, { seq: manifest.seq, rootVersion: doc.version, expires: doc.expires });
  }
  const mine = doc.delegations.filter((d) => d.keys.some((k) => Buffer.compare(keyId(k), signerKid) === 0));
  if (mine.length === 0) {
    if (root.formerKeys.some((k) => Buffer.compare(keyId(k), signerKid) === 0)) {
      throw new RevokedKeyError(`key ${kid} is no longer delegated by root version ${doc.version}`, { seq: manifest.seq, kid, rootVersion: doc.version });
    }
    throw new UnknownKeyError(`key ${kid} is not delegated by root version ${doc.version}`, { seq: manifest.seq, kid, rootVersion: doc.version });
  }
  const inScope = mine.filter((d) => d.models.some((p) => modelMatches(p, manifest.model)));
  if (inScope.length === 0) {
    throw new KeyOutOfScopeError(`key ${kid} may not sign for model ${quote(manifest.model)} (root version ${doc.version})`, { seq: manifest.seq, kid, releaseModel: manifest.model, rootVersion: doc.version });
  }
  const inWindow = inScope.filter((d) => (d.notBefore === undefined || d.notBefore <= now) && (d.notAfter === undefined || now < d.notAfter));
  if (inWindow.length === 0) {
    const ended = inScope.find((d) => d.notAfter !== undefined && d.notAfter <= now);
    if (ended) throw new DelegationExpiredError(`the delegation of key ${kid} ended at ${new Date(ended.notAfter! * 1000).toISOString()}`, { seq: manifest.seq, kid, notAfter: ended.notAfter!, rootVersion: doc.version });
    const first = inScope[0]!;
    throw new DelegationNotYetValidError(`the delegation of key ${kid} starts at ${new Date(first.notBefore! * 1000).toISOString()}`, { seq: manifest.seq, kid, notBefore: first.notBefore!, rootVersion: doc.version });
  }
  // Distinct keys of the delegation among the signer and the co-signers.
  const signers = [signerKid, ...cosigners];
  const signedBy = (d: Delegation): number => d.keys.filter((k) => { const id = keyId(k); return signers.some((s) => Buffer.compare(s, id) === 0); }).length;
  const met = inWindow.find((d) => signedBy(d) >= d.threshold);
  if (!met) {
    const d = inWindow[0]!;
    throw new DelegationThresholdError(`the delegation of key ${kid} needs ${d.threshold} signatures of its keys; the release carries ${signedBy(d)}`, { seq: manifest.seq, kid, threshold: d.threshold, signatures: signedBy(d), rootVersion: doc.version });
  }
  return met;
}

