/**
 * Drop reasons are one list (device-agent/receiver/drop-reasons.ts) shared by
 * the receiver's counters and the README: a reason added in one place and not
 * the others fails here.
 */
import { readFileSync } from 'node:fs';
import test from 'ava';
import { DROP_REASONS, isDropReason } from '../device-agent/receiver/drop-reasons.js';
import * as errors from '../protocol/errors.js';

test('the README lists exactly the drop reasons the receiver counts, with the same descriptions', (t) => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const start = readme.indexOf('#### Drop reasons');
  t.true(start >= 0, 'the README has a Drop reasons section');
  const section = readme.slice(start, readme.indexOf('\n#', start + 1));
  const rows = [...section.matchAll(/^\| `([a-z-]+)` \| (.+) \|$/gm)].map((m) => [m[1]!, m[2]!] as const);
  t.deepEqual(rows.map(([reason]) => reason), Object.keys(DROP_REASONS));
  for (const [reason, description] of rows) t.is(description, DROP_REASONS[reason as keyof typeof DROP_REASONS], reason);
});

test('every refusal a manifest can meet is counted under its error class\'s own reason', (t) => {
  // The receiver counts a refused manifest under error.reason; these are the errors opening and checking a manifest throws.
  const refusals = [
    errors.MalformedPacketError, errors.UnsupportedVersionError, errors.InvalidManifestError, errors.LimitExceededError,
    errors.InvalidSignatureError, errors.UnknownKeyError, errors.WrongModelError, errors.RollbackError, errors.ExpiredManifestError,
    errors.InvalidRootError, errors.RootRollbackError, errors.RootThresholdError, errors.RootExpiredError, errors.RootChainTooLongError,
    errors.RevokedKeyError, errors.KeyOutOfScopeError, errors.DelegationExpiredError, errors.DelegationNotYetValidError, errors.DelegationThresholdError,
  ];
  for (const E of refusals) t.true(isDropReason(new E('x').reason), E.name);
  t.false(isDropReason('no-such-reason'));
});
