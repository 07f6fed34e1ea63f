/**
 * `fwcast serve` configuration: a JSON file, then environment variables, then
 * command-line flags, each overriding the one before.
 *
 *   {
 *     "listen": "[::1]:8080",                     FWCAST_LISTEN
 *     "store": "/var/lib/fwcast-serve",           FWCAST_STORE
 *     "interface": "eth0",                        FWCAST_IFACE
 *     "rate": "20mbit",                           FWCAST_RATE
 *     "port": 4242,                               FWCAST_PORT       (UDP)
 *     "hops": 8,                                  FWCAST_HOPS
 *     "trustedKeys": ["/etc/fwcast/publisher.pub"], FWCAST_TRUSTED_KEYS (comma-separated)
 *     "roots": ["/etc/fwcast/root-v1.cbor"],      FWCAST_ROOTS (comma-separated; --root, repeatable): the root chain carried on every channel
 *     "models": ["rpi4", { "model": "sensor-v2", "group": "ff15::5" }], FWCAST_MODELS (comma-separated)
 *     "tokenFile": "/etc/fwcast/serve.token",     FWCAST_TOKEN_FILE, or the token itself in FWCAST_TOKEN
 *     "maxUploadSize": 536870912,                 FWCAST_MAX_UPLOAD (bytes)
 *     "keepReleases": 2,                          FWCAST_KEEP_RELEASES
 *     "logFormat": "text",                        FWCAST_LOG_FORMAT
 *     "tlsCert": "/etc/fwcast/serve-cert.pem",    FWCAST_TLS_CERT   (PEM, chain included; with tlsKey: HTTPS,
 *     "tlsKey": "/etc/fwcast/serve-key.pem",      FWCAST_TLS_KEY     both read again on SIGHUP)
 *     "readTokenFile": "/etc/fwcast/read.token",  FWCAST_READ_TOKEN_FILE, or FWCAST_READ_TOKEN (optional: then
 *                                                 every read but /healthz needs it, or the upload token)
 *     "headersTimeout": 10,                       FWCAST_HEADERS_TIMEOUT   (seconds to send the request headers)
 *     "requestTimeout": 300,                      FWCAST_REQUEST_TIMEOUT   (seconds for a whole request, upload included)
 *     "idleTimeout": 30,                          FWCAST_IDLE_TIMEOUT      (seconds a connection may stay silent)
 *     "maxConnections": 256,                      FWCAST_MAX_CONNECTIONS   (open connections, all clients)
 *     "maxConnectionsPerClient": 16,              FWCAST_MAX_CONNECTIONS_PER_CLIENT (per client address)
 *     "listeners": "mdb"                          FWCAST_LISTENERS (send a channel only while it has listeners: serve/listeners.ts)
 *   }
 *
 * Every error names the field (or variable) it is about. The server never takes
 * a signing key: it only verifies against `trustedKeys`.
 */
import { readFileSync } from 'node:fs';
import { isJsonObject, readJsonConfig, type JsonObject } from '../../cli/config-file.js';
import { parseRate } from '../../cli/units.js';
import { channelGroup, checkMulticastGroup, DEFAULT_PORT, modelChannelName } from '../../protocol/channel.js';
import { ConfigError } from '../../protocol/errors.js';
import { checkModelName } from '../../protocol/manifest.js';
import type { Channel } from '../../transport/transport.js';
import { parseServeListeners, type ServeListeners } from './listeners.js';

export interface ServedModel {
  model: string;
  channel: Channel;
}

