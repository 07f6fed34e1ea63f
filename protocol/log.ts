/**
 * The logging contract. Library code logs through an injected Logger and never
 * writes to the console; the CLIs decide how lines look (text or JSON).
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFields = Record<string, string | number | boolean | undefined>;

export interface Logger {
  log(level: LogLevel, message: string, fields?: LogFields): void;
  /** A logger whose lines are tagged with `scope` (e.g. "agent:rpi4"). */
  child(scope: string): Logger;
}

export const nullLogger: Logger = {
  log() {},
  child() {
    return nullLogger;
  },
};
