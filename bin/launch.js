// Starts a CLI from the compiled JavaScript in dist/ (small and fast: what a
// device runs). When dist/ is missing or older than the TypeScript sources,
// as while developing, it runs the sources through tsx instead.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const SOURCE_DIRS = ['protocol', 'transport', 'carousel', 'storage', 'server', 'device-agent', 'cli'];

function newestSource(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(path));
    else if (entry.name.endsWith('.ts')) newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

function distIsFresh(entry) {
  const built = join(root, 'dist', entry.replace(/\.ts$/, '.js'));
  if (!existsSync(built)) return false;
  const builtAt = statSync(built).mtimeMs;
  return SOURCE_DIRS.every((d) => !existsSync(join(root, d)) || newestSource(join(root, d)) <= builtAt);
}

export async function launch(entry) {
  // cbor-x's optional native decoder costs ~6 MB of RSS and only speeds up
  // large documents; fwcast's are small.
  process.env.CBOR_NATIVE_ACCELERATION_DISABLED ??= 'true';
  let module;
  if (distIsFresh(entry)) {
    module = await import(pathToFileURL(join(root, 'dist', entry.replace(/\.ts$/, '.js'))).href);
  } else {
    const { register } = await import('tsx/esm/api');
    register();
    module = await import(pathToFileURL(join(root, entry)).href);
  }
  await module.main();
}
