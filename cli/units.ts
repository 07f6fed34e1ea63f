/** Parsing of the human units the CLIs take: rates like "20mbit" and durations like "30s". */

const RATE_UNITS: Record<string, number> = { '': 1, bit: 1, k: 1e3, kbit: 1e3, m: 1e6, mbit: 1e6, g: 1e9, gbit: 1e9 };
const DURATION_UNITS: Record<string, number> = { ms: 1, '': 1000, s: 1000, m: 60_000, min: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * Rates that make sense on a wire: below 10 kbit/s one datagram takes a
 * second, and no NIC an agent has reaches 100 Gbit/s.
 */
export const RATE_BOUNDS = { min: 10e3, max: 100e9 } as const;

/** "20mbit" → 20e6 bits per second (tc's units: bit, kbit, mbit, gbit), within RATE_BOUNDS. */
export function parseRate(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim());
  const unit = m ? RATE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined || Number(m[1]) <= 0) throw new RangeError(`rate "${text}": expected a number with bit, kbit, mbit or gbit, e.g. 20mbit`);
  const rate = Number(m[1]) * unit;
  if (rate < RATE_BOUNDS.min || rate > RATE_BOUNDS.max) throw new RangeError(`rate "${text}" must be between 10kbit and 100gbit`);
  return rate;
}

/** "30s", "5m", "2h", "30d", "250ms"; a bare number is seconds. Returns milliseconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim());
  const unit = m ? DURATION_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new RangeError(`duration "${text}": expected a number with ms, s, m, h or d, e.g. 30s`);
  return Number(m[1]) * unit;
}

export function formatRate(bitsPerSecond: number): string {
  if (bitsPerSecond >= 1e9) return `${(bitsPerSecond / 1e9).toFixed(2)} Gbit/s`;
  if (bitsPerSecond >= 1e6) return `${(bitsPerSecond / 1e6).toFixed(1)} Mbit/s`;
  return `${(bitsPerSecond / 1e3).toFixed(1)} kbit/s`;
}
