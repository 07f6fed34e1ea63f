/**
 * The client side of `fwcast push`: streams a release file to a server's
 * upload endpoint. Sends `Expect: 100-continue`, so a wrong token or an
 * oversized file is refused before the body goes out (after 1 s without an
 * answer the body is sent anyway, for proxies that ignore Expect).
 */
import { createReadStream, statSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';

/** `fwcast push` exit codes. */
export const PUSH_EXIT = {
  /** Stored, or the same release was already stored. */
  stored: 0,
  /** Anything unexpected (e.g. a malformed server answer). */
  error: 1,
  /** Bad command line, or the file cannot be read. */
  usage: 2,
  /** The server refused the release (400, 409, 413, 422, …): fix the release, do not retry. */
  rejected: 3,
  /** Missing or wrong token (401/403). */
  auth: 4,
  /** Server unreachable, timed out, or failing (5xx): retry later. */
  unreachable: 5,
} as const;

export interface PushResult {
  status: number;
  body: Record<string, unknown>;
}

export class PushNetworkError extends Error {
  override name = 'PushNetworkError';
}

/** What a pushed file is: a release file (`fwcast sign`), a signed root or chain (`fwcast root`), or a halt (`fwcast halt`). */
export type PushKind = 'releases' | 'roots' | 'halts';

/** From its first bytes: a COSE_Sign tag (98) or a CBOR array is a root or chain; anything else goes as a release (and is judged there). */
export function pushKindOf(head: Uint8Array): PushKind {
  const coseSign = head[0] === 0xd8 && head[1] === 98;
  const array = head.length > 0 && head[0]! >> 5 === 4;
  return coseSign || array ? 'roots' : 'releases';
}

export function uploadUrl(server: string, kind: PushKind = 'releases'): URL {
  let url: URL;
  try {
    url = new URL(server);
  } catch {
    throw new TypeError(`--server must be a URL like http://[fd00::1]:8080, got "${server}"`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`--server must be http:// or https://, got "${server}"`);
  return new URL(`${url.pathname.replace(/\/+$/, '')}/api/v1/${kind}`, url);
}

export function pushRelease(file: string, server: string, token: string | undefined, timeoutMs: number, ca?: Buffer, kind: PushKind = 'releases'): Promise<PushResult> {
  const url = uploadUrl(server, kind);
  const size = statSync(file).size;
  return new Promise((resolve, reject) => {
    const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const req = request(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/octet-stream',
        'content-length': size,
        expect: '100-continue',
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      },
      timeout: timeoutMs,
      ...(ca && url.protocol === 'https:' ? { ca } : {}),
    });
    let bodySent = false;
    const sendBody = (): void => {
      if (bodySent) return;
      bodySent = true;
      createReadStream(file).on('error', (err) => req.destroy(err)).pipe(req);
    };
    const fallback = setTimeout(sendBody, 1000);
    req.on('continue', () => {
      clearTimeout(fallback);
      sendBody();
    });
    req.on('timeout', () => req.destroy(new PushNetworkError(`no answer from ${url.origin} within ${timeoutMs / 1000} s`)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(fallback);
      reject(err instanceof PushNetworkError ? err : new PushNetworkError(`cannot reach ${url.origin}: ${err.code ?? err.message}`));
    });
    req.on('response', (res: IncomingMessage) => {
      clearTimeout(fallback);
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        if (text.length < 65536) text += d;
      });
      res.on('end', () => {
        resolve({ status: res.statusCode ?? 0, body: answerBody(text) });
        if (!bodySent) req.destroy();
      });
    });
  });
}

/** The server's JSON answer; anything else (a proxy's HTML page) as its `message`. */
export function answerBody(text: string): Record<string, unknown> {
  try {
    const parsed: unknown = JSON.parse(text);
    return typeof parsed === 'object' && parsed !== null ? parsed as Record<string, unknown> : { message: text };
  } catch {
    return { message: text.trim().slice(0, 500) };
  }
}

export function exitCodeFor(status: number): number {
  if (status === 200 || status === 201) return PUSH_EXIT.stored;
  if (status === 401 || status === 403) return PUSH_EXIT.auth;
  if (status >= 500) return PUSH_EXIT.unreachable;
  if (status >= 400) return PUSH_EXIT.rejected;
  return PUSH_EXIT.error;
}
