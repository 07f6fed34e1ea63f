/**
 * The rollout and halt command lines: `fwcast sign`'s rollout flags as
 * `fwcast inspect` shows them, `fwcast halt` by release file or by id, and
 * each bad flag refused at the door with one line naming it.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { EXIT } from '../cli/exit-codes.js';
import { FWCAST, FWCAST_AGENT, signedRelease } from './helpers/processes.js';

function run(bin: string, ...args: string[]): { status: number | null; stdout: string; stderr: string } {
  return spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 60_000 });
}

const setup = signedRelease('fwcast-rollout-cli-', 20_000);
test.after.always(() => rmSync(setup.dir, { recursive: true, force: true }));
const KEY = join(setup.dir, 'publisher.key');
const IMAGE = join(setup.dir, 'image.bin');
const OUT = join(setup.dir, 'ramped.fwc');
const sign = (...extra: string[]): ReturnType<typeof run> =>
  run(FWCAST, 'sign', IMAGE, '--key', KEY, '--model', 'rpi4', '--version', '2.0.0', '--seq', '2', '--out', OUT, ...extra);

test('sign --ramp-*, --cohort, --activate-*: inspect shows the policy, in JSON and as text', (t) => {
  const r = sign('--ramp-start', '2027-01-15T08:00:00Z', '--ramp-duration', '24h', '--cohort', 'canary', '--cohort', 'lab', '--activate-at', '1800000000', '--activate-jitter', '30m', '--json');
  t.is(r.status, 0, r.stderr);
  t.deepEqual((JSON.parse(r.stdout) as { rollout: unknown }).rollout, {
    ramp: { start: '2027-01-15T08:00:00.000Z', end: '2027-01-16T08:00:00.000Z', durationSeconds: 86400 },
    cohorts: ['canary', 'lab'],
    activation: { at: '2027-01-15T08:00:00.000Z', jitterSeconds: 1800 },
  });
  const text = run(FWCAST, 'inspect', OUT);
  t.regex(text.stdout, /^rollout +\{"ramp":\{"start":"2027-01-15T08:00:00.000Z".*"cohorts":\["canary","lab"\]/m);
  const plain = run(FWCAST, 'inspect', setup.release);
  t.regex(plain.stdout, /^rollout +none: every device installs at once$/m);
});

test('bad rollout flags are refused with one line naming them', (t) => {
  const refused = (r: ReturnType<typeof run>, line: RegExp): void => {
    t.is(r.status, EXIT.usage, r.stderr);
    t.regex(r.stderr, line);
  };
  refused(sign('--ramp-start', '1h'), /^fwcast: error: --ramp-start needs --ramp-duration$/m);
  refused(sign('--ramp-duration', 'forever'), /^fwcast: error: --ramp-duration: /m);
  refused(sign('--activate-at', 'tomorrowish'), /^fwcast: error: --activate-at: expected Unix seconds, an ISO date or a duration/m);
  refused(sign('--cohort', 'bad name'), /^fwcast: error: --cohort: cohort "bad name" must be/m);
  refused(run(FWCAST, 'halt', '0123456789abcdef', '--key', KEY, '--out', join(setup.dir, 'x.halt')), /^fwcast: error: a release id needs --model/m);
  refused(run(FWCAST, 'halt', 'no-such-release', '--key', KEY, '--out', join(setup.dir, 'x.halt')), /neither a release file nor a 16-hex-digit release id/m);
  refused(run(FWCAST, 'publish', '--iface', 'lo'), /^fwcast: error: publish needs release files, --halt files, or both$/m);
  refused(run(FWCAST, 'inspect', setup.release.replace(/\.fwc$/, '.nope')), /no such file/m);
});

test('halt by release file and by id make the same statement; inspect checks its signature', (t) => {
  const byFile = join(setup.dir, 'a.halt');
  const r = run(FWCAST, 'halt', setup.release, '--key', KEY, '--out', byFile, '--json');
  t.is(r.status, 0, r.stderr);
  const made = JSON.parse(r.stdout) as { model: string; releaseId: string };
  t.is(made.model, 'rpi4');
  const byId = run(FWCAST, 'halt', made.releaseId, '--model', 'rpi4', '--key', KEY, '--out', join(setup.dir, 'b.halt'), '--json');
  t.like(JSON.parse(byId.stdout), { model: 'rpi4', releaseId: made.releaseId });
  t.like(JSON.parse(run(FWCAST, 'inspect', byFile, '--key', setup.pub, '--json').stdout), { halt: true, releaseId: made.releaseId, signature: 'valid' });
  const other = join(setup.dir, 'other');
  mkdirSync(other);
  t.is(run(FWCAST, 'keygen', '--out', other).status, 0);
  const wrong = run(FWCAST, 'inspect', byFile, '--key', join(other, 'publisher.pub'));
  t.is(wrong.status, EXIT.refused);
  t.regex(wrong.stdout, /^signature +INVALID$/m);
});

test('agent configuration: rollout fields are checked and named', (t) => {
  const config = join(setup.dir, 'agent.json');
  writeFileSync(config, JSON.stringify({ interface: 'lo', trustedKeys: [setup.pub], models: [{ model: 'rpi4' }], maintenanceWindows: [{ start: '2:00', end: '04:00' }] }));
  const r = run(FWCAST_AGENT, '--config', config, '--store', join(setup.dir, 'store'));
  t.not(r.status, 0);
  t.regex(r.stderr, /config\.maintenanceWindows\[0\]\.start must be a time HH:MM/);
  writeFileSync(config, JSON.stringify({ interface: 'lo', trustedKeys: [setup.pub], models: [{ model: 'rpi4' }], cohorts: ['ok', 'not ok'] }));
  t.regex(run(FWCAST_AGENT, '--config', config, '--store', join(setup.dir, 'store')).stderr, /config\.cohorts: cohort "not ok"/);
});
