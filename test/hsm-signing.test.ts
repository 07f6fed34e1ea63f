/**
 * Keys that never leave an HSM, end to end with the real CLIs: `fwcast keygen`
 * generates an Ed25519 key inside a SoftHSM2 token, `fwcast sign` signs
 * through PKCS#11, and an agent trusting only the public key installs the
 * release over real IPv6 multicast in the lab. The token refuses to give the
 * key out, and no private key file exists anywhere. The same for a key behind
 * an external signer command (what CI or a cloud KMS offers). Then the CLI's
 * refusals, each with its exit code and error name.
 */
import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { readTrustedKey } from '../cli/key-files.js';
import { EXIT } from '../cli/exit-codes.js';
import { hex } from '../protocol/hex.js';
import { NetLab } from '../scripts/lab/netlab.js';
import { makeImage, sha256hex } from './helpers/fixtures.js';
import { exitCode, FWCAST, FWCAST_AGENT, track, waitForEvent } from './helpers/processes.js';
import { initToken, softHsm } from './helpers/softhsm.js';
import { keyFileSignerCommand } from './helpers/signer-compliance.js';


function workdir(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-hsm-sign-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function run(args: string[], env: NodeJS.ProcessEnv = process.env): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [FWCAST, ...args], { env, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function ok(t: ExecutionContext, r: ReturnType<typeof run>, what: string): string {
  t.is(r.status, 0, `${what}: ${r.stderr}`);
  return r.stdout;
}

/** Every file under `dir`, relative to it. */
function files(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => statSync(join(dir, f)).isFile()).sort();
}

/** One agent in its own namespace trusting only `pub`, and a publisher sending `release`: the agent's result line. */
async function installOverMulticast(t: ExecutionContext, dir: string, release: string, pub: string): Promise<{ sha256: string; path: string; seq: number }> {
  const lab = NetLab.create(['pub', 'dev']);
  t.teardown(() => lab.destroy());
  const agent = track(lab.spawn('dev', process.execPath, [FWCAST_AGENT, '--model', 'rpi4', '--key', pub, '--iface', 'eth0', '--store', join(dir, 'store'), '--once', '--json', '--timeout', '60', '--log-format', 'json']));
  await waitForEvent(agent, 'agent.listening', { channel: 'fw/rpi4' }, 20_000);
  const publisher = track(lab.spawn('pub', process.execPath, [FWCAST, 'publish', release, '--iface', 'eth0', '--rate', '20mbit', '--duration', '60s', '--log-format', 'json']));
  const code = await exitCode(agent, 60_000);
  publisher.child.kill('SIGTERM');
  t.is(code, 0, agent.stderr);
  return JSON.parse(agent.stdout.trim().split('\n').pop()!) as { sha256: string; path: string; seq: number };
}

test('fwcast sign through PKCS#11: a key made inside SoftHSM2 and never in a file signs a release an agent installs over multicast', async (t) => {
  const hsm = softHsm();
  t.teardown(() => rmSync(hsm.dir, { recursive: true, force: true }));
  const pin = '4711-fw';
  initToken(hsm, 'fwcast-release', pin);
  const dir = workdir(t);
  const keyRef = ['--pkcs11-module', hsm.module, '--pkcs11-token', 'fwcast-release', '--pkcs11-key', 'release-2026'];

  // keygen takes the PIN from the environment, sign from a file: never from the command line.
  ok(t, run(['keygen', '--out', join(dir, 'keys'), ...keyRef], { ...hsm.env, FWCAST_PKCS11_PIN: pin }), 'fwcast keygen --pkcs11-*');
  t.deepEqual(readdirSync(join(dir, 'keys')), ['publisher.pub'], 'only the public key is written');
  const pub = join(dir, 'keys/publisher.pub');
  const pinFile = join(dir, 'pin');
  writeFileSync(pinFile, `${pin}\n`, { mode: 0o600 });
  const image = makeImage(300 * 1024 + 7, 3);
  writeFileSync(join(dir, 'image.bin'), image);
  const release = join(dir, 'release.fwc');
  const signed = JSON.parse(ok(t, run(['sign', join(dir, 'image.bin'), ...keyRef, '--pkcs11-pin-file', pinFile, '--model', 'rpi4', '--version', '2.0.0', '--seq', '2', '--out', release, '--json'], hsm.env), 'fwcast sign --pkcs11-*')) as { keyId: string };
  t.is(signed.keyId, hex(readTrustedKey(pub).kid), 'signed by the token key');
  t.is((JSON.parse(ok(t, run(['inspect', release, '--key', pub, '--json']), 'fwcast inspect')) as { signature: string }).signature, 'valid');

  // The token will not give the private key out: its value is sensitive, it was never extractable.
  process.env.SOFTHSM2_CONF = hsm.conf;
  const lib = (await import('pkcs11js')).default;
  const p11 = new lib.PKCS11();
  p11.load(hsm.module);
  p11.C_Initialize();
  try {
    const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.trim() === 'fwcast-release')!;
    const session = p11.C_OpenSession(slot, lib.CKF_SERIAL_SESSION);
    p11.C_Login(session, lib.CKU_USER, pin);
    p11.C_FindObjectsInit(session, [{ type: lib.CKA_CLASS, value: lib.CKO_PRIVATE_KEY }, { type: lib.CKA_LABEL, value: 'release-2026' }]);
    const keys = p11.C_FindObjects(session, 4);
    p11.C_FindObjectsFinal(session);
    t.is(keys.length, 1, 'one private key of that label on the token');
    t.throws(() => p11.C_GetAttributeValue(session, keys[0]!, [{ type: lib.CKA_VALUE }]), { message: 'CKR_ATTRIBUTE_SENSITIVE' }, 'reading CKA_VALUE is refused');
    const flag = (type: number): number | undefined => (p11.C_GetAttributeValue(session, keys[0]!, [{ type }])[0]!.value as Buffer)[0];
    t.is(flag(lib.CKA_EXTRACTABLE), 0, 'CKA_EXTRACTABLE false');
    t.is(flag(lib.CKA_NEVER_EXTRACTABLE), 1, 'CKA_NEVER_EXTRACTABLE true');
    t.is(flag(lib.CKA_SENSITIVE), 1, 'CKA_SENSITIVE true');
    t.is(flag(lib.CKA_ALWAYS_SENSITIVE), 1, 'CKA_ALWAYS_SENSITIVE true');
    p11.C_CloseSession(session);
  } finally {
    p11.C_Finalize();
    p11.close();
  }
  // No private key file anywhere fwcast wrote, nor in the token's store as PEM.
  t.deepEqual(files(dir), ['image.bin', 'keys/publisher.pub', 'pin', 'release.fwc']);
  for (const root of [dir, hsm.dir]) {
    for (const f of files(root)) t.false(readFileSync(join(root, f)).includes('PRIVATE KEY'), `${relative(root, f)} holds no PEM private key`);
  }

  const result = await installOverMulticast(t, dir, release, pub);
  t.is(result.seq, 2);
  t.is(result.sha256, sha256hex(image));
  t.is(sha256hex(readFileSync(result.path)), sha256hex(image), 'installed image');
});

