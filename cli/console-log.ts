/**
 * The CLIs' logger: one line per event on stderr, as text or JSON (for journald
 * and log shippers). Messages and field values may hold strings from the
 * network or a client (model names, URLs, error messages): neither format lets
 * them break a line, reach a terminal as control characters, or make a line
 * long: each string is cut to a bound, escapes included, saying how long it was.
 */
import { LOG_EVENTS, type LogEvent, type LogFields, type Logger, type LogLevel } from '../protocol/log.js';
import { cutString, escapeUnsafe, UNSAFE_CHARACTERS } from '../protocol/quote.js';

const ORDER: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

export interface ConsoleLogInit {
  format?: 'text' | 'json';
  level?: LogLevel;
  stream?: NodeJS.WritableStream;
  /** Called before a line is written, e.g. to clear a live progress line. */
  beforeWrite?: () => void;
}

/** The most characters a field value takes on a line, escapes and quotes included. */
export const MAX_VALUE_CHARACTERS = 512;
/** The most characters the message takes on a line, escapes included. */
export const MAX_MESSAGE_CHARACTERS = 1024;

/** JSON.stringify escapes C0 controls, quotes and backslashes; this also escapes the other unsafe characters (C1, DEL, U+2028/9, bidi). */
const json = (value: unknown): string => escapeUnsafe(JSON.stringify(value));

const UNSAFE = new RegExp(UNSAFE_CHARACTERS.source);

/** `s` itself if it fits in `max` characters once escaped, else cut to fit with "…(N characters)" saying how long it was. */
function bounded(s: string, max: number): string {
  // An escaped character takes at most 6 (\uXXXX): most strings need no counting, and most others fit as they are.
  if (s.length * 6 <= max || (s.length <= max && json(s).length <= max)) return s;
  const suffix = `…(${s.length} characters)`;
  const room = max - suffix.length - 2; // and the quotes around a JSON string
  let used = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    used += c === '"' || c === '\\' ? 2 : UNSAFE.test(c) ? 6 : 1;
    if (used > room) return cutString(s, i) + suffix;
  }
  return s;
}

/** A text field value: bare if it is one plain word, else a JSON string (quoted, escaped). */
function textValue(v: string | number | boolean): string {
  const s = typeof v === 'string' ? bounded(v, MAX_VALUE_CHARACTERS) : String(v);
  return /^[^\s"=\\]+$/.test(s) && escapeUnsafe(s) === s ? s : json(s);
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
      const own = { time: new Date().toISOString(), level, scope, event, msg: bounded(message, MAX_MESSAGE_CHARACTERS) };
      if (init.format === 'json') {
        // Field by field onto the line's own keys, which a field can never overwrite (and no object
        // spread: V8 makes spreads that overwrite keys ~10 µs slower than this whole line).
        const line: Record<string, unknown> = own;
        for (const k in fields) {
          const v = fields[k];
          if (!OWN.has(k)) line[k] = typeof v === 'string' ? bounded(v, MAX_VALUE_CHARACTERS) : v;
        }
        stream.write(json(line) + '\n');
        return;
      }
      const pairs: Array<[string, string | number | boolean]> = [['event', event]];
      for (const k in fields) {
        const v = fields[k];
        if (v !== undefined && !OWN.has(k)) pairs.push([k, v]);
      }
      const extra = pairs.map(([k, v]) => ` ${escapeUnsafe(k)}=${textValue(v)}`).join('');
      stream.write(`${own.time} ${level.padEnd(5)} ${escapeUnsafe(scope)}: ${escapeUnsafe(own.msg)}${extra}\n`);
    },
    child(child: string) {
      return createConsoleLogger(init, child);
    },
  };
}
