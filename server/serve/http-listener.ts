/**
 * The socket side of `fwcast serve`'s HTTP API: plain HTTP or HTTPS, and the
 * limits that keep one client from taking the server: seconds to send the
 * headers (the TLS handshake included), a bound on a whole request, an idle
 * time-out, and open connections capped in total and per client address.
 * A refused connection is closed at once, before TLS or HTTP see it.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import { createSecureContext } from 'node:tls';
import { ConfigError } from '../../protocol/errors.js';

export interface ListenerLimits {
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  idleTimeoutMs: number;
  maxConnections: number;
  maxConnectionsPerClient: number;
}

export type ConnectionLimit = 'total' | 'per-client';

/** A certificate chain and its key, read and checked to belong together. */
export interface TlsIdentity {
  cert: Buffer;
  key: Buffer;
  /** SHA-256 fingerprint of the leaf certificate, as `openssl x509 -fingerprint -sha256` prints it. */
  fingerprint: string;
  /** The leaf certificate's notAfter, ISO 8601. */
  expires: string;
}

function readPem(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ConfigError(`cannot read the TLS ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** Reads the PEM files; a ConfigError names the file that cannot be used. */
export function readTlsIdentity(files: { cert: string; key: string }): TlsIdentity {
  const cert = readPem(files.cert, 'certificate');
  const key = readPem(files.key, 'key');
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (err) {
    throw new ConfigError(`TLS certificate ${files.cert} is not a PEM certificate: ${(err as Error).message}`);
  }
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    throw new ConfigError(`TLS certificate ${files.cert} and key ${files.key} cannot be used together: ${(err as Error).message}`);
  }
  return { cert, key, fingerprint: leaf.fingerprint256, expires: new Date(leaf.validTo).toISOString() };
}

export interface Listener {
  server: http.Server | https.Server;
  /** Connections open now, and refused since the start by limit. */
  connections(): { open: number; refused: Record<ConnectionLimit, number> };
}

/**
 * An HTTP server (HTTPS with `tls`) calling `handler`, with `limits` applied.
 * `onRefused` hears of refused connections at most once per limit every
 * 10 s, with the number refused since it last heard (a flood must not
 * become a log flood).
 */
export function createListener(
  opts: { tls?: TlsIdentity; limits: ListenerLimits; onRefused: (limit: ConnectionLimit, remote: string, count: number) => void },
  handler: http.RequestListener,
): Listener {
  const { limits } = opts;
  const options = {
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    // Node checks the two time-outs above on this interval (default 30 s).
    connectionsCheckingInterval: 1000,
  };
  const server = opts.tls
    ? https.createServer({ ...options, cert: opts.tls.cert, key: opts.tls.key, minVersion: 'TLSv1.2', handshakeTimeout: limits.headersTimeoutMs }, handler)
    : http.createServer(options, handler);
  // Inactivity on an open connection, e.g. one that never sends a request, or an upload that stalled.
  server.timeout = limits.idleTimeoutMs;

  let open = 0;
  const perClient = new Map<string, number>();
  const refused: Record<ConnectionLimit, number> = { total: 0, 'per-client': 0 };
  const pending: Record<ConnectionLimit, number> = { total: 0, 'per-client': 0 };
  const lastReport: Record<ConnectionLimit, number> = { total: -Infinity, 'per-client': -Infinity };
  const refuse = (socket: Socket, limit: ConnectionLimit, remote: string): void => {
    socket.destroy();
    refused[limit]++;
    pending[limit]++;
    const now = performance.now();
    if (now - lastReport[limit] < 10_000) return;
    lastReport[limit] = now;
    opts.onRefused(limit, remote, pending[limit]);
    pending[limit] = 0;
  };
  // Raw TCP connections, before the TLS handshake or any HTTP parsing.
  server.on('connection', (socket: Socket) => {
    const remote = socket.remoteAddress ?? '?';
    if (open >= limits.maxConnections) return refuse(socket, 'total', remote);
    const mine = perClient.get(remote) ?? 0;
    if (mine >= limits.maxConnectionsPerClient) return refuse(socket, 'per-client', remote);
    open++;
    perClient.set(remote, mine + 1);
    socket.once('close', () => {
      open--;
      const left = (perClient.get(remote) ?? 1) - 1;
      if (left > 0) perClient.set(remote, left);
      else perClient.delete(remote);
    });
  });

  // Node's headersTimeout starts with a request's first byte: a connection that
  // sends nothing at all would be held until the idle time-out. Give it the
  // header time-out from when it is ready (after the TLS handshake) instead.
  const asked = new WeakSet<Socket>();
  const markAsked = (req: http.IncomingMessage): void => void asked.add(req.socket);
  server.on('request', markAsked);
  // A 'checkContinue' listener makes the server leave `Expect: 100-continue` to
  // its listeners: the API's own (http-api.ts) answers it.
  server.on('checkContinue', markAsked);
  server.on(opts.tls ? 'secureConnection' : 'connection', (socket: Socket) => {
    if (socket.destroyed) return;
    const timer = setTimeout(() => {
      if (!asked.has(socket)) socket.destroy();
    }, limits.headersTimeoutMs);
    socket.once('close', () => clearTimeout(timer));
  });
  return { server, connections: () => ({ open, refused: { ...refused } }) };
}
