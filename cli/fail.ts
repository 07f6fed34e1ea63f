/** How the CLIs end on a user-facing error: one clear line on stderr, non-zero exit. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export function exitWithError(program: string, err: unknown): never {
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`${program}: error: ${message}\n`);
  process.exit(err instanceof UsageError ? 2 : 1);
}
