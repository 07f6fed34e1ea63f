/**
 * Datagrams a receiver's kernel threw away because the socket's receive
 * buffer was full: the receiver fell behind, a loss of its own making that FEC
 * then pays for. Counted per network namespace (Udp6RcvbufErrors in
 * /proc/net/snmp6); every bench host runs one receiver in a namespace of its
 * own, so the namespace's count is that receiver's.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { NetLab } from '../scripts/lab/netlab.js';

function parse(snmp6: string): number {
  const m = /^Udp6RcvbufErrors\s+(\d+)/m.exec(snmp6);
  if (!m) throw new Error('no Udp6RcvbufErrors in /proc/net/snmp6');
  return Number(m[1]);
}

/** The count in a lab host's namespace (works whether or not anything runs there). */
export function rcvbufDropsOfHost(lab: NetLab, host: string): number {
  return parse(execFileSync('ip', ['netns', 'exec', lab.ns(host), 'cat', '/proc/net/snmp6'], { encoding: 'utf8' }));
}

/**
 * The count in the namespace of a running process (/proc/PID/net is its
 * namespace's view): a file read, cheap enough to take at the moment a log
 * line arrives. undefined once the process is gone.
 */
export function rcvbufDropsOfPid(pid: number | undefined): number | undefined {
  try {
    return parse(readFileSync(`/proc/${pid}/net/snmp6`, 'utf8'));
  } catch {
    return undefined;
  }
}
