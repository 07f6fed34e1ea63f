// The slow target: tests that need the machine to themselves (memory caps,
// benchmarks), run one at a time after the main suite (`npm run test:slow`).
export default {
  extensions: { ts: 'module' },
  nodeArguments: ['--import=tsx'],
  workerThreads: false,
  files: ['test/slow/**/*.test.ts'],
  serial: true,
  concurrency: 1,
  timeout: '6m',
};
