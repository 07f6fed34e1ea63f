/**
 * The command lines behave as users expect of Unix tools: --version, one table
 * of exit codes (cli/exit-codes.ts) in every --help, each bad flag refused at
 * the door with one line naming it, usage errors as one line and a hint,
 * --json results and --json errors, and `fwcast releases list|retire` against
 * a real `fwcast serve`.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EXIT } from '../cli/exit-codes.js';
import { NetLab } from '../scripts/lab/netlab.js';
import { exitCode, FWCAST, FWCAST_AGENT, ROOT, signedRelease, track } from './helpers/processes.js';
import { fwcastAsync, push, serveConfig, startServe, TOKEN } from './helpers/serve.js';

const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

function run(bin: string, ...args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 60_000 });
}

const setup = signedRelease('fwcast-cli-', 20_000);
test.after.always(() => rmSync(setup.dir, { recursive: true, force: true }));
const KEY = join(setup.dir, 'publisher.key');
const IMAGE = join(setup.dir, 'image.bin');
const sign = (...extra: string[]): ReturnType<typeof run> =>
  run(FWCAST, 'sign', IMAGE, '--key', KEY, '--model', 'rpi4', '--version', '1.0.0', '--seq', '2', '--out', join(setup.dir, 'out.fwc'), ...extra);

test('--version on both commands prints package.json\'s version; sign keeps its own --version', (t) => {
  for (const bin of [FWCAST, FWCAST_AGENT]) {
    const r = run(bin, '--version');
    t.is(r.status, 0);
    t.is(r.stdout, `${VERSION}\n`);
  }
  const r = sign('--json');
  t.is(r.status, 0, r.stderr);
  t.like(JSON.parse(r.stdout), { ok: true, model: 'rpi4', version: '1.0.0', seq: 2 });
});

test('every --help shows the one exit-code table, the README has the same', (t) => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const rows = Object.values(EXIT).map((code) => new RegExp(`^  ${code}  \\S`, 'm'));
  for (const [bin, command] of [[FWCAST, []], [FWCAST, ['sign']], [FWCAST, ['push']], [FWCAST, ['releases', 'list']], [FWCAST_AGENT, []], [FWCAST_AGENT, ['status']]] as const) {
    const r = run(bin, ...command, '--help');
    t.is(r.status, 0);
    for (const row of rows) t.regex(r.stdout, row, `${command.join(' ') || 'root'} --help`);
  }
  for (const code of Object.values(EXIT)) t.regex(readme, new RegExp(`^\\| ${code} \\| `, 'm'), `README row for exit ${code}`);
});

test('fwcast-agent --help shows run\'s options, the default command', (t) => {
  const r = run(FWCAST_AGENT, '--help');
  t.regex(r.stdout, /^Options of run/m);
  t.regex(r.stdout, /--install-to <path>/);
  t.regex(r.stdout, /--expected-rate <rate>/);
});

test('usage errors: one line and a hint, exit 2, not the whole help page', (t) => {
  for (const [bin, args] of [[FWCAST, ['sign', IMAGE, '--bogus']], [FWCAST, ['push']], [FWCAST_AGENT, ['status', '--bogus']]] as const) {
    const r = run(bin, ...args);
    t.is(r.status, EXIT.usage, r.stderr);
    const lines = r.stderr.trimEnd().split('\n');
    t.is(lines.length, 2, r.stderr);
    t.regex(lines[0]!, /^error: /);
    t.regex(lines[1]!, /--help/);
    t.is(r.stdout, '');
  }
});

/** A validation at the door: exit code, and one stderr line saying it. */
function refused(t: { is(a: unknown, b: unknown, m?: string): void; regex(s: string, r: RegExp, m?: string): void }, r: ReturnType<typeof run>, code: number, line: RegExp): void {
  t.is(r.status, code, r.stderr);
  const lines = r.stderr.trimEnd().split('\n');
  t.is(lines.length, 1, r.stderr);
  t.regex(lines[0]!, line);
}

test('sign: a missing image or a directory is one line naming it, exit 2', (t) => {
  refused(t, run(FWCAST, 'sign', join(setup.dir, 'nope.img'), '--key', KEY, '--model', 'rpi4', '--version', '1', '--seq', '1', '--out', join(setup.dir, 'x.fwc')), EXIT.usage,
    /^fwcast: error: IMAGE \S+nope\.img: no such file$/);
  refused(t, run(FWCAST, 'sign', setup.dir, '--key', KEY, '--model', 'rpi4', '--version', '1', '--seq', '1', '--out', join(setup.dir, 'x.fwc')), EXIT.usage,
    /^fwcast: error: IMAGE \S+: not a file \(a directory\)$/);
});

