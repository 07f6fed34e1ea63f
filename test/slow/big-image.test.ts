/**
 * A 256 MiB image to an agent in its own namespace, under the memory cap of a
 * Raspberry Pi Zero class board: the agent spills symbols to disk and decodes
 * one segment at a time, so its resident memory does not grow with the image.
 */
import test from 'ava';
import { measureAgentRss } from '../../bench/agent-rss.js';

const CAP_MIB = 96;

test(`a 256 MiB image installs and verifies with the agent's peak RSS under ${CAP_MIB} MiB`, async (t) => {
  t.timeout(280_000);
  const r = await measureAgentRss(256, '200mbit', 240);
  t.log(`peak RSS ${r.peakRssMiB.toFixed(1)} MiB, ${r.seconds.toFixed(1)} s`);
  t.true(r.verified, 'the installed image matched the signed SHA-256');
  t.true(r.peakRssMiB <= CAP_MIB, `peak RSS ${r.peakRssMiB.toFixed(1)} MiB`);
});
