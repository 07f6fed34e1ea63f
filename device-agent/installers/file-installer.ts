/**
 * Default installer: puts the image at a target path atomically. The new image
 * is copied beside the target, fsynced, then renamed over it, and the directory
 * is fsynced; a power cut at any point leaves either the old or the new image.
 */
import { constants, copyFileSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { fsyncDir, fsyncPath } from '../../storage/durable-file.js';
import type { Installer, InstallRequest } from '../installer.js';

export class FileInstaller implements Installer {
  readonly description: string;

  constructor(readonly target: string) {
    this.description = `write to ${target}`;
  }

  async install(req: InstallRequest): Promise<void> {
    mkdirSync(dirname(this.target), { recursive: true });
    const tmp = `${this.target}.fwcast-tmp`;
    try {
      copyFileSync(req.imagePath, tmp, constants.COPYFILE_FICLONE);
      fsyncPath(tmp);
      renameSync(tmp, this.target);
      fsyncDir(dirname(this.target));
    } catch (err) {
      rmSync(tmp, { force: true });
      throw new Error(`installing to ${this.target} failed: ${(err as Error).message}`);
    }
  }
}
