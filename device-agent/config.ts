/**
 * Agent configuration: a JSON file, overridden by command-line flags.
 *
 *   {
 *     "interface": "eth0",
 *     "store": "/var/lib/fwcast",
 *     "trustedKeys": ["/etc/fwcast/publisher.pub"],
 *     "root": "/etc/fwcast/root.cbor",
 *     "port": 4242,
 *     "models": [
 *       { "model": "rpi4", "installer": { "type": "file", "path": "/var/lib/fwcast/current.img" } },
 *       { "model": "sensor-mcu", "group": "ff15::5", "installer": { "type": "command", "command": "/usr/local/bin/flash-mcu" } },
 *       { "model": "gateway", "installer": { "type": "command", "command": "true" },
 *         "steps": { "activate": "…", "health": "…", "commit": "…", "rollback": "…" } }
 *     ],
 *     "limits": { "maxImageSize": 268435456 },
 *     "mqtt": { "url": "mqtts://broker:8883", "ca": "/etc/fwcast/ca.pem", "username": "agent", "passwordFile": "/etc/fwcast/mqtt.pass" },
 *     "relay": { "iface": "eth1", "rate": "10mbit" },
 *     "expectedRate": "100mbit",
 *     "storageThread": true
 *   }
 *
 * "interface" (IPv6 multicast) and "mqtt" (a broker, see docs/mqtt.md) may both
 * be given: the agent listens on both and merges what it hears; one of them is
 * required. "mqtt" takes url (required), ca, cert, key, username, passwordFile,
 * topicPrefix. "relay" re-sends each installed release onward on "iface" and/or
 * "mqtt" at "rate" (default 10mbit); see device-agent/relay.ts and transports.ts.
 *
 * "deviceId", "cohorts" and "maintenanceWindows" (or --device-id, --cohort)
 * are the device's side of staged rollout: see rollout-config.ts.
 *
 * "root" (or --root) is a signed root document (`fwcast root create`): the
 * publisher keys are those it delegates, and newer roots come on the channel.
 * "trustedKeys" (or --key) is the fixed list for small setups; one of the two
 * is required, and --root wins over a file's trustedKeys (and --key over its root).
 *
 * Every error names the field it is about.
 */
import { join } from 'node:path';
import { isJsonObject, readJsonConfig, type JsonObject } from '../cli/config-file.js';
import { parseRate } from '../cli/units.js';
import { channelGroup, checkMulticastGroup, DEFAULT_PORT, modelChannelName } from '../protocol/channel.js';
import { ConfigError } from '../protocol/errors.js';
import { DEFAULT_LIMITS, type ReceiverLimits } from '../protocol/limits.js';
import { checkModelName } from '../protocol/manifest.js';
import type { Channel } from '../transport/transport.js';
import { resolveMqtt, resolveRelay, type MqttConfig, type RelayConfig, type TransportFlags } from './transports.js';
import { modelFileName } from './store.js';
import { parseInstallSteps, type InstallSteps } from './install-steps.js';
import { resolveRollout } from './rollout-config.js';
import type { DeviceRollout } from '../protocol/rollout.js';

export type InstallerConfig =
  | { type: 'file'; path: string }
  | { type: 'command'; command: string; timeoutSeconds?: number }
  | { type: 'serial'; protocol: string; port: string; baud?: number; [option: string]: unknown };

export interface ModelConfig {
  model: string;
  channel: Channel;
  installer: InstallerConfig;
  /** Try the install before keeping it (install-steps.ts): activate, health, commit, rollback. */
  steps?: InstallSteps;
}

export interface AgentConfig {
  /** Multicast interface; undefined when the agent listens on MQTT only. */
  iface: string | undefined;
  store: string;
  trustedKeys: string[];
  /** Path of the provisioned root document, if the agent uses a root of trust. */
  root?: string;
  models: ModelConfig[];
  limits: ReceiverLimits;
  mqtt?: MqttConfig;
  relay?: RelayConfig;
  /** The publisher's rate the agent must keep up with, bits per second. */
  expectedRate: number;
  /** Store and decode in a thread of each model's own (AgentInit.storageThread). */
  storageThread: boolean;
  /** Device id, cohorts and maintenance windows for staged rollout (rollout-config.ts). */
  rollout: DeviceRollout;
  /** Confidential firmware: files of the device's X25519 private key and group keys ("decryptionKeys", --decryption-key). */
  decryptionKeys: string[];
}