test('fwcast sign through an external signer command: the key stays with the command, an agent installs the release over multicast', async (t) => {
  const dir = workdir(t);
  // The "KMS": a key pair fwcast never reads, and a command that signs with it.
  ok(t, run(['keygen', '--out', join(dir, 'kms')]), 'fwcast keygen');
  const command = keyFileSignerCommand(join(dir, 'kms/publisher.key'));
  const pub = join(dir, 'kms/publisher.pub');
  const image = makeImage(200 * 1024 + 1, 4);
  writeFileSync(join(dir, 'image.bin'), image);
  const release = join(dir, 'release.fwc');
  ok(t, run(['sign', join(dir, 'image.bin'), '--signer-command', command, '--pub', pub, '--model', 'rpi4', '--version', '3.0.0', '--seq', '3', '--out', release]), 'fwcast sign --signer-command');
  const result = await installOverMulticast(t, dir, release, pub);
  t.is(result.seq, 3);
  t.is(sha256hex(readFileSync(result.path)), sha256hex(image), 'installed image');
});

test('fwcast sign refuses a wrong PIN, a missing PIN, a signer that signs with another key and a failing command, writing no release', (t) => {
  const hsm = softHsm();
  t.teardown(() => rmSync(hsm.dir, { recursive: true, force: true }));
  initToken(hsm, 'refusals', '1234');
  const dir = workdir(t);
  const keyRef = ['--pkcs11-module', hsm.module, '--pkcs11-token', 'refusals', '--pkcs11-key', 'k'];
  ok(t, run(['keygen', '--out', join(dir, 'token'), ...keyRef], { ...hsm.env, FWCAST_PKCS11_PIN: '1234' }), 'keygen in the token');
  ok(t, run(['keygen', '--out', join(dir, 'other')]), 'keygen of another key');
  writeFileSync(join(dir, 'image.bin'), makeImage(5000, 1));
  const release = join(dir, 'release.fwc');
  const sign = (extra: string[], env: NodeJS.ProcessEnv): { exitCode: number; error: string } => {
    const r = run(['sign', join(dir, 'image.bin'), '--model', 'rpi4', '--version', '1', '--seq', '1', '--out', release, '--json', ...extra], env);
    const line = JSON.parse(r.stdout.trim()) as { ok: boolean; exitCode: number; error: string };
    t.false(line.ok);
    t.is(r.status, line.exitCode);
    return { exitCode: line.exitCode, error: line.error };
  };
  t.deepEqual(sign(keyRef, { ...hsm.env, FWCAST_PKCS11_PIN: '9999' }), { exitCode: EXIT.usage, error: 'config' }, 'wrong PIN');
  t.deepEqual(sign(keyRef, { ...hsm.env, FWCAST_PKCS11_PIN: '' }), { exitCode: EXIT.usage, error: 'config' }, 'no PIN');
  t.deepEqual(sign([...keyRef, '--pub', join(dir, 'other/publisher.pub')], { ...hsm.env, FWCAST_PKCS11_PIN: '1234' }), { exitCode: EXIT.failed, error: 'signer' }, 'token key against another public key');
  t.deepEqual(sign(['--signer-command', 'exit 7', '--pub', join(dir, 'other/publisher.pub')], process.env), { exitCode: EXIT.failed, error: 'signer' }, 'failing command');
  t.deepEqual(sign(['--signer-command', 'cat', '--pub', join(dir, 'other/publisher.pub')], process.env), { exitCode: EXIT.failed, error: 'signer' }, 'garbage from the command');
  t.deepEqual(sign(['--signer-command', 'exit 0'], process.env), { exitCode: EXIT.usage, error: 'usage' }, '--signer-command without --pub');
  t.deepEqual(sign(['--key', join(dir, 'other/publisher.key'), ...keyRef], process.env), { exitCode: EXIT.usage, error: 'usage' }, 'two keys named');
  t.deepEqual(sign(['--pkcs11-pin', '1234', ...keyRef], hsm.env), { exitCode: EXIT.usage, error: 'usage' }, 'no PIN flag on the command line');
  t.throws(() => statSync(release), { code: 'ENOENT' }, 'no release file written');
  // keygen into a directory that has a publisher.pub already: refused before a key is made in the token.
  const again = run(['keygen', '--out', join(dir, 'token'), '--json', ...keyRef.slice(0, -1), 'k2'], { ...hsm.env, FWCAST_PKCS11_PIN: '1234' });
  t.is(again.status, EXIT.usage, again.stderr);
  t.deepEqual(sign([...keyRef.slice(0, -1), 'k2'], { ...hsm.env, FWCAST_PKCS11_PIN: '1234' }), { exitCode: EXIT.usage, error: 'config' }, 'no key k2 was made');
});

