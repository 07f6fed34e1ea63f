/**
 * The agent's transports, from its configuration: IPv6 multicast on an
 * interface, MQTT through a broker, or both (symbols merged); and the relay's
 * onward transport. Parsing of the "mqtt" and "relay" config objects lives
 * here so config.ts only wires them in.
 *
 *   "mqtt":  { "url": "mqtts://broker:8883", "ca": "/etc/fwcast/ca.pem",
 *              "cert": "/etc/fwcast/dev.pem", "key": "/etc/fwcast/dev.key",
 *              "username": "agent", "passwordFile": "/etc/fwcast/mqtt.pass",
 *              "topicPrefix": "fwcast" }            (only "url" is required)
 *   "relay": { "iface": "eth1", "mqtt": { …as above… }, "rate": "10mbit" }
 *                                                    (at least one of iface, mqtt)
 */
import { parseRate } from '../cli/units.js';
import { ConfigError } from '../protocol/errors.js';
import type { MqttConfig } from '../transport/create.js';

export type { MqttConfig };

export interface RelayConfig {
  iface?: string;
  mqtt?: MqttConfig;
  /** Bits per second on the relay's wire. */
  rate: number;
}

/** The command-line flags for MQTT and relaying (commander's camelCase names). */
export interface TransportFlags {
  mqtt?: string;
  mqttCa?: string;
  mqttCert?: string;
  mqttKey?: string;
  mqttUsername?: string;
  mqttPasswordFile?: string;
  mqttTopicPrefix?: string;
  relayIface?: string;
  relayMqtt?: string;
  relayRate?: string;
}

export const DEFAULT_RELAY_RATE = '10mbit';
const MQTT_FIELDS = ['url', 'ca', 'cert', 'key', 'username', 'passwordFile', 'topicPrefix'] as const;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Validates an "mqtt" object; `where` names it in errors (e.g. "config.mqtt"). */
export function parseMqttConfig(v: unknown, where: string): MqttConfig | undefined {
  if (v === undefined) return undefined;
  if (!isObject(v)) throw new ConfigError(`${where} must be an object with at least "url"`);
  const out: Record<string, string> = {};
  for (const [k, value] of Object.entries(v)) {
    if (!(MQTT_FIELDS as readonly string[]).includes(k)) throw new ConfigError(`${where}: unknown field "${k}" (known: ${MQTT_FIELDS.join(', ')})`);
    if (typeof value !== 'string' || value.length === 0) throw new ConfigError(`${where}.${k} must be a non-empty string`);
    out[k] = value;
  }
  if (!out.url) throw new ConfigError(`${where}.url is required (e.g. "mqtts://broker.example:8883")`);
  checkMqttUrl(out.url, `${where}.url`);
  if ((out.cert === undefined) !== (out.key === undefined)) throw new ConfigError(`${where}: "cert" and "key" go together (client certificate and its private key)`);
  return out as unknown as MqttConfig;
}

function checkMqttUrl(url: string, where: string): void {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ConfigError(`${where}: "${url}" is not a URL (e.g. mqtt://broker:1883 or mqtts://broker:8883)`);
  }
  if (!['mqtt:', 'mqtts:', 'ws:', 'wss:'].includes(u.protocol)) throw new ConfigError(`${where}: scheme must be mqtt, mqtts, ws or wss, got "${u.protocol}"`);
}

/** The agent's MQTT settings: the config's "mqtt" object, each field overridden by its flag. */
export function resolveMqtt(file: unknown, flags: TransportFlags): MqttConfig | undefined {
  const fromFile = parseMqttConfig(file, 'config.mqtt');
  const url = flags.mqtt ?? fromFile?.url;
  const extra = flags.mqttCa ?? flags.mqttCert ?? flags.mqttKey ?? flags.mqttUsername ?? flags.mqttPasswordFile ?? flags.mqttTopicPrefix;
  if (!url) {
    if (extra) throw new ConfigError('--mqtt-* options need a broker: pass --mqtt URL or set "mqtt": { "url": … } in the config');
    return undefined;
  }
  if (flags.mqtt) checkMqttUrl(flags.mqtt, '--mqtt');
  const merged: MqttConfig = { ...fromFile, url };
  if (flags.mqttCa) merged.ca = flags.mqttCa;
  if (flags.mqttCert) merged.cert = flags.mqttCert;
  if (flags.mqttKey) merged.key = flags.mqttKey;
  if (flags.mqttUsername) merged.username = flags.mqttUsername;
  if (flags.mqttPasswordFile) merged.passwordFile = flags.mqttPasswordFile;
  if (flags.mqttTopicPrefix) merged.topicPrefix = flags.mqttTopicPrefix;
  if ((merged.cert === undefined) !== (merged.key === undefined)) throw new ConfigError('mqtt: a client certificate needs its key (--mqtt-cert with --mqtt-key)');
  return merged;
}

/** The relay settings: the config's "relay" object, overridden by --relay-iface, --relay-mqtt, --relay-rate. */
export function resolveRelay(file: unknown, flags: TransportFlags): RelayConfig | undefined {
  let fromFile: { iface?: string; mqtt?: MqttConfig; rate?: string } | undefined;
  if (file !== undefined) {
    if (!isObject(file)) throw new ConfigError('config.relay must be an object: { "iface": "eth1", "rate": "10mbit" }');
    fromFile = {};
    for (const [k, value] of Object.entries(file)) {
      if (k === 'mqtt') fromFile.mqtt = parseMqttConfig(value, 'config.relay.mqtt');
      else if (k === 'iface' || k === 'rate') {
        if (typeof value !== 'string' || value.length === 0) throw new ConfigError(`config.relay.${k} must be a non-empty string`);
        fromFile[k] = value;
      } else throw new ConfigError(`config.relay: unknown field "${k}" (known: iface, mqtt, rate)`);
    }
  }
  const iface = flags.relayIface ?? fromFile?.iface;
  let mqtt = fromFile?.mqtt;
  if (flags.relayMqtt) {
    checkMqttUrl(flags.relayMqtt, '--relay-mqtt');
    mqtt = { ...mqtt, url: flags.relayMqtt };
  }
  if (!iface && !mqtt) {
    if (fromFile || flags.relayRate) throw new ConfigError('config.relay needs "iface" or "mqtt" (or pass --relay-iface / --relay-mqtt)');
    return undefined;
  }
  const rateText = flags.relayRate ?? fromFile?.rate ?? DEFAULT_RELAY_RATE;
  let rate: number;
  try {
    rate = parseRate(rateText);
  } catch (err) {
    throw new ConfigError(`${flags.relayRate ? '--relay-rate' : 'config.relay.rate'}: ${(err as Error).message}`);
  }
  return { ...(iface ? { iface } : {}), ...(mqtt ? { mqtt } : {}), rate };
}
