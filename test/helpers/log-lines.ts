/** What every log line must be, whatever reached the logger: checks a whole log, text or JSON. */
import type { ExecutionContext } from 'ava';
import { checkEventLine, LOG_EVENTS } from '../../protocol/log.js';

/** No line may be longer, whatever it carries (cli/console-log.ts cuts each string). */
export const MAX_LINE_CHARACTERS = 4096;

/** Characters that break a line or drive a terminal: C0, DEL, C1, U+2028/9, bidi controls and other invisible format characters. */
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]/;

/** A text line: `TIME LEVEL SCOPE: MESSAGE event=NAME k=v …`, a value bare or a JSON string. */
const TEXT_LINE = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (debug|info |warn |error) (\S+): (.*?) event=([a-z-]+\.[a-z-]+)((?: [^\s="]+=(?:"(?:[^"\\]|\\.)*"|[^\s"]+))*)$/;

export interface CheckedLine {
  raw: string;
  time: number;
  event: string;
  /** The line's fields: for JSON all of them, for text the values as written (a JSON string still quoted). */
  fields: Record<string, unknown>;
}

/**
 * Checks that `output` is whole lines, each one event of the contract in the
 * given format, at most MAX_LINE_CHARACTERS long, with no unsafe character, and
 * none forged (a line an attacker wrote would start with the year 2001 of
 * test/helpers/log-attacker.ts). Returns the lines, parsed. One assertion per
 * property, not per line, so a flood's log does not make a million.
 */
export function checkLogLines(t: ExecutionContext, output: string, format: 'text' | 'json'): CheckedLine[] {
  t.true(output === '' || output.endsWith('\n'), 'the log ends with a whole line');
  const raws = output.split('\n').slice(0, -1);
  const lines: CheckedLine[] = [];
  const broken: string[] = [];
  for (const raw of raws) {
    const why = raw.length > MAX_LINE_CHARACTERS ? `${raw.length} characters`
      : UNSAFE.test(raw) ? 'an unsafe character'
        : raw.startsWith('2001-') || raw.includes('"time":"2001-') ? 'forged' : undefined;
    if (why) {
      broken.push(`${why}: ${raw.slice(0, 300)}`);
      continue;
    }
    if (format === 'json') {
      let line: Record<string, unknown>;
      try {
        line = JSON.parse(raw) as Record<string, unknown>;
      } catch {
        broken.push(`not JSON: ${raw.slice(0, 300)}`);
        continue;
      }
      const contract = checkEventLine(line);
      if (contract) broken.push(`${contract}: ${raw.slice(0, 300)}`);
      else lines.push({ raw, time: Date.parse(String(line.time)), event: String(line.event), fields: line });
      continue;
    }
    const m = TEXT_LINE.exec(raw);
    if (!m || !Object.hasOwn(LOG_EVENTS, m[5]!)) {
      broken.push(`not a text log line: ${raw.slice(0, 300)}`);
      continue;
    }
    const fields: Record<string, unknown> = {};
    for (const p of m[6]!.matchAll(/ ([^\s="]+)=("(?:[^"\\]|\\.)*"|[^\s"]+)/g)) fields[p[1]!] = p[2]!;
    lines.push({ raw, time: Date.parse(m[1]!), event: m[5]!, fields });
  }
  t.deepEqual(broken.slice(0, 5), [], `${format}: ${broken.length} of ${raws.length} lines break the rules`);
  return lines;
}
