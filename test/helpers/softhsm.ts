/**
 * SoftHSM2 tokens for tests: a configuration and token directory of the
 * test's own (SOFTHSM2_CONF points there), tokens initialised with
 * softhsm2-util. Nothing touches the machine's own SoftHSM2 tokens.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const SOFTHSM_APT = 'apt-get install -y softhsm2';
export const SOFTHSM_MODULE = ['/usr/lib/softhsm/libsofthsm2.so', '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so'].find((p) => existsSync(p));
const SOFTHSM_UTIL = '/usr/bin/softhsm2-util';

export interface SoftHsm {
  dir: string;
  module: string;
  /** SOFTHSM2_CONF for child processes and for this one. */
  conf: string;
  env: NodeJS.ProcessEnv;
}

/** A fresh SoftHSM2 configuration in a temporary directory. */
export function softHsm(prefix = 'fwcast-hsm-'): SoftHsm {
  if (!SOFTHSM_MODULE || !existsSync(SOFTHSM_UTIL)) throw new Error(`these tests need SoftHSM2: ${SOFTHSM_APT}`);
  const dir = mkdtempSync(join(tmpdir(), prefix));
  mkdirSync(join(dir, 'tokens'));
  const conf = join(dir, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${join(dir, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`);
  return { dir, module: SOFTHSM_MODULE, conf, env: { ...process.env, SOFTHSM2_CONF: conf } };
}

/** Initialises a token labelled `label` with user PIN `pin`. */
export function initToken(hsm: SoftHsm, label: string, pin: string): void {
  execFileSync(SOFTHSM_UTIL, ['--init-token', '--free', '--label', label, '--so-pin', `so-${pin}`, '--pin', pin], { env: hsm.env, stdio: ['ignore', 'pipe', 'pipe'] });
}
