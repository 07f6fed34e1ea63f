/**
 * The exit codes of every `fwcast` and `fwcast-agent` command: one table, in
 * each command's --help and in the README, so a script can tell a mistake of
 * its own (2) from a refusal (3) and from a network to retry (5).
 */
export const EXIT = {
  /** Done. */
  ok: 0,
  /** Failed (an install, a send, anything unexpected). */
  failed: 1,
  /** Usage: a bad flag, argument or configuration, a file that cannot be read. */
  usage: 2,
  /** Refused by a verifier or the server: a bad signature, an expired, rolled-back or invalid release. */
  refused: 3,
  /** Authentication: a missing or wrong token. */
  auth: 4,
  /** Unreachable or timed out: retry later. */
  unreachable: 5,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

export const EXIT_CODES_HELP = `
Exit codes:
  0  ok
  1  failed
  2  usage: a bad flag, argument or configuration, a file that cannot be read
  3  refused by a verifier or the server (signature, expiry, rollback, invalid release)
  4  authentication: missing or wrong token
  5  unreachable or timed out`;
