import { CommanderError } from 'commander';
import { FwcastError } from '../protocol/errors.js';
import { escapeUnsafe } from '../protocol/quote.js';
import { EXIT } from './exit-codes.js';

/** How the CLIs end on a user-facing error: one clear line on stderr, non-zero exit. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** Refusals a verifier makes: the input is wrong, trying again will not help. */
const REFUSALS = new Set(['malformed', 'unsupported-version', 'invalid-manifest', 'limit-exceeded', 'bad-signature', 'unknown-key', 'wrong-model', 'rollback', 'expired', 'digest-mismatch']);
/** A file named on the command line that cannot be opened as one: the user's to fix. */
const UNREADABLE = new Set(['ENOENT', 'EISDIR', 'ENOTDIR', 'EACCES']);

/** The exit code (cli/exit-codes.ts) and the stable name of what went wrong. */
export function classify(err: unknown): { exitCode: number; error: string } {
  if (err instanceof UsageError || err instanceof CommanderError) return { exitCode: EXIT.usage, error: 'usage' };
  if (err instanceof FwcastError) {
    if (err.reason === 'config') return { exitCode: EXIT.usage, error: 'config' };
    return { exitCode: REFUSALS.has(err.reason) ? EXIT.refused : EXIT.failed, error: err.reason };
  }
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code === 'string' && UNREADABLE.has(code)) return { exitCode: EXIT.usage, error: 'usage' };
  return { exitCode: EXIT.failed, error: 'failed' };
}

/** Under --json a script reads stdout: the error is one JSON line there too. */
export function wantsJson(argv: readonly string[]): boolean {
  return argv.includes('--json');
}

export function exitWithError(program: string, err: unknown, json = false): never {
  const message = err instanceof Error ? err.message.replace(/^error: /, '') : String(err);
  const { exitCode, error } = classify(err);
  if (json) process.stdout.write(JSON.stringify({ ok: false, exitCode, error, message }) + '\n');
  // Messages may carry text from files or the network: one line, no terminal controls.
  // Commander printed its own usage errors already (one line and a hint).
  if (!(err instanceof CommanderError) || json) process.stderr.write(`${program}: error: ${escapeUnsafe(message)}\n`);
  process.exit(exitCode);
}

/**
 * A reader that stops early (`fwcast inspect … | head`) closes the pipe; the
 * next write fails with EPIPE. Like any Unix tool, end quietly then: the
 * reader has all it wanted.
 */
export function endQuietlyOnClosedStdout(): void {
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
}
