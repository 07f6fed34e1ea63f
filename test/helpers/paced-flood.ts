/**
 * What the test attackers (attacker.ts, log-attacker.ts, hostile-sender.ts)
 * share: a multicast socket that sends on one interface, one hop, never to
 * itself; and a flood paced to a rate, bounded in count and time, that stops
 * on SIGTERM/SIGINT, prints one JSON summary line on stdout and exits.
 */
import dgram from 'node:dgram';
import { once } from 'node:events';

/** A socket bound to `source` (default any) that multicasts on `iface` only, hop limit 1, without loopback. */
export async function multicastSender(iface: string, source = '::', sendBuffer?: number): Promise<dgram.Socket> {
  const socket = dgram.createSocket({ type: 'udp6' });
  const bound = once(socket, 'listening');
  socket.bind({ port: 0, address: source });
  await bound;
  socket.setMulticastInterface(`::%${iface}`);
  socket.setMulticastTTL(1);
  socket.setMulticastLoopback(false);
  if (sendBuffer !== undefined) {
    try {
      socket.setSendBufferSize(sendBuffer);
    } catch {
      // Kernel cap.
    }
  }
  return socket;
}

/** When the flood sent: Unix ms of its first and last burst. */
export interface FloodTimes {
  firstSendAt?: number;
  lastSendAt?: number;
}

export interface PacedFlood {
  /** Units (datagrams, manifests, …) per second. */
  rate: number;
  maxCount: number;
  maxMs: number;
  /** Most units sent per tick, and the pause between ticks (ms). */
  burst: number;
  intervalMs: number;
  /** Sends unit number `n` (from 0). */
  sendOne(n: number): void;
  /** Runs at every tick before anything is sent (e.g. to sample counters). */
  onTick?(): void;
  /** The summary printed when the flood stops, for `stopReason` ('count', 'duration', 'SIGTERM', 'SIGINT'). */
  summary(stopReason: string, times: FloodTimes): object;
  /** Closes the sockets before the process exits. */
  close(): void;
}

/** Starts the flood: each tick sends what the rate allows since the start, up to `burst`. */
export function runPacedFlood(f: PacedFlood): void {
  let sent = 0;
  const times: FloodTimes = {};
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const stop = (reason: string): void => {
    if (stopped) return;
    stopped = true;
    clearTimeout(timer);
    process.stdout.write(JSON.stringify(f.summary(reason, times)) + '\n', () => {
      f.close();
      process.exit(0);
    });
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));

  const start = performance.now();
  const tick = (): void => {
    if (stopped) return;
    const elapsed = performance.now() - start;
    f.onTick?.();
    if (elapsed >= f.maxMs) return stop('duration');
    const due = Math.min(f.maxCount, Math.floor((elapsed / 1000) * f.rate)) - sent;
    for (let i = 0; i < Math.min(due, f.burst); i++) f.sendOne(sent++);
    if (due > 0) {
      times.lastSendAt = Date.now();
      times.firstSendAt ??= times.lastSendAt;
    }
    if (sent >= f.maxCount) return stop('count');
    timer = setTimeout(tick, f.intervalMs);
  };
  tick();
}
