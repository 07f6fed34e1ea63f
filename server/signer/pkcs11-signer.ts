/**
 * Ed25519 keys inside an HSM or token, through its PKCS#11 module (pkcs11js):
 * the key is generated there, marked sensitive and non-extractable, and signs
 * there with CKM_EDDSA; fwcast only ever holds its public key. Tested with
 * SoftHSM2 (test/pkcs11-signer.test.ts).
 *
 * PKCS#11 3.0 names EdDSA; pkcs11js (written for 2.40) has no constants for
 * it, so their values are here.
 */
import type * as Pkcs11 from 'pkcs11js';
import { ConfigError, SignerError } from '../../protocol/errors.js';
import { makeSigner, type Signer } from '../../protocol/signer.js';

const CKK_EC_EDWARDS = 0x40;
const CKM_EC_EDWARDS_KEY_PAIR_GEN = 0x1055;
const CKM_EDDSA = 0x1057;
/** CKA_EC_PARAMS of Ed25519: the OID 1.3.101.112, or the curve's name as a PrintableString (both are allowed). */
const ED25519_OID = Buffer.from('06032b6570', 'hex');
const ED25519_NAME = Buffer.concat([Buffer.from([0x13, 12]), Buffer.from('edwards25519')]);

type Pkcs11Lib = typeof Pkcs11;
type Handle = Buffer;

/** Where a key is: the module (a .so), the token's label and the key's label (CKA_LABEL). */
export interface Pkcs11KeyRef {
  module: string;
  token: string;
  key: string;
  /** The user PIN; absent for a token that needs no login. */
  pin?: string;
}

interface LoadedModule {
  lib: Pkcs11Lib;
  p11: Pkcs11.PKCS11;
  users: number;
}

/** One C_Initialize per module per process: signers on the same module (several root keys on one HSM) share it. */
const modules = new Map<string, Promise<LoadedModule>>();

async function openModule(path: string): Promise<LoadedModule> {
  let loading = modules.get(path);
  if (!loading) {
    // The promise is kept at once: signers opened together must not initialise the module twice.
    loading = loadModule(path);
    modules.set(path, loading);
    loading.catch(() => modules.delete(path));
  }
  const module = await loading;
  module.users++;
  return module;
}

async function loadModule(path: string): Promise<LoadedModule> {
  let lib: Pkcs11Lib;
  try {
    lib = (await import('pkcs11js')).default as unknown as Pkcs11Lib;
  } catch (err) {
    throw new ConfigError(`PKCS#11 support (the pkcs11js module) cannot be loaded on this machine: ${(err as Error).message}`);
  }
  const p11 = new lib.PKCS11();
  try {
    p11.load(path);
  } catch (err) {
    throw new ConfigError(`cannot load PKCS#11 module ${path}: ${(err as Error).message}`);
  }
  try {
    p11.C_Initialize();
  } catch (err) {
    p11.close();
    throw new ConfigError(`PKCS#11 module ${path} did not initialise: ${(err as Error).message}`);
  }
  return { lib, p11, users: 0 };
}

function releaseModule(path: string, module: LoadedModule): void {
  if (--module.users > 0) return;
  modules.delete(path);
  try {
    module.p11.C_Finalize();
  } catch {
    // Nothing is left to do with a module that will not finalise.
  }
  module.p11.close();
}

/** A CK_ULONG attribute, in the host's byte order (little-endian here) and width. */
const ulong = (value: Buffer): number => Number(value.length === 8 ? value.readBigUInt64LE() : value.readUIntLE(0, Math.min(value.length, 6)));
const label = (bytes: string): string => bytes.replace(/[\s\0]+$/, '');
const reason = (err: unknown): string => (err as Error).message;

/** An open, logged-in session on the token `ref.token`; close() ends it and the module's use. */
class TokenSession {
  private constructor(readonly ref: Pkcs11KeyRef, readonly module: LoadedModule, readonly session: Handle) {}

