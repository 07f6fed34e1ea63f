/**
 * The datagrams of a channel that carries halts and no release (SPEC §17.5):
 * a release was halted and taken off the air, and the devices still holding
 * it must hear the halt. A round is one pass over the halts. Each halt goes
 * out HALTS_PER_SECOND times a second (the channel's `maxRate`), not an equal
 * share of the rate: at 30% loss a device hears it within a second, the
 * other channels keep the rest, and a receiver drops each repeat after one
 * hash (receiver.ts). `--rounds` or `--duration` bound `fwcast publish`.
 */
import { RELEASE_ID_SIZE } from '../protocol/packet.js';
import { IPV6_UDP_HEADERS, type DatagramSource } from './pacer.js';

export const HALTS_PER_SECOND = 10;

export class HaltCarousel implements DatagramSource {
  readonly releaseId = new Uint8Array(RELEASE_ID_SIZE);
  readonly largestDatagram: number;
  readonly maxRate: number;
  #next = 0;
  #round = 0;

  constructor(readonly halts: readonly Uint8Array[]) {
    if (halts.length === 0) throw new RangeError('a halt carousel needs at least one halt');
    this.largestDatagram = Math.max(...halts.map((h) => h.length));
    this.maxRate = HALTS_PER_SECOND * halts.reduce((bits, h) => bits + (h.length + IPV6_UDP_HEADERS) * 8, 0);
  }

  get round(): number {
    return this.#round;
  }

  next(): Uint8Array {
    const datagram = this.halts[this.#next]!;
    if (++this.#next === this.halts.length) {
      this.#next = 0;
      this.#round++;
    }
    return datagram;
  }
}
