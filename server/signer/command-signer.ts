/**
 * A key held by something else (a CI secret store, a cloud KMS, another
 * machine) behind a command: `sh -c COMMAND` reads the bytes to sign on stdin
 * and writes the 64-byte Ed25519 signature on stdout, raw or as one line of
 * hex or base64. Bounded: the command has `timeoutMs` to answer and at most
 * MAX_SIGNER_OUTPUT bytes to write; past either it is killed, its process
 * group with it. Its stderr's last line is the error message when it fails.
 */
import { spawn } from 'node:child_process';
import { SignerError } from '../../protocol/errors.js';
import { makeSigner, type Signer } from '../../protocol/signer.js';

export const DEFAULT_SIGNER_TIMEOUT_MS = 60_000;
/** More than any encoding of one signature, with room for a trailing newline. */
export const MAX_SIGNER_OUTPUT = 1024;
const STDERR_KEPT = 2048;

export interface CommandSignerInit {
  command: string;
  /** The public key the command's signatures must verify with. */
  publicKey: Uint8Array;
  timeoutMs?: number;
}

export function commandSigner(init: CommandSignerInit): Signer {
  const timeoutMs = init.timeoutMs ?? DEFAULT_SIGNER_TIMEOUT_MS;
  return makeSigner({
    publicKey: init.publicKey,
    description: 'signer command',
    signRaw: (message) => runSignerCommand(init.command, message, timeoutMs),
  });
}

/** A signature as the command wrote it: 64 raw bytes, or 128 hex digits, or 88 base64 characters, on one line. */
function parseSignature(out: Buffer): Uint8Array {
  if (out.length === 64) return new Uint8Array(out);
  const text = out.toString('latin1').trim();
  if (/^[0-9a-fA-F]{128}$/.test(text)) return new Uint8Array(Buffer.from(text, 'hex'));
  if (/^[A-Za-z0-9+/]{86}==$/.test(text)) return new Uint8Array(Buffer.from(text, 'base64'));
  throw new SignerError(`signer command wrote ${out.length} bytes on stdout, not a 64-byte Ed25519 signature (raw, or one line of hex or base64)`);
}

function lastLine(text: string): string {
  const lines = text.trim().split('\n');
  return lines[lines.length - 1]!.trim();
}

function runSignerCommand(command: string, message: Uint8Array, timeoutMs: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    // Its own process group, so a timeout ends whatever the command started too.
    const child = spawn('/bin/sh', ['-c', command], { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    const out: Buffer[] = [];
    let outBytes = 0;
    let stderr = '';
    let failure: SignerError | undefined;
    const kill = (why: string): void => {
      failure ??= new SignerError(why);
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // Gone already.
      }
    };
    const timer = setTimeout(() => kill(`signer command gave no answer within ${timeoutMs / 1000} s`), timeoutMs);
    child.stdout.on('data', (chunk: Buffer) => {
      outBytes += chunk.length;
      if (outBytes > MAX_SIGNER_OUTPUT) kill(`signer command wrote more than ${MAX_SIGNER_OUTPUT} bytes on stdout; a signature is 64`);
      else out.push(chunk);
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-STDERR_KEPT)));
    // A command that does not read all its input closes the pipe: its exit status tells the rest.
    child.stdin.on('error', () => {});
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new SignerError(`signer command could not start: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (failure) return reject(failure);
      if (code !== 0) {
        const said = stderr.trim() ? `: ${lastLine(stderr)}` : ' (nothing on stderr)';
        return reject(new SignerError(`signer command ${code === null ? `was killed by ${signal}` : `exited with status ${code}`}${said}`, { status: code ?? String(signal) }));
      }
      try {
        resolve(parseSignature(Buffer.concat(out)));
      } catch (err) {
        reject(err);
      }
    });
    child.stdin.end(Buffer.from(message));
  });
}
