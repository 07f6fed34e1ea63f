/**
 * Fixed-size byte slots in one allocation, for what the receiver holds for a
 * while during a transfer (symbols waiting for their AUTH chunk).
 *
 * Why not a copy each: Node receives every datagram into a fresh 64 KiB
 * malloc() block and shrinks it to the datagram. A small copy kept for
 * seconds lands in the hole such a shrink leaves and pins it, so the next
 * 64 KiB block must come from new memory: over a long transfer the C heap
 * grows by tens of MiB that it never gives back. Slots are allocated once,
 * when the transfer starts, and reused.
 */
export class SlotPool {
  readonly #bytes: Uint8Array;
  readonly #free: number[] = [];

  constructor(readonly slotSize: number, readonly slots: number) {
    if (!(Number.isInteger(slotSize) && slotSize > 0 && Number.isInteger(slots) && slots >= 0)) throw new RangeError(`bad slot pool ${slots} × ${slotSize}`);
    this.#bytes = new Uint8Array(slotSize * slots);
    for (let i = slots - 1; i >= 0; i--) this.#free.push(i);
  }

  /** Free slots. */
  get available(): number {
    return this.#free.length;
  }

  /** A copy of `bytes` in a free slot, or undefined if none is free or it does not fit. */
  take(bytes: Uint8Array): Uint8Array | undefined {
    if (bytes.length > this.slotSize) return undefined;
    const slot = this.#free.pop();
    if (slot === undefined) return undefined;
    const view = this.#bytes.subarray(slot * this.slotSize, slot * this.slotSize + bytes.length);
    view.set(bytes);
    return view;
  }

  /** Gives back a slot `take` returned (anything else, such as a plain copy, is ignored). */
  give(view: Uint8Array): void {
    if (view.buffer !== this.#bytes.buffer) return;
    const slot = (view.byteOffset - this.#bytes.byteOffset) / this.slotSize;
    if (Number.isInteger(slot) && slot >= 0 && slot < this.slots) this.#free.push(slot);
  }
}
