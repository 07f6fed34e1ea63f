/**
 * Why the receiver dropped a datagram. These names are the keys of
 * `ReceiverStats.dropped`, the counters in the agent's stats, and the
 * README's table of drop reasons (test/drop-reasons.test.ts keeps the three
 * in step). Refusals of a whole release use the `reason` of their error class
 * (protocol/errors.ts), so a user can go from a counter to the cause.
 */
export const DROP_REASONS = {
  // Bytes and manifests
  'malformed': 'bytes that do not parse (truncated, bad magic, bad CBOR), or a manifest that cannot be opened',
  'unsupported-version': 'a datagram or manifest of a protocol version this build does not speak',
  'invalid-manifest': 'a manifest that parses but breaks the manifest rules',
  'limit-exceeded': 'a manifest or release larger than the configured limits',
  'bad-signature': 'a manifest whose signature does not verify',
  'unknown-key': 'a manifest signed by a key that is not trusted',
  'wrong-model': "a release for another model",
  'rollback': 'a release whose sequence number is not above the installed one',
  'expired': 'a release whose manifest has expired',
  'manifest-mismatch': 'manifest fragments whose bytes do not hash to their release id',
  'manifest-repeat': 'another copy of the manifest of the release being received',
  'superseded': 'a release not newer than the one being received',
  'already-installed': 'a release that is already installed',
  'install-pending': 'a release received while its install runs',
  'install-failed': 'a release whose install failed (refused until the agent restarts)',
  'rolled-back': 'a release this device tried and rolled back (refused for good: the store lists it)',
  // Deltas (protocol/delta.ts)
  'delta-chosen': "a release's full image, while the agent takes its delta from the installed release on the delta's sub-channel",
  'no-delta': 'a release heard on a delta sub-channel that lists no delta from the installed release, or whose base image differs from it',
  // Root of trust (protocol/root.ts)
  'revoked-key': 'a manifest signed by a key an earlier root delegated and the current root no longer does',
  'key-out-of-scope': 'a manifest for a model its signing key is not delegated for',
  'delegation-expired': 'a manifest signed by a delegated key after its delegation ended (notAfter)',
  'delegation-not-yet-valid': 'a manifest signed by a delegated key before its delegation starts (notBefore)',
  'delegation-threshold': 'a manifest whose delegation asks for more signatures than a release carries',
  'bad-root': 'a root document or root chain that does not parse or breaks the root rules (a version gap, a key listed twice)',
  'root-rollback': 'a root chain whose newest version is older than the trusted root (an old root replayed)',
  'root-threshold': "a root not signed by a threshold of the previous version's root keys, or of its own",
  'root-expired': 'a root update whose newest root has expired, or a manifest while the trusted root has expired',
  'root-chain-too-long': 'a root chain of more versions than an agent walks (32)',
  'root-repeat': 'another copy of a root chain already heard',
  'root-ignored': 'a root datagram heard by an agent that trusts a fixed key list (--key) rather than a root',
  // Confidential firmware (protocol/encryption.ts)
  'no-decryption-key': 'an encrypted release none of whose recipients is a key this device holds (counted once per release)',
  'encrypted-for-others': 'a datagram of a release refused for no-decryption-key, heard again',
  'key-unwrap-failed': 'an encrypted release whose content key, wrapped for a key this device holds, does not unwrap with it',
  'too-many-recipients': 'an encrypted release listing more recipients than a receiver reads (4096)',
  // Symbols and AUTH datagrams
  'unknown-release': 'a symbol or AUTH datagram of a release whose manifest has not been accepted (up to 1 MiB of them is kept, and used if that manifest is accepted soon after)',
  'bad-auth': 'an AUTH datagram or parity piece that fails its Merkle path or does not match its leaf',
  'auth-repeat': 'an AUTH datagram or parity piece already known',
  'segment-complete': 'a symbol or AUTH datagram of a segment already decoded',
  'pending-full': 'a symbol or parity piece over the bound of what may wait for its AUTH chunk',
  'pending-evicted': 'symbols that waited for their AUTH chunk, pushed out by newer ones',
  'bad-segment': 'a symbol of a segment the manifest does not have',
  'bad-symbol-size': 'a symbol whose size differs from the manifest’s',
  'bad-esi': 'a symbol whose ESI is beyond what the manifest publishes',
  'bad-symbol-digest': 'a symbol whose digest differs from its verified AUTH chunk',
  'decoder-trap': 'a symbol during which the RaptorQ decoder trapped (its codec instance is recycled)',
  'segment-digest-mismatch': 'a decoded segment whose SHA-256 differs from the signed one (a broken publisher)',
  // The agent's own store
  'segment-decoding': 'a symbol of a segment that already has what its decode, under way in the storage thread, needs',
  'storage-behind': 'a symbol shed because the agent\'s storage thread was behind by more than its bound (1 MiB); the carousel brings another',
  'store-error': 'a symbol, segment or manifest that could not be written to the store (disk full, I/O error); it is received again once the store works',
  // Staged rollout and halt (SPEC §17)
  'halted': 'a datagram of a release a signed halt stopped (never installed by this device)',
  'not-in-cohort': 'a datagram of a release for cohorts this device is not in',
  'bad-halt': 'a halt that parses but breaks the halt rules, or names another release than its datagram',
  'halt-repeat': 'another copy of a halt already judged',
} as const satisfies Record<string, string>;

export type DropReason = keyof typeof DROP_REASONS;

/** What the agent may set a release aside for (Receiver.abandon). */
export type AbandonReason = Extract<DropReason, 'install-pending' | 'install-failed' | 'rolled-back' | 'halted' | 'not-in-cohort' | 'expired'>;

/** Drops decided by the receiver's pure bookkeeping (transfer-ledger.ts). */
export type LedgerDropReason = Extract<DropReason, 'segment-complete' | 'auth-repeat' | 'pending-full' | 'pending-evicted' | 'bad-auth'>;

export function isDropReason(name: string): name is DropReason {
  return Object.hasOwn(DROP_REASONS, name);
}
