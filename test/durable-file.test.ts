/**
 * storage/durable-file.ts: a file is replaced whole or not at all, through a
 * temp file nobody can redirect, and the rename is made durable.
 *
 * The order of the system calls (fsync of the file before the rename, fsync of
 * the directory after it) cannot be seen in the file system afterwards, so it
 * is read from `strace` of a real write. The disk-full case writes to a small
 * tmpfs mounted in the lab's own mount namespace (scripts/lab.sh).
 */
import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { copyFileAtomic, openExclusive, replaceFile, writeAll, writeFileAtomic } from '../storage/durable-file.js';
import { ROOT } from './helpers/processes.js';

const STRACE = ['/usr/bin/strace', '/bin/strace'].find((p) => existsSync(p));

function tempDir(t: { teardown: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-durable-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const TEMP_NAME = /^state\.json\.tmp-\d+-[0-9a-f]{16}$/;

test('writeFileAtomic: exclusive no-follow temp file, written, fsynced, renamed, then the directory fsynced', (t) => {
  if (!STRACE) throw new Error('strace is missing: apt-get install -y strace');
  const dir = tempDir(t);
  const file = join(dir, 'state.json');
  writeFileSync(file, 'old');
  const log = `${dir}.strace`;
  t.teardown(() => rmSync(log, { force: true }));
  const script = `import { writeFileAtomic } from ${JSON.stringify(join(ROOT, 'storage/durable-file.ts'))}; writeFileAtomic(process.argv[1], 'new');`;
  const r = spawnSync(STRACE, ['-f', '-y', '-qq', '-o', log, '-e', 'trace=open,openat,write,pwrite64,fsync,fdatasync,close,rename,renameat,renameat2',
    process.execPath, '--import', 'tsx', '--input-type=module', '-e', script, file], { cwd: ROOT, encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  t.is(readFileSync(file, 'utf8'), 'new');

  // Each call on a path in `dir`, in order, with the paths named: FILE, TMP (the temp file) or DIR.
  const name = (path: string): string | undefined => {
    if (path === dir) return 'DIR';
    if (path === file) return 'FILE';
    if (path.startsWith(`${dir}/`) && TEMP_NAME.test(path.slice(dir.length + 1))) return 'TMP';
    return path.startsWith(dir) ? `other:${path}` : undefined;
  };
  const calls: string[] = [];
  let openFlags = '';
  for (const line of readFileSync(log, 'utf8').split('\n')) {
    // "<... resumed>" lines repeat no call; the result (" = fd<path>") is not an argument.
    const m = /^\d+\s+(\w+)\((.*?)(\)\s+=\s.*| <unfinished \.\.\.>)?$/.exec(line);
    if (!m) continue;
    const [, call, args] = m as unknown as [string, string, string];
    const paths = [...args.matchAll(/"([^"]*)"|\d+<([^>]*)>/g)].map((p) => p[1] ?? p[2]!);
    const named = paths.map(name).filter((p): p is string => p !== undefined);
    if (named.length === 0) continue;
    if (call.startsWith('open') && named[0] === 'TMP') openFlags = /O_[A-Z_|]+/.exec(args)?.[0] ?? '';
    calls.push(`${call.replace(/^openat$/, 'open').replace(/^renameat2?$/, 'rename')} ${named.join(' ')}`);
  }
  t.deepEqual(calls, ['open TMP', 'write TMP', 'fsync TMP', 'close TMP', 'rename TMP FILE', 'open DIR', 'fsync DIR', 'close DIR']);
  const flags = openFlags.split('|');
  for (const f of ['O_CREAT', 'O_EXCL', 'O_NOFOLLOW']) t.true(flags.includes(f), `temp file opened with ${openFlags}, without ${f}`);
  t.deepEqual(readdirSync(dir), ['state.json']);
});

test('openExclusive: a symlink planted at the temp path is not followed', (t) => {
  const dir = tempDir(t);
  const victim = join(dir, 'victim');
  writeFileSync(victim, 'precious');
  const planted = join(dir, 'state.json.tmp');
  symlinkSync(victim, planted);
  t.throws(() => openExclusive(planted), { code: 'EEXIST' });
  t.is(readFileSync(victim, 'utf8'), 'precious');

  // A dangling link would otherwise create the file it points to, wherever that is.
  const elsewhere = join(dir, 'created-through-link');
  const dangling = join(dir, 'other.tmp');
  symlinkSync(elsewhere, dangling);
  t.throws(() => openExclusive(dangling), { code: 'EEXIST' });
  t.false(existsSync(elsewhere));
});

test('replaceFile: a write that fails half-way leaves the old file and no temp file', (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'state.json');
  writeFileSync(file, 'old contents');
  t.throws(() => replaceFile(file, (fd) => {
    writeAll(fd, Buffer.from('half of the new'));
    throw new Error('cut short');
  }), { message: 'cut short' });
  t.is(readFileSync(file, 'utf8'), 'old contents');
  t.deepEqual(readdirSync(dir), ['state.json']);
});

test('replaceFile: a rename that fails removes the temp file and leaves what was there', (t) => {
  const dir = tempDir(t);
  const target = join(dir, 'state.json');
  mkdirSync(target);
  writeFileSync(join(target, 'inside'), 'x');
  t.throws(() => writeFileAtomic(target, 'new'), { code: 'EISDIR' });
  t.deepEqual(readdirSync(dir), ['state.json']);
  t.deepEqual(readdirSync(target), ['inside']);
});

test('writeFileAtomic and copyFileAtomic on a full disk: the old file stays, no temp file is left', (t) => {
  const dir = tempDir(t);
  const mount = join(dir, 'small');
  mkdirSync(mount);
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'fwcast-test', mount], { stdio: 'pipe' });
  } catch (err) {
    throw new Error(`cannot mount a tmpfs (run the tests through scripts/lab.sh, as npm test does): ${(err as Error).message}`);
  }
  t.teardown(() => execFileSync('umount', [mount]));
  const file = join(mount, 'state.json');
  writeFileAtomic(file, 'old');
  const big = new Uint8Array(256 << 10).fill(7);
  t.throws(() => writeFileAtomic(file, big), { code: 'ENOSPC' });
  t.is(readFileSync(file, 'utf8'), 'old');
  t.deepEqual(readdirSync(mount), ['state.json']);

  const source = join(dir, 'image.bin');
  writeFileSync(source, big);
  t.throws(() => copyFileAtomic(source, file), { code: 'ENOSPC' });
  t.is(readFileSync(file, 'utf8'), 'old');
  t.deepEqual(readdirSync(mount), ['state.json']);
});

test('copyFileAtomic: replaces the target with the source, keeping the source permissions', (t) => {
  const dir = tempDir(t);
  const source = join(dir, 'image.bin');
  const image = new Uint8Array(3 << 20).map((_, i) => (i * 31) & 0xff);
  writeFileSync(source, image, { mode: 0o600 });
  const target = join(dir, 'installed.bin');
  writeFileSync(target, 'old image');
  copyFileAtomic(source, target);
  t.true(readFileSync(target).equals(image));
  t.is(statSync(target).mode & 0o777, 0o600);
  t.deepEqual(readdirSync(dir).sort(), ['image.bin', 'installed.bin']);
});