test('fwcast root sign through PKCS#11 and through a signer command: a 2-of-2 root whose keys never were in a file merges and verifies', (t) => {
  const hsm = softHsm();
  t.teardown(() => rmSync(hsm.dir, { recursive: true, force: true }));
  const pin = '2718-root';
  initToken(hsm, 'fwcast-roots', pin);
  const dir = workdir(t);
  const pinFile = join(dir, 'pin');
  writeFileSync(pinFile, `${pin}\n`, { mode: 0o600 });
  const tokenKey = ['--pkcs11-module', hsm.module, '--pkcs11-token', 'fwcast-roots', '--pkcs11-key', 'root-1'];
  ok(t, run(['keygen', '--out', join(dir, 'r1'), ...tokenKey], { ...hsm.env, FWCAST_PKCS11_PIN: pin }), 'root key 1 inside the token');
  // Root key 2 behind a command, as a cloud KMS would be: its key file is the command's, not fwcast's.
  ok(t, run(['keygen', '--out', join(dir, 'kms')]), 'root key 2 for the signer command');
  ok(t, run(['keygen', '--out', join(dir, 'publisher')]), 'publisher key');
  const draft = join(dir, 'root.draft');
  ok(t, run(['root', 'create', '--root-key', join(dir, 'r1/publisher.pub'), '--root-key', join(dir, 'kms/publisher.pub'), '--threshold', '2', '--expires', '365d', '--out', draft]), 'root create');
  ok(t, run(['root', 'delegate', draft, '--key', join(dir, 'publisher/publisher.pub'), '--model', 'rpi4', '--out', draft]), 'root delegate');
  ok(t, run(['root', 'sign', draft, ...tokenKey, '--pkcs11-pin-file', pinFile, '--out', join(dir, 's1')], hsm.env), 'root sign --pkcs11-*');
  ok(t, run(['root', 'sign', draft, '--signer-command', keyFileSignerCommand(join(dir, 'kms/publisher.key')), '--pub', join(dir, 'kms/publisher.pub'), '--out', join(dir, 's2')]), 'root sign --signer-command');
  // A command that answers with another key's signature is refused: the signature must verify with --pub.
  const wrong = run(['root', 'sign', draft, '--signer-command', keyFileSignerCommand(join(dir, 'publisher/publisher.key')), '--pub', join(dir, 'kms/publisher.pub'), '--out', join(dir, 's3'), '--json']);
  t.not(wrong.status, 0, 'a signer with the wrong key is refused');
  ok(t, run(['root', 'merge', draft, join(dir, 's1'), join(dir, 's2'), '--out', join(dir, 'root-v1.cbor')]), 'root merge');
  const inspected = JSON.parse(ok(t, run(['root', 'inspect', join(dir, 'root-v1.cbor'), '--json']), 'root inspect')) as { threshold: number; validOwnSignatures: number; rootKeys: Array<{ kid: string; signed: boolean }> };
  t.is(inspected.threshold, 2);
  t.is(inspected.validOwnSignatures, 2);
  t.deepEqual(inspected.rootKeys.map((k) => k.signed), [true, true]);
  t.deepEqual(inspected.rootKeys.map((k) => k.kid), [hex(readTrustedKey(join(dir, 'r1/publisher.pub')).kid), hex(readTrustedKey(join(dir, 'kms/publisher.pub')).kid)]);
  t.false(files(dir).some((f) => f.startsWith('r1/') && f !== 'r1/publisher.pub'), 'root key 1 left only its public key on disk');
});
