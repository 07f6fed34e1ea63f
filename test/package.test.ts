/**
 * Installing fwcast like any Debian software: `npm run package`'s .deb passes
 * lintian, installs into a throwaway root with dpkg (maintainer scripts run
 * against that root through DPKG_ROOT), creates the system user, ships units
 * that pass `systemd-analyze verify` and commands that run from the installed
 * files, keeps an edited conffile on remove and leaves nothing on purge. And
 * `npm pack` gives a tarball that `npm install -g` installs with no registry.
 *
 * Nothing is installed on this machine: dpkg works on the throwaway root only.
 */
import test from 'ava';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from './helpers/processes.js';

const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

function ok(t: { is(a: unknown, b: unknown, m?: string): void }, r: SpawnSyncReturns<string>, what: string): string {
  t.is(r.status, 0, `${what}:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** A root with an empty dpkg database and the accounts files a Debian system starts with. */
function throwawayRoot(dir: string): string {
  const root = join(dir, 'root');
  for (const d of ['var/lib/dpkg/info', 'var/lib/dpkg/updates', 'etc']) mkdirSync(join(root, d), { recursive: true });
  writeFileSync(join(root, 'var/lib/dpkg/status'), '');
  writeFileSync(join(root, 'var/lib/dpkg/available'), '');
  writeFileSync(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/bash\n');
  writeFileSync(join(root, 'etc/group'), 'root:x:0:\ndialout:x:20:\n');
  writeFileSync(join(root, 'etc/shadow'), 'root:*:19000:0:99999:7:::\n', { mode: 0o640 });
  writeFileSync(join(root, 'etc/gshadow'), 'root:*::\ndialout:*::\n', { mode: 0o640 });
  return root;
}

test('npm run package: a .deb lintian finds no error in, installed into a throwaway root, run, and purged cleanly', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-deb-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // dist/ is fresh (npm test built it); rebuilding it here would race the other test files.
  const built = spawnSync('bash', [join(ROOT, 'scripts/package-deb.sh'), '--no-build', '--out', dir], { cwd: ROOT, encoding: 'utf8' });
  const deb = ok(t, built, 'package-deb.sh').trim();
  t.is(deb, join(dir, `fwcast_${VERSION}_all.deb`));
  t.notRegex(built.stderr, /^E: /m, 'lintian: no errors');

  const field = (name: string): string => spawnSync('/usr/bin/dpkg-deb', ['--field', deb, name], { encoding: 'utf8' }).stdout.trim();
  t.is(field('Architecture'), 'all');
  t.regex(field('Depends'), /(^|, )nodejs \(>= 20\)(,|$)/);
  t.is(spawnSync('/usr/bin/dpkg-deb', ['--info', deb, 'conffiles'], { encoding: 'utf8' }).stdout, '/etc/fwcast/agent.json\n/etc/fwcast/serve.json\n');

  const root = throwawayRoot(dir);
  const dpkg = (...args: string[]): SpawnSyncReturns<string> =>
    spawnSync('/usr/bin/dpkg', [`--root=${root}`, '--force-script-chrootless', `--log=${join(dir, 'dpkg.log')}`, ...args], { encoding: 'utf8' });
  // Its dependencies are this machine's (node runs the installed files); the throwaway root has none.
  ok(t, dpkg('--force-depends', '--install', deb), 'dpkg --install');

  // The files.
  t.is(readlinkSync(join(root, 'usr/bin/fwcast')), '../lib/fwcast/bin/fwcast.js');
  t.is(readlinkSync(join(root, 'usr/bin/fwcast-agent')), '../lib/fwcast/bin/fwcast-agent.js');
  for (const file of ['usr/lib/fwcast/dist/server/cli.js', 'usr/lib/fwcast/dist/device-agent/cli.js', 'usr/lib/fwcast/package.json',
    'usr/lib/fwcast/node_modules/@serialport/bindings-cpp/prebuilds/linux-arm64/@serialport+bindings-cpp.armv8.glibc.node',
    'usr/lib/fwcast/node_modules/@serialport/bindings-cpp/prebuilds/linux-arm/@serialport+bindings-cpp.armv7.glibc.node',
    'usr/lib/fwcast/node_modules/@serialport/bindings-cpp/prebuilds/linux-arm/@serialport+bindings-cpp.armv6.glibc.node',
    'lib/systemd/system/fwcast-agent.service', 'lib/systemd/system/fwcast-serve.service', 'etc/fwcast/agent.json', 'etc/fwcast/serve.json',
    'usr/share/doc/fwcast/copyright']) {
    t.true(existsSync(join(root, file)), file);
  }
  t.false(existsSync(join(root, 'usr/lib/fwcast/node_modules/ava')), 'no development dependency');
  t.false(existsSync(join(root, 'usr/lib/fwcast/node_modules/typescript')), 'no development dependency');
  // The example configuration names the installed hook, which exists.
  const hook = (JSON.parse(readFileSync(join(root, 'etc/fwcast/agent.json'), 'utf8')) as { models: Array<{ installer: { command: string } }> }).models[0]!.installer.command;
  t.is(hook, '/usr/lib/fwcast/hardware/raspberry-pi/hooks/install-rauc.sh');
  t.true(lstatSync(join(root, hook)).mode & 0o111 ? true : false, 'the hook is executable');

  // The system user, in dialout for serial installers.
  const passwd = readFileSync(join(root, 'etc/passwd'), 'utf8');
  const user = /^fwcast:x:(\d+):(\d+):[^:]*:\/nonexistent:\/usr\/sbin\/nologin$/m.exec(passwd);
  t.truthy(user, passwd);
  t.true(Number(user![1]) < 1000, 'a system user');
  t.regex(readFileSync(join(root, 'etc/group'), 'utf8'), /^dialout:x:20:fwcast$/m);
  // Installed again (as an upgrade does): the user exists already, the postinst still succeeds.
  ok(t, dpkg('--force-depends', '--install', deb), 'dpkg --install, again');
  t.is(readFileSync(join(root, 'etc/passwd'), 'utf8'), passwd, 'the same single user');

  // The installed units: systemd-analyze verify (host units such as sysinit.target after them), and each
  // ExecStart's script is an installed file.
  const unitDir = join(root, 'lib/systemd/system');
  const verify = spawnSync('/usr/bin/systemd-analyze', ['verify', 'fwcast-agent.service', 'fwcast-serve.service'], { encoding: 'utf8', env: { ...process.env, SYSTEMD_UNIT_PATH: `${unitDir}:`, SYSTEMD_LOG_COLOR: '0' } });
  t.is(verify.status, 0, verify.stderr);
  t.is(verify.stderr.trim(), '', 'no warnings');
  for (const unit of ['fwcast-agent.service', 'fwcast-serve.service']) {
    const exec = /^ExecStart=(\S+)(?: --\S+)* (\/usr\/lib\/fwcast\/\S+)/m.exec(readFileSync(join(unitDir, unit), 'utf8'));
    t.is(exec?.[1], '/usr/bin/node', unit);
    t.true(existsSync(join(root, exec![2]!)), `${unit}: ${exec?.[2]} is installed`);
  }

  // The commands, run from the installed files.
  for (const bin of ['fwcast', 'fwcast-agent']) t.is(ok(t, spawnSync(join(root, 'usr/bin', bin), ['--version'], { encoding: 'utf8' }), `${bin} --version`), `${VERSION}\n`);
  t.regex(ok(t, spawnSync(join(root, 'usr/bin/fwcast'), ['channel', 'rpi4'], { encoding: 'utf8' }), 'fwcast channel'), /^fw\/rpi4 \[ff1e:/);
  const keys = join(dir, 'keys');
  ok(t, spawnSync(join(root, 'usr/bin/fwcast'), ['keygen', '--out', keys], { encoding: 'utf8' }), 'fwcast keygen');
  t.true(existsSync(join(keys, 'publisher.pub')));

  // Remove keeps an edited conffile; purge takes everything, the stores too.
  writeFileSync(join(root, 'etc/fwcast/agent.json'), '{"edited": true}\n');
  mkdirSync(join(root, 'var/lib/fwcast'), { recursive: true });
  writeFileSync(join(root, 'var/lib/fwcast/state.json'), '{}');
  ok(t, dpkg('--remove', 'fwcast'), 'dpkg --remove');
  t.is(readFileSync(join(root, 'etc/fwcast/agent.json'), 'utf8'), '{"edited": true}\n');
  t.false(existsSync(join(root, 'usr/lib/fwcast')));
  ok(t, dpkg('--purge', 'fwcast'), 'dpkg --purge');
  for (const gone of ['etc/fwcast', 'usr/lib/fwcast', 'usr/bin/fwcast', 'lib/systemd/system/fwcast-agent.service', 'var/lib/fwcast', 'usr/share/doc/fwcast']) {
    t.false(existsSync(join(root, gone)), `${gone} is gone`);
  }
  const status = spawnSync('/usr/bin/dpkg-query', [`--admindir=${join(root, 'var/lib/dpkg')}`, '-W', '-f=${db:Status-Status}', 'fwcast'], { encoding: 'utf8' });
  t.not(status.stdout, 'installed');
  t.not(status.stdout, 'config-files');
});

test('npm pack: a tarball that npm install -g installs without a registry, and whose commands run', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-pack-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // --ignore-scripts: `prepare` would rebuild dist/ under the other test files' feet; npm test built it.
  const packed = spawnSync('npm', ['pack', '--ignore-scripts', '--offline', '--json', '--pack-destination', dir], { cwd: ROOT, encoding: 'utf8' });
  const [info] = JSON.parse(ok(t, packed, 'npm pack')) as Array<{ filename: string; files: Array<{ path: string }> }>;
  const paths = info!.files.map((f) => f.path);
  t.true(paths.includes('dist/server/cli.js'));
  t.true(paths.includes('bin/fwcast-agent.js'));
  t.false(paths.some((p) => p.startsWith('test/') || p.endsWith('.ts') && !p.endsWith('.d.ts') && !p.startsWith('node_modules/')), 'no sources or tests');
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; optionalDependencies?: Record<string, string>; bundleDependencies: string[] };
  t.deepEqual([...pkg.bundleDependencies].sort(), Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies }).sort(), 'every production dependency is bundled');
  const prefix = join(dir, 'global');
  ok(t, spawnSync('npm', ['install', '--global', '--offline', '--no-audit', '--no-fund', '--prefix', prefix, join(dir, info!.filename)], { encoding: 'utf8', cwd: dir }), 'npm install -g');
  for (const bin of ['fwcast', 'fwcast-agent']) t.is(ok(t, spawnSync(join(prefix, 'bin', bin), ['--version'], { encoding: 'utf8' }), `${bin} --version`), `${VERSION}\n`);
  t.regex(ok(t, spawnSync(join(prefix, 'bin', 'fwcast'), ['channel', 'rpi4'], { encoding: 'utf8' }), 'fwcast channel'), /^fw\/rpi4 \[ff1e:/);
});
