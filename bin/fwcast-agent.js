#!/usr/bin/env node
// fwcast-agent is written in TypeScript and run through tsx's loader.
import { register } from 'tsx/esm/api';
register();
const { main } = await import('../device-agent/cli.ts');
await main();
