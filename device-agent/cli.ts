/**
 * `fwcast-agent`: the device side. Runs the agent (default command), shows the
 * installed state, and flashes MCUs over serial lines.
 */
import { existsSync, statSync } from 'node:fs';
import { Command, Option } from 'commander';
import { createConsoleLogger } from '../cli/console-log.js';
import { endQuietlyOnClosedStdout, UsageError } from '../cli/fail.js';
import { commonSettings, exitCodesInHelp, runProgram } from '../cli/program.js';
import { EXIT } from '../cli/exit-codes.js';
import { readTrustedKey } from '../cli/key-files.js';
import { readRootFile } from '../cli/root-files.js';
import { DEFAULT_SEGMENT_SIZE } from '../protocol/limits.js';
import type { LogLevel } from '../protocol/log.js';
import { formatRate } from '../cli/units.js';
import { ChannelTransport } from '../channels/channel-transport.js';
import { createTransport, mqttSummary } from '../transport/create.js';
import { RECEIVE_STALL_BUDGET_MS, receiveBufferCap, receiveBufferDrops, receiveBufferFor } from '../transport/receive-buffer.js';
import type { ReceiveBufferReport } from '../transport/udp-multicast.js';
import { Agent, type AgentProgress } from './agent.js';
import { measureCapacity, RATE_HEADROOM, STALL_HEADROOM, type CapacityResult } from './capacity.js';
import { resolveAgentConfig, type AgentFlags } from './config.js';
import { createInstaller } from './installers/create.js';
import { lifecycleStatus } from './install-steps.js';
import { Relay } from './relay.js';
import { addFlashCommand } from './serial/flash-command.js';
import { Store } from './store.js';
import { rolloutStatusText, withRolloutStatus } from './rollout-gate.js';
import { readDecryptionKey } from '../cli/encryption-key-files.js';

interface RunOptions extends AgentFlags {
  once?: boolean;
  json?: boolean;
  logFormat: 'text' | 'json';
  logLevel: LogLevel;
  timeout?: number;
  progressInterval: number;
}

function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

function portNumber(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new UsageError(`--port must be 1..65535, got "${value}"`);
  return n;
}

function seconds(value: string): number {
  const n = Number(value);
  if (!(n > 0)) throw new UsageError(`expected a positive number of seconds, got "${value}"`);
  return n;
}

/** The install lifecycle of each model in the store, and the models it knows that have nothing installed yet. */
function triedStatus(store: Store): { get: (model: string) => ReturnType<typeof lifecycleStatus>; unlisted: string[] } {
  const installed = new Set(store.list().map((r) => r.model));
  return { get: (model) => lifecycleStatus(store, model), unlisted: store.lifecycleModels().filter((m) => !installed.has(m)) };
}

function progressText(p: AgentProgress[]): string {
  return p.map((x) => `${x.model} ${x.version}: ${((100 * x.symbols) / x.symbolsNeeded).toFixed(1)}% (${x.segmentsDone}/${x.segments} segments)`).join(' | ');
}

