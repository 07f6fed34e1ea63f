import { escapeUnsafe } from '../protocol/quote.js';

/** How the CLIs end on a user-facing error: one clear line on stderr, non-zero exit. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export function exitWithError(program: string, err: unknown): never {
  const message = err instanceof Error ? err.message : String(err);
  // Messages may carry text from files or the network: one line, no terminal controls.
  process.stderr.write(`${program}: error: ${escapeUnsafe(message)}\n`);
  process.exit(err instanceof UsageError ? 2 : 1);
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
