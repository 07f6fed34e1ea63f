/**
 * The layering rules in .dependency-cruiser.cjs hold for the whole tree, and
 * each of them does catch what it forbids: a second tree planted in a temp
 * directory breaks every rule once (and uses each allowed exception once), and
 * the checker must report exactly those breaks.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { ROOT } from './helpers/processes.js';

const CONFIG = join(ROOT, '.dependency-cruiser.cjs');
const DEPCRUISE = join(ROOT, 'node_modules', 'dependency-cruiser', 'bin', 'dependency-cruise.mjs');

interface Violation {
  from: string;
  to: string;
  rule: { name: string; severity: string };
  cycle?: Array<{ name: string }>;
}

/** Runs the checker on `dirs` (relative to `cwd`) with the project's rules: one line per violation, and the modules it read. */
function cruise(cwd: string, dirs: string[]): { violations: string[]; modules: Set<string> } {
  const out = execFileSync(process.execPath, [DEPCRUISE, '--config', CONFIG, '--output-type', 'json', ...dirs], { cwd, encoding: 'utf8', maxBuffer: 64 << 20 });
  const result = JSON.parse(out) as { modules: Array<{ source: string }>; summary: { violations: Violation[] } };
  return {
    violations: result.summary.violations.map((v) => `${v.rule.name}: ${[v.from, ...(v.cycle?.map((c) => c.name) ?? [v.to])].join(' → ')}`).sort(),
    modules: new Set(result.modules.map((m) => m.source)),
  };
}

/** Every source directory the TypeScript project covers. */
function sourceDirs(): string[] {
  const tsconfig = JSON.parse(readFileSync(join(ROOT, 'tsconfig.json'), 'utf8')) as { include: string[] };
  return tsconfig.include.filter((d) => existsSync(join(ROOT, d)));
}

test('the tree keeps its layering: no violation of .dependency-cruiser.cjs', (t) => {
  const dirs = sourceDirs();
  const { violations, modules } = cruise(ROOT, dirs);
  t.deepEqual(violations, [], `layering violations:\n${violations.join('\n')}`);
  // A checker that read nothing would find nothing: every source file must have been cruised.
  const sources = dirs.flatMap((d) => readdirSync(join(ROOT, d), { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts')).map((f) => `${d}/${f}`));
  t.true(sources.length > 0);
  t.deepEqual(sources.filter((f) => !modules.has(f)), [], 'source files the checker did not read');
});

test('each layering rule reports a planted violation, and only those', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-layering-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const plant = (path: string, text: string): void => {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), text);
  };
  copyFileSync(join(ROOT, 'tsconfig.json'), join(dir, 'tsconfig.json'));
  // Stand-ins for the I/O packages, so their imports resolve as in the real tree.
  for (const name of ['mqtt', 'serialport']) {
    plant(`node_modules/${name}/package.json`, JSON.stringify({ name, version: '1.0.0', main: 'index.js' }));
    plant(`node_modules/${name}/index.js`, 'module.exports = {};\n');
  }
  plant('node_modules/pure-codec/package.json', JSON.stringify({ name: 'pure-codec', version: '1.0.0', main: 'index.js' }));
  plant('node_modules/pure-codec/index.js', 'module.exports = {};\n');

  // Allowed: the RaptorQ .wasm reader, pure node modules and packages, protocol/ internals, downward imports.
  plant('protocol/raptorq-wasm.ts', "import { readFileSync } from 'node:fs';\nimport { createRequire } from 'node:module';\nexport const wasm = (): Buffer => readFileSync(createRequire(import.meta.url).resolve('pure-codec'));\n");
  plant('protocol/fec.ts', "import { readFileSync } from 'fs';\nexport const wasm = (): Buffer => readFileSync('x.wasm');\n");
  plant('protocol/pure.ts', "import { createHash } from 'node:crypto';\nimport codec from 'pure-codec';\nimport { wasm } from './raptorq-wasm.js';\nexport const h = (): unknown => [createHash('sha256'), codec, wasm];\n");
  plant('transport/transport.ts', "import { h } from '../protocol/pure.js';\nexport const t = h;\n");
  plant('carousel/carousel.ts', "import { t } from '../transport/transport.js';\nexport const c = t;\n");
  plant('storage/file.ts', "import { writeFileSync } from 'node:fs';\nexport const w = writeFileSync;\n");
  plant('cli/log.ts', "import { h } from '../protocol/pure.js';\nexport const l = h;\n");
  plant('server/publish.ts', "import { c } from '../carousel/carousel.js';\nimport { w } from '../storage/file.js';\nimport { l } from '../cli/log.js';\nexport const p = [c, w, l];\nexport type S = number;\n");
  plant('device-agent/agent.ts', "import { c } from '../carousel/carousel.js';\nimport { w } from '../storage/file.js';\nexport const a = [c, w];\n");
  plant('test/helpers/h.ts', "import { p } from '../../server/publish.js';\nimport { a } from '../../device-agent/agent.js';\nexport const x = [p, a];\n");

  // Forbidden, one each.
  plant('server/x.ts', "import { a } from '../device-agent/agent.js';\nexport const x = a;\n");
  plant('device-agent/y.ts', "import type { S } from '../server/publish.js';\nexport const y: S = 1;\n");
  plant('protocol/y.ts', "import { readFileSync } from 'node:fs';\nexport const y = readFileSync;\n");
  plant('protocol/net.ts', "import { createSocket } from 'node:dgram';\nexport const n = createSocket;\n");
  plant('protocol/broker.ts', "import mqtt from 'mqtt';\nexport const b = mqtt;\n");
  plant('protocol/up.ts', "import { w } from '../storage/file.js';\nexport const u = w;\n");
  plant('storage/z.ts', "import type { S } from '../server/publish.js';\nexport const z: S = 2;\n");
  plant('transport/t.ts', "import { l } from '../cli/log.js';\nexport const tt = l;\n");
  plant('cli/c.ts', "import { a } from '../device-agent/agent.js';\nexport const cc = a;\n");
  plant('carousel/k.ts', "import { x } from '../test/helpers/h.js';\nexport const k = x;\n");
  plant('carousel/loop-a.ts', "import { b } from './loop-b.js';\nexport const a = (): unknown => b;\n");
  plant('carousel/loop-b.ts', "import { a } from './loop-a.js';\nexport const b = (): unknown => a;\n");
  plant('device-agent/u.ts', "import { gone } from './missing.js';\nexport const u = gone;\n");

  t.deepEqual(cruise(dir, ['protocol', 'transport', 'carousel', 'storage', 'cli', 'server', 'device-agent', 'test']).violations, [
    'cli-not-sides: cli/c.ts → device-agent/agent.ts',
    'device-agent-not-server: device-agent/y.ts → server/publish.ts',
    'library-not-tooling: carousel/k.ts → test/helpers/h.ts',
    'no-circular: carousel/loop-a.ts → carousel/loop-b.ts → carousel/loop-a.ts',
    'protocol-no-fs: protocol/fec.ts → fs',
    'protocol-no-fs: protocol/y.ts → fs',
    'protocol-no-io: protocol/broker.ts → node_modules/mqtt/index.js',
    'protocol-no-io: protocol/net.ts → dgram',
    'protocol-self-contained: protocol/up.ts → storage/file.ts',
    'resolvable: device-agent/u.ts → ./missing.js',
    'server-not-device-agent: server/x.ts → device-agent/agent.ts',
    'shared-not-sides: storage/z.ts → server/publish.ts',
    'shared-not-sides: transport/t.ts → cli/log.ts',
  ]);
});
