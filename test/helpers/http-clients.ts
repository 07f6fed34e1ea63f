/**
 * Misbehaving and probing HTTP clients for `fwcast serve` tests, each a node
 * process inside a lab host that reports what it saw as JSON lines on stdout.
 * Every one is bounded: it exits by itself after the time it is given.
 */
import type { NetLab } from '../../scripts/lab/netlab.js';
import { track, type Tracked } from './processes.js';

/** `node -e SCRIPT` in a lab host, with `ARGS` (JSON) defined for the script. */
function runScript(lab: NetLab, host: string, script: string, args: unknown): Tracked {
  return track(lab.spawn(host, process.execPath, ['-e', `const ARGS = ${JSON.stringify(args)};\n${script}`]));
}

/** The JSON lines a client printed so far. */
export function reports<T>(p: Tracked): T[] {
  return p.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as T);
}

export interface FloodReport {
  ms: number;
  /** Connections the server accepted that are still open. */
  open: number;
  /** Connections that were established at some point. */
  connected: number;
  /** Connections the server closed. */
  closed: number;
}

/**
 * Opens `count` TCP connections to host:port and sends nothing on them; reports
 * every 250 ms how many are open, for `seconds`, then exits.
 */
export function idleFlood(lab: NetLab, host: string, target: { host: string; port: number }, count: number, seconds: number): Tracked {
  return runScript(lab, host, `
    const net = require('node:net');
    let open = 0, connected = 0, closed = 0;
    for (let i = 0; i < ARGS.count; i++) {
      const s = net.connect({ host: ARGS.host, port: ARGS.port });
      let up = false;
      s.on('connect', () => { up = true; open++; connected++; });
      s.on('error', () => {});
      s.on('close', () => { if (up) open--; closed++; });
    }
    const t0 = Date.now();
    const report = () => console.log(JSON.stringify({ ms: Date.now() - t0, open, connected, closed }));
    setInterval(report, 250);
    setTimeout(() => { report(); process.exit(0); }, ARGS.seconds * 1000);
  `, { ...target, count, seconds });
}

export interface ProbeReport {
  i: number;
  status?: number;
  error?: string;
  ms: number;
}

/**
 * GETs `url` `count` times, one a second, each on a new connection with a
 * `timeoutMs` deadline; reports each answer (or error).
 */
export function probe(lab: NetLab, host: string, url: string, count: number, timeoutMs: number, headers: Record<string, string> = {}): Tracked {
  return runScript(lab, host, `
    const u = new URL(ARGS.url);
    const get = u.protocol === 'https:' ? require('node:https').get : require('node:http').get;
    let i = 0;
    const once = () => {
      const n = i++;
      const t0 = Date.now();
      let done = false;
      const finish = (r) => { if (done) return; done = true; console.log(JSON.stringify({ i: n, ms: Date.now() - t0, ...r })); if (i >= ARGS.count) setTimeout(() => process.exit(0), 50); };
      const req = get(u, { agent: false, headers: ARGS.headers, rejectUnauthorized: false, timeout: ARGS.timeoutMs }, (res) => { res.resume(); res.on('end', () => finish({ status: res.statusCode })); });
      req.on('timeout', () => { req.destroy(new Error('timeout')); });
      req.on('error', (e) => finish({ error: e.code || e.message }));
    };
    once();
    setInterval(() => { if (i < ARGS.count) once(); }, 1000);
    setTimeout(() => process.exit(0), ARGS.count * 1000 + ARGS.timeoutMs + 1000);
  `, { url, count, timeoutMs, headers });
}

export interface TrickleReport {
  /** When the server closed the connection, ms after connecting; null if it never did. */
  closedAfterMs: number | null;
  /** Bytes of headers sent by then. */
  sent: number;
  /** What the server answered before closing, if anything (e.g. "HTTP/1.1 408 Request Timeout"). */
  answer: string;
}

/**
 * Slowloris: starts a request and sends its headers one byte every
 * `intervalMs`, never finishing them; reports when the server closed the
 * connection. Gives up after `seconds`.
 */
export function slowHeaders(lab: NetLab, host: string, target: { host: string; port: number }, intervalMs: number, seconds: number): Tracked {
  return runScript(lab, host, `
    const s = require('node:net').connect({ host: ARGS.host, port: ARGS.port });
    const head = 'GET /healthz HTTP/1.1\\r\\nHost: fwcast\\r\\n';
    const drip = 'X-Padding: ' + 'a'.repeat(100000);
    let t0 = 0, sent = 0, answer = '', timer;
    const end = (closedAfterMs) => { clearInterval(timer); console.log(JSON.stringify({ closedAfterMs, sent, answer: answer.split('\\r\\n')[0] })); process.exit(0); };
    s.on('connect', () => {
      t0 = Date.now();
      s.write(head);
      sent = head.length;
      timer = setInterval(() => { if (!s.destroyed) { s.write(drip[sent - head.length]); sent++; } }, ARGS.intervalMs);
    });
    s.on('data', (d) => { answer += d; });
    s.on('error', () => {});
    s.on('close', () => end(Date.now() - t0));
    setTimeout(() => end(null), ARGS.seconds * 1000);
  `, { ...target, intervalMs, seconds });
}
