/**
 * The publisher's side of staged rollout and halt (SPEC §17):
 *
 *   fwcast sign … --ramp-start T --ramp-duration 24h --cohort canary --activate-at T --activate-jitter 30m
 *   fwcast halt RELEASE (a release file, or an id with --model) --out X.halt  (any Signer option)
 *
 * A time T is Unix seconds, an ISO date, or a duration from now ("2h").
 */
import { closeSync, existsSync, openSync, readSync, statSync } from 'node:fs';
import type { Command } from 'commander';
import { UsageError } from '../cli/fail.js';
import { readBytes } from '../cli/root-files.js';
import { parseDuration } from '../cli/units.js';
import { FwcastError } from '../protocol/errors.js';
import { decodeCoseSign1 } from '../protocol/cose-sign1.js';
import { decodeHalt, signHaltWith, type Halt } from '../protocol/halt.js';
import { hex } from '../protocol/hex.js';
import { checkModelName } from '../protocol/manifest.js';
import { checkCohortName, type RolloutPolicy } from '../protocol/rollout.js';
import { writeFileAtomic } from '../storage/durable-file.js';
import { readReleaseManifest } from './release.js';
import { releaseIdOf, decodeManifest } from '../protocol/manifest.js';
import { addSignerOptions, openSigner, type SignerFlags } from './signer/signer-options.js';

/** A point in time: Unix seconds, an ISO date, or a duration from now. */
function pointInTime(flag: string) {
  return (value: string): number => {
    if (/^\d+$/.test(value)) return Number(value);
    const date = Date.parse(value);
    if (/^\d{4}-\d\d-\d\d/.test(value) && !Number.isNaN(date)) return Math.floor(date / 1000);
    try {
      return Math.floor(Date.now() / 1000 + parseDuration(value) / 1000);
    } catch {
      throw new UsageError(`${flag}: expected Unix seconds, an ISO date or a duration from now (e.g. 2h), got "${value}"`);
    }
  };
}

function span(flag: string) {
  return (value: string): number => {
    if (/^\d+$/.test(value)) return Number(value);
    try {
      return Math.round(parseDuration(value) / 1000);
    } catch (err) {
      throw new UsageError(`${flag}: ${(err as Error).message}`);
    }
  };
}

function cohort(value: string, previous: string[] = []): string[] {
  try {
    return [...previous, checkCohortName(value)];
  } catch (err) {
    throw new UsageError(`--cohort: ${(err as Error).message}`);
  }
}

export interface RolloutFlags {
  rampStart?: number;
  rampDuration?: number;
  cohort?: string[];
  activateAt?: number;
  activateJitter?: number;
}

/** `fwcast sign`'s rollout flags. */
export function addRolloutOptions(cmd: Command): Command {
  return cmd
    .option('--ramp-duration <duration>', 'staged rollout: devices install spread evenly over this long (e.g. 24h), each at a time of its own', span('--ramp-duration'))
    .option('--ramp-start <time>', 'when the ramp starts: Unix seconds, an ISO date or a duration from now (default: now)', pointInTime('--ramp-start'))
    .option('--cohort <name>', 'only devices in this cohort install the release, e.g. canary (repeatable: devices in any of them)', cohort)
    .option('--activate-at <time>', 'no device installs before this time: Unix seconds, an ISO date or a duration from now', pointInTime('--activate-at'))
    .option('--activate-jitter <duration>', 'each device waits a further share of this long after --activate-at (e.g. 30m), so a fleet does not reboot at one instant', span('--activate-jitter'));
}

/** The policy the flags ask for, if any; `created` stands in for an unset start. */
export function rolloutPolicy(flags: RolloutFlags, created: number): RolloutPolicy | undefined {
  if (flags.rampStart !== undefined && flags.rampDuration === undefined) throw new UsageError('--ramp-start needs --ramp-duration');
  const cohorts = flags.cohort ? [...new Set(flags.cohort)] : undefined;
  if (cohorts && cohorts.length > 32) throw new UsageError('at most 32 --cohort names');
  const policy: RolloutPolicy = {
    ...(flags.rampDuration !== undefined ? { ramp: { start: flags.rampStart ?? created, duration: flags.rampDuration } } : {}),
    ...(cohorts ? { cohorts } : {}),
    ...(flags.activateAt !== undefined || flags.activateJitter !== undefined ? { activation: { at: flags.activateAt ?? created, jitter: flags.activateJitter ?? 0 } } : {}),
  };
  return Object.keys(policy).length > 0 ? policy : undefined;
}

