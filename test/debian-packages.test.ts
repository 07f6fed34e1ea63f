/**
 * The two commands on a fresh machine: scripts/debian-packages.sh (what
 * `npm test`, `npm run demo` and .ci/run run first) installs exactly the
 * missing Debian packages as root, or stops with the apt-get line; and the lab
 * refuses an `nft` that is not nftables' own.
 *
 * Nothing here touches the machine's packages: apt-get and dpkg run for real,
 * but on a throwaway root (dpkg --root, apt's Dir:: options through APT_CONFIG,
 * dpkg-query through DPKG_ADMINDIR) with a local repository holding a package
 * built here. Fake tools are bind-mounted over the real ones only inside a
 * mount namespace of the test's own (the lab makes the test root in its user
 * namespace).
 */
import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from './helpers/processes.js';

const SCRIPT = join(ROOT, 'scripts/debian-packages.sh');
const LAB = join(ROOT, 'scripts/lab.sh');
const TSX = join(ROOT, 'node_modules/.bin/tsx');

interface AptRoot {
  dir: string;
  env: NodeJS.ProcessEnv;
  admindir: string;
  list: string;
}

/** A dpkg root with `fwcast-present` installed, and an apt repository offering `fwcast-probe`. */
function aptRoot(t: { teardown(fn: () => void): void }): AptRoot {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-apt-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const admindir = join(dir, 'root/var/lib/dpkg');
  for (const d of ['pkg/DEBIAN', 'pkg/usr/share/fwcast-probe', 'repo', 'root/var/lib/dpkg/info', 'root/var/lib/dpkg/updates', 'lists/partial', 'cache/archives/partial', 'state', 'empty', 'log']) {
    mkdirSync(join(dir, d), { recursive: true });
  }
  const control = 'Package: fwcast-probe\nVersion: 1.0\nArchitecture: all\nMaintainer: fwcast tests <tests@fwcast.invalid>\nDescription: a package the test installs\n';
  writeFileSync(join(dir, 'pkg/DEBIAN/control'), control);
  writeFileSync(join(dir, 'pkg/usr/share/fwcast-probe/installed'), 'yes\n');
  const deb = join(dir, 'repo/fwcast-probe_1.0_all.deb');
  execFileSync('/usr/bin/dpkg-deb', ['--root-owner-group', '-Zgzip', '--build', join(dir, 'pkg'), deb], { stdio: 'ignore' });
  const sha = createHash('sha256').update(readFileSync(deb)).digest('hex');
  writeFileSync(join(dir, 'repo/Packages'), `${control}Filename: ./fwcast-probe_1.0_all.deb\nSize: ${statSync(deb).size}\nSHA256: ${sha}\n`);
  writeFileSync(join(admindir, 'status'), 'Package: fwcast-present\nStatus: install ok installed\nVersion: 1.0\nArchitecture: all\nMaintainer: fwcast tests <tests@fwcast.invalid>\nDescription: already installed\n\n');
  writeFileSync(join(admindir, 'info/fwcast-present.list'), '');
  writeFileSync(join(admindir, 'available'), '');
  writeFileSync(join(dir, 'sources.list'), `deb [trusted=yes] file:${dir}/repo ./\n`);
  writeFileSync(join(dir, 'apt.conf'), [
    `Dir::Etc::Parts "${dir}/empty";`,
    `Dir::Etc::SourceList "${dir}/sources.list";`,
    `Dir::Etc::SourceParts "${dir}/empty";`,
    `Dir::Etc::PreferencesParts "${dir}/empty";`,
    `Dir::State "${dir}/state";`,
    `Dir::State::Lists "${dir}/lists";`,
    `Dir::State::status "${admindir}/status";`,
    `Dir::Cache "${dir}/cache";`,
    `Dir::Log "${dir}/log";`,
    `DPkg::Options { "--root=${dir}/root"; "--log=${dir}/log/dpkg.log"; };`,
    'APT::Sandbox::User "root";',
    'Debug::NoLocking "true";',
    '',
  ].join('\n'));
  // One installed, one missing, one needed only by another command.
  const list = join(dir, 'packages.txt');
  writeFileSync(list, '# test list\nfwcast-present   test        # here already\nfwcast-probe     demo test   # missing\nfwcast-other     package     # not for tests\n');
  return { dir, admindir, list, env: { ...process.env, APT_CONFIG: join(dir, 'apt.conf'), DPKG_ADMINDIR: admindir } };
}

