/**
 * A mosquitto broker for tests: configured from test/mqtt/, listening on a port
 * chosen per test, on loopback or inside a lab namespace, always stopped by
 * the test's teardown (and by NetLab.destroy() when spawned in a namespace).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, track, type Tracked } from './processes.js';

export const MOSQUITTO_APT = 'apt-get install -y mosquitto mosquitto-clients';
const MOSQUITTO = ['/usr/sbin/mosquitto', '/usr/bin/mosquitto'].find((p) => existsSync(p));
const MOSQUITTO_PASSWD = ['/usr/bin/mosquitto_passwd', '/usr/sbin/mosquitto_passwd'].find((p) => existsSync(p));

/** Throws, with the line that installs it, when mosquitto is missing. */
export function requireMosquitto(): string {
  if (!MOSQUITTO || !MOSQUITTO_PASSWD) throw new Error(`these tests need the mosquitto broker: ${MOSQUITTO_APT}`);
  return MOSQUITTO;
}

/** A TCP port free on this host's loopback right now (tests run in parallel files). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export interface BrokerInit {
  /**
   * "mosquitto.conf" (anonymous), "mosquitto-acl.conf" (users publisher and
   * agent, passwords), "mosquitto-tls.conf" (TLS, client certificates whose CN
   * is the user; needs `files` ca.pem, broker.crt, broker.key).
   */
  config?: 'mosquitto.conf' | 'mosquitto-acl.conf' | 'mosquitto-tls.conf';
  /** Extra files written into the broker's directory (e.g. certificates). */
  files?: Record<string, string | Buffer>;
  port: number;
  /** Listen address (default 127.0.0.1). */
  address?: string;
  /** Passwords for mosquitto-acl.conf's users. */
  users?: Record<string, string>;
  /** Lines appended to the configuration, e.g. a bridge to another broker. */
  extraConfig?: string;
  /** Starts the process, e.g. inside a lab namespace (default: here). */
  spawn?: (command: string, args: string[]) => ChildProcess;
}

export class Broker {
  readonly dir: string;
  readonly port: number;
  #init: BrokerInit;
  #proc: Tracked | undefined;
  #log = '';

  private constructor(init: BrokerInit) {
    this.#init = init;
    this.port = init.port;
    this.dir = mkdtempSync(join(tmpdir(), 'fwcast-broker-'));
    const template = readFileSync(join(ROOT, 'test', 'mqtt', init.config ?? 'mosquitto.conf'), 'utf8');
    writeFileSync(join(this.dir, 'mosquitto.conf'), template
      .replaceAll('@PORT@', String(init.port))
      .replaceAll('@ADDRESS@', init.address ?? '127.0.0.1')
      .replaceAll('@DIR@', this.dir) + (init.extraConfig ? `\n${init.extraConfig}\n` : ''));
    for (const [name, content] of Object.entries(init.files ?? {})) writeFileSync(join(this.dir, name), content, { mode: 0o600 });
    if (init.config === 'mosquitto-acl.conf' || init.config === 'mosquitto-tls.conf') {
      writeFileSync(join(this.dir, 'acl'), readFileSync(join(ROOT, 'test', 'mqtt', 'acl')));
    }
    if (init.config === 'mosquitto-acl.conf') {
      const passwd = join(this.dir, 'passwd');
      writeFileSync(passwd, '', { mode: 0o600 });
      for (const [user, password] of Object.entries(init.users ?? {})) execFileSync(MOSQUITTO_PASSWD!, ['-b', passwd, user, password]);
    }
  }

  static async start(init: BrokerInit): Promise<Broker> {
    requireMosquitto();
    const broker = new Broker(init);
    await broker.start();
    return broker;
  }

  get url(): string {
    const a = this.#init.address ?? '127.0.0.1';
    const scheme = this.#init.config === 'mosquitto-tls.conf' ? 'mqtts' : 'mqtt';
    return `${scheme}://${a.includes(':') ? `[${a}]` : a}:${this.port}`;
  }

  /** Everything the broker logged, over all its runs. */
  get log(): string {
    return this.#log + (this.#proc?.stderr ?? '');
  }

  async start(): Promise<void> {
    if (this.#proc) throw new Error('broker already running');
    const args = ['-c', join(this.dir, 'mosquitto.conf')];
    const child = this.#init.spawn ? this.#init.spawn(MOSQUITTO!, args) : spawn(MOSQUITTO!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const proc = track(child);
    this.#proc = proc;
    // Ready once it listens (a restart may wait for the old socket to go).
    const deadline = Date.now() + 30_000;
    while (!/mosquitto version \S+ running/.test(proc.stderr)) {
      if (child.exitCode !== null) throw new Error(`mosquitto exited with ${child.exitCode}:\n${proc.stderr}`);
      if (Date.now() > deadline) throw new Error(`mosquitto did not start within 30 s:\n${proc.stderr}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  /** Kills the broker at once (SIGKILL: no goodbye to clients). */
  async kill(): Promise<void> {
    const proc = this.#proc;
    if (!proc) return;
    this.#proc = undefined;
    if (proc.child.exitCode === null) proc.child.kill('SIGKILL');
    await proc.exited;
    this.#log += proc.stderr;
  }

  async stop(): Promise<void> {
    const proc = this.#proc;
    if (!proc) return;
    this.#proc = undefined;
    if (proc.child.exitCode === null) proc.child.kill('SIGTERM');
    const timer = setTimeout(() => proc.child.kill('SIGKILL'), 3000);
    await proc.exited;
    clearTimeout(timer);
    this.#log += proc.stderr;
  }
}
