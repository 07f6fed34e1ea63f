/** Builds the installer a model's configuration asks for. */
import type { InstallerConfig } from '../config.js';
import type { Installer } from '../installer.js';
import { CommandInstaller } from './command-installer.js';
import { FileInstaller } from './file-installer.js';

export async function createInstaller(config: InstallerConfig): Promise<Installer> {
  switch (config.type) {
    case 'file':
      return new FileInstaller(config.path);
    case 'command':
      return new CommandInstaller(config.command, (config.timeoutSeconds ?? 1800) * 1000);
    case 'serial': {
      // Loaded on demand: only serial bridges need serialport's native binding.
      const { createSerialInstaller } = await import('../serial/installer.js');
      return createSerialInstaller(config);
    }
  }
}
