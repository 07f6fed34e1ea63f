#!/usr/bin/env -S node --max-semi-space-size=1
// A 1 MiB young generation instead of 16: the agent allocates one small buffer
// per datagram, and on a 512 MB board resident memory matters more than GC rate.
import { launch } from './launch.js';
await launch('device-agent/cli.ts');
