/**
 * `fwcast serve` (the long-running publisher with its HTTP API) and
 * `fwcast push` (upload a signed release from CI).
 */
import { closeSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { Option, type Command } from 'commander';
import { createConsoleLogger } from '../../cli/console-log.js';
import { collectRoots } from '../../cli/root-files.js';
import { resolveServeConfig, type ServeFlags } from './config.js';
import { exitCodeFor, PUSH_EXIT, PushNetworkError, pushKindOf, pushRelease, uploadUrl, type PushKind } from './push.js';
import { FwcastServer } from './server.js';
import { looksLikeHalt } from '../rollout-command.js';

export function addServeCommands(program: Command): void {
  program.command('serve')
    .description('run the publisher as a service: a release store, an HTTP API to upload and retire releases, and a carousel of every model\'s newest release')
    .option('-c, --config <file>', 'JSON configuration file (see README); FWCAST_* environment variables override it')
    .option('--listen <host:port>', 'HTTP address, e.g. "[::1]:8080" (default) or "0.0.0.0:8080"')
    .option('--store <dir>', 'release store directory (default /var/lib/fwcast-serve)')
    .option('--iface <name>', 'network interface to send on')
    .option('--rate <rate>', 'total rate on the wire, e.g. 20mbit (default)')
    .option('--root <file>', 'a signed root document (`fwcast root`) carried on every channel; repeat for the chain', collectRoots)
    .addOption(new Option('--log-format <format>', 'log line format').choices(['text', 'json']))
    .action(async (opts: ServeFlags) => {
      const config = resolveServeConfig(opts);
      const log = createConsoleLogger({ format: config.logFormat }, 'serve');
      const server = new FwcastServer(config, log);
      await server.start();
      // Also keeps SIGHUP from ending the process when there is no TLS to reload.
      const reload = (): void => server.reloadTls();
      process.on('SIGHUP', reload);
      const failure = await Promise.race([
        new Promise<undefined>((resolve) => {
          process.once('SIGINT', () => resolve(undefined));
          process.once('SIGTERM', () => resolve(undefined));
        }),
        server.failed,
      ]);
      process.off('SIGHUP', reload);
      log.event('serve.stopping', {}, 'stopping');
      await server.stop();
      if (failure) throw failure;
    });

  program.command('push')
    .description('upload a signed release file, a halt, or a newer root of trust to `fwcast serve` (for CI); exit 0 also when it was already stored')
    .argument('<file>', 'release file from `fwcast sign`, halt file from `fwcast halt`, or a signed root document (`fwcast root`) that serve then carries on every channel')
    .requiredOption('--server <url>', 'server base URL, e.g. http://fwcast.example:8080')
    .option('--token-file <file>', 'file holding the upload token (or set FWCAST_TOKEN)')
    .option('--token <token>', 'upload token on the command line: every user of the machine sees it in `ps`; prefer FWCAST_TOKEN or --token-file')
    .option('--ca <file>', 'CA certificate(s) (PEM) to trust for an https:// server, e.g. its self-signed certificate')
    .option('--timeout <seconds>', 'give up after this many seconds without an answer', '120')
    .option('--json', 'print one JSON line with the outcome')
    .action(async (file: string, opts: { server: string; token?: string; tokenFile?: string; ca?: string; timeout: string; json?: boolean }) => {
      const finish = (code: number, outcome: Record<string, unknown>, line: string): void => {
        if (opts.json) process.stdout.write(JSON.stringify({ ok: code === 0, exitCode: code, ...outcome }) + '\n');
        (code === 0 ? process.stdout : process.stderr).write(opts.json && code === 0 ? '' : `${code === 0 ? '' : 'fwcast push: error: '}${line}\n`);
        process.exitCode = code;
      };
      const timeout = Number(opts.timeout);
      let token: string | undefined;
      let ca: Buffer | undefined;
      let kind: PushKind = 'releases';
      try {
        uploadUrl(opts.server);
        if (!(timeout > 0)) throw new TypeError(`--timeout must be a positive number of seconds, got "${opts.timeout}"`);
        if (opts.token !== undefined && opts.tokenFile !== undefined) throw new TypeError('give the token once: --token-file or --token, not both');
        token = opts.tokenFile !== undefined ? readTokenFile(opts.tokenFile) : opts.token ?? (process.env.FWCAST_TOKEN?.trim() || undefined);
        if (opts.ca !== undefined) ca = readPushFile(opts.ca, 'CA file');
        if (!statSync(file).isFile()) throw new TypeError(`${file} is not a file`);
        const head = new Uint8Array(8);
        const fd = openSync(file, 'r');
        try {
          readSync(fd, head, 0, head.length, 0);
        } finally {
          closeSync(fd);
        }
        kind = pushKindOf(head);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        return finish(PUSH_EXIT.usage, { error: 'usage', message: code ? `cannot read ${file}: ${code}` : (err as Error).message }, code ? `cannot read ${file}: ${code}` : (err as Error).message);
      }
      if (opts.token !== undefined) process.stderr.write('fwcast push: warning: --token is visible to every user in `ps`; prefer FWCAST_TOKEN or --token-file\n');
      const halt = looksLikeHalt(file);
      let result;
      try {
        result = await pushRelease(file, opts.server, token, timeout * 1000, ca, halt ? 'halts' : kind);
      } catch (err) {
        if (err instanceof PushNetworkError) return finish(PUSH_EXIT.unreachable, { error: 'unreachable', message: err.message }, err.message);
        throw err;
      }
      const code = exitCodeFor(result.status);
      const root = result.body.root as { version?: number; expiresAt?: string; warnings?: string[] } | undefined;
      if (kind === 'roots' && code === PUSH_EXIT.stored && root) {
        const applied = Array.isArray(result.body.applied) ? result.body.applied as number[] : [];
        for (const warning of root.warnings ?? []) process.stderr.write(`fwcast push: warning: ${warning}\n`);
        return finish(code, { status: result.status, applied, root }, applied.length > 0
          ? `root version ${root.version} trusted and carried on every channel of ${opts.server} (expires ${root.expiresAt})`
          : `nothing newer: ${opts.server} already carries root version ${root.version}`);
      }
      const release = result.body.release as { model?: string; version?: string; seq?: number; releaseId?: string } | undefined;
      const stored = result.body.halt as { model?: string; releaseId?: string } | undefined;
      if (code === PUSH_EXIT.stored && halt && stored) {
        return finish(code, { status: result.status, stored: result.status === 201, halt: stored }, `${result.status === 201 ? 'stored' : 'already stored'}: halt of ${stored.model} release ${stored.releaseId} on ${opts.server}`);
      }
      if (code === PUSH_EXIT.stored && release) {
        const what = `${release.model} ${release.version} (seq ${release.seq}), release ${release.releaseId}`;
        return finish(code, { status: result.status, stored: result.status === 201, release }, `${result.status === 201 ? 'stored' : 'already stored'}: ${what} on ${opts.server}`);
      }
      const reason = typeof result.body.error === 'string' ? result.body.error : `http-${result.status}`;
      const message = typeof result.body.message === 'string' ? result.body.message : `HTTP ${result.status}`;
      const hint = code === PUSH_EXIT.auth ? (token ? ' (check the token)' : ' (set FWCAST_TOKEN or pass --token-file)') : '';
      return finish(code === PUSH_EXIT.stored ? PUSH_EXIT.error : code, { status: result.status, error: reason, message }, `server answered ${result.status} ${reason}: ${message}${hint}`);
    });
}

/** A file push needs; an unreadable one is a usage error naming it. */
export function readPushFile(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new TypeError(`cannot read the ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

export function readTokenFile(path: string): string {
  const token = readPushFile(path, 'token file').toString('utf8').trim();
  if (token === '') throw new TypeError(`the token file ${path} is empty`);
  return token;
}
