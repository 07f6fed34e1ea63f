/**
 * docs/deploying-across-sites.md: its FRR configurations parse with FRR's own
 * parser (`vtysh --dryrun`, Debian's FRR 8.4.4, whose command table has the
 * pim6 commands though its build has no pim6d), and what it says about groups
 * matches the code. Syntax only: this kernel cannot route IPv6 multicast.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { channelGroup, checkMulticastGroup } from '../protocol/channel.js';
import { ROOT } from './helpers/processes.js';

const VTYSH = '/usr/bin/vtysh';
const DOC = readFileSync(join(ROOT, 'docs', 'deploying-across-sites.md'), 'utf8');

function dryrun(config: string): { status: number | null; output: string } {
  const file = join(mkdtempSync(join(tmpdir(), 'fwcast-frr-')), 'frr.conf');
  writeFileSync(file, config);
  const r = spawnSync(VTYSH, ['--dryrun', '--inputfile', file], { encoding: 'utf8' });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

const blocks = [...DOC.matchAll(/```frr\n([\s\S]*?)```/g)].map((m) => m[1]!);

test('the FRR configurations in the guide parse with vtysh --dryrun; a mistyped line does not', (t) => {
  if (!existsSync(VTYSH)) throw new Error('this test needs FRR\'s vtysh: apt-get install -y frr');
  t.is(blocks.length, 2, 'the RP router and the site router');
  for (const [i, block] of blocks.entries()) {
    t.regex(block, /^ipv6 pim rp \S+ ff1e::\/16$/m, `block ${i}: an RP for the channels' ff1e groups`);
    const r = dryrun(block);
    t.is(r.status, 0, `block ${i}:\n${r.output}`);
  }
  const broken = dryrun(blocks[1]!.replace(' ipv6 mld version 2', ' ipv6 mld version 7'));
  t.not(broken.status, 0, 'the parser does reject what FRR would refuse');
  t.regex(broken.output, /Unknown command|% /);
});

test('the guide\'s groups: channels derive ff1e (global scope) groups, and its site-local example is a group agents accept', (t) => {
  t.regex(channelGroup('fw/rpi4'), /^ff1e:/);
  t.regex(DOC, /`ff1e` means flags 1 \(transient[^)]*\) and \*\*scope e, global\*\*/);
  for (const group of DOC.matchAll(/--group (?:rpi4=)?(ff[0-9a-f:]+)/g)) t.is(checkMulticastGroup(group[1]!), group[1]!);
});