export interface ServeConfig {
  /** HTTP listen host (IPv6 without brackets) and port; port 0 picks a free one. */
  host: string;
  httpPort: number;
  store: string;
  iface: string;
  /** Bits per second on the wire, all channels together. */
  rate: number;
  hops: number;
  trustedKeys: string[];
  /** Signed root documents (the root chain, any order) carried on every channel. */
  roots: string[];
  models: ServedModel[];
  /** Bearer token for uploads and retirements. */
  token: string;
  maxUploadSize: number;
  /** Superseded releases kept on disk per model, besides the live one. */
  keepReleases: number;
  logFormat: 'text' | 'json';
  /** Certificate chain and private key files (PEM) for HTTPS; without them, plain HTTP. */
  tls: { cert: string; key: string } | undefined;
  /** Bearer token for reads (status, metrics, release lists); undefined: reads are open. */
  readToken: string | undefined;
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  idleTimeoutMs: number;
  maxConnections: number;
  maxConnectionsPerClient: number;
  /** Send each channel only while it has listeners; undefined: always. */
  listeners?: ServeListeners | undefined;
}

/** What the command line may set. */
export interface ServeFlags {
  config?: string;
  listen?: string;
  store?: string;
  iface?: string;
  rate?: string;
  root?: string[];
  logFormat?: 'text' | 'json';
}

export const DEFAULT_MAX_UPLOAD = 512 * 1024 * 1024;
const MIN_TOKEN_LENGTH = 16;

type Json = JsonObject;
const KNOWN = [
  'listen', 'store', 'interface', 'rate', 'port', 'hops', 'trustedKeys', 'roots', 'models', 'tokenFile', 'maxUploadSize', 'keepReleases', 'logFormat',
  'tlsCert', 'tlsKey', 'readTokenFile', 'headersTimeout', 'requestTimeout', 'idleTimeout', 'maxConnections', 'maxConnectionsPerClient',
  'listeners',
];

const isObject = isJsonObject;

function readJson(path: string): Json {
  const parsed = readJsonConfig(path);
  for (const k of Object.keys(parsed)) if (!KNOWN.includes(k)) throw new ConfigError(`config: unknown field "${k}" (known: ${KNOWN.join(', ')})`);
  return parsed;
}

/** One setting: the first of flag, environment variable, file field that is set, with its source's name for messages. */
function pick(flag: unknown, env: NodeJS.ProcessEnv, variable: string, file: Json, field: string): { value: unknown; where: string } | undefined {
  if (flag !== undefined) return { value: flag, where: `--${field === 'interface' ? 'iface' : field}` };
  const e = env[variable];
  if (e !== undefined && e !== '') return { value: e, where: variable };
  if (file[field] !== undefined) return { value: file[field], where: `config.${field}` };
  return undefined;
}

function integer(s: { value: unknown; where: string } | undefined, min: number, max: number, fallback: number): number {
  if (!s) return fallback;
  const n = typeof s.value === 'string' && /^\s*\d+\s*$/.test(s.value) ? Number(s.value) : s.value;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < min || n > max) throw new ConfigError(`${s.where} must be an integer in ${min}..${max}, got ${JSON.stringify(s.value)}`);
  return n;
}

function text(s: { value: unknown; where: string } | undefined): string | undefined {
  if (!s) return undefined;
  if (typeof s.value !== 'string' || s.value.trim() === '') throw new ConfigError(`${s.where} must be a non-empty string`);
  return s.value.trim();
}

/** "[::1]:8080", "127.0.0.1:8080", ":8080" (all addresses) → host and port. */
export function parseListen(value: string, where: string): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.%\w-]+)\]|([\w.-]*)):(\d{1,5})$/.exec(value.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new ConfigError(`${where} must be HOST:PORT, e.g. "[::1]:8080" or "127.0.0.1:8080", got ${JSON.stringify(value)}`);
  return { host: m[1] ?? (m[2] || '::'), port };
}

function list(s: { value: unknown; where: string } | undefined): unknown[] | undefined {
  if (!s) return undefined;
  if (typeof s.value === 'string') return s.value.split(',').map((x) => x.trim()).filter((x) => x !== '');
  if (!Array.isArray(s.value)) throw new ConfigError(`${s.where} must be an array`);
  return s.value;
}

