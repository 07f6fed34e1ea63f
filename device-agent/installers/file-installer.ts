/**
 * Default installer: puts the image at a target path atomically. The new image
 * is copied beside the target, fsynced, then renamed over it, and the directory
 * is fsynced; a power cut at any point leaves either the old or the new image.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { copyFileAtomic } from '../../storage/durable-file.js';
import type { Installer, InstallRequest } from '../installer.js';

export class FileInstaller implements Installer {
  readonly description: string;

  constructor(readonly target: string) {
    this.description = `write to ${target}`;
  }

  async install(req: InstallRequest): Promise<void> {
    mkdirSync(dirname(this.target), { recursive: true });
    try {
      copyFileAtomic(req.imagePath, this.target);
    } catch (err) {
      throw new Error(`installing to ${this.target} failed: ${(err as Error).message}`);
    }
  }
}
