/**
 * device-agent/store.ts: where a kept release lives (one definition, used by
 * the agent and the relay), pruning, and a state.json that cannot be used.
 */
import test from 'ava';
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { writeKeyPair } from '../cli/key-files.js';
import { resolveAgentConfig } from '../device-agent/config.js';
import { modelFileName, Store } from '../device-agent/store.js';
import { ConfigError } from '../protocol/errors.js';

function storeDir(t: { teardown: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'fwcast-store-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('keepRelease puts image and manifest where keptRelease says; pruneReleases keeps only the named release', (t) => {
  const dir = storeDir(t);
  const store = new Store(dir);
  /** A verified image as the agent hands it over: a file in the store's incoming/. */
  const keep = (id: string, image: string): string => {
    const path = join(dir, 'incoming', `${id}.part`);
    writeFileSync(path, image);
    return store.keepRelease('acme/sensor', id, path, new TextEncoder().encode(`manifest ${id}`));
  };
  keep('00000000000000aa', 'old image');
  const returned = keep('00000000000000bb', 'new image');
  const kept = store.keptRelease('acme/sensor', '00000000000000bb');
  t.is(returned, kept.image);
  t.is(readFileSync(kept.image, 'utf8'), 'new image');
  t.is(readFileSync(kept.manifest, 'utf8'), 'manifest 00000000000000bb');
  t.is(dirname(dirname(kept.image)), join(dir, 'releases'));
  t.is(readFileSync(store.keptRelease('acme/sensor', '00000000000000aa').image, 'utf8'), 'old image');

  store.pruneReleases('acme/sensor', '00000000000000bb');
  t.deepEqual(readdirSync(dirname(kept.image)).sort(), ['00000000000000bb.cose', '00000000000000bb.img']);
  t.deepEqual(readdirSync(join(dir, 'incoming')), []);
});

test('relay mode: keepDelta puts a delta beside its release, where keptDelta says; pruneReleases removes the deltas of the releases it removes, not those of the kept one', (t) => {
  const dir = storeDir(t);
  const store = new Store(dir);
  const file = (name: string, text: string): string => {
    const path = join(dir, 'incoming', name);
    writeFileSync(path, text);
    return path;
  };
  for (const id of ['00000000000000aa', '00000000000000bb']) {
    store.keepRelease('acme/sensor', id, file(`${id}.part`, `image ${id}`), new TextEncoder().encode(`manifest ${id}`));
    store.keepDelta('acme/sensor', id, '0000000000000001', file(`${id}.delta`, `delta of ${id}`));
  }
  const kept = store.keptDelta('acme/sensor', '00000000000000bb', '0000000000000001');
  t.is(dirname(kept), dirname(store.keptRelease('acme/sensor', '00000000000000bb').image));
  t.is(readFileSync(kept, 'utf8'), 'delta of 00000000000000bb');
  t.deepEqual(store.keptReleaseIds('acme/sensor').sort(), ['00000000000000aa', '00000000000000bb'], 'a delta is not a release');
  t.true(store.relayDeltaTransfers('acme/sensor').startsWith(join(dir, 'relay-deltas')));
  store.pruneReleases('acme/sensor', '00000000000000bb');
  t.deepEqual(readdirSync(dirname(kept)).sort(), ['00000000000000bb.cose', '00000000000000bb.delta-0000000000000001', '00000000000000bb.img']);
});

test('a state.json that is not a state file is a ConfigError naming the file, whatever its JSON', (t) => {
  for (const text of ['{not json', 'null', '[]', '"x"', '{"format":2,"models":{}}', '{"format":1}', '{"format":1,"models":null}', '{"format":1,"models":[]}']) {
    const dir = storeDir(t);
    writeFileSync(join(dir, 'state.json'), text);
    const error = t.throws(() => new Store(dir), { instanceOf: ConfigError }, text);
    t.true(error?.message.startsWith(`${join(dir, 'state.json')} is corrupt (`), error?.message);
  }
  const dir = storeDir(t);
  writeFileSync(join(dir, 'state.json'), '{"format":1,"models":{}}');
  t.deepEqual(new Store(dir).list(), []);
});

test('regression: models "cam/v2" and "cam_v2" keep their releases apart, and their default install paths differ', (t) => {
  const dir = storeDir(t);
  const store = new Store(dir);
  const keep = (model: string, id: string, image: string): string => {
    const path = join(dir, 'incoming', `${id}.part`);
    writeFileSync(path, image);
    return store.keepRelease(model, id, path, new TextEncoder().encode(`manifest ${id}`));
  };
  keep('cam/v2', '00000000000000aa', 'slash image');
  keep('cam_v2', '00000000000000bb', 'underscore image');
  store.pruneReleases('cam_v2', '00000000000000bb');
  t.is(readFileSync(store.keptRelease('cam/v2', '00000000000000aa').image, 'utf8'), 'slash image');
  t.is(readFileSync(store.keptRelease('cam_v2', '00000000000000bb').image, 'utf8'), 'underscore image');
  t.not(modelFileName('cam/v2'), modelFileName('cam_v2'));
  const configPath = join(dir, 'agent.json');
  writeFileSync(configPath, JSON.stringify({ interface: 'lo', store: dir, trustedKeys: ['unused.pub'], models: [{ model: 'cam/v2' }, { model: 'cam_v2' }] }));
  const config = resolveAgentConfig({ config: configPath });
  const paths = config.models.map((m) => m.installer.type === 'file' ? m.installer.path : '');
  t.is(new Set(paths).size, 2, paths.join(' '));
});

test('regression: keygen never writes a key through a symlink, dangling or not', async (t) => {
  const dir = storeDir(t);
  const elsewhere = join(dir, 'elsewhere');
  symlinkSync(elsewhere, join(dir, 'publisher.key'));
  await t.throwsAsync(writeKeyPair(dir, false), { instanceOf: ConfigError });
  t.false(existsSync(elsewhere), 'nothing was written where the dangling link points');
  // --force replaces the link itself.
  await writeKeyPair(dir, true);
  t.false(existsSync(elsewhere));
  t.false(lstatSync(join(dir, 'publisher.key')).isSymbolicLink());
  t.is(lstatSync(join(dir, 'publisher.key')).mode & 0o777, 0o600);
});
