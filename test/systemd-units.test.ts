/**
 * The Raspberry Pi packaging in hardware/raspberry-pi/: the systemd units pass
 * `systemd-analyze verify` (and the SWUpdate drop-in with them), their sandbox
 * scores well in `systemd-analyze security`, the example configs are valid, and
 * the RAUC / SWUpdate hooks hand the image over as documented.
 *
 * `verify` checks that each ExecStart binary exists and is executable, and the
 * units name the deployed paths (/usr/bin/node, /opt/fwcast/...). So the test
 * verifies copies in which those two paths are rewritten to this machine's node
 * and this checkout, and nothing else is changed; the copies are loaded by name
 * through SYSTEMD_UNIT_PATH so that drop-ins in NAME.service.d/ apply as on a Pi.
 */
import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveAgentConfig } from '../device-agent/config.js';
import { resolveServeConfig } from '../server/serve/config.js';
import { ROOT } from './helpers/processes.js';

const PI = join(ROOT, 'hardware', 'raspberry-pi');
const UNITS = ['fwcast-agent.service', 'fwcast-serve.service'];
const SYSTEMD_ANALYZE = ['/usr/bin/systemd-analyze', '/bin/systemd-analyze'].find((p) => existsSync(p));

function analyze(args: string[], unitPath: string): { status: number | null; output: string } {
  if (!SYSTEMD_ANALYZE) throw new Error('systemd-analyze is missing: apt-get install -y systemd');
  const r = spawnSync(SYSTEMD_ANALYZE, args, { encoding: 'utf8', env: { ...process.env, SYSTEMD_UNIT_PATH: `${unitPath}:`, SYSTEMD_LOG_COLOR: '0' } });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

/** Copies of the units with the deployed paths pointing at this machine's node and checkout. */
function localCopies(withDropIn: boolean): string {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-units-'));
  for (const unit of UNITS) {
    const text = readFileSync(join(PI, unit), 'utf8').replaceAll('/usr/bin/node ', `${process.execPath} `).replaceAll('/opt/fwcast/', ROOT);
    writeFileSync(join(dir, unit), text);
  }
  if (withDropIn) {
    mkdirSync(join(dir, 'fwcast-agent.service.d'));
    cpSync(join(PI, 'hooks', 'swupdate-root.conf'), join(dir, 'fwcast-agent.service.d', 'swupdate.conf'));
  }
  return dir;
}

test('the units pass systemd-analyze verify with no warnings', (t) => {
  for (const withDropIn of [false, true]) {
    const dir = localCopies(withDropIn);
    const r = analyze(['verify', '--man=no', ...UNITS], dir);
    t.is(r.status, 0, r.output);
    // verify also prints warnings (unknown keys, bad values) with exit 0: there must be none about our files.
    t.deepEqual(r.output.split('\n').filter((l) => l.includes(dir) || /fwcast-(agent|serve)/.test(l)), [], `${withDropIn ? 'with the SWUpdate drop-in: ' : ''}${r.output}`);
  }
});

test('the units are sandboxed: no capabilities, strict file system, exposure below 2 of 10', (t) => {
  const dir = localCopies(false);
  for (const unit of UNITS) {
    const text = readFileSync(join(PI, unit), 'utf8');
    for (const line of ['NoNewPrivileges=yes', 'CapabilityBoundingSet=\n', 'ProtectSystem=strict', 'ProtectHome=yes', 'PrivateTmp=yes', 'RestrictAddressFamilies=AF_INET6 AF_INET AF_UNIX AF_NETLINK']) {
      t.true(text.includes(line), `${unit} has ${line.trim()}`);
    }
    t.regex(text, /^ReadWritePaths=\/var\/lib\/fwcast(-serve)?$/m, `${unit}: only its store is writable`);
    const r = analyze(['security', '--offline=yes', '--no-pager', unit], dir);
    const score = /Overall exposure level for \S+: (\d+\.\d)/.exec(r.output);
    t.truthy(score, r.output);
    t.log(`${unit}: exposure ${score?.[1]} (systemd-analyze security, 0 = locked down, 10 = unprotected)`);
    t.true(Number(score?.[1]) < 2, `${unit} exposure ${score?.[1]}`);
  }
});

test('the example agent.json and serve.json are valid configurations', (t) => {
  const agent = resolveAgentConfig({ config: join(PI, 'agent.json') });
  t.is(agent.models[0]?.model, 'rpi4');
  t.like(agent.models[0]?.installer, { type: 'command', command: '/opt/fwcast/hardware/raspberry-pi/hooks/install-rauc.sh' });
  const serve = resolveServeConfig({ config: join(PI, 'serve.json') }, { FWCAST_TOKEN: 'a-token-long-enough-1234' });
  t.deepEqual(serve.models.map((m) => m.model), ['rpi4', 'sensor-v2']);
  t.is(serve.models[1]?.channel.group, 'ff15::5');
  t.is(serve.rate, 20e6);
});

test('the RAUC and SWUpdate hooks pass the verified image on, and refuse a swapped one', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-hooks-'));
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  // Stand-ins for rauc and swupdate that record how they were called and what they were given.
  for (const tool of ['rauc', 'swupdate']) {
    writeFileSync(join(bin, tool), `#!/bin/sh\nprintf '%s\\n' "$@" > "${dir}/${tool}.args"\nfor a in "$@"; do [ -f "$a" ] && sha256sum "$a" | cut -d' ' -f1 > "${dir}/${tool}.sha256"; done\nexit 0\n`);
    chmodSync(join(bin, tool), 0o755);
  }
  const image = join(dir, 'image.img');
  writeFileSync(image, 'pretend this is a RAUC bundle or a .swu');
  const sha256 = execFileSync('sha256sum', [image], { encoding: 'utf8' }).split(' ')[0]!;
  const env = { ...process.env, PATH: `${bin}:${process.env.PATH}`, FWCAST_IMAGE: image, FWCAST_MODEL: 'rpi4', FWCAST_VERSION: '1.4.2', FWCAST_SEQ: '42', FWCAST_SHA256: sha256, FWCAST_RAUC_DIR: join(dir, 'rauc'), FWCAST_SWUPDATE_SELECTION: 'stable,copy2' };
  const run = (hook: string, extra: Record<string, string> = {}) => spawnSync('sh', [join(PI, 'hooks', hook)], { encoding: 'utf8', env: { ...env, ...extra } });

  const rauc = run('install-rauc.sh');
  t.is(rauc.status, 0, rauc.stderr);
  t.deepEqual(readFileSync(join(dir, 'rauc.args'), 'utf8').trim().split('\n'), ['install', join(dir, 'rauc', 'fwcast-42.raucb')]);
  t.is(readFileSync(join(dir, 'rauc.sha256'), 'utf8').trim(), sha256, 'RAUC got the verified image');
  t.false(existsSync(join(dir, 'rauc', 'fwcast-42.raucb')), 'the bundle link is removed afterwards');

  const swu = run('install-swupdate.sh');
  t.is(swu.status, 0, swu.stderr);
  t.deepEqual(readFileSync(join(dir, 'swupdate.args'), 'utf8').trim().split('\n'), ['-i', image, '-e', 'stable,copy2']);

  for (const hook of ['install-rauc.sh', 'install-swupdate.sh']) {
    const swapped = run(hook, { FWCAST_SHA256: '0'.repeat(64) });
    t.is(swapped.status, 1, `${hook}: refuses an image whose digest changed`);
    t.regex(swapped.stderr, /image digest changed, not installing/);
  }
  const missing = run('install-rauc.sh', { FWCAST_IMAGE: '' });
  t.not(missing.status, 0, 'run without FWCAST_IMAGE: refuses');
});
