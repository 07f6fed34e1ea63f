/**
 * Starting a worker thread from a module beside the caller, in both ways the
 * code runs: compiled (dist/, the worker is the .js file) and under tsx
 * (development, tests: the worker is TypeScript, so it registers the same
 * loader first). Used by the publisher's codec pool and the agent's storage
 * thread.
 */
import { Worker, type ResourceLimits } from 'node:worker_threads';

/** A Worker running `name` (without extension), resolved beside `callerUrl` (the caller's import.meta.url). */
export function startModuleWorker(callerUrl: string, name: string, resourceLimits?: ResourceLimits): Worker {
  const options = resourceLimits ? { resourceLimits } : {};
  if (!callerUrl.endsWith('.ts')) return new Worker(new URL(`./${name}.js`, callerUrl), options);
  const entry = JSON.stringify(new URL(`./${name}.ts`, callerUrl).href);
  // Resolved from here, not from the working directory an eval worker would use.
  const tsx = JSON.stringify(import.meta.resolve('tsx/esm/api'));
  return new Worker(`import(${tsx}).then((tsx) => { tsx.register(); return import(${entry}); });`, { eval: true, ...options });
}
