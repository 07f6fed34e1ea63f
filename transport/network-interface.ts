/**
 * Whether a network interface exists, checked before a transport uses it.
 * The kernel does not refuse an unknown name: it resolves to interface index 0,
 * and multicast then goes out by the default route, to whatever network that
 * is. So a mistyped `--iface` must stop the program at start, by name.
 */
import { readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { ConfigError } from '../protocol/errors.js';

const NAME = /^[A-Za-z0-9_.:@-]{1,15}$/;

/**
 * The interfaces of this process's network namespace. Linux lists every one in
 * /proc/self/net/dev, with or without addresses (`os.networkInterfaces()` leaves
 * out an interface without addresses; /sys/class/net shows the namespace that
 * mounted /sys, not necessarily ours). Elsewhere: the interfaces with addresses.
 */
export function networkInterfaceNames(): string[] {
  try {
    const text = readFileSync('/proc/self/net/dev', 'utf8');
    return text.split('\n').slice(2).map((line) => line.split(':')[0]!.trim()).filter((n) => n !== '');
  } catch {
    return Object.keys(networkInterfaces());
  }
}

/** Throws a ConfigError naming `name` (and the interfaces there are) unless it is an interface of this host. */
export function checkNetworkInterface(name: string, where = 'network interface'): void {
  if (!NAME.test(name) || name === '.' || name === '..') throw new ConfigError(`${where} "${name}" is not a network interface name`);
  const names = networkInterfaceNames();
  if (names.includes(name)) return;
  throw new ConfigError(`${where} "${name}" does not exist on this host (it has: ${names.join(', ') || 'none'})`, { iface: name });
}
