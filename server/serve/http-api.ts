/**
 * The server's HTTP API (node:http, no framework):
 *
 *   POST   /api/v1/releases       upload a release file (body: `fwcast sign`'s output)   bearer token
 *   DELETE /api/v1/releases/ID    retire a release (stops publishing it)                 bearer token
 *   POST   /api/v1/roots          a newer signed root (or chain) to carry (`fwcast push`)  bearer token
 *   GET    /api/v1/releases       list stored releases                                   read token*
 *   GET    /api/v1/releases/ID    one release                                            read token*
 *   POST   /api/v1/halts          store a halt (body: `fwcast halt`'s output, ≤ 4 KiB) bearer token
 *   GET    /api/v1/halts          list stored halts                                      read token*
 *   GET    /api/v1/status         channels, releases and live rates (the status page polls it)  read token*
 *   GET    /healthz               liveness: 200 {"status":"ok"}
 *   GET    /metrics               Prometheus text exposition                             read token*
 *   GET    /                      the status page                                        read token*
 *
 * * only when a read token is configured; the upload token is accepted too, as
 * `Bearer TOKEN` or as the password of HTTP Basic (so a browser can open the
 * status page: it asks for the password once and sends it with the page's polls).
 *
 * Upload answers: 201 stored, 200 already stored (same release id: CI can
 * retry), 401 no or wrong token, 413 too large, 400 not a valid release file,
 * 422 bad signature / unknown key / wrong model / expired, 409 sequence not
 * above the stored ones (rollback) or retired. Every refusal body is
 * {"error": reason, "message": text} and nothing is stored.
 *
 * A client that sends `Expect: 100-continue` (curl, `fwcast push`) gets 401 or
 * 413 before it sends the body.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { PassThrough } from 'node:stream';
import { limitRefusalEvents } from '../../cli/refusal-log.js';
import { errorFields, type Logger } from '../../protocol/log.js';
import { PROMETHEUS_CONTENT_TYPE, type ServeMetrics } from './metrics.js';
import { FwcastError } from '../../protocol/errors.js';
import { MAX_ROOT_CHAIN_SIZE } from '../../protocol/root.js';
import { RejectedError, REJECTIONS, type RejectionReason, type ReleaseStore, type StoredRelease } from './release-store.js';
import { STATUS_PAGE_HTML } from './status-page.js';
import type { HaltStore } from './halt-store.js';
import { createListener, type Listener, type ListenerLimits, type TlsIdentity } from './http-listener.js';

export interface HttpApiInit {
  store: ReleaseStore;
  metrics: ServeMetrics;
  token: string;
  /** Needed (or `token`) for every read but /healthz; undefined: reads are open. */
  readToken?: string | undefined;
  /** HTTPS identity (plain HTTP without it), time-outs and connection limits. */
  tls?: TlsIdentity | undefined;
  limits: ListenerLimits;
  maxUploadSize: number;
  log: Logger;
  /** JSON for /api/v1/status. */
  status: () => unknown;
  /** Prometheus text for /metrics. */
  exposition: () => string;
  /** Called after a model's releases changed (stored or retired), or it got a halt. */
  onChange: (model: string) => void;
  /**
   * A pushed root or chain: the versions newly trusted and the root in force,
   * or a FwcastError naming why not. Undefined: this server carries no root.
   */
  offerRoot?: ((bytes: Uint8Array) => { applied: number[]; root: unknown }) | undefined;
  /** Halts carried on the channels (SPEC §17.5). */
  halts?: HaltStore;
}

/** Largest halt upload read: a signed halt is at most 512 bytes. */
const MAX_HALT_UPLOAD = 4096;

const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body) + '\n';
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/**
 * After an answer that did not need the body: reads and discards what the client
 * still sends, for a second (so it can see the answer), then closes the connection.
 */
function dropBody(req: IncomingMessage): void {
  req.resume();
  if (!req.complete) setTimeout(() => req.destroy(), 1000).unref();
}