  static async open(ref: Pkcs11KeyRef, readWrite = false): Promise<TokenSession> {
    const module = await openModule(ref.module);
    try {
      const { lib, p11 } = module;
      const slots = p11.C_GetSlotList(true).map((slot) => ({ slot, info: p11.C_GetTokenInfo(slot) }));
      const matching = slots.filter((s) => label(s.info.label) === ref.token);
      if (matching.length === 0) {
        throw new ConfigError(`no PKCS#11 token labelled "${ref.token}" in ${ref.module} (tokens there: ${slots.map((s) => `"${label(s.info.label)}"`).join(', ') || 'none'})`);
      }
      if (matching.length > 1) throw new ConfigError(`${matching.length} PKCS#11 tokens are labelled "${ref.token}" in ${ref.module}: give each its own label`);
      const { slot, info } = matching[0]!;
      const session = p11.C_OpenSession(slot, lib.CKF_SERIAL_SESSION | (readWrite ? lib.CKF_RW_SESSION : 0));
      const opened = new TokenSession(ref, module, session);
      try {
        if (info.flags & lib.CKF_LOGIN_REQUIRED) opened.login();
      } catch (err) {
        opened.close();
        throw err;
      }
      return opened;
    } catch (err) {
      releaseModule(ref.module, module);
      throw err;
    }
  }

  private login(): void {
    const { lib, p11 } = this.module;
    if (this.ref.pin === undefined) throw new ConfigError(`PKCS#11 token "${this.ref.token}" needs its user PIN: set $FWCAST_PKCS11_PIN or give --pkcs11-pin-file`);
    try {
      p11.C_Login(this.session, lib.CKU_USER, this.ref.pin);
    } catch (err) {
      // Another signer of this process already logged in to the token: the login holds for every session.
      if (reason(err) === 'CKR_USER_ALREADY_LOGGED_IN') return;
      if (/^CKR_PIN_(INCORRECT|INVALID|LEN_RANGE|LOCKED|EXPIRED)$/.test(reason(err))) {
        throw new ConfigError(`PKCS#11 token "${this.ref.token}" refused the PIN (${reason(err)})`);
      }
      throw new SignerError(`PKCS#11 login to token "${this.ref.token}" failed: ${reason(err)}`);
    }
  }

  find(objectClass: number, keyLabel: string): Handle[] {
    const { lib, p11 } = this.module;
    p11.C_FindObjectsInit(this.session, [{ type: lib.CKA_CLASS, value: objectClass }, { type: lib.CKA_LABEL, value: keyLabel }]);
    try {
      return p11.C_FindObjects(this.session, 16);
    } finally {
      p11.C_FindObjectsFinal(this.session);
    }
  }

  attribute(object: Handle, type: number): Buffer | undefined {
    try {
      return this.module.p11.C_GetAttributeValue(this.session, object, [{ type }])[0]?.value as Buffer | undefined;
    } catch {
      return undefined;
    }
  }

  close(): void {
    try {
      this.module.p11.C_CloseSession(this.session);
    } catch {
      // A session the token already dropped is closed.
    }
    releaseModule(this.ref.module, this.module);
  }
}

function isEd25519Params(params: Buffer | undefined): boolean {
  return params !== undefined && (params.equals(ED25519_OID) || params.equals(ED25519_NAME));
}

/** CKA_EC_POINT of an Ed25519 public key: a DER OCTET STRING of the 32 bytes (PKCS#11 3.0), or the raw 32 bytes (some tokens). */
function ed25519Point(point: Buffer | undefined, what: string): Uint8Array {
  if (point?.length === 34 && point[0] === 0x04 && point[1] === 32) return new Uint8Array(point.subarray(2));
  if (point?.length === 32) return new Uint8Array(point);
  throw new ConfigError(`${what}: its CKA_EC_POINT is not an Ed25519 public key`);
}

function describe(ref: Pkcs11KeyRef): string {
  return `PKCS#11 token "${ref.token}" key "${ref.key}"`;
}

/**
 * A Signer for the Ed25519 private key labelled `ref.key` on token `ref.token`.
 * Its public key is the token's public key object of the same label, or
 * `publicKey` when the token keeps none (every signature is checked against it).
 */
