/**
 * The command-line flags that choose a Signer (protocol/signer.ts), shared by
 * every command that signs: a key file (--key), an external command
 * (--signer-command with --pub), or a key inside an HSM (--pkcs11-*). The PIN
 * comes from $FWCAST_PKCS11_PIN or a file, never from the command line,
 * where every user would see it in `ps`.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { UsageError } from '../../cli/fail.js';
import { readPrivateKey, readTrustedKey } from '../../cli/key-files.js';
import { parseDuration } from '../../cli/units.js';
import { ConfigError } from '../../protocol/errors.js';
import { seedSigner, type Signer } from '../../protocol/signer.js';
import { commandSigner, DEFAULT_SIGNER_TIMEOUT_MS } from './command-signer.js';
import { openPkcs11Signer, type Pkcs11KeyRef } from './pkcs11-signer.js';

export const PIN_ENV = 'FWCAST_PKCS11_PIN';

export interface SignerFlags {
  key?: string;
  signerCommand?: string;
  pub?: string;
  signerTimeout?: number;
  pkcs11Module?: string;
  pkcs11Token?: string;
  pkcs11Key?: string;
  pkcs11PinFile?: string;
}

function timeoutFlag(value: string): number {
  let ms: number;
  try {
    ms = parseDuration(value);
  } catch (err) {
    throw new UsageError(`--signer-timeout: ${(err as Error).message}`);
  }
  if (!(ms >= 1 && ms <= 3_600_000)) throw new UsageError(`--signer-timeout must be between 1ms and 1h, got "${value}"`);
  return ms;
}

/** --pkcs11-module, --pkcs11-token, --pkcs11-key, --pkcs11-pin-file: where a key is in an HSM. */
export function addPkcs11Options(cmd: Command): Command {
  return cmd
    .option('--pkcs11-module <path>', 'PKCS#11 module (library) of the HSM or token, e.g. /usr/lib/softhsm/libsofthsm2.so')
    .option('--pkcs11-token <label>', 'label of the token holding the key')
    .option('--pkcs11-key <label>', 'label (CKA_LABEL) of the Ed25519 key on the token')
    .option('--pkcs11-pin-file <file>', `file holding the token's user PIN (else $${PIN_ENV})`);
}

/** Every way to name the signing key; openSigner() makes the Signer. */
export function addSignerOptions(cmd: Command, what = 'publisher'): Command {
  cmd
    .option('--key <file>', `${what} private key (PEM)`)
    .option('--signer-command <command>', 'sign through a command (sh -c): the bytes to sign on its stdin, the 64-byte Ed25519 signature on its stdout; needs --pub')
    .option('--pub <file>', 'public key the --signer-command (or PKCS#11) signatures verify with (PEM or base64)')
    .option('--signer-timeout <duration>', `longest wait for one signature from --signer-command (default ${DEFAULT_SIGNER_TIMEOUT_MS / 1000}s)`, timeoutFlag);
  return addPkcs11Options(cmd);
}

/** The key reference of the --pkcs11-* flags, PIN included; undefined without --pkcs11-module. */
export function pkcs11Ref(flags: SignerFlags): Pkcs11KeyRef | undefined {
  if (!flags.pkcs11Module) {
    const stray = flags.pkcs11Token ? '--pkcs11-token' : flags.pkcs11Key ? '--pkcs11-key' : flags.pkcs11PinFile ? '--pkcs11-pin-file' : undefined;
    if (stray) throw new UsageError(`${stray} needs --pkcs11-module`);
    return undefined;
  }
  if (!flags.pkcs11Token || !flags.pkcs11Key) throw new UsageError('--pkcs11-module needs --pkcs11-token and --pkcs11-key');
  return { module: flags.pkcs11Module, token: flags.pkcs11Token, key: flags.pkcs11Key, ...pin(flags) };
}

function pin(flags: SignerFlags): { pin?: string } {
  if (flags.pkcs11PinFile) {
    let text: string;
    try {
      text = readFileSync(flags.pkcs11PinFile, 'utf8');
    } catch (err) {
      throw new ConfigError(`cannot read PIN file ${flags.pkcs11PinFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    return { pin: text.replace(/\r?\n$/, '') };
  }
  const env = process.env[PIN_ENV];
  return env !== undefined && env !== '' ? { pin: env } : {};
}

/** The Signer the flags name; exactly one of --key, --signer-command and --pkcs11-module. close() it when done. */
export async function openSigner(flags: SignerFlags): Promise<Signer> {
  const chosen = [flags.key && '--key', flags.signerCommand && '--signer-command', flags.pkcs11Module && '--pkcs11-module'].filter(Boolean);
  if (chosen.length !== 1) {
    throw new UsageError(chosen.length === 0
      ? 'name the signing key: --key FILE, --signer-command CMD with --pub FILE, or --pkcs11-module, --pkcs11-token and --pkcs11-key'
      : `give only one of ${chosen.join(', ')}`);
  }
  const ref = pkcs11Ref(flags);
  if (flags.signerTimeout !== undefined && !flags.signerCommand) throw new UsageError('--signer-timeout is for --signer-command');
  const pub = flags.pub ? readTrustedKey(flags.pub).publicKey : undefined;
  if (flags.key) {
    if (pub) throw new UsageError('--pub is for --signer-command and PKCS#11: a key file holds its public key');
    return seedSigner(await readPrivateKey(flags.key), `key file ${flags.key}`);
  }
  if (flags.signerCommand) {
    if (!pub) throw new UsageError('--signer-command needs --pub, the public key its signatures verify with');
    return commandSigner({ command: flags.signerCommand, publicKey: pub, ...(flags.signerTimeout !== undefined ? { timeoutMs: flags.signerTimeout } : {}) });
  }
  return openPkcs11Signer(ref!, pub);
}