function parseModels(entries: unknown[], where: string, port: number): ServedModel[] {
  const seen = new Set<string>();
  return entries.map((entry, i) => {
    const at = `${where}[${i}]`;
    let model: string;
    let group: string | undefined;
    if (typeof entry === 'string') model = entry;
    else if (isObject(entry) && typeof entry.model === 'string') {
      model = entry.model;
      if (entry.group !== undefined) {
        if (typeof entry.group !== 'string') throw new ConfigError(`${at}.group must be an IPv6 multicast address`);
        group = entry.group;
      }
    } else throw new ConfigError(`${at} must be a model name or { "model": ..., "group": ... }`);
    try {
      checkModelName(model);
      if (group !== undefined) checkMulticastGroup(group);
    } catch (err) {
      throw new ConfigError(`${at}: ${(err as Error).message}`);
    }
    if (seen.has(model)) throw new ConfigError(`${at}: model "${model}" is listed twice`);
    seen.add(model);
    const name = modelChannelName(model);
    return { model, channel: { name, group: group ?? channelGroup(name), port } };
  });
}

export function resolveServeConfig(flags: ServeFlags, env: NodeJS.ProcessEnv = process.env): ServeConfig {
  const file = flags.config ? readJson(flags.config) : {};

  const listen = text(pick(flags.listen, env, 'FWCAST_LISTEN', file, 'listen')) ?? '[::1]:8080';
  const { host, port: httpPort } = parseListen(listen, flags.listen !== undefined ? '--listen' : env.FWCAST_LISTEN ? 'FWCAST_LISTEN' : 'config.listen');
  const store = text(pick(flags.store, env, 'FWCAST_STORE', file, 'store')) ?? '/var/lib/fwcast-serve';
  const iface = text(pick(flags.iface, env, 'FWCAST_IFACE', file, 'interface'));
  if (!iface) throw new ConfigError('no network interface to publish on: set "interface" in the config, FWCAST_IFACE, or --iface');
  if (!/^[A-Za-z0-9_.:@-]{1,15}$/.test(iface)) throw new ConfigError(`interface "${iface}" is not a network interface name`);

  const rateSetting = pick(flags.rate, env, 'FWCAST_RATE', file, 'rate');
  let rate = 20e6;
  if (rateSetting) {
    try {
      rate = parseRate(String(rateSetting.value));
    } catch (err) {
      throw new ConfigError(`${rateSetting.where}: ${(err as Error).message}`);
    }
  }
  const udpPort = integer(pick(undefined, env, 'FWCAST_PORT', file, 'port'), 1, 65535, DEFAULT_PORT);
  const hops = integer(pick(undefined, env, 'FWCAST_HOPS', file, 'hops'), 1, 255, 8);

  const keySetting = pick(undefined, env, 'FWCAST_TRUSTED_KEYS', file, 'trustedKeys');
  const trustedKeys = list(keySetting) ?? [];
  if (!trustedKeys.every((k): k is string => typeof k === 'string' && k !== '')) throw new ConfigError(`${keySetting!.where} must list key files or base64 keys`);
  const rootSetting = pick(flags.root, env, 'FWCAST_ROOTS', file, 'roots');
  const roots = list(rootSetting) ?? [];
  if (!roots.every((r): r is string => typeof r === 'string' && r !== '')) throw new ConfigError(`${rootSetting!.where} must list root document files`);
  if (trustedKeys.length === 0 && roots.length === 0) throw new ConfigError('no trusted publisher key: set "trustedKeys" or "roots" in the config, or FWCAST_TRUSTED_KEYS (the server verifies uploads; it never holds a signing key)');

  const modelSetting = pick(undefined, env, 'FWCAST_MODELS', file, 'models');
  const models = parseModels(list(modelSetting) ?? [], modelSetting?.where ?? 'config.models', udpPort);
  if (models.length === 0) throw new ConfigError('no model to serve: list "models" in the config or FWCAST_MODELS (uploads for other models are refused)');

  const token = readToken(env, 'FWCAST_TOKEN', pick(undefined, env, 'FWCAST_TOKEN_FILE', file, 'tokenFile'), 'upload token');
  if (!token) throw new ConfigError('no upload token: set FWCAST_TOKEN, FWCAST_TOKEN_FILE or "tokenFile" (uploads need `Authorization: Bearer TOKEN`)');
  const readTokenValue = readToken(env, 'FWCAST_READ_TOKEN', pick(undefined, env, 'FWCAST_READ_TOKEN_FILE', file, 'readTokenFile'), 'read token');

  const cert = text(pick(undefined, env, 'FWCAST_TLS_CERT', file, 'tlsCert'));
  const key = text(pick(undefined, env, 'FWCAST_TLS_KEY', file, 'tlsKey'));
  if ((cert === undefined) !== (key === undefined)) throw new ConfigError('TLS needs both "tlsCert" and "tlsKey" (FWCAST_TLS_CERT, FWCAST_TLS_KEY): the certificate chain and its private key');
  const seconds = (variable: string, field: string, max: number, fallback: number): number => 1000 * integer(pick(undefined, env, variable, file, field), 1, max, fallback);
  const headersTimeoutMs = seconds('FWCAST_HEADERS_TIMEOUT', 'headersTimeout', 600, 10);
  const requestTimeoutMs = seconds('FWCAST_REQUEST_TIMEOUT', 'requestTimeout', 86_400, 300);
  const idleTimeoutMs = seconds('FWCAST_IDLE_TIMEOUT', 'idleTimeout', 3600, 30);
  if (requestTimeoutMs < headersTimeoutMs) throw new ConfigError(`requestTimeout (${requestTimeoutMs / 1000} s) must not be shorter than headersTimeout (${headersTimeoutMs / 1000} s): it includes the headers`);
  const maxConnections = integer(pick(undefined, env, 'FWCAST_MAX_CONNECTIONS', file, 'maxConnections'), 1, 1_000_000, 256);
  const maxConnectionsPerClient = integer(pick(undefined, env, 'FWCAST_MAX_CONNECTIONS_PER_CLIENT', file, 'maxConnectionsPerClient'), 1, 1_000_000, 16);

  const maxUploadSize = integer(pick(undefined, env, 'FWCAST_MAX_UPLOAD', file, 'maxUploadSize'), 1024, Number.MAX_SAFE_INTEGER, DEFAULT_MAX_UPLOAD);
  const keepReleases = integer(pick(undefined, env, 'FWCAST_KEEP_RELEASES', file, 'keepReleases'), 0, 1000, 2);
  const format = pick(flags.logFormat, env, 'FWCAST_LOG_FORMAT', file, 'logFormat');
  if (format && format.value !== 'text' && format.value !== 'json') throw new ConfigError(`${format.where} must be "text" or "json"`);
  const logFormat = (format?.value as 'text' | 'json' | undefined) ?? 'text';

  return {
    host, httpPort, store, iface, rate, hops, trustedKeys, roots, models, token, maxUploadSize, keepReleases, logFormat,
    tls: cert && key ? { cert, key } : undefined, readToken: readTokenValue,
    headersTimeoutMs, requestTimeoutMs, idleTimeoutMs, maxConnections, maxConnectionsPerClient,
    listeners: parseServeListeners(pick(undefined, env, 'FWCAST_LISTENERS', file, 'listeners'), models),
  };
}

/** A token from `variable` itself, else from the file `fileSetting` names; checked for length. */
function readToken(env: NodeJS.ProcessEnv, variable: string, fileSetting: { value: unknown; where: string } | undefined, what: string): string | undefined {
  let token = env[variable]?.trim() || undefined;
  if (!token) {
    const tokenFile = text(fileSetting);
    if (tokenFile) {
      try {
        token = readFileSync(tokenFile, 'utf8').trim();
      } catch (err) {
        throw new ConfigError(`cannot read ${what === 'upload token' ? 'token' : what} file ${tokenFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    }
  }
  if (token !== undefined && (token.length < MIN_TOKEN_LENGTH || /\s/.test(token))) {
    throw new ConfigError(`the ${what} must be at least ${MIN_TOKEN_LENGTH} characters without spaces (e.g. \`openssl rand -hex 32\`)`);
  }
  return token;
}
