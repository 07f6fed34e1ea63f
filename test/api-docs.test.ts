/** `npm run docs`: the messaging library's API reference, generated from its types by TypeDoc. */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from './helpers/processes.js';

test('npm run docs writes an API reference of fwcast/channels: Context, Socket and their methods', (t) => {
  const out = join(mkdtempSync(join(tmpdir(), 'fwcast-docs-')), 'api');
  const r = spawnSync('npm', ['run', 'docs', '--', '--out', out], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  t.is(r.status, 0, r.stdout + r.stderr);
  for (const page of ['index.html', 'classes/Context.html', 'classes/Socket.html']) t.true(existsSync(join(out, page)), page);
  const socket = readFileSync(join(out, 'classes/Socket.html'), 'utf8');
  for (const method of ['join', 'part', 'send', 'messages', 'close']) t.true(socket.includes(`id="${method}"`), `Socket.${method} is documented`);
});