function installed(root: AptRoot, pkg: string): boolean {
  const r = spawnSync('/usr/bin/dpkg-query', ['-W', '-f=${db:Status-Status}', pkg], { encoding: 'utf8', env: root.env });
  return r.stdout === 'installed';
}

test('as root with apt: one line naming exactly the missing package, then one apt-get install of it', (t) => {
  const root = aptRoot(t);
  t.false(installed(root, 'fwcast-probe'));
  const r = spawnSync('bash', [SCRIPT, '--list', root.list, 'test'], { encoding: 'utf8', env: root.env });
  t.is(r.status, 0, r.stderr);
  const first = r.stderr.split('\n')[0];
  t.is(first, 'fwcast: installing 1 missing Debian package(s) for test: apt-get install -y --no-install-recommends fwcast-probe');
  t.true(installed(root, 'fwcast-probe'));
  t.true(existsSync(join(root.dir, 'root/usr/share/fwcast-probe/installed')));
  t.false(installed(root, 'fwcast-other'), 'a package another command needs is not installed for this one');
  // Nothing missing any more: silent, exit 0, no apt-get.
  const again = spawnSync('bash', [SCRIPT, '--list', root.list, 'test'], { encoding: 'utf8', env: root.env });
  t.is(again.status, 0);
  t.is(again.stderr, '');
});

test('not root: stops with the exact apt-get line and installs nothing', (t) => {
  const root = aptRoot(t);
  // A user namespace without a mapping: uid 65534, as an ordinary user.
  const r = spawnSync('/usr/bin/unshare', ['--user', 'bash', SCRIPT, '--list', root.list, 'test'], { encoding: 'utf8', env: root.env });
  t.is(r.status, 1);
  t.is(r.stderr, 'fwcast: missing Debian package(s) for test: fwcast-probe; install them first (as root): apt-get install -y --no-install-recommends fwcast-probe\n');
  t.false(installed(root, 'fwcast-probe'));
});

test('npm run demo and npm test stop before anything runs when a package is missing', (t) => {
  // An empty dpkg database: every package of the list is missing.
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-nodpkg-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'status'), '');
  const env: NodeJS.ProcessEnv = { ...process.env, DPKG_ADMINDIR: dir };
  delete env.FWCAST_LAB;
  for (const [script, use, shown] of [['demo', 'demo', 'iproute2 nftables util-linux'], ['test', 'test', 'iproute2 nftables util-linux gcc']] as const) {
    const r = spawnSync('/usr/bin/unshare', ['--user', 'npm', 'run', '--silent', script], { cwd: ROOT, encoding: 'utf8', env });
    t.not(r.status, 0);
    t.regex(r.stderr, new RegExp(`^fwcast: missing Debian package\\(s\\) for ${use}: ${shown}.*; install them first \\(as root\\): apt-get install -y --no-install-recommends ${shown}`, 'm'));
    t.notRegex(r.stdout, /private network|tsc|✔/, 'nothing ran after the check');
  }
});

