#!/usr/bin/env -S node --max-semi-space-size=1 --single-threaded
// A 1 MiB young generation instead of 16: the agent allocates one small buffer
// per datagram, and on a 512 MB board resident memory matters more than GC rate.
// --single-threaded: V8 marks (and compiles) on this thread, not helper
// threads; with concurrent marking a long transfer's old generation grew by
// ~20 MiB of garbage before each collection finished (bench/agent-rss.ts, 256
// MiB image: 85 → 64 MiB), and datagrams/s did not measurably change.
import { launch } from './launch.js';
await launch('device-agent/cli.ts');
