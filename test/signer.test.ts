/**
 * Every Signer (protocol/signer.ts) against the one contract: a key file, a
 * signer command wrapping a key (as CI or a KMS would), and a key generated
 * inside a SoftHSM2 token through PKCS#11. Then what each kind must refuse,
 * with a SignerError or ConfigError that says why.
 */
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readPrivateKey, readTrustedKey, writeKeyPair } from '../cli/key-files.js';
import * as ed25519 from '../protocol/ed25519.js';
import { ConfigError, SignerError } from '../protocol/errors.js';
import { seedSigner } from '../protocol/signer.js';
import { commandSigner, MAX_SIGNER_OUTPUT } from '../server/signer/command-signer.js';
import { generatePkcs11Key, openPkcs11Signer, type Pkcs11KeyRef } from '../server/signer/pkcs11-signer.js';
import { keyFileSignerCommand, signerCompliance } from './helpers/signer-compliance.js';
import { initToken, softHsm } from './helpers/softhsm.js';


const made: string[] = [];

async function keyPair(): Promise<{ dir: string; key: string; pub: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-signer-'));
  made.push(dir);
  const r = await writeKeyPair(dir, false);
  return { dir, key: r.privatePath, pub: r.publicPath };
}


signerCompliance('key file', async () => {
  const { key } = await keyPair();
  return { open: async () => seedSigner(await readPrivateKey(key), `key file ${key}`) };
}, false);

signerCompliance('signer command', async () => {
  const [mine, other] = [await keyPair(), await keyPair()];
  return {
    open: async () => commandSigner({ command: keyFileSignerCommand(mine.key), publicKey: readTrustedKey(mine.pub).publicKey }),
    mismatched: async () => commandSigner({ command: keyFileSignerCommand(mine.key), publicKey: readTrustedKey(other.pub).publicKey }),
  };
}, true);

// One SoftHSM2 configuration for this file, set before the module is first loaded in this process.
const hsm = softHsm();
process.env.SOFTHSM2_CONF = hsm.conf;
initToken(hsm, 'compliance', '1111');
initToken(hsm, 'refusals', '2222');
const compliance: Pkcs11KeyRef = { module: hsm.module, token: 'compliance', key: 'release', pin: '1111' };

signerCompliance('PKCS#11 (SoftHSM2)', async () => {
  await generatePkcs11Key(compliance);
  const other = await keyPair();
  return {
    open: () => openPkcs11Signer(compliance),
    mismatched: () => openPkcs11Signer(compliance, readTrustedKey(other.pub).publicKey),
  };
}, true);

test('a signer command wrapping a key file signs exactly as the key file does', async (t) => {
  const { key, pub } = await keyPair();
  const fromFile = seedSigner(await readPrivateKey(key));
  const fromCommand = commandSigner({ command: keyFileSignerCommand(key), publicKey: readTrustedKey(pub).publicKey });
  const message = new TextEncoder().encode('Sig_structure bytes');
  t.deepEqual(await fromCommand.sign(message), await fromFile.sign(message));
});

test('signer command: a failing command, garbage, too much output or no answer in time are each refused with a SignerError', async (t) => {
  const { key, pub } = await keyPair();
  const publicKey = readTrustedKey(pub).publicKey;
  await ed25519.ready();
  const signature = Buffer.from(ed25519.sign(Uint8Array.of(9), await readPrivateKey(key)));
  const refused = async (command: string, pattern: RegExp, timeoutMs?: number): Promise<void> => {
    const signer = commandSigner({ command, publicKey, ...(timeoutMs ? { timeoutMs } : {}) });
    const err = await t.throwsAsync(signer.sign(Uint8Array.of(9)), { instanceOf: SignerError });
    t.regex(err!.message, pattern, command);
  };
  await refused('echo "kms: access denied" >&2; exit 3', /exited with status 3: kms: access denied$/);
  await refused('cat >/dev/null; echo not-a-signature', /not a 64-byte Ed25519 signature/);
  await refused(`head -c ${MAX_SIGNER_OUTPUT * 8} /dev/zero`, new RegExp(`more than ${MAX_SIGNER_OUTPUT} bytes`));
  await refused(`printf '%s' ${signature.subarray(0, 63).toString('hex')}`, /not a 64-byte/);
  const started = Date.now();
  // The command's child (sleep) is in its process group: killed too, so the pipe closes at once.
  await refused('sleep 30; echo late', /no answer within 0.3 s/, 300);
  t.true(Date.now() - started < 10_000, 'the timeout ends the wait');
  // The answer forms a command may use: raw, hex, base64 (one line).
  for (const form of [`printf '%s\\n' ${signature.toString('hex')}`, `printf '%s\\n' ${signature.toString('base64')}`]) {
    t.deepEqual(await commandSigner({ command: form, publicKey }).sign(Uint8Array.of(9)), new Uint8Array(signature), form);
  }
});

test('PKCS#11: a wrong PIN, no PIN, an unknown token or key, and a taken label are refused with a ConfigError', async (t) => {
  const ref: Pkcs11KeyRef = { module: hsm.module, token: 'refusals', key: 'k', pin: '2222' };
  const made = await generatePkcs11Key(ref);
  t.true(made.sensitive);
  t.false(made.extractable);
  await t.throwsAsync(openPkcs11Signer({ ...ref, pin: '9999' }), { instanceOf: ConfigError, message: /refused the PIN \(CKR_PIN_INCORRECT\)/ });
  const { pin: _pin, ...noPin } = ref;
  await t.throwsAsync(openPkcs11Signer(noPin), { instanceOf: ConfigError, message: /needs its user PIN/ });
  await t.throwsAsync(openPkcs11Signer({ ...ref, token: 'absent' }), { instanceOf: ConfigError, message: /no PKCS#11 token labelled "absent"/ });
  await t.throwsAsync(openPkcs11Signer({ ...ref, key: 'absent' }), { instanceOf: ConfigError, message: /no such private key/ });
  await t.throwsAsync(generatePkcs11Key(ref), { instanceOf: ConfigError, message: /already on the token/ });
  await t.throwsAsync(openPkcs11Signer({ ...ref, module: join(hsm.dir, 'no-such-module.so') }), { instanceOf: ConfigError, message: /cannot load PKCS#11 module/ });
  // After all those, the key still signs.
  const signer = await openPkcs11Signer(ref);
  t.deepEqual(signer.publicKey, made.publicKey);
  t.true(ed25519.verify(await signer.sign(Uint8Array.of(1)), Uint8Array.of(1), made.publicKey));
  await signer.close();
});

test.after.always(() => {
  for (const dir of [hsm.dir, ...made]) rmSync(dir, { recursive: true, force: true });
});