export async function openPkcs11Signer(ref: Pkcs11KeyRef, publicKey?: Uint8Array): Promise<Signer> {
  const token = await TokenSession.open(ref);
  try {
    const { lib, p11 } = token.module;
    const what = describe(ref);
    const keys = token.find(lib.CKO_PRIVATE_KEY, ref.key);
    if (keys.length === 0) throw new ConfigError(`${what}: no such private key on the token`);
    if (keys.length > 1) throw new ConfigError(`${what}: ${keys.length} private keys have this label; give each its own`);
    const privateKey = keys[0]!;
    const keyType = token.attribute(privateKey, lib.CKA_KEY_TYPE);
    if (keyType !== undefined && ulong(keyType) !== CKK_EC_EDWARDS) throw new ConfigError(`${what}: not an EdDSA key`);
    if (!publicKey) {
      const publics = token.find(lib.CKO_PUBLIC_KEY, ref.key);
      if (publics.length !== 1) throw new ConfigError(`${what}: the token holds ${publics.length} public keys of this label; give the public key with --pub`);
      if (!isEd25519Params(token.attribute(publics[0]!, lib.CKA_EC_PARAMS))) throw new ConfigError(`${what}: not an Ed25519 key (its curve is another)`);
      publicKey = ed25519Point(token.attribute(publics[0]!, lib.CKA_EC_POINT), what);
    }
    return makeSigner({
      publicKey,
      description: what,
      signRaw: async (message) => {
        try {
          p11.C_SignInit(token.session, { mechanism: CKM_EDDSA, parameter: null as unknown as Buffer }, privateKey);
          return new Uint8Array(p11.C_Sign(token.session, Buffer.from(message), Buffer.alloc(64)));
        } catch (err) {
          throw new SignerError(`${what}: signing failed: ${reason(err)}`);
        }
      },
      close: () => token.close(),
    });
  } catch (err) {
    token.close();
    throw err;
  }
}

export interface GeneratedKey {
  publicKey: Uint8Array;
  /** What the token says of the private key after generation (CKA_SENSITIVE, CKA_EXTRACTABLE). */
  sensitive: boolean;
  extractable: boolean;
}

/**
 * Generates an Ed25519 key pair inside the token, labelled `ref.key`: the
 * private key sensitive and non-extractable, so it never leaves the token.
 * Refuses a label already taken.
 */
export async function generatePkcs11Key(ref: Pkcs11KeyRef): Promise<GeneratedKey> {
  const token = await TokenSession.open(ref, true);
  try {
    const { lib, p11 } = token.module;
    const what = describe(ref);
    if (token.find(lib.CKO_PRIVATE_KEY, ref.key).length > 0 || token.find(lib.CKO_PUBLIC_KEY, ref.key).length > 0) {
      throw new ConfigError(`${what}: a key with this label is already on the token`);
    }
    let pair: Pkcs11.KeyPair;
    try {
      pair = p11.C_GenerateKeyPair(token.session, { mechanism: CKM_EC_EDWARDS_KEY_PAIR_GEN, parameter: null as unknown as Buffer }, [
        { type: lib.CKA_TOKEN, value: true },
        { type: lib.CKA_PRIVATE, value: false },
        { type: lib.CKA_VERIFY, value: true },
        { type: lib.CKA_LABEL, value: ref.key },
        { type: lib.CKA_EC_PARAMS, value: ED25519_OID },
      ], [
        { type: lib.CKA_TOKEN, value: true },
        { type: lib.CKA_PRIVATE, value: true },
        { type: lib.CKA_SIGN, value: true },
        { type: lib.CKA_SENSITIVE, value: true },
        { type: lib.CKA_EXTRACTABLE, value: false },
        { type: lib.CKA_LABEL, value: ref.key },
      ]);
    } catch (err) {
      throw new SignerError(`${what}: the token could not generate an Ed25519 key pair: ${reason(err)}`);
    }
    const flag = (type: number): boolean => token.attribute(pair.privateKey, type)?.[0] === 1;
    return {
      publicKey: ed25519Point(token.attribute(pair.publicKey, lib.CKA_EC_POINT), what),
      sensitive: flag(lib.CKA_SENSITIVE),
      extractable: flag(lib.CKA_EXTRACTABLE),
    };
  } finally {
    token.close();
  }
}
