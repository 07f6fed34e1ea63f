/**
 * IPv6 UDP multicast through the kernel. One socket per joined channel, bound
 * to the group address so a socket only sees its own channel even when other
 * programs on the host join other groups on the same port.
 */
import dgram from 'node:dgram';
import { once } from 'node:events';
import { DEFAULT_DATAGRAM_SIZE } from '../protocol/limits.js';
import { MAX_DATAGRAM } from '../protocol/packet.js';
import { Lifecycle } from './lifecycle.js';
import { checkNetworkInterface } from './network-interface.js';
import { grantedFromReported } from './receive-buffer.js';
import type { Channel, DatagramHandler, Transport, TransportStats } from './transport.js';

export interface UdpMulticastInit {
  /** Network interface name, e.g. "eth0" or "lo"; one this host does not have is a ConfigError. */
  iface: string;
  /** Hop limit of sent datagrams (default 8: a site, not the world). */
  hops?: number;
  /** Receive buffer wanted per socket, bytes (the kernel caps it at net.core.rmem_max; see receive-buffer.ts). */
  receiveBuffer?: number;
  /** Called after each join with the buffer wanted and the one the kernel granted (bytes, as set: not Linux's doubled report). */
  onReceiveBuffer?: (report: ReceiveBufferReport) => void;
  /** Deliver our own datagrams to local listeners (default true: agents may share the host). */
  loopback?: boolean;
  /**
   * Largest datagram sent (default 1232: never fragmented at the IPv6 minimum
   * MTU). Raise it only for releases signed with a larger --datagram-size, on
   * links whose MTU carries them.
   */
  maxDatagramSize?: number;
}

export interface ReceiveBufferReport {
  channel: Channel;
  wanted: number;
  granted: number;
}

export class UdpMulticastTransport implements Transport {
  readonly description: string;
  readonly maxDatagramSize: number;
  #init: Required<Omit<UdpMulticastInit, 'onReceiveBuffer'>> & Pick<UdpMulticastInit, 'onReceiveBuffer'>;
  #life: Lifecycle;
  #sender: dgram.Socket | undefined;
  #listeners = new Set<dgram.Socket>();

  constructor(init: UdpMulticastInit) {
    // Here, not at open(): an unknown name would send by the default route.
    checkNetworkInterface(init.iface);
    this.#init = { hops: 8, receiveBuffer: 8 << 20, loopback: true, maxDatagramSize: DEFAULT_DATAGRAM_SIZE, ...init };
    if (this.#init.maxDatagramSize > MAX_DATAGRAM) throw new RangeError(`maxDatagramSize: ${this.#init.maxDatagramSize} is above the ${MAX_DATAGRAM} bytes a UDP datagram carries`);
    this.maxDatagramSize = this.#init.maxDatagramSize;
    this.description = `udp6 multicast on ${init.iface}`;
    this.#life = new Lifecycle('udp6-multicast', this.description, this.maxDatagramSize);
  }

  get #scope(): string {
    return `::%${this.#init.iface}`;
  }

  async join(channel: Channel, onDatagram: DatagramHandler, signal?: AbortSignal): Promise<void> {
    this.#life.checkJoin(signal);
    const member = this.#life.member(onDatagram, signal);
    const socket = dgram.createSocket({ type: 'udp6', reuseAddr: true });
    socket.on('message', (msg, rinfo) => member(new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength), rinfo.address));
    try {
      const bound = once(socket, 'listening');
      socket.bind({ port: channel.port, address: `${channel.group}%${this.#init.iface}` });
      await bound;
      try {
        socket.setRecvBufferSize(this.#init.receiveBuffer);
      } catch {
        // Capped or refused by the kernel; the socket still works with its default.
      }
      socket.addMembership(channel.group, this.#scope);
      // Closed or aborted while binding: leave again, as the contract says.
      this.#life.checkJoin(signal);
      this.#init.onReceiveBuffer?.({ channel, wanted: this.#init.receiveBuffer, granted: grantedFromReported(socket.getRecvBufferSize()) });
    } catch (err) {
      socket.close();
      throw this.#life.joinError(err, signal);
    }
    this.#listeners.add(socket);
    signal?.addEventListener('abort', () => this.#closeSocket(socket), { once: true });
  }

  /** The receive buffer the kernel actually granted to listening sockets (bytes, as getsockopt reports it: doubled on Linux), for diagnostics. */
  receiveBufferSize(): number | undefined {
    for (const s of this.#listeners) return s.getRecvBufferSize();
    return undefined;
  }

  /** Opens the sending socket. */
  open(): Promise<void> {
    return this.#life.open(async () => {
      const socket = dgram.createSocket({ type: 'udp6' });
      try {
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
      } catch (err) {
        socket.close();
        throw err;
      }
      if (this.#life.closed) socket.close();
      else this.#sender = socket;
    });
  }

  send(channel: Channel, data: Uint8Array): void {
    if (!this.#life.admit(data)) return;
    try {
      this.#sender!.send(data, channel.port, `${channel.group}%${this.#init.iface}`, (err) => {
        if (err) this.#failed(channel, err);
      });
      this.#life.sent++;
    } catch (err) {
      this.#failed(channel, err as Error);
    }
  }

  #failed(channel: Channel, err: Error): void {
    this.#life.refuse('network', `sending to [${channel.group}]:${channel.port} on ${this.#init.iface}: ${err.message}`, err);
  }

  stats(): TransportStats {
    return this.#life.stats();
  }

  #closeSocket(socket: dgram.Socket): void {
    if (!this.#listeners.delete(socket)) return;
    socket.close();
  }

  async close(): Promise<void> {
    this.#life.close();
    for (const s of [...this.#listeners]) this.#closeSocket(s);
    const sender = this.#sender;
    this.#sender = undefined;
    if (sender) await new Promise<void>((resolve) => sender.close(() => resolve()));
  }
}