test('.ci/run, npm test and npm run demo read the one list', (t) => {
  const ci = readFileSync(join(ROOT, '.ci/run'), 'utf8');
  t.regex(ci, /^bash scripts\/debian-packages\.sh all$/m);
  t.notRegex(ci, /^[^#\n]*apt-get install/m, 'no second list of packages');
  const scripts = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).scripts as Record<string, string>;
  t.regex(scripts.pretest ?? '', /^bash scripts\/debian-packages\.sh test && /);
  t.regex(scripts.predemo ?? '', /^bash scripts\/debian-packages\.sh demo && /);
  t.regex(scripts['predemo:mcu'] ?? '', /^bash scripts\/debian-packages\.sh demo:mcu && /);
});

test('every package a test, demo or benchmark names in its apt-get hint is in the one list', (t) => {
  const listed = new Set(readFileSync(join(ROOT, 'scripts/debian-packages.txt'), 'utf8').split('\n').map((l) => l.replace(/#.*/, '').trim().split(/\s+/)[0]).filter(Boolean));
  const files = execFileSync('git', ['ls-files', 'test', 'scripts', 'bench'], { cwd: ROOT, encoding: 'utf8' }).split('\n').filter((f) => f.endsWith('.ts') && f !== 'test/debian-packages.test.ts');
  const named = new Set<string>();
  for (const file of files) {
    for (const m of readFileSync(join(ROOT, file), 'utf8').matchAll(/apt-get install -y ((?:--no-install-recommends )?[a-z0-9][a-z0-9 .+-]*)/g)) {
      for (const name of m[1]!.split(' ')) if (/^[a-z0-9][a-z0-9.+-]+$/.test(name)) named.add(name);
    }
  }
  t.true(named.size >= 10, `hints found: ${[...named].join(' ')}`);
  t.deepEqual([...named].filter((n) => !listed.has(n)), [], 'named in a hint but missing from scripts/debian-packages.txt');
});

/** A directory holding an `nft` that exits 0 and prints nothing, like node_modules/.bin/nft. */
function fakeNft(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-fake-nft-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'nft'), '#!/bin/sh\nexit 0\n');
  chmodSync(join(dir, 'nft'), 0o755);
  return dir;
}

/** Runs the demo through a fresh lab, with `over` bind-mounted over the system's nft (in a private mount namespace). */
function demoWithNft(fakeDir: string, over: string | undefined): { status: number | null; stdout: string; stderr: string } {
  const systemNft = ['/usr/sbin/nft', '/sbin/nft'].find((p) => existsSync(p));
  if (!systemNft) throw new Error('nft is missing: apt-get install -y nftables');
  const mount = over ? `mount --bind ${over} ${systemNft} && ` : '';
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${fakeDir}:${process.env.PATH}` };
  delete env.FWCAST_LAB;
  delete env.FWCAST_LAB_NFT;
  return spawnSync('/usr/bin/unshare', ['--mount', '--propagation', 'private', 'sh', '-c', `${mount}exec bash ${LAB} ${TSX} scripts/demo.ts`], { cwd: ROOT, encoding: 'utf8', env, timeout: 60_000 });
}

test('the demo refuses a fake nft with the apt-get line, before it starts', (t) => {
  const fake = fakeNft(t);
  const r = demoWithNft(fake, join(fake, 'nft'));
  t.is(r.status, 1);
  t.regex(r.stderr, /^fwcast lab: \/[\w/]*nft is not nftables' nft \(its --version does not say nftables\); install it first \(as root\): apt-get install -y --no-install-recommends nftables$/m);
  t.is(r.stdout, '', 'the demo did not start');
});

test('the demo refuses a missing nft with the apt-get line, before it starts', (t) => {
  const fake = mkdtempSync(join(tmpdir(), 'fwcast-no-nft-'));
  t.teardown(() => rmSync(fake, { recursive: true, force: true }));
  // /dev/null is not executable: as if nftables were not installed.
  const r = demoWithNft(fake, '/dev/null');
  t.is(r.status, 1);
  t.regex(r.stderr, /^fwcast lab: nft is missing; install it first \(as root\): apt-get install -y --no-install-recommends nftables$/m);
  t.is(r.stdout, '');
});

test('a fake nft first on PATH is never the one the lab runs', (t) => {
  const fake = fakeNft(t);
  const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${fake}:${process.env.PATH}` };
  delete env.FWCAST_LAB;
  const r = spawnSync('bash', [LAB, 'sh', '-c', 'echo "$FWCAST_LAB_NFT"; command -v nft'], { encoding: 'utf8', env });
  t.is(r.status, 0, r.stderr);
  const [checked = '', onPath] = r.stdout.trim().split('\n');
  t.regex(checked, /^\/(usr\/)?sbin\/nft$/);
  t.is(onPath, checked, 'inside the lab, Debian tools come before every other directory on PATH');
  t.is(execFileSync(checked, ['--version'], { encoding: 'utf8' }).split(' ')[0], 'nftables');
});