export const DEFAULT_EXPECTED_RATE = '100mbit';

/** What the command line may set; every field overrides the file's. */
export interface AgentFlags extends TransportFlags {
  config?: string;
  model?: string;
  key?: string[];
  root?: string;
  iface?: string;
  store?: string;
  group?: string;
  port?: number;
  installTo?: string;
  installCommand?: string;
  expectedRate?: string;
  storageThread?: boolean;
  deviceId?: string;
  cohort?: string[];
  decryptionKey?: string[];
}

type Json = JsonObject;
const isObject = isJsonObject;

function str(obj: Json, field: string, where: string): string | undefined {
  const v = obj[field];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || v.length === 0) throw new ConfigError(`${where}.${field} must be a non-empty string`);
  return v;
}

function port(v: unknown, where: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) throw new ConfigError(`${where} must be a port number 1..65535`);
  return v;
}

function parseInstaller(v: unknown, where: string): InstallerConfig {
  if (!isObject(v)) throw new ConfigError(`${where} must be an object with a "type"`);
  switch (v.type) {
    case 'file': {
      const path = str(v, 'path', where);
      if (!path) throw new ConfigError(`${where}.path is required for a file installer`);
      return { type: 'file', path };
    }
    case 'command': {
      const command = str(v, 'command', where);
      if (!command) throw new ConfigError(`${where}.command is required for a command installer`);
      const t = v.timeoutSeconds;
      if (t !== undefined && (typeof t !== 'number' || !(t > 0))) throw new ConfigError(`${where}.timeoutSeconds must be a positive number`);
      return { type: 'command', command, ...(t !== undefined ? { timeoutSeconds: t } : {}) };
    }
    case 'serial': {
      const protocol = str(v, 'protocol', where);
      const serialPort = str(v, 'port', where);
      if (!protocol || !serialPort) throw new ConfigError(`${where} needs "protocol" and "port" for a serial installer`);
      return { ...v, type: 'serial', protocol, port: serialPort };
    }
    default:
      throw new ConfigError(`${where}.type must be "file", "command" or "serial", got ${JSON.stringify(v.type)}`);
  }
}

function parseLimits(v: unknown): ReceiverLimits {
  if (v === undefined) return { ...DEFAULT_LIMITS };
  if (!isObject(v)) throw new ConfigError('limits must be an object');
  const limits = { ...DEFAULT_LIMITS };
  for (const [k, value] of Object.entries(v)) {
    if (!Object.hasOwn(limits, k)) throw new ConfigError(`limits.${k} is not a known limit (${Object.keys(limits).join(', ')})`);
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) throw new ConfigError(`limits.${k} must be a positive integer`);
    limits[k as keyof ReceiverLimits] = value;
  }
  return limits;
}


function storageThread(flag: boolean | undefined, file: unknown): boolean {
  if (file !== undefined && typeof file !== 'boolean') throw new ConfigError('config.storageThread must be true or false');
  return flag ?? file ?? false;
}

function expectedRate(flag: string | undefined, file: unknown): number {
  if (file !== undefined && (typeof file !== 'string' || file.length === 0)) throw new ConfigError('config.expectedRate must be a rate such as "100mbit"');
  try {
    return parseRate(flag ?? (file as string | undefined) ?? DEFAULT_EXPECTED_RATE);
  } catch (err) {
    throw new ConfigError(`${flag !== undefined ? '--expected-rate' : 'config.expectedRate'}: ${(err as Error).message}`);
  }
}

function channelFor(model: string, group: string | undefined, p: number): Channel {
  const name = modelChannelName(model);
  return { name, group: group ? checkMulticastGroup(group) : channelGroup(name), port: p };
}

