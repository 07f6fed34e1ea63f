/**
 * IPv6 UDP multicast through the kernel. One socket per joined channel, bound
 * to the group address so a socket only sees its own channel even when other
 * programs on the host join other groups on the same port.
 */
import dgram from 'node:dgram';
import { once } from 'node:events';
import type { Channel, DatagramHandler, Transport } from './transport.js';

export interface UdpMulticastInit {
  /** Network interface name, e.g. "eth0" or "lo". */
  iface: string;
  /** Hop limit of sent datagrams (default 8: a site, not the world). */
  hops?: number;
  /** Receive buffer wanted per socket, bytes (the kernel caps it at net.core.rmem_max). */
  receiveBuffer?: number;
  /** Deliver our own datagrams to local listeners (default true: agents may share the host). */
  loopback?: boolean;
}

export class UdpMulticastTransport implements Transport {
  readonly description: string;
  #init: Required<UdpMulticastInit>;
  #sender: dgram.Socket | undefined;
  #listeners = new Set<dgram.Socket>();
  #sendErrors = 0;
  #lastSendError: Error | undefined;

  constructor(init: UdpMulticastInit) {
    if (!/^[A-Za-z0-9_.:@-]{1,15}$/.test(init.iface)) throw new TypeError(`iface: "${init.iface}" is not a network interface name`);
    this.#init = { hops: 8, receiveBuffer: 8 << 20, loopback: true, ...init };
    this.description = `udp6 multicast on ${init.iface}`;
  }

  get sendErrors(): number {
    return this.#sendErrors;
  }

  get lastSendError(): Error | undefined {
    return this.#lastSendError;
  }

  get #scope(): string {
    return `::%${this.#init.iface}`;
  }

  async join(channel: Channel, onDatagram: DatagramHandler, signal?: AbortSignal): Promise<void> {
    const socket = dgram.createSocket({ type: 'udp6', reuseAddr: true });
    socket.on('message', (msg, rinfo) => onDatagram(new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength), rinfo.address));
    const bound = once(socket, 'listening');
    socket.bind({ port: channel.port, address: `${channel.group}%${this.#init.iface}` });
    await bound;
    try {
      socket.setRecvBufferSize(this.#init.receiveBuffer);
    } catch {
      // Capped or refused by the kernel; the socket still works with its default.
    }
    socket.addMembership(channel.group, this.#scope);
    this.#listeners.add(socket);
    signal?.addEventListener('abort', () => this.#closeSocket(socket), { once: true });
  }

  /** The receive buffer the kernel actually granted to listening sockets (bytes), for diagnostics. */
  receiveBufferSize(): number | undefined {
    for (const s of this.#listeners) return s.getRecvBufferSize();
    return undefined;
  }

  async #ensureSender(): Promise<dgram.Socket> {
    if (this.#sender) return this.#sender;
    const socket = dgram.createSocket({ type: 'udp6' });
    const bound = once(socket, 'listening');
    socket.bind({ port: 0, address: '::' });
    await bound;
    socket.setMulticastInterface(this.#scope);
    socket.setMulticastTTL(this.#init.hops);
    socket.setMulticastLoopback(this.#init.loopback);
    try {
      socket.setSendBufferSize(4 << 20);
    } catch {
      // Kernel cap; pacing keeps the queue short anyway.
    }
    this.#sender = socket;
    return socket;
  }

  /** Opens the sending socket; call once before a paced send loop. */
  async open(): Promise<void> {
    await this.#ensureSender();
  }

  send(channel: Channel, data: Uint8Array): void {
    const socket = this.#sender;
    if (!socket) throw new Error('UdpMulticastTransport.send() before open()');
    socket.send(data, channel.port, `${channel.group}%${this.#init.iface}`, (err) => {
      if (err) {
        this.#sendErrors++;
        this.#lastSendError = err;
      }
    });
  }

  #closeSocket(socket: dgram.Socket): void {
    if (!this.#listeners.delete(socket)) return;
    socket.close();
  }

  async close(): Promise<void> {
    for (const s of [...this.#listeners]) this.#closeSocket(s);
    const sender = this.#sender;
    this.#sender = undefined;
    if (sender) await new Promise<void>((resolve) => sender.close(() => resolve()));
  }
}