/** The policy as `fwcast inspect` shows it. */
export function rolloutSummary(p: RolloutPolicy | undefined): Record<string, unknown> | null {
  if (!p) return null;
  const iso = (t: number): string => new Date(t * 1000).toISOString();
  return {
    ...(p.ramp ? { ramp: { start: iso(p.ramp.start), end: iso(p.ramp.start + p.ramp.duration), durationSeconds: p.ramp.duration } } : {}),
    cohorts: p.cohorts ?? 'all',
    ...(p.activation ? { activation: { at: iso(p.activation.at), jitterSeconds: p.activation.jitter } } : {}),
  };
}

/** Reads a halt file (`fwcast halt`): its signed bytes and what it says. Not a trust decision. */
export function readHaltFile(path: string): { signed: Uint8Array; halt: Halt; kid: Uint8Array } {
  const signed = readBytes(path, 'halt file');
  try {
    const cose = decodeCoseSign1(signed);
    return { signed, halt: decodeHalt(cose.payload), kid: cose.kid };
  } catch (err) {
    if (err instanceof FwcastError) throw new UsageError(`${path} is not a halt file (\`fwcast halt\` makes them): ${err.message}`);
    throw err;
  }
}

/** True if the file starts like a halt (a COSE_Sign1 tag), not like a release file. */
export function looksLikeHalt(path: string): boolean {
  const first = new Uint8Array(1);
  const fd = openSync(path, 'r');
  try {
    return readSync(fd, first, 0, 1, 0) === 1 && first[0] === 0xd2;
  } finally {
    closeSync(fd);
  }
}

export function haltSummary(h: Halt, kid: Uint8Array): Record<string, unknown> {
  return { halt: true, model: h.model, releaseId: hex(h.releaseId), issued: new Date(h.issued * 1000).toISOString(), keyId: hex(kid) };
}

export function addHaltCommand(program: Command): void {
  addSignerOptions(program.command('halt')
    .description('sign a halt: every device that has not installed the release drops it (carry it with `fwcast push` to serve, or `fwcast publish --halt`)')
    .argument('<release>', 'the release to halt: its release file, or its 16-hex-digit release id (with --model)'))
    .option('--model <model>', 'the model of the release (needed with a release id)')
    .requiredOption('--out <file>', 'halt file to write')
    .option('--json', 'print the halt made as JSON')
    .action(async (release: string, opts: SignerFlags & { model?: string; out: string; json?: boolean }) => {
      let model: string;
      let releaseId: Uint8Array;
      if (/^[0-9a-f]{16}$/.test(release) && !existsSync(release)) {
        if (!opts.model) throw new UsageError('a release id needs --model (or name the release file instead)');
        try {
          model = checkModelName(opts.model);
        } catch (err) {
          throw new UsageError(`--model: ${(err as Error).message}`);
        }
        releaseId = Uint8Array.from(Buffer.from(release, 'hex'));
      } else {
        if (!existsSync(release) || !statSync(release).isFile()) throw new UsageError(`${release}: neither a release file nor a 16-hex-digit release id`);
        const signed = readReleaseManifest(release);
        model = decodeManifest(decodeCoseSign1(signed).payload).model;
        if (opts.model !== undefined && opts.model !== model) throw new UsageError(`--model ${opts.model}: the release file is for ${model}`);
        releaseId = releaseIdOf(signed);
      }
      const signer = await openSigner(opts);
      let signed: Uint8Array;
      const halt: Halt = { model, releaseId, issued: Math.floor(Date.now() / 1000) };
      try {
        signed = await signHaltWith(halt, signer);
      } finally {
        await signer.close();
      }
      writeFileAtomic(opts.out, signed);
      if (opts.json) process.stdout.write(JSON.stringify({ ok: true, file: opts.out, ...haltSummary(halt, signer.kid) }) + '\n');
      else process.stdout.write(`${opts.out}: halt of ${model} release ${hex(releaseId)}, signed by key ${hex(signer.kid)}\n`);
    });
}
