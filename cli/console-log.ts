/**
 * The CLIs' logger: one line per event on stderr, as text or JSON (for journald
 * and log shippers). Messages and field values may hold strings from the
 * network or a client (model names, URLs, error messages): neither format lets
 * them break a line or reach a terminal as control characters.
 */
import { LOG_EVENTS, type LogEvent, type LogFields, type Logger, type LogLevel } from '../protocol/log.js';

const ORDER: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

export interface ConsoleLogInit {
  format?: 'text' | 'json';
  level?: LogLevel;
  stream?: NodeJS.WritableStream;
  /** Called before a line is written, e.g. to clear a live progress line. */
  beforeWrite?: () => void;
}

/** C0 and C1 controls, DEL, and the two Unicode line separators. */
// eslint-disable-next-line no-control-regex
const CONTROLS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
const escaped = (s: string): string => s.replace(CONTROLS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);

/** JSON.stringify escapes C0 controls, quotes and backslashes; this also escapes what it leaves (C1, DEL, U+2028/9). */
const json = (value: unknown): string => escaped(JSON.stringify(value));

/** A text field value: bare if it is one plain word, else a JSON string (quoted, escaped). */
function textValue(v: string | number | boolean): string {
  const s = String(v);
  return /^[^\s"=\\]+$/.test(s) && escaped(s) === s ? s : json(s);
}

const OWN = new Set(['time', 'level', 'scope', 'event', 'msg']);

export function createConsoleLogger(init: ConsoleLogInit = {}, scope = 'fwcast'): Logger {
  const stream = init.stream ?? process.stderr;
  const min = ORDER[init.level ?? 'info'];
  return {
    event(event: LogEvent, fields: LogFields, message: string = event) {
      const level = LOG_EVENTS[event].level;
      if (ORDER[level] < min) return;
      init.beforeWrite?.();
      const own = { time: new Date().toISOString(), level, scope, event, msg: message };
      if (init.format === 'json') {
        // The line's own keys last as well, so a field can never overwrite them.
        stream.write(json({ ...own, ...fields, ...own }) + '\n');
        return;
      }
      const pairs: Array<[string, string | number | boolean]> = [['event', event]];
      for (const [k, v] of Object.entries(fields)) if (v !== undefined && !OWN.has(k)) pairs.push([k, v]);
      const extra = pairs.map(([k, v]) => ` ${escaped(k)}=${textValue(v)}`).join('');
      stream.write(`${own.time} ${level.padEnd(5)} ${escaped(scope)}: ${escaped(message)}${extra}\n`);
    },
    child(child: string) {
      return createConsoleLogger(init, child);
    },
  };
}
