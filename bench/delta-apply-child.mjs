// One delta apply in a process of its own, from the compiled agent code in
// dist/ (what a device runs; `npm run bench` builds it first), for the delta
// benchmark's decode time and peak RSS.
// argv: base, delta, out, base size, new size; prints one JSON line.
import { readFileSync } from 'node:fs';
import { applyDelta } from '../dist/device-agent/delta-apply.js';

const [basePath, deltaPath, outPath, baseSize, newSize] = process.argv.slice(2);
const started = performance.now();
const sha256 = await applyDelta({ basePath, deltaPath, outPath, baseSize: Number(baseSize), newSize: Number(newSize) });
const ms = performance.now() - started;
// VmHWM, not getrusage's maxRSS: that one keeps the high-water mark of the
// parent's copy between fork and exec (the bench holds images of 256 MiB).
const maxRssKiB = Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))[1]);
process.stdout.write(JSON.stringify({ sha256, ms, maxRssKiB }) + '\n');