export function createHttpApi(init: HttpApiInit): Listener {
  const { store, metrics } = init;
  // Anyone who reaches the port can be refused: those lines come at a bounded rate (cli/refusal-log.ts).
  const log = limitRefusalEvents(init.log, { refusals: ['serve.request-refused', 'serve.upload-refused'], summary: 'serve.refusals-suppressed', context: {} });
  const tokenDigest = digest(init.token);
  const readDigest = init.readToken !== undefined ? digest(init.readToken) : undefined;

  const authorized = (req: IncomingMessage): boolean => {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    return m !== null && timingSafeEqual(digest(m[1]!), tokenDigest);
  };

  /** Reads: open without a read token; else the read or the upload token, as Bearer or as Basic's password. */
  const mayRead = (req: IncomingMessage): boolean => {
    if (!readDigest) return true;
    const header = req.headers.authorization ?? '';
    let presented = /^Bearer\s+(\S+)\s*$/i.exec(header)?.[1];
    const basic = /^Basic\s+([A-Za-z0-9+/]+={0,2})\s*$/i.exec(header)?.[1];
    if (basic) {
      const pair = Buffer.from(basic, 'base64').toString('utf8');
      presented = pair.slice(pair.indexOf(':') + 1);
    }
    if (presented === undefined) return false;
    const d = digest(presented);
    return timingSafeEqual(d, readDigest) || timingSafeEqual(d, tokenDigest);
  };

  /** Refuses before the body is read; the client may still be sending, so the connection closes after. */
  const refuseEarly = (req: IncomingMessage, res: ServerResponse, reason: 'unauthorized' | 'too-large', message: string): void => {
    metrics.countRejection(reason);
    log.event('serve.request-refused', { method: req.method, url: req.url, reason, status: REJECTIONS[reason], remote: req.socket.remoteAddress, detail: message },
      `refused ${req.method} ${req.url}: ${message}`);
    send(res, REJECTIONS[reason], { error: reason, message }, { connection: 'close', ...(reason === 'unauthorized' ? { 'www-authenticate': 'Bearer realm="fwcast"' } : {}) });
    dropBody(req);
  };

  /** The checks that need only the headers: auth and declared size. True if the request may go on. */
  const precheck = (req: IncomingMessage, res: ServerResponse): boolean => {
    if (!authorized(req)) {
      refuseEarly(req, res, 'unauthorized', req.headers.authorization ? 'wrong token' : 'missing "Authorization: Bearer TOKEN" header');
      return false;
    }
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (req.method === 'POST' && declared > init.maxUploadSize) {
      refuseEarly(req, res, 'too-large', `upload of ${declared} bytes exceeds the limit of ${init.maxUploadSize}`);
      return false;
    }
    return true;
  };

  const upload = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    // The body goes through a PassThrough so that a refusal mid-stream does not destroy the socket before the answer.
    const body = new PassThrough();
    req.pipe(body);
    req.on('close', () => {
      if (!req.complete) body.destroy(new Error('the client closed the connection before the upload was complete'));
    });
    const started = performance.now();
    try {
      const { release, created } = await store.ingest(body, init.maxUploadSize);
      metrics.countUpload(created ? 'stored' : 'duplicate');
      log.event('serve.release-stored', {
        model: release.model, version: release.version, seq: release.seq, release: release.releaseId, created, bytes: release.imageSize, ms: Math.round(performance.now() - started),
      }, created ? `stored ${release.model} ${release.version} (seq ${release.seq})` : `already stored: ${release.model} ${release.version} (seq ${release.seq})`);
      send(res, created ? 201 : 200, { stored: created, release }, { location: `/api/v1/releases/${release.releaseId}` });
      if (created) init.onChange(release.model);
    } catch (err) {
      if (err instanceof RejectedError) return refuseUpload(req, res, err);
      if (!req.complete) {
        log.event('serve.upload-abandoned', { remote: req.socket.remoteAddress, ...errorFields(err) }, `upload abandoned: ${(err as Error).message}`);
        return;
      }
      throw err;
    }
  };

  /** Refuses a write whose body was (partly) read: counted and logged like a refused upload. */
  const refuseUpload = (req: IncomingMessage, res: ServerResponse, err: RejectedError): void => {
    metrics.countRejection(err.reason);
    log.event('serve.upload-refused', { reason: err.reason, status: err.status, remote: req.socket.remoteAddress, detail: err.message }, `refused upload: ${err.message}`);
    if (!res.headersSent && !res.destroyed) send(res, err.status, { error: err.reason, message: err.message }, req.complete ? {} : { connection: 'close' });
    dropBody(req);
  };

  /**
   * The whole body of a small upload (a root, a halt), or undefined once it
   * passes `max` bytes: then it is refused as too-large, like any upload.
   */
  const readSmall = async (req: IncomingMessage, res: ServerResponse, max: number, what: string): Promise<Uint8Array | undefined> => {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > max) {
        refuseUpload(req, res, new RejectedError(REJECTIONS['too-large'], 'too-large', `${what} is at most ${max} bytes`));
        return undefined;
      }
      chunks.push(chunk);
    }
    return new Uint8Array(Buffer.concat(chunks));
  };

  const pushRoot = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const offer = init.offerRoot;
    if (!offer) return refuseUpload(req, res, new RejectedError(REJECTIONS['no-root'], 'no-root', 'this server carries no root of trust (configure "roots" first)'));
    const body = await readSmall(req, res, MAX_ROOT_CHAIN_SIZE, 'a root or chain');
    if (!body) return;
    try {
      const { applied, root } = offer(body);
      send(res, applied.length > 0 ? 201 : 200, { applied, root });
    } catch (err) {
      if (!(err instanceof FwcastError)) throw err;
      const reason = (err.reason in REJECTIONS ? err.reason : 'bad-root') as RejectionReason;
      refuseUpload(req, res, new RejectedError(REJECTIONS[reason], reason, err.message));
    }
  };

  /** A halt is small: read whole (bounded), verified, kept, and put on its channel. */
  const storeHalt = async (req: IncomingMessage, res: ServerResponse, halts: HaltStore): Promise<void> => {
    const body = await readSmall(req, res, MAX_HALT_UPLOAD, 'a halt upload');
    if (!body) return;
    try {
      const { stored, created } = halts.add(body);
      log.event('serve.halt-stored', { model: stored.model, release: stored.releaseId, created },
        `${created ? 'stored' : 'already stored'}: halt of ${stored.model} release ${stored.releaseId}`);
      send(res, created ? 201 : 200, { stored: created, halt: stored });
      if (created) init.onChange(stored.model);
    } catch (err) {
      if (!(err instanceof RejectedError)) throw err;
      refuseUpload(req, res, err);
    }
  };

  const retire = async (id: string, res: ServerResponse): Promise<void> => {
    const r = await store.retire(id);
    if (!r) {
      send(res, 404, { error: 'not-found', message: `no release ${id}` });
      return;
    }
    metrics.retirements++;
    log.event('serve.release-retired', { model: r.model, version: r.version, seq: r.seq, release: r.releaseId }, `retired ${r.model} ${r.version} (seq ${r.seq})`);
    send(res, 200, { retired: true, release: r });
    init.onChange(r.model);
  };

  const route = async (req: IncomingMessage, res: ServerResponse, continued: boolean): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://fwcast');
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const method = req.method ?? 'GET';
    const one = /^\/api\/v1\/releases\/([0-9a-f]{16})$/.exec(path);
    const allow = (methods: string): void => send(res, 405, { error: 'method-not-allowed', message: `${method} is not allowed on ${path}` }, { allow: methods });

    const reading = method === 'GET' || method === 'HEAD';
    if (reading && (path === '/api/v1/releases' || one) && !mayRead(req)) return refuseRead(req, res);
    if (path === '/api/v1/releases') {
      if (method === 'POST') {
        if (continued || precheck(req, res)) await upload(req, res);
        return;
      }
      if (reading) return send(res, 200, { releases: store.list() });
      return allow('GET, POST');
    }
    if (path === '/api/v1/roots') {
      if (method !== 'POST') return allow('POST');
      if (continued || precheck(req, res)) await pushRoot(req, res);
      return;
    }
    if (path === '/api/v1/halts' && init.halts) {
      if (method === 'POST') {
        if (continued || precheck(req, res)) await storeHalt(req, res, init.halts);
        return;
      }
      if (reading) return mayRead(req) ? send(res, 200, { halts: init.halts.list() }) : refuseRead(req, res);
      return allow('GET, POST');
    }
    if (one) {
      const id = one[1]!;
      if (method === 'DELETE') {
        if (continued || precheck(req, res)) await retire(id, res);
        return;
      }
      if (reading) {
        const r: StoredRelease | undefined = store.get(id);
        return r ? send(res, 200, r) : send(res, 404, { error: 'not-found', message: `no release ${id}` });
      }
      return allow('GET, DELETE');
    }
    if (method !== 'GET' && method !== 'HEAD') return allow('GET');
    if (path === '/healthz') return send(res, 200, { status: 'ok', uptimeSeconds: Math.round((Date.now() - metrics.startedAt) / 1000) });
    if (!mayRead(req)) return refuseRead(req, res);
    switch (path) {
      case '/metrics': {
        const text = init.exposition();
        res.writeHead(200, { 'content-type': PROMETHEUS_CONTENT_TYPE, 'content-length': Buffer.byteLength(text) });
        return void res.end(text);
      }
      case '/api/v1/status':
        return send(res, 200, init.status());
      case '/':
      case '/index.html':
        res.writeHead(200, {
          'content-type': 'text/html; charset=utf-8',
          'content-length': Buffer.byteLength(STATUS_PAGE_HTML),
          'content-security-policy': "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
          'x-content-type-options': 'nosniff',
        });
        return void res.end(STATUS_PAGE_HTML);
      default:
        return send(res, 404, { error: 'not-found', message: `no such endpoint: ${path}` });
    }
  };

  const refuseRead = (req: IncomingMessage, res: ServerResponse): void => {
    const message = req.headers.authorization ? 'wrong token' : 'this server needs a read token: "Authorization: Bearer TOKEN"';
    metrics.countRejection('unauthorized');
    log.event('serve.request-refused', { method: req.method, url: req.url, reason: 'unauthorized', status: 401, remote: req.socket.remoteAddress, detail: message },
      `refused ${req.method} ${req.url}: ${message}`);
    // Two challenges: Basic makes a browser ask for the token for the status page.
    const text = JSON.stringify({ error: 'unauthorized', message }) + '\n';
    res.writeHead(401, {
      'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text),
      'www-authenticate': ['Basic realm="fwcast", charset="UTF-8"', 'Bearer realm="fwcast"'],
    });
    res.end(text);
  };

  const handle = (req: IncomingMessage, res: ServerResponse, continued: boolean): void => {
    // A body nobody reads (only an authorised upload reads one) is cut short after the answer, not waited for.
    res.once('finish', () => {
      if (!req.complete) dropBody(req);
    });
    route(req, res, continued).catch((err: unknown) => {
      log.event('serve.request-failed', { method: req.method, url: req.url, ...errorFields(err) }, `${req.method} ${req.url} failed: ${(err as Error).stack ?? String(err)}`);
      if (!res.headersSent) send(res, 500, { error: 'internal', message: (err as Error).message });
      else res.destroy();
    });
  };

  const listener = createListener({
    tls: init.tls,
    limits: init.limits,
    onRefused: (limit, remote, count) => log.event('serve.connections-refused', { limit, remote, count },
      `refused ${count} connection(s) over the ${limit === 'total' ? `limit of ${init.limits.maxConnections} in total` : `limit of ${init.limits.maxConnectionsPerClient} per client`} (latest from ${remote})`),
  }, (req, res) => handle(req, res, false));
  const server = listener.server;
  // `Expect: 100-continue`: answer 401/413 before the client sends the body.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    const writes = req.method === 'POST' || req.method === 'DELETE';
    if (writes && !precheck(req, res)) return;
    res.writeContinue();
    handle(req, res, writes);
  });
  return listener;
}
