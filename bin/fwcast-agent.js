#!/usr/bin/env node
import { launch } from './launch.js';
await launch('device-agent/cli.ts');