async function run(opts: RunOptions): Promise<void> {
  const config = resolveAgentConfig(opts);
  const trusted = config.trustedKeys.map(readTrustedKey);
  const root = config.root ? readRootFile(config.root) : undefined;
  const store = new Store(config.store);
  const live = process.stderr.isTTY && opts.logFormat === 'text';
  const clear = (): void => {
    if (live) process.stderr.write('\r\x1b[K');
  };
  const log = createConsoleLogger({ format: opts.logFormat, level: opts.logLevel, beforeWrite: clear });
  const models = await Promise.all(config.models.map(async (m) => ({ model: m.model, channel: m.channel, installer: await createInstaller(m.installer), ...(m.steps ? { steps: m.steps } : {}) })));
  let capped = false;
  const onReceiveBuffer = ({ channel, wanted, granted }: ReceiveBufferReport): void => {
    // Once: the cap is the host's, the same for every channel.
    if (granted >= wanted || capped) return;
    capped = true;
    const model = config.models.find((m) => m.channel === channel)?.model;
    const fix = `sysctl -w net.core.rmem_max=${wanted}`;
    log.child(model ? `agent:${model}` : 'agent').event('agent.receive-buffer-capped', {
      model, channel: channel.name, wantedBytes: wanted, grantedBytes: granted, expectedRate: config.expectedRate, rmemMax: receiveBufferCap(), fix,
    }, `the kernel granted a ${granted}-byte receive buffer, ${wanted} are needed to ride out a ${RECEIVE_STALL_BUDGET_MS} ms stall at ${config.expectedRate / 1e6} Mbit/s: ` +
      `datagrams will be dropped on this host whenever the agent falls behind; raise the cap: ${fix} (persistently: hardware/raspberry-pi/99-fwcast-sysctl.conf in /etc/sysctl.d/)`);
  };
  // Channel sockets through the messaging library, the one implementation of them.
  const transport = new ChannelTransport({ transport: createTransport({ iface: config.iface, mqtt: config.mqtt, receiveBuffer: receiveBufferFor(config.expectedRate), onReceiveBuffer }, log.child('mqtt')) });
  const decryptionKeys = config.decryptionKeys.map(readDecryptionKey);
  const agent = new Agent({ models, trusted, ...(root ? { root } : {}), store, transport, log, limits: config.limits, storageThread: config.storageThread, rollout: config.rollout, decryptionKeys, relaying: config.relay !== undefined });
  // Relay mode: each verified install is carouselled onward (device-agent/relay.ts).
  const relay = config.relay
    ? new Relay({ transport: new ChannelTransport({ transport: createTransport({ iface: config.relay.iface, mqtt: config.relay.mqtt }, log.child('relay:mqtt'), 'relay.mqtt') }), rate: config.relay.rate, store, models, log: log.child('relay'), rootChain: () => agent.rootChain, halts: (model) => agent.rollout.haltDatagrams(model),
      // The deltas its releases list are received where the agent receives, and carried on too.
      upstream: { transport, trusted, root: () => agent.root, limits: config.limits } })
    : undefined;
  if (relay) {
    agent.on('installed', (record) => relay.serve(record.model, record.releaseId));
    // An encrypted release this relay holds no key for: relayed as ciphertext.
    agent.on('kept', (kept) => relay.serve(kept.model, kept.releaseId));
    agent.on('root', () => relay.rootChanged());
    // A halt goes on downstream with the relayed release: devices behind the relay must hear it too.
    agent.on('halt', ({ model }) => {
      const installed = store.installed(model);
      if (installed) relay.serve(model, installed.releaseId, true);
    });
  }

  const done = new Promise<number>((resolve) => {
    const stop = (): void => resolve(0);
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    agent.on('installed', (record) => {
      if (opts.json) process.stdout.write(JSON.stringify({ model: record.model, version: record.version, seq: record.seq, sha256: record.sha256, path: record.path, releaseId: record.releaseId }) + '\n');
      if (opts.once) resolve(0);
    });
    agent.on('failed', () => {
      if (opts.once) resolve(EXIT.failed);
    });
    if (opts.timeout) {
      setTimeout(() => {
        log.event('agent.timeout', { seconds: opts.timeout }, `no install within ${opts.timeout} s`);
        resolve(EXIT.unreachable);
      }, opts.timeout * 1000).unref();
    }
  });
  // The relay first: it re-serves the kept release even while the agent waits for its broker.
  await relay?.start();
  await agent.start();
  // The root the agent loaded at start (provisioned, brought forward by its store) goes out with what the relay serves.
  relay?.rootChanged();
  const ticker = setInterval(() => {
    const p = agent.progress();
    if (p.length === 0) return;
    if (live) process.stderr.write(`\r\x1b[K${progressText(p)}`);
    else {
      for (const x of p) {
        log.child(`agent:${x.model}`).event('release.progress', {
          model: x.model, version: x.version, seq: x.seq, symbols: x.symbols, needed: x.symbolsNeeded, segmentsDone: x.segmentsDone, segments: x.segments,
        }, `progress ${progressText([x])}`);
      }
    }
  }, live ? 250 : opts.progressInterval * 1000);
  const code = await done;
  clearInterval(ticker);
  clear();
  for (const [model, s] of Object.entries(agent.stats())) {
    const dropped = Object.entries(s.dropped);
    const channel = config.models.find((m) => m.model === model)!.channel;
    // What the kernel threw away before the agent saw it: loss the agent made itself.
    const receiveBufferDropped = config.iface ? receiveBufferDrops(channel.group, channel.port) : undefined;
    log.event('agent.stats', {
      model, datagrams: s.datagrams, receiveBufferDrops: receiveBufferDropped, symbolsUsed: s.symbolsAccepted, duplicates: s.duplicates, segmentsDecoded: s.segmentsDecoded,
      authChunksVerified: s.authChunksVerified, decoderTraps: s.decoderTraps, ...Object.fromEntries(dropped.map(([k, v]) => [`dropped.${k}`, v])),
    }, `stats ${model}: ${s.datagrams} datagrams, ${s.symbolsAccepted} symbols used, ${s.duplicates} duplicates` +
      (receiveBufferDropped ? `, ${receiveBufferDropped} dropped by the kernel (receive buffer full)` : '') +
      (dropped.length > 0 ? `; dropped: ${dropped.map(([k, v]) => `${v} ${k}`).join(', ')}` : ''));
  }
  for (const c of agent.channelCounts()) log.event('agent.channel-stats', { ...c }, `${c.channel}: ${c.datagrams} datagrams, ${c.bytes} bytes`);
  const mq = mqttSummary(transport);
  if (mq) log.child('mqtt').event('mqtt.stats', { ...mq }, `stats mqtt: ${mq.reconnects} reconnects`);
  await relay?.stop();
  await agent.stop();
  process.exit(code);
}