test('sign: --datagram-size only up to what receivers accept; what it allows, inspect reads', (t) => {
  refused(t, sign('--datagram-size', '9000'), EXIT.usage, /^fwcast: error: --datagram-size must be an integer in 128\.\.(\d+), got "9000"$/);
  const max = Number(/128\.\.(\d+)/.exec(sign('--datagram-size', '9000').stderr)![1]);
  const r = sign('--datagram-size', String(max));
  t.is(r.status, 0, r.stderr);
  t.is(run(FWCAST, 'inspect', join(setup.dir, 'out.fwc')).status, 0, 'the largest allowed size makes a release inspect accepts');
});

test('sign: --expires must be positive', (t) => {
  refused(t, sign('--expires', '0s'), EXIT.usage, /^fwcast: error: --expires must be at least 1s, got "0s"$/);
  refused(t, sign('--expires', 'soon'), EXIT.usage, /^fwcast: error: --expires: duration "soon": expected/);
});

test('sign and channel: the same model-name rule; names are case-sensitive', (t) => {
  refused(t, run(FWCAST, 'channel', 'bad model'), EXIT.usage, /^fwcast: error: model "bad model" must be 1-64 characters/);
  refused(t, sign('--model', 'bad model'), EXIT.usage, /^fwcast: error: model "bad model" must be 1-64 characters/);
  const lower = JSON.parse(run(FWCAST, 'channel', 'rpi4', '--json').stdout) as { channel: string; group: string };
  const upper = JSON.parse(run(FWCAST, 'channel', 'RPi4', '--json').stdout) as { channel: string; group: string };
  t.is(upper.channel, 'fw/RPi4');
  t.not(upper.group, lower.group, 'RPi4 and rpi4 are two channels');
});

test('publish: --rate within 10kbit..100gbit, one line naming the flag', (t) => {
  for (const rate of ['1bit', '99999gbit', 'fast']) {
    refused(t, run(FWCAST, 'publish', setup.release, '--iface', 'lo', '--rate', rate), EXIT.usage, new RegExp(`^fwcast: error: --rate: rate "${rate}"[ :]`));
  }
});

test('publish: a release file that does not exist is one line, exit 2', (t) => {
  refused(t, run(FWCAST, 'publish', join(setup.dir, 'nope.fwc'), '--iface', 'lo'), EXIT.usage, /^fwcast: error: FILE \S+nope\.fwc: no such file$/);
});

test('inspect: no "expires null" in text; a bad signature exits 3; --json errors are JSON', (t) => {
  const text = run(FWCAST, 'inspect', setup.release).stdout;
  t.regex(text, /^expires +never$/m);
  const other = mkdtempSync(join(tmpdir(), 'fwcast-cli-key-'));
  t.teardown(() => rmSync(other, { recursive: true, force: true }));
  run(FWCAST, 'keygen', '--out', other);
  t.is(run(FWCAST, 'inspect', setup.release, '--key', join(other, 'publisher.pub')).status, EXIT.refused);
  const missing = run(FWCAST, 'inspect', join(setup.dir, 'nope.fwc'), '--json');
  t.is(missing.status, EXIT.usage);
  t.deepEqual(JSON.parse(missing.stdout), { ok: false, exitCode: EXIT.usage, error: 'usage', message: `FILE ${join(setup.dir, 'nope.fwc')}: no such file` });
  const usage = run(FWCAST, 'inspect', '--json');
  t.is(usage.status, EXIT.usage);
  t.like(JSON.parse(usage.stdout), { ok: false, exitCode: EXIT.usage, error: 'usage' });
});

test('fwcast-agent status: a store that does not exist is an error, not "nothing installed"', (t) => {
  refused(t, run(FWCAST_AGENT, 'status', '--store', join(setup.dir, 'no-store')), EXIT.usage, /^fwcast-agent: error: --store \S+no-store: no such directory$/);
  const json = run(FWCAST_AGENT, 'status', '--store', join(setup.dir, 'no-store'), '--json');
  t.like(JSON.parse(json.stdout), { ok: false, exitCode: EXIT.usage, error: 'usage' });
  const empty = join(setup.dir, 'empty-store');
  mkdirSync(empty);
  const r = run(FWCAST_AGENT, 'status', '--store', empty);
  t.is(r.status, 0);
  t.is(r.stdout, 'nothing installed\n');
});

