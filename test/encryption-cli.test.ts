/**
 * The confidential-firmware command line: `fwcast keygen --device/--group`
 * write keys with the right modes and print their ids, `fwcast sign
 * --encrypt-for` takes key files and directories and refuses a private key,
 * `fwcast inspect` names recipients by key id and prints no key material, and
 * the agent's configuration takes its decryption keys from the file or flags.
 */
import test from 'ava';
import { mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readDecryptionKey, readRecipientKey } from '../cli/encryption-key-files.js';
import { resolveAgentConfig } from '../device-agent/config.js';
import { hex } from '../protocol/hex.js';
import { makeImage } from './helpers/fixtures.js';
import { fwcast, FWCAST } from './helpers/processes.js';
import { spawnSync } from 'node:child_process';

test('keygen, sign --encrypt-for and inspect: recipients by key id, never key material', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-enc-cli-'));
  fwcast('keygen', '--out', dir);
  const groupOut = fwcast('keygen', '--group', '--out', dir, '--name', 'cohort-1');
  const deviceOut = fwcast('keygen', '--device', '--out', join(dir, 'devices'), '--name', 'd1');
  fwcast('keygen', '--device', '--out', join(dir, 'devices'), '--name', 'd2');
  t.is(statSync(join(dir, 'cohort-1.key')).mode & 0o777, 0o600);
  t.is(statSync(join(dir, 'devices/d1.key')).mode & 0o777, 0o600, 'the device private key is readable by its owner only');
  t.is(statSync(join(dir, 'devices/d1.pub')).mode & 0o777, 0o644);
  const groupKid = /key id: +([0-9a-f]{16})/.exec(groupOut)![1]!;
  const d1Kid = /key id: +([0-9a-f]{16})/.exec(deviceOut)![1]!;
  t.is(hex(readRecipientKey(join(dir, 'devices/d1.pub')).kid), d1Kid);
  t.is(hex(readDecryptionKey(join(dir, 'devices/d1.key')).kid), d1Kid, 'the private half names the same key');
  t.is(hex(readDecryptionKey(join(dir, 'cohort-1.key')).kid), groupKid);
  t.regex(spawnSync(process.execPath, [FWCAST, 'keygen', '--device', '--out', join(dir, 'devices'), '--name', 'd1'], { encoding: 'utf8' }).stderr, /already exist/);

  writeFileSync(join(dir, 'image.bin'), makeImage(70_000, 3));
  const sign = (...extra: string[]) => spawnSync(process.execPath, [FWCAST, 'sign', join(dir, 'image.bin'), '--key', join(dir, 'publisher.key'), '--model', 'rpi4', '--version', '1', '--seq', '1', '--out', join(dir, 'r.fwc'), ...extra], { encoding: 'utf8' });
  // A directory: every .pub (and group .key) in it.
  t.is(sign('--encrypt-for', join(dir, 'devices/d1.pub'), '--encrypt-for', join(dir, 'cohort-1.key'), '--encrypt-for', join(dir, 'devices/d2.pub')).status, 0);
  const refused = sign('--encrypt-for', join(dir, 'devices'));
  t.not(refused.status, 0, 'a directory holding a device private key is refused');
  t.regex(refused.stderr, /private key/);
  t.not(sign('--encrypt-for', join(dir, 'publisher.pub')).status, 0, 'an Ed25519 publisher key is not an encryption key');

  const summary = JSON.parse(fwcast('inspect', join(dir, 'r.fwc'), '--json')) as { encryption: { content: string; plainSize: number; recipients: Array<{ kind: string; keyId: string }> } };
  t.is(summary.encryption.content, 'A256GCM');
  t.is(summary.encryption.plainSize, 70_000);
  t.deepEqual(summary.encryption.recipients.map((r) => r.kind).sort(), ['device', 'device', 'group']);
  t.true(summary.encryption.recipients.some((r) => r.keyId === groupKid && r.kind === 'group'));
  t.true(summary.encryption.recipients.some((r) => r.keyId === d1Kid && r.kind === 'device'));
  const text = fwcast('inspect', join(dir, 'r.fwc'));
  t.regex(text, new RegExp(d1Kid));
  const groupB64 = readFileSync(join(dir, 'cohort-1.key'), 'utf8').split('\n')[1]!;
  const groupHex = Buffer.from(groupB64, 'base64').toString('hex');
  for (const out of [text, JSON.stringify(summary)]) {
    t.false(out.includes(groupB64) || out.includes(groupHex), 'no group key bytes');
    t.false(/wrapped|ephemeral/i.test(out), 'no wrapped keys or ephemeral key');
  }
});

test('agent configuration: decryptionKeys from the file, --decryption-key over it, a bad value named', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-enc-cfg-'));
  const config = (body: object) => {
    const path = join(dir, `c${Math.random()}.json`);
    writeFileSync(path, JSON.stringify({ interface: 'eth0', trustedKeys: ['AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='], models: [{ model: 'rpi4' }], ...body }));
    return path;
  };
  t.deepEqual(resolveAgentConfig({ config: config({ decryptionKeys: ['/etc/fwcast/device.key', '/etc/fwcast/fleet.key'] }) }).decryptionKeys, ['/etc/fwcast/device.key', '/etc/fwcast/fleet.key']);
  t.deepEqual(resolveAgentConfig({ config: config({ decryptionKeys: ['/a'] }), decryptionKey: ['/b'] }).decryptionKeys, ['/b']);
  t.deepEqual(resolveAgentConfig({ config: config({}) }).decryptionKeys, []);
  t.throws(() => resolveAgentConfig({ config: config({ decryptionKeys: '/a' }) }), { message: /config\.decryptionKeys/ });
});
