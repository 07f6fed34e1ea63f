/**
 * fwcast's layering, checked by dependency-cruiser: by `npm test` through
 * test/layering.test.ts, or by hand with `npx depcruise protocol transport
 * carousel storage server device-agent cli hardware test bench scripts`.
 * Layers point down only:
 *
 *   server/   device-agent/          the two sides: never import each other
 *   channels/                        the messaging library, over transport/
 *   carousel/ transport/ storage/    shared below both sides
 *   cli/                             shared command-line helpers
 *   protocol/                        pure: bytes in, values out
 *
 * Type-only imports count (tsPreCompilationDeps): a type from the other side
 * couples the layers as much as a value does.
 */

/** Library code: what dist/ is built from (tsconfig.build.json). */
const LIBRARY = '^(protocol|transport|channels|carousel|storage|runtime|server|device-agent|cli)/';

/**
 * Node modules that reach outside the process (files, network, processes,
 * threads, the host), and the packages that do. protocol/ may import none.
 */
const IO_CORE = '^(node:)?(fs|fs/promises|net|dgram|http|https|http2|tls|dns|dns/promises|child_process|worker_threads|cluster|os|readline|tty|inspector|repl)$';
const IO_PACKAGES = '^node_modules/(mqtt|serialport|@serialport/[^/]+)/';

/**
 * The one file read in protocol/: the RaptorQ codec's own .wasm, which ships
 * inside the raptorq package and is loaded once at start; reading it is part
 * of instantiating the codec, not I/O on any input. protocol/raptorq-wasm.ts
 * (the codec's binding) is that file.
 */
const WASM_READERS = '^protocol/raptorq-wasm[.]ts$';

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'server-not-device-agent',
      comment: 'server/ and device-agent/ are the two sides; what both need lives in carousel/, transport/, storage/, runtime/ or protocol/.',
      severity: 'error',
      from: { path: '^server/' },
      to: { path: '^device-agent/' },
    },
    {
      name: 'device-agent-not-server',
      comment: 'server/ and device-agent/ are the two sides; what both need lives in carousel/, transport/, storage/, runtime/ or protocol/.',
      severity: 'error',
      from: { path: '^device-agent/' },
      to: { path: '^server/' },
    },
    {
      name: 'shared-not-sides',
      comment: 'transport/, channels/, carousel/, storage/ and runtime/ serve both sides, so they import neither, nor cli/ (command lines only).',
      severity: 'error',
      from: { path: '^(transport|channels|carousel|storage|runtime)/' },
      to: { path: '^(server|device-agent|cli)/' },
    },
    {
      name: 'cli-not-sides',
      comment: 'cli/ holds helpers shared by both command lines, so it imports neither side.',
      severity: 'error',
      from: { path: '^cli/' },
      to: { path: '^(server|device-agent)/' },
    },
    {
      name: 'protocol-no-io',
      comment: 'protocol/ is pure: no files, network, processes, threads or host access.',
      severity: 'error',
      from: { path: '^protocol/' },
      to: { path: [IO_CORE, IO_PACKAGES], pathNot: '^(node:)?(fs|fs/promises)$' },
    },
    {
      name: 'protocol-no-fs',
      comment: 'protocol/ reads no files; the one exception is the module that loads the RaptorQ codec\'s .wasm (see WASM_READERS).',
      severity: 'error',
      from: { path: '^protocol/', pathNot: WASM_READERS },
      to: { path: '^(node:)?(fs|fs/promises)$' },
    },
    {
      name: 'protocol-self-contained',
      comment: 'protocol/ imports nothing else of fwcast: it is the bottom layer.',
      severity: 'error',
      from: { path: '^protocol/' },
      to: { pathNot: ['^protocol/', '^node_modules/'], dependencyTypesNot: ['core'] },
    },
    {
      name: 'library-not-tooling',
      comment: 'Library code (what dist/ ships) never imports tests, benchmarks, scripts or the hardware emulators.',
      severity: 'error',
      from: { path: LIBRARY },
      to: { path: '^(test|bench|scripts|hardware)/' },
    },
    {
      name: 'no-circular',
      comment: 'Modules that import each other cannot be understood, tested or layered one at a time.',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'resolvable',
      comment: 'An import the checker cannot resolve would escape every rule above.',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^dist/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      mainFields: ['module', 'main', 'types', 'typings'],
    },
  },
};
