/**
 * The Signer contract (protocol/signer.ts) as ava tests, for any
 * implementation: `signerCompliance(name, open)` registers one test per rule.
 * Signatures are checked with the verifier every device uses (protocol/ed25519.ts).
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { decodeCoseSign1, signCoseSign1With, verifyCoseSign1 } from '../../protocol/cose-sign1.js';
import * as ed25519 from '../../protocol/ed25519.js';
import { SignerError } from '../../protocol/errors.js';
import { keyId } from '../../protocol/keys.js';
import type { Signer } from '../../protocol/signer.js';

const SIGN_WITH_KEY = fileURLToPath(new URL('./key-file-signer-command.mjs', import.meta.url));
const shellQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** A --signer-command that signs with the key file `keyPath`, as a KMS would (test/helpers/key-file-signer-command.mjs). */
export function keyFileSignerCommand(keyPath: string): string {
  return [process.execPath, SIGN_WITH_KEY, keyPath].map(shellQuote).join(' ');
}

export interface SignerSetup {
  /** A new signer of this kind, open. */
  open(): Promise<Signer>;
  /** The same kind configured with a public key that is not its key's (with `mismatchable`). */
  mismatched?(): Promise<Signer>;
}

async function using<T>(signer: Signer, use: (s: Signer) => Promise<T>): Promise<T> {
  try {
    return await use(signer);
  } finally {
    await signer.close();
  }
}

export function signerCompliance(name: string, setup: () => Promise<SignerSetup>, mismatchable: boolean): void {
  const ready = setup();

  test(`${name}: a 32-byte Ed25519 public key, and its key id as kid`, async (t) => {
    await using(await (await ready).open(), async (signer) => {
      t.is(signer.publicKey.length, 32);
      t.deepEqual(signer.kid, keyId(signer.publicKey));
      t.true(signer.description.length > 0);
    });
  });

  test(`${name}: signatures verify with the devices' Ed25519 verifier, over exactly the bytes given`, async (t) => {
    await using(await (await ready).open(), async (signer) => {
      for (const message of [Uint8Array.of(0), new Uint8Array(randomBytes(65_536))]) {
        const signature = await signer.sign(message);
        t.is(signature.length, 64);
        t.true(ed25519.verify(signature, message, signer.publicKey), `${message.length}-byte message`);
        const altered = Uint8Array.from([...message, 1]);
        t.false(ed25519.verify(signature, altered, signer.publicKey), 'not over other bytes');
      }
    });
  });

  test(`${name}: an empty message is refused with a SignerError, and the signer goes on signing`, async (t) => {
    await using(await (await ready).open(), async (signer) => {
      await t.throwsAsync(signer.sign(new Uint8Array(0)), { instanceOf: SignerError });
      t.true(ed25519.verify(await signer.sign(Uint8Array.of(5)), Uint8Array.of(5), signer.publicKey));
    });
  });

  test(`${name}: deterministic Ed25519: the same bytes give the same signature, other bytes another`, async (t) => {
    await using(await (await ready).open(), async (signer) => {
      const message = new Uint8Array(randomBytes(300));
      const [a, b] = [await signer.sign(message), await signer.sign(message)];
      t.deepEqual(a, b);
      t.notDeepEqual(await signer.sign(message.subarray(1)), a);
    });
  });

  test(`${name}: a COSE_Sign1 signed through it verifies and names its key`, async (t) => {
    await using(await (await ready).open(), async (signer) => {
      const payload = new Uint8Array(randomBytes(1000));
      const cose = decodeCoseSign1(await signCoseSign1With(payload, signer));
      t.deepEqual(cose.kid, signer.kid);
      t.deepEqual(cose.payload, payload);
      t.true(verifyCoseSign1(cose, signer.publicKey));
    });
  });

  test(`${name}: several signatures asked at once all verify`, async (t) => {
    await using(await (await ready).open(), async (signer) => {
      const messages = Array.from({ length: 6 }, () => new Uint8Array(randomBytes(200)));
      const signatures = await Promise.all(messages.map((m) => signer.sign(m)));
      for (const [i, m] of messages.entries()) t.true(ed25519.verify(signatures[i]!, m, signer.publicKey));
    });
  });

  test(`${name}: after close(), sign() is refused with a SignerError; closing twice is harmless`, async (t) => {
    const signer = await (await ready).open();
    await signer.close();
    await signer.close();
    await t.throwsAsync(signer.sign(Uint8Array.of(1)), { instanceOf: SignerError });
  });

  // A key file carries its own public key: only kinds given one separately can be given a wrong one.
  if (!mismatchable) return;
  test(`${name}: configured with another key's public key, it refuses to sign with a SignerError`, async (t) => {
    await using(await (await ready).mismatched!(), async (signer) => {
      const err = await t.throwsAsync(signer.sign(Uint8Array.of(1, 2, 3)), { instanceOf: SignerError });
      t.is(err?.reason, 'signer');
    });
  });
}
