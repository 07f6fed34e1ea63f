/**
 * Hands the verified image to a command (e.g. a RAUC or SWUpdate wrapper):
 * `sh -c COMMAND` with FWCAST_IMAGE, FWCAST_MODEL, FWCAST_VERSION, FWCAST_SEQ
 * and FWCAST_SHA256 in its environment. Exit status 0 means installed.
 */
import { spawn } from 'node:child_process';
import type { Installer, InstallRequest } from '../installer.js';

export class CommandInstaller implements Installer {
  readonly description: string;

  constructor(readonly command: string, private readonly timeoutMs = 30 * 60_000) {
    this.description = `run ${JSON.stringify(command)}`;
  }

  install(req: InstallRequest): Promise<void> {
    return new Promise((resolve, reject) => {
      const child = spawn('/bin/sh', ['-c', this.command], {
        stdio: ['ignore', 'inherit', 'inherit'],
        env: {
          ...process.env,
          FWCAST_IMAGE: req.imagePath,
          FWCAST_MODEL: req.model,
          FWCAST_VERSION: req.version,
          FWCAST_SEQ: String(req.seq),
          FWCAST_SHA256: req.sha256,
        },
        timeout: this.timeoutMs,
        ...(req.signal ? { signal: req.signal } : {}),
      });
      child.on('error', (err) => reject(new Error(`install command failed to start: ${err.message}`)));
      child.on('exit', (code, sig) => {
        if (code === 0) resolve();
        else reject(new Error(`install command ${sig ? `was killed by ${sig}` : `exited with status ${code}`}: ${this.command}`));
      });
    });
  }
}
