/**
 * A 256 MiB image to an agent in its own namespace on a Raspberry Pi Zero
 * class budget: the agent spills symbols to disk and decodes one segment at a
 * time, so its resident memory stays near that of a 16 MiB transfer (~65 MiB
 * at the benchmark's 150 Mbit/s; ~80-90 MiB at this test's 200 Mbit/s, where a
 * loaded machine drops datagrams and segments need a RaptorQ decode; most of
 * it Node.js itself) instead of the ~1.7 GiB a single-block decode needs. The
 * link loses 10% of the datagrams, so every segment is decoded from repair
 * symbols. The cap is issue 4's 96 MiB target, and holds for a confidential
 * image too, decrypted chunk by chunk from disk after the transfer.
 */
import test from 'ava';
import { measureAgentRss } from '../../bench/agent-rss.js';

const CAP_MIB = 96;

test(`a 256 MiB image at 10% loss installs and verifies with the agent's peak RSS under ${CAP_MIB} MiB`, async (t) => {
  t.timeout(280_000);
  const r = await measureAgentRss(256, { rate: '200mbit', timeoutS: 240, lossPercent: 10 });
  t.log(`peak RSS ${r.peakRssMiB.toFixed(1)} MiB, ${r.seconds.toFixed(1)} s, ${r.segmentSize}-byte segments, 10% loss`);
  t.true(r.verified, 'the installed image matched the signed SHA-256');
  t.true(r.peakRssMiB <= CAP_MIB, `peak RSS ${r.peakRssMiB.toFixed(1)} MiB`);
});

test(`a 256 MiB encrypted image at 10% loss installs its exact plaintext with the agent's peak RSS under ${CAP_MIB} MiB`, async (t) => {
  t.timeout(280_000);
  const r = await measureAgentRss(256, { rate: '200mbit', timeoutS: 240, lossPercent: 10, encrypt: true });
  t.log(`peak RSS ${r.peakRssMiB.toFixed(1)} MiB, ${r.seconds.toFixed(1)} s, ${r.segmentSize}-byte segments, 10% loss, encrypted for a group key`);
  t.true(r.verified, 'the installed image matched the signed plaintext SHA-256');
  t.true(r.peakRssMiB <= CAP_MIB, `peak RSS ${r.peakRssMiB.toFixed(1)} MiB`);
});
