/**
 * The datagrams of a channel that carries halts and no release (SPEC §17.5):
 * a release was halted and taken off the air, and the devices still holding
 * it must hear the halt. A round is one pass over the halts. Like any
 * channel it takes its share of the rate (the pacer shares bytes evenly), in
 * many copies of a small datagram: a receiver drops each repeat after one
 * hash (receiver.ts), and `--rounds` or `--duration` bound `fwcast publish`.
 */
import { RELEASE_ID_SIZE } from '../protocol/packet.js';
import type { DatagramSource } from './pacer.js';

export class HaltCarousel implements DatagramSource {
  readonly releaseId = new Uint8Array(RELEASE_ID_SIZE);
  readonly largestDatagram: number;
  #next = 0;
  #round = 0;

  constructor(readonly halts: readonly Uint8Array[]) {
    if (halts.length === 0) throw new RangeError('a halt carousel needs at least one halt');
    this.largestDatagram = Math.max(...halts.map((h) => h.length));
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