export function resolveAgentConfig(flags: AgentFlags): AgentConfig {
  const file = flags.config ? readJsonConfig(flags.config) : {};
  const known = new Set(['interface', 'store', 'trustedKeys', 'root', 'port', 'models', 'limits', 'mqtt', 'relay', 'expectedRate', 'storageThread', 'deviceId', 'cohorts', 'maintenanceWindows', 'decryptionKeys']);
  for (const k of Object.keys(file)) if (!known.has(k)) throw new ConfigError(`config: unknown field "${k}" (known: ${[...known].join(', ')})`);

  const iface = flags.iface ?? str(file, 'interface', 'config');
  const mqtt = resolveMqtt(file.mqtt, flags);
  if (!iface && !mqtt) throw new ConfigError('no network interface: set "interface" in the config or pass --iface (or use a broker: "mqtt" or --mqtt)');
  const relay = resolveRelay(file.relay, flags);
  const store = flags.store ?? str(file, 'store', 'config') ?? '/var/lib/fwcast';
  const defaultPort = flags.port ?? (file.port === undefined ? DEFAULT_PORT : port(file.port, 'config.port'));

  let trustedKeys: string[] = flags.key ?? [];
  const fileRoot = str(file, 'root', 'config');
  const root = flags.root ?? (trustedKeys.length === 0 ? fileRoot : undefined);
  if (trustedKeys.length === 0 && !root && file.trustedKeys !== undefined) {
    if (!Array.isArray(file.trustedKeys) || !file.trustedKeys.every((k) => typeof k === 'string')) throw new ConfigError('config.trustedKeys must be an array of key file paths or base64 keys');
    trustedKeys = file.trustedKeys as string[];
  }
  if (trustedKeys.length === 0 && !root) throw new ConfigError('no trusted public key: set "root" or "trustedKeys" in the config, or pass --root or --key');
  if (root && flags.key?.length) throw new ConfigError('--root and --key exclude each other: a root names the publisher keys it trusts');
  if (file.decryptionKeys !== undefined && (!Array.isArray(file.decryptionKeys) || !file.decryptionKeys.every((k) => typeof k === 'string' && k.length > 0))) {
    throw new ConfigError('config.decryptionKeys must be an array of key file paths (`fwcast keygen --device` private keys, `fwcast keygen --group` keys)');
  }
  const decryptionKeys = flags.decryptionKey ?? (file.decryptionKeys as string[] | undefined) ?? [];

  const flagInstaller: InstallerConfig | undefined = flags.installCommand
    ? { type: 'command', command: flags.installCommand }
    : flags.installTo ? { type: 'file', path: flags.installTo } : undefined;

  let models: ModelConfig[];
  if (flags.model) {
    const model = checkModelName(flags.model);
    const fromFile = Array.isArray(file.models) ? (file.models as unknown[]).find((m) => isObject(m) && m.model === model) as Json | undefined : undefined;
    const installer = flagInstaller ?? (fromFile?.installer !== undefined ? parseInstaller(fromFile.installer, `models[${model}].installer`) : { type: 'file' as const, path: join(store, 'current', `${modelFileName(model)}.img`) });
    const group = flags.group ?? (fromFile ? str(fromFile, 'group', `models[${model}]`) : undefined);
    const steps = fromFile?.steps !== undefined ? parseInstallSteps(fromFile.steps, `models[${model}].steps`) : undefined;
    models = [{ model, channel: channelFor(model, group, defaultPort), installer, ...(steps ? { steps } : {}) }];
  } else {
    if (!Array.isArray(file.models) || file.models.length === 0) throw new ConfigError('no model: list "models" in the config or pass --model');
    if (flags.group || flagInstaller) throw new ConfigError('--group, --install-to and --install-command apply to one model: pass --model too');
    models = (file.models as unknown[]).map((m, i) => {
      const where = `config.models[${i}]`;
      if (!isObject(m)) throw new ConfigError(`${where} must be an object`);
      const model = str(m, 'model', where);
      if (!model) throw new ConfigError(`${where}.model is required`);
      checkModelName(model);
      const installer = m.installer === undefined ? { type: 'file' as const, path: join(store, 'current', `${modelFileName(model)}.img`) } : parseInstaller(m.installer, `${where}.installer`);
      const p = m.port === undefined ? defaultPort : port(m.port, `${where}.port`);
      const steps = m.steps === undefined ? undefined : parseInstallSteps(m.steps, `${where}.steps`);
      return { model, channel: channelFor(model, str(m, 'group', where), p), installer, ...(steps ? { steps } : {}) };
    });
  }
  const seen = new Set<string>();
  for (const m of models) {
    if (seen.has(m.model)) throw new ConfigError(`model "${m.model}" is listed twice`);
    seen.add(m.model);
  }
  return { iface, store, trustedKeys: root ? [] : trustedKeys, ...(root ? { root } : {}), models, limits: parseLimits(file.limits), expectedRate: expectedRate(flags.expectedRate, file.expectedRate), storageThread: storageThread(flags.storageThread, file.storageThread), rollout: resolveRollout(file, flags), decryptionKeys, ...(mqtt ? { mqtt } : {}), ...(relay ? { relay } : {}) };
}
