#!/usr/bin/env -S MALLOC_ARENA_MAX=1 CBOR_NATIVE_ACCELERATION_DISABLED=true node --max-semi-space-size=1 --single-threaded --optimize-for-size
// MALLOC_ARENA_MAX=1: the storage thread's allocations share the main arena
// instead of a 64 MiB arena of its own (peak RSS, 256 MiB image: −4 MiB).
// CBOR_NATIVE_ACCELERATION_DISABLED: cbor-x in JavaScript, without its native
// addon; the agent decodes one manifest per release.
// A 1 MiB young generation instead of 16: the agent allocates one small buffer
// per datagram, and on a 512 MB board resident memory matters more than GC rate.
// --single-threaded: V8 marks (and compiles) on this thread, not helper
// threads; with concurrent marking a long transfer's old generation grew by
// ~20 MiB of garbage before each collection finished (bench/agent-rss.ts, 256
// MiB image: 85 → 64 MiB), and datagrams/s did not measurably change.
// --optimize-for-size: V8 grows its heap in smaller steps and keeps less
// compiled code (256 MiB image at 10% loss: 90-94 → 88-90 MiB peak, encrypted
// or not; the capacity self-test's µs per datagram within its run-to-run noise).
import { launch } from './launch.js';
await launch('device-agent/cli.ts');
