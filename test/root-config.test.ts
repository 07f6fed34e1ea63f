/** The agent's root of trust in its configuration: `"root"` in the file, `--root`, and how they meet `--key`. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { resolveAgentConfig } from '../device-agent/config.js';

const dir = mkdtempSync(join(tmpdir(), 'fwcast-root-config-'));
const config = (fields: Record<string, unknown>): string => {
  const path = join(dir, `${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(path, JSON.stringify({ interface: 'eth0', models: [{ model: 'rpi4' }], ...fields }));
  return path;
};

test('"root" in the config file provisions a root instead of keys', (t) => {
  const c = resolveAgentConfig({ config: config({ root: '/etc/fwcast/root.cbor' }) });
  t.is(c.root, '/etc/fwcast/root.cbor');
  t.deepEqual(c.trustedKeys, []);
});

test('--root wins over a file\'s trustedKeys; --key wins over a file\'s root', (t) => {
  const both = config({ root: '/etc/fwcast/root.cbor', trustedKeys: ['/etc/fwcast/p.pub'] });
  t.is(resolveAgentConfig({ config: both, root: '/r.cbor' }).root, '/r.cbor');
  const keyed = resolveAgentConfig({ config: both, key: ['/k.pub'] });
  t.is(keyed.root, undefined);
  t.deepEqual(keyed.trustedKeys, ['/k.pub']);
});

test('--root with --key, or neither root nor keys, is a config error naming both', (t) => {
  t.throws(() => resolveAgentConfig({ config: config({}), root: '/r.cbor', key: ['/k.pub'] }), { message: /--root and --key/ });
  t.throws(() => resolveAgentConfig({ config: config({}) }), { message: /"root" or "trustedKeys"/ });
  t.throws(() => resolveAgentConfig({ config: config({ root: 5 }) }), { message: /config\.root/ });
});
