/**
 * Makes sample firmware images of any size: a recognisable header, then
 * deterministic pseudo-random bytes (incompressible, like a real compressed
 * rootfs), so the same arguments always give the same image.
 *
 *   npx tsx firmware-samples/generate.ts OUT SIZE [SEED]
 *   SIZE accepts K, M and G suffixes (binary): 16M, 256M.
 */
import { createWriteStream } from 'node:fs';
import { once } from 'node:events';

export function parseSize(text: string): number {
  const m = /^(\d+)([KMG]?)$/i.exec(text.trim());
  if (!m) throw new RangeError(`size "${text}": expected a number with an optional K, M or G suffix`);
  return Number(m[1]) * { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G'];
}

export async function writeSampleImage(path: string, size: number, seed = 1): Promise<void> {
  const out = createWriteStream(path);
  let x = seed >>> 0 || 1;
  const header = Buffer.from(`FWCAST SAMPLE IMAGE size=${size} seed=${seed}\n`);
  let written = 0;
  while (written < size) {
    const chunk = Buffer.alloc(Math.min(1 << 20, size - written));
    let i = 0;
    if (written === 0) i = header.copy(chunk);
    for (; i < chunk.length; i++) {
      x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
      chunk[i] = x & 0xff;
    }
    written += chunk.length;
    if (!out.write(chunk)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [path, size, seed] = process.argv.slice(2);
  if (!path || !size) {
    process.stderr.write('usage: npx tsx firmware-samples/generate.ts OUT SIZE [SEED]\n');
    process.exit(2);
  }
  await writeSampleImage(path, parseSize(size), seed ? Number(seed) : 1);
}
