/** The CLIs' logger: one line per event on stderr, as text or JSON (for journald and log shippers). */
import type { LogFields, Logger, LogLevel } from '../protocol/log.js';

const ORDER: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

export interface ConsoleLogInit {
  format?: 'text' | 'json';
  level?: LogLevel;
  stream?: NodeJS.WritableStream;
  /** Called before a line is written, e.g. to clear a live progress line. */
  beforeWrite?: () => void;
}

export function createConsoleLogger(init: ConsoleLogInit = {}, scope = 'fwcast'): Logger {
  const stream = init.stream ?? process.stderr;
  const min = ORDER[init.level ?? 'info'];
  return {
    log(level: LogLevel, message: string, fields?: LogFields) {
      if (ORDER[level] < min) return;
      init.beforeWrite?.();
      const time = new Date().toISOString();
      if (init.format === 'json') {
        stream.write(JSON.stringify({ time, level, scope, msg: message, ...fields }) + '\n');
      } else {
        const extra = fields ? Object.entries(fields).filter(([, v]) => v !== undefined).map(([k, v]) => ` ${k}=${v}`).join('') : '';
        stream.write(`${time} ${level.padEnd(5)} ${scope}: ${message}${extra}\n`);
      }
    },
    child(child: string) {
      return createConsoleLogger(init, child);
    },
  };
}