test('fwcast-agent: --install-to with --install-command is a usage error', (t) => {
  const r = run(FWCAST_AGENT, '--model', 'rpi4', '--key', setup.pub, '--install-to', join(setup.dir, 'x.img'), '--install-command', 'true');
  t.is(r.status, EXIT.usage);
  t.regex(r.stderr, /^error: option '--install-to <path>' cannot be used with option '--install-command <cmd>'$/m);
});

test('fwcast-agent: --expected-rate out of bounds is a usage error naming the flag', (t) => {
  refused(t, run(FWCAST_AGENT, '--model', 'rpi4', '--key', setup.pub, '--iface', 'lo', '--expected-rate', '1bit', '--store', join(setup.dir, 'store')), EXIT.usage,
    /^fwcast-agent: error: --expected-rate: rate "1bit" must be between 10kbit and 100gbit$/);
});

test('fwcast releases list and retire against fwcast serve, with the exit codes of push', async (t) => {
  const lab = NetLab.create(['srv']);
  t.teardown(() => lab.destroy());
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-cli-serve-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  await fwcastAsync('keygen', '--out', dir);
  writeFileSync(join(dir, 'image.bin'), Buffer.alloc(5000, 7));
  const release = join(dir, 'r.fwc');
  await fwcastAsync('sign', join(dir, 'image.bin'), '--key', join(dir, 'publisher.key'), '--model', 'rpi4', '--version', '1.0.0', '--seq', '1', '--out', release);
  const server = await startServe(lab, 'srv', serveConfig({ dir, pub: join(dir, 'publisher.pub') }));
  t.teardown(() => server.child.kill('SIGKILL'));
  const pushed = await push(lab, 'srv', release, TOKEN);
  t.is(pushed.code, 0, pushed.stderr);
  const id = pushed.json.release!.releaseId;
  const releases = async (token: string | undefined, ...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> => {
    const env = { ...process.env };
    delete env.FWCAST_TOKEN;
    if (token) env.FWCAST_TOKEN = token;
    const p = track(lab.spawn('srv', process.execPath, [FWCAST, 'releases', ...args, '--server', 'http://[fd00:fc::1]:8080'], { env }));
    return { code: await exitCode(p, 30_000), stdout: p.stdout, stderr: p.stderr };
  };
  const list = await releases(undefined, 'list', '--json');
  t.is(list.code, 0, list.stderr);
  t.like(JSON.parse(list.stdout), { ok: true, releases: [{ releaseId: id, model: 'rpi4', seq: 1, state: 'live' }] });
  t.regex((await releases(undefined, 'list')).stdout, new RegExp(`^${id}  rpi4 1\\.0\\.0 seq 1  live$`, 'm'));

  const noToken = await releases(undefined, 'retire', id, '--json');
  t.is(noToken.code, EXIT.auth);
  t.like(JSON.parse(noToken.stdout), { ok: false, exitCode: EXIT.auth, status: 401 });
  const retired = await releases(TOKEN, 'retire', id);
  t.is(retired.code, 0, retired.stderr);
  t.is(retired.stdout, `retired: rpi4 1.0.0 (seq 1), release ${id}\n`);
  t.like(JSON.parse((await releases(undefined, 'list', '--json')).stdout), { releases: [{ releaseId: id, state: 'retired' }] });
  const unknown = await releases(TOKEN, 'retire', '0123456789abcdef');
  t.is(unknown.code, EXIT.refused);
  t.regex(unknown.stderr, /^fwcast releases: error: server answered 404 not-found/m);
  const badId = await releases(TOKEN, 'retire', 'nope');
  t.is(badId.code, EXIT.usage);
  t.regex(badId.stderr, /^fwcast: error: release id must be 16 hex digits, got "nope"$/m);
  const down = track(lab.spawn('srv', process.execPath, [FWCAST, 'releases', 'list', '--server', 'http://[fd00:fc::1]:9', '--json']));
  t.is(await exitCode(down, 30_000), EXIT.unreachable);
  t.like(JSON.parse(down.stdout), { ok: false, exitCode: EXIT.unreachable, error: 'unreachable' });
});
