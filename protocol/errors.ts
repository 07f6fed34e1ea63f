/**
 * Every way a datagram, manifest or release can be refused. The `reason` of
 * each class is the name used in the agent's drop counters and log lines, so a
 * user can go from a counter to the cause.
 */
export abstract class FwcastError extends Error {
  abstract readonly reason: string;
  /**
   * @param facts what the message says, as values a program can read (the
   *   release's seq, the key id, …): log events carry them as fields.
   */
  constructor(message: string, readonly facts: Readonly<Record<string, string | number>> = {}) {
    super(message);
    this.name = new.target.name;
  }
}

/** Bytes that do not parse: truncated, oversized, wrong magic, bad CBOR. */
export class MalformedPacketError extends FwcastError {
  readonly reason = 'malformed';
}

/** A well-formed datagram of a protocol version this build does not speak. */
export class UnsupportedVersionError extends FwcastError {
  readonly reason = 'unsupported-version';
}

/** A manifest that parses as CBOR but breaks the manifest rules. */
export class InvalidManifestError extends FwcastError {
  readonly reason = 'invalid-manifest';
}

/** Declared sizes beyond what the receiver is configured to accept. */
export class LimitExceededError extends FwcastError {
  readonly reason = 'limit-exceeded';
}

/** COSE_Sign1 signature does not verify against the key it names. */
export class InvalidSignatureError extends FwcastError {
  readonly reason = 'bad-signature';
}

/** Signed by a key that is not in the receiver's trusted set. */
export class UnknownKeyError extends FwcastError {
  readonly reason = 'unknown-key';
}

/** A release for a different device model. */
export class WrongModelError extends FwcastError {
  readonly reason = 'wrong-model';
}

/** Sequence number not above the one already installed. */
export class RollbackError extends FwcastError {
  readonly reason = 'rollback';
}

/** Manifest whose expiry time has passed (freeze attack or stale release). */
export class ExpiredManifestError extends FwcastError {
  readonly reason = 'expired';
}

/** Decoded bytes whose digest differs from the signed one. */
export class DigestMismatchError extends FwcastError {
  readonly reason = 'digest-mismatch';
}

/**
 * A signer (protocol/signer.ts) that did not give a valid signature: its
 * command failed or answered garbage, the token refused, or the signature does
 * not verify with the public key it was configured with.
 */
export class SignerError extends FwcastError {
  readonly reason = 'signer';
}

/** A key file or configuration value that cannot be used. */
export class ConfigError extends FwcastError {
  readonly reason = 'config';
}

/**
 * The agent's store could not be written or read (disk full, I/O error): the
 * release is neither wrong nor refused, and reception goes on once the store
 * works again. `facts.path` is the file, `facts.code` the errno name.
 */
export class StoreError extends FwcastError {
  readonly reason = 'store-error';

  /** Wraps a failed file operation on `path`; other errors (a trap, a bug) pass through unchanged. */
  static wrap(err: unknown, path: string, doing: string): unknown {
    const code = (err as { code?: unknown } | undefined)?.code;
    if (typeof code !== 'string' || !code.startsWith('E')) return err;
    const hint = code === 'ENOSPC' || code === 'EDQUOT' ? ': the file system is full; free space there and reception resumes by itself' : '';
    return new StoreError(`cannot ${doing} ${path}: ${code}${hint}`, { path, code });
  }
}

// Root of trust (protocol/root.ts): a root document or chain refused, or a
// release its root does not authorize.

/** A root document that does not parse or breaks the root rules (gap in a chain, duplicate key, …). */
export class InvalidRootError extends FwcastError {
  readonly reason = 'bad-root';
}

/** A root version not above the trusted one (an older root replayed). */
export class RootRollbackError extends FwcastError {
  readonly reason = 'root-rollback';
}

/** A root not signed by a threshold of the previous version's root keys, or of its own. */
export class RootThresholdError extends FwcastError {
  readonly reason = 'root-threshold';
}

/** The newest trusted root has expired: nothing is authorized until a newer one arrives. */
export class RootExpiredError extends FwcastError {
  readonly reason = 'root-expired';
}

/** A root chain longer than a receiver walks. */
export class RootChainTooLongError extends FwcastError {
  readonly reason = 'root-chain-too-long';
}

/** A release signed by a key an earlier root delegated and the current one no longer does. */
export class RevokedKeyError extends FwcastError {
  readonly reason = 'revoked-key';
}

/** A release for a model the signing key's delegations do not cover. */
export class KeyOutOfScopeError extends FwcastError {
  readonly reason = 'key-out-of-scope';
}

/** A release signed by a delegated key after its delegation's notAfter. */
export class DelegationExpiredError extends FwcastError {
  readonly reason = 'delegation-expired';
}

/** A release signed by a delegated key before its delegation's notBefore. */
export class DelegationNotYetValidError extends FwcastError {
  readonly reason = 'delegation-not-yet-valid';
}

/** A release whose delegation asks for more signatures than the release carries. */
export class DelegationThresholdError extends FwcastError {
  readonly reason = 'delegation-threshold';
}

/** A HALT statement (protocol/halt.ts) that parses but breaks the halt rules, or names another release than its datagram. */
export class InvalidHaltError extends FwcastError {
  readonly reason = 'bad-halt';
}

// Confidential firmware (protocol/encryption.ts): an encrypted release this
// device cannot or must not decrypt.

/** An encrypted release none of whose recipients is a key this device holds: it was left out, or holds no key. */
export class NoDecryptionKeyError extends FwcastError {
  readonly reason = 'no-decryption-key';
}

/** A recipient names a key this device holds, but its wrapped content key does not unwrap with it. */
export class KeyUnwrapError extends FwcastError {
  readonly reason = 'key-unwrap-failed';
}

/** A ciphertext chunk whose AES-GCM tag does not verify under the unwrapped content key. */
export class DecryptionFailedError extends FwcastError {
  readonly reason = 'decryption-failed';
}

/** An encryption block with more recipients than a receiver reads (MAX_RECIPIENTS). */
export class TooManyRecipientsError extends FwcastError {
  readonly reason = 'too-many-recipients';
}

/** A delta object (protocol/delta.ts) that breaks its format, or does not fit its base or the new image. */
export class InvalidDeltaError extends FwcastError {
  readonly reason = 'invalid-delta';
}
