/**
 * `fwcast releases list|retire --server URL`: what CI needs from a running
 * `fwcast serve` besides push, without curl. Same token sources, --ca,
 * --timeout and exit codes as push.
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Command } from 'commander';
import { EXIT } from '../../cli/exit-codes.js';
import { UsageError } from '../../cli/fail.js';
import { escapeUnsafe } from '../../protocol/quote.js';
import { answerBody, exitCodeFor, PushNetworkError, uploadUrl } from './push.js';
import { readPushFile, readTokenFile } from './serve-command.js';

interface ApiOptions {
  server: string;
  token?: string;
  tokenFile?: string;
  ca?: string;
  timeout: string;
  json?: boolean;
}

interface StoredRelease {
  releaseId: string;
  model: string;
  version: string;
  seq: number;
  state: string;
}

/** One request to the API; the answer's JSON body, whatever its status. */
function apiRequest(url: URL, method: string, token: string | undefined, timeoutMs: number, ca: Buffer | undefined): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const req = request(url, { method, timeout: timeoutMs, headers: token ? { authorization: `Bearer ${token}` } : {}, ...(ca && url.protocol === 'https:' ? { ca } : {}) });
    req.on('timeout', () => req.destroy(new PushNetworkError(`no answer from ${url.origin} within ${timeoutMs / 1000} s`)));
    req.on('error', (err: NodeJS.ErrnoException) => reject(err instanceof PushNetworkError ? err : new PushNetworkError(`cannot reach ${url.origin}: ${err.code ?? err.message}`)));
    req.on('response', (res: IncomingMessage) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d: string) => {
        if (text.length < 4 << 20) text += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: answerBody(text) }));
    });
    req.end();
  });
}

function options(command: Command): Command {
  return command
    .requiredOption('--server <url>', 'server base URL, e.g. https://fwcast.lan:8443')
    .option('--token-file <file>', 'file holding the token (or set FWCAST_TOKEN)')
    .option('--ca <file>', 'CA certificate(s) (PEM) to trust for an https:// server')
    .option('--timeout <seconds>', 'give up after this many seconds without an answer', '30')
    .option('--json', 'print JSON');
}

async function call(opts: ApiOptions, method: string, path: string): Promise<Record<string, unknown>> {
  const timeout = Number(opts.timeout);
  if (!(timeout > 0)) throw new UsageError(`--timeout must be a positive number of seconds, got "${opts.timeout}"`);
  let url: URL;
  let token: string | undefined;
  let ca: Buffer | undefined;
  try {
    url = new URL(path, uploadUrl(opts.server));
    token = opts.tokenFile !== undefined ? readTokenFile(opts.tokenFile) : process.env.FWCAST_TOKEN?.trim() || undefined;
    if (opts.ca !== undefined) ca = readPushFile(opts.ca, 'CA file');
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { status, body } = await apiRequest(url, method, token, timeout * 1000, ca);
  const code = exitCodeFor(status);
  if (code === EXIT.ok) return body;
  const reason = typeof body.error === 'string' ? body.error : `http-${status}`;
  const message = typeof body.message === 'string' ? body.message : `HTTP ${status}`;
  throw new ApiRefusal(`server answered ${status} ${reason}: ${message}`, code === EXIT.ok ? EXIT.failed : code, reason, status);
}

/** A non-2xx answer: its exit code follows push's (3 refused, 4 authentication, 5 server failing). */
export class ApiRefusal extends Error {
  override name = 'ApiRefusal';
  constructor(message: string, readonly exitCode: number, readonly reason: string, readonly status: number) {
    super(message);
  }
}

/** Ends a releases command that failed, as every command does (a JSON line under --json). */
function fail(err: unknown, json: boolean | undefined): never {
  if (!(err instanceof ApiRefusal || err instanceof PushNetworkError)) throw err;
  const exitCode = err instanceof ApiRefusal ? err.exitCode : EXIT.unreachable;
  const error = err instanceof ApiRefusal ? err.reason : 'unreachable';
  if (json) process.stdout.write(JSON.stringify({ ok: false, exitCode, error, message: err.message, ...(err instanceof ApiRefusal ? { status: err.status } : {}) }) + '\n');
  process.stderr.write(`fwcast releases: error: ${escapeUnsafe(err.message)}\n`);
  process.exit(exitCode);
}

export function addReleasesCommand(program: Command): void {
  const releases = program.command('releases').description('list or retire the releases a `fwcast serve` holds');
  options(releases.command('list').description('the stored releases, newest first per model, with their state (live, superseded, retired)'))
    .action(async (opts: ApiOptions) => {
      const body = await call(opts, 'GET', 'releases').catch((err: unknown) => fail(err, opts.json));
      const list = (Array.isArray(body.releases) ? body.releases : []) as StoredRelease[];
      if (opts.json) process.stdout.write(JSON.stringify({ ok: true, releases: list }) + '\n');
      else for (const r of list) process.stdout.write(`${r.releaseId}  ${escapeUnsafe(r.model)} ${escapeUnsafe(r.version)} seq ${r.seq}  ${r.state}\n`);
    });
  options(releases.command('retire').description('stop publishing a release (the next newest of its model goes on the air); its sequence number can never be used again')
    .argument('<release-id>', 'the release id (16 hex digits, as `releases list` and `fwcast inspect` show)'))
    .action(async (id: string, opts: ApiOptions) => {
      if (!/^[0-9a-f]{16}$/.test(id)) throw new UsageError(`release id must be 16 hex digits, got "${escapeUnsafe(id)}"`);
      const body = await call(opts, 'DELETE', `releases/${id}`).catch((err: unknown) => fail(err, opts.json));
      const r = (body.release ?? body) as Partial<StoredRelease>;
      if (opts.json) process.stdout.write(JSON.stringify({ ok: true, release: r }) + '\n');
      else process.stdout.write(`retired: ${escapeUnsafe(String(r.model))} ${escapeUnsafe(String(r.version))} (seq ${r.seq}), release ${id}\n`);
    });
}