function percent(value: string): number {
  const n = Number(value.replace(/%$/, ''));
  if (!(n >= 0 && n < 100)) throw new UsageError(`--loss must be a percentage, at least 0 and below 100, got "${value}"`);
  return n / 100;
}

function mebibytes(value: string): number {
  const n = Number(value);
  if (!(n > 0 && n <= 64)) throw new UsageError(`--segment-mib must be above 0 and at most 64, got "${value}"`);
  return Math.round(n * 2 ** 20);
}

function capacityText(r: CapacityResult): string {
  const mib = (n: number): string => `${+(n / 2 ** 20).toFixed(2)} MiB`;
  const rows: Array<[string, string]> = [
    ['CPU per datagram (authenticate + store)', `${r.cpuPerDatagramUs.toFixed(1)} µs`],
    ['CPU per MiB decoded (decode, digest, write)', `${r.cpuPerMiBDecodedMs.toFixed(1)} ms`],
    ['sustained, received', `${Math.round(r.receivedDatagramsPerSecond)} datagrams/s (${(r.cpuUtilisation * 100).toFixed(0)}% of a CPU)`],
    ['sustained, on the wire', formatRate(r.wireBitsPerSecond)],
    ['longest stall (first release included)', `${r.longestStallMs.toFixed(0)} ms: the receive buffer holds it up to ${formatRate(r.stallBitsPerSecond)}`],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return `fwcast-agent capacity: a ${mib(r.imageBytes)} release in ${mib(r.segmentSize)} segments at ${+(r.loss * 100).toFixed(1)}% loss, ` +
    `${r.transfers} transfers measured, ${+r.cpus.toFixed(2)} CPUs available\n` +
    rows.map(([k, v]) => `  ${k.padEnd(width)}  ${v}\n`).join('') +
    `publisher rate for a fleet of such boards at this loss: --rate ${Math.max(1, Math.floor(r.recommendedRate / 1e6))}mbit ` +
    `(the lower of ${RATE_HEADROOM * 100}% of the sustained rate, the rest being for the kernel's receive path, the installer and the device, ` +
    `and ${Math.round(STALL_HEADROOM * 100)}% of the stall-bound one, since an agent meets longer stalls than a self-test)\n`;
}

export function buildProgram(json = false): Command {
  const program = commonSettings(new Command('fwcast-agent'), json)
    .description('Receive, verify and install firmware from fwcast multicast channels. Never sends anything back.');

  const runCommand = program.command('run', { isDefault: true })
    .description('run the agent (the default command)')
    .option('-c, --config <file>', 'JSON configuration file')
    .option('-m, --model <model>', 'device model to receive (overrides the config\'s model list)')
    .option('-k, --key <key>', 'trusted publisher public key: PEM file or base64 (repeatable)', collect)
    .option('--root <file>', 'root of trust (a signed root document from `fwcast root`) instead of --key: it names the publisher keys, and newer roots come on the channel')
    .option('-i, --iface <name>', 'network interface to join the channel on')
    .option('-s, --store <dir>', 'state and image directory (default /var/lib/fwcast)')
    .option('--group <address>', 'IPv6 multicast group instead of the one derived from the channel name')
    .option('--port <port>', 'UDP port (default 4242)', portNumber)
    .option('--mqtt <url>', 'also (or instead of --iface) receive through an MQTT broker, e.g. mqtts://broker:8883')
    .option('--mqtt-ca <file>', 'CA certificate (PEM) for mqtts')
    .option('--mqtt-cert <file>', 'client certificate (PEM) for mqtts')
    .option('--mqtt-key <file>', 'client private key (PEM) for mqtts')
    .option('--mqtt-username <user>', 'MQTT username')
    .option('--mqtt-password-file <file>', 'file holding the MQTT password')
    .option('--mqtt-topic-prefix <prefix>', 'topic prefix (default fwcast: channel fw/rpi4 is topic fwcast/fw/rpi4)')
    .option('--relay-iface <name>', 'relay mode: re-multicast each installed release on this interface')
    .option('--relay-mqtt <url>', 'relay mode: re-publish each installed release to this MQTT broker')
    .option('--relay-rate <rate>', 'relay rate on the wire (default 10mbit)')
    .option('--expected-rate <rate>', 'the publisher\'s rate to keep up with: sizes the receive buffer (default 100mbit)')
    .option('--device-id <id>', 'this device\'s id for staged rollout (default: /etc/machine-id, else the host name)')
    .option('--cohort <name>', 'a cohort this device belongs to, e.g. canary (repeatable; overrides the config\'s "cohorts")', collect)
    .option('--decryption-key <file>', 'confidential firmware: this device\'s X25519 private key (`fwcast keygen --device`) or a group key (`fwcast keygen --group`) (repeatable)', collect)
    .option('--storage-thread', 'store and decode in a thread of its own: the socket is read while segments decode (about 10 MiB more memory)')
    .addOption(new Option('--install-to <path>', 'install by writing the image to this path (atomic rename)').conflicts('installCommand'))
    .addOption(new Option('--install-command <cmd>', 'install by running this shell command (FWCAST_IMAGE, FWCAST_VERSION, … in its environment)').conflicts('installTo'))
    .option('--once', 'exit 0 after the first successful install')
    .option('--json', 'print one JSON line per install (model, version, seq, sha256, path)')
    .option('--timeout <seconds>', `give up (exit ${EXIT.unreachable}) if nothing was installed by then`, seconds)
    .option('--progress-interval <seconds>', 'seconds between progress log lines when stderr is not a terminal', seconds, 2)
    .addOption(new Option('--log-format <format>', 'log line format').choices(['text', 'json']).default('text'))
    .addOption(new Option('--log-level <level>', 'least severe level logged').choices(['debug', 'info', 'warn', 'error']).default('info'))
    .action((opts: RunOptions) => run(opts));

  program.command('status')
    .description('show what the agent has installed')
    .option('-s, --store <dir>', 'state directory', '/var/lib/fwcast')
    .option('--json', 'print JSON')
    .action((opts: { store: string; json?: boolean }) => {
      // A mistyped store is not "nothing installed".
      if (!existsSync(opts.store)) throw new UsageError(`--store ${opts.store}: no such directory`);
      if (!statSync(opts.store).isDirectory()) throw new UsageError(`--store ${opts.store}: not a directory`);
      const store = new Store(opts.store);
      const records = store.list();
      const tried = triedStatus(store);
      const listed = [...records.map((r) => ({ ...r, ...tried.get(r.model)?.json })), ...tried.unlisted.map((m) => ({ model: m, ...tried.get(m)!.json }))];
      if (opts.json) process.stdout.write(JSON.stringify(withRolloutStatus(opts.store, listed)) + '\n');
      else if (records.length === 0 && tried.unlisted.length === 0) process.stdout.write('nothing installed\n');
      else {
        for (const r of records) process.stdout.write(`${r.model} ${r.version} (seq ${r.seq}) sha256 ${r.sha256} at ${r.path}, installed ${r.installedAt}\n${tried.get(r.model)?.text ?? ''}`);
        for (const m of tried.unlisted) process.stdout.write(`${m}: nothing installed\n${tried.get(m)!.text}`);
      }
      if (!opts.json) process.stdout.write(rolloutStatusText(opts.store));
    });

  program.command('capacity')
    .description('measure what this device can receive: feeds a synthetic signed release to the agent in memory, as fast as it takes it')
    .option('--seconds <n>', 'time to spend measuring', seconds, 5)
    .option('--segment-mib <m>', `segment size of the synthetic release, MiB (4 segments; default ${DEFAULT_SEGMENT_SIZE / 2 ** 20}, as fwcast sign makes them: the longest stall is a segment's decode)`, mebibytes, DEFAULT_SEGMENT_SIZE)
    .option('--loss <percent>', 'datagrams lost on the way, percent', percent, 0)
    .option('--dir <dir>', 'where the temporary stores go (default: the temporary directory; use the store\'s disk)')
    .option('--storage-thread', 'measure the agent with its storage thread (as `fwcast-agent run --storage-thread`)')
    .option('--json', 'print the measurement as JSON')
    .action(async (opts: { seconds: number; segmentMib: number; loss: number; dir?: string; json?: boolean; storageThread?: boolean }) => {
      const r = await measureCapacity({ seconds: opts.seconds, segmentSize: opts.segmentMib, loss: opts.loss, storageThread: opts.storageThread ?? false, ...(opts.dir ? { dir: opts.dir } : {}) });
      process.stdout.write(opts.json ? JSON.stringify(r) + '\n' : capacityText(r));
    });

  addFlashCommand(program);
  // `run` is the default command: its options are the ones most users want.
  program.addHelpText('after', () => `\nOptions of run (the default command: \`fwcast-agent [options]\`):\n${runCommand.createHelp().formatHelp(runCommand, runCommand.createHelp()).split('Options:\n')[1] ?? ''}`);
  exitCodesInHelp(program);
  return program;
}

export async function main(argv = process.argv): Promise<void> {
  endQuietlyOnClosedStdout();
  await runProgram('fwcast-agent', buildProgram, argv);
}
