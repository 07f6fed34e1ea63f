/**
 * `fwcast serve` sending only while someone listens: the "listeners" setting
 * and its parsing; the gate itself is carousel/listener-gate.ts.
 *
 *   "listeners": "mdb"                                  FWCAST_LISTENERS=mdb
 *   "listeners": { "source": "mdb", "linger": "30s", "alwaysOn": ["rpi4"] }
 *
 * Off unless set, like `fwcast publish` (see server/listener-options.ts).
 */
import { parseDuration } from '../../cli/units.js';
import { DEFAULT_LINGER_MS } from '../../carousel/listener-gate.js';
import { ConfigError } from '../../protocol/errors.js';
import { isJsonObject } from '../../cli/config-file.js';
import { LISTENER_SOURCES, type ListenerSourceKind } from '../../transport/listeners.js';

export interface ServeListeners {
  source: ListenerSourceKind;
  lingerMs: number;
  /** Channel names sent whether or not anyone listens. */
  alwaysOn: string[];
}

export function parseServeListeners(setting: { value: unknown; where: string } | undefined, models: ReadonlyArray<{ model: string; channel: { name: string } }>): ServeListeners | undefined {
  if (!setting) return undefined;
  const { where } = setting;
  const value = typeof setting.value === 'string' ? { source: setting.value } : setting.value;
  if (!isJsonObject(value)) throw new ConfigError(`${where} must be "mdb", "local" or { "source", "linger", "alwaysOn" }`);
  for (const k of Object.keys(value)) if (!['source', 'linger', 'alwaysOn'].includes(k)) throw new ConfigError(`${where}: unknown field "${k}" (known: source, linger, alwaysOn)`);
  const source = value.source;
  if (typeof source !== 'string' || !(LISTENER_SOURCES as readonly string[]).includes(source)) throw new ConfigError(`${where}.source must be one of ${LISTENER_SOURCES.join(', ')}, got ${JSON.stringify(source)}`);
  let lingerMs = DEFAULT_LINGER_MS;
  if (value.linger !== undefined) {
    try {
      lingerMs = typeof value.linger === 'number' ? value.linger * 1000 : parseDuration(String(value.linger));
    } catch (err) {
      throw new ConfigError(`${where}.linger: ${(err as Error).message}`);
    }
    if (!(lingerMs >= 0)) throw new ConfigError(`${where}.linger must not be negative`);
  }
  const alwaysOn: string[] = [];
  if (value.alwaysOn !== undefined) {
    if (!Array.isArray(value.alwaysOn)) throw new ConfigError(`${where}.alwaysOn must list models`);
    for (const m of value.alwaysOn) {
      const served = models.find((s) => s.model === m);
      if (!served) throw new ConfigError(`${where}.alwaysOn: ${JSON.stringify(m)} is not a served model`);
      alwaysOn.push(served.channel.name);
    }
  }
  return { source: source as ListenerSourceKind, lingerMs, alwaysOn };
}
