/**
 * What every fwcast command line shares: --version, the exit-code table in
 * each command's --help, and usage errors as one line and a hint (exit 2), or
 * as JSON under --json.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CommanderError, type Command } from 'commander';
import { EXIT_CODES_HELP } from './exit-codes.js';
import { exitWithError, wantsJson } from './fail.js';

/** package.json's version, from the sources (cli/) or the build (dist/cli/). */
export function fwcastVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 3; i++, dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'fwcast' && pkg.version) return pkg.version;
    } catch {
      // Not here: one level up.
    }
  }
  return 'unknown';
}

/** Call before adding subcommands: commander copies these settings into each. */
export function commonSettings(program: Command, json: boolean): Command {
  return program
    .version(fwcastVersion(), '-V, --version', 'print the version and exit')
    // Root options only before the command: `fwcast sign --version 1.2` is sign's own --version.
    .enablePositionalOptions()
    .exitOverride()
    .showHelpAfterError(`(run '${program.name()} --help' or '${program.name()} COMMAND --help' for usage)`)
    .configureOutput({ outputError: (text, write) => { if (!json) write(text); } });
}

/** Call after adding subcommands: the exit-code table under every --help. */
export function exitCodesInHelp(command: Command): void {
  command.addHelpText('after', EXIT_CODES_HELP);
  for (const sub of command.commands) exitCodesInHelp(sub);
}

/** Runs a program; every error ends it with one line (or a JSON line) and its exit code. */
export async function runProgram(name: string, build: (json: boolean) => Command, argv: string[]): Promise<void> {
  const json = wantsJson(argv);
  try {
    await build(json).parseAsync(argv);
  } catch (err) {
    // --help and --version end through here too, with exit code 0.
    if (err instanceof CommanderError && err.exitCode === 0) process.exit(0);
    exitWithError(name, err, json);
  }
}
