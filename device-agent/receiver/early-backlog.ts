/**
 * Datagrams of a release whose manifest has not arrived yet, kept and handed
 * back once it is accepted: a receiver that joins between two manifest copies
 * does not throw away what it heard meanwhile. Bounded in bytes, not count:
 * anyone can send datagrams of unknown releases, up to 64 KB each. Each item
 * is charged its length plus ITEM_OVERHEAD (the bookkeeping around it), so
 * tiny datagrams cannot pile up either; the oldest go first.
 */

/** Bytes kept in all: about 850 datagrams of the default 1232 bytes, or 16 of 64 KB. */
export const MAX_EARLY_BYTES = 1 << 20;
/** What one kept item costs besides its bytes (array slot, object, typed-array header). */
export const ITEM_OVERHEAD = 128;

export class EarlyBacklog<T> {
  /** Oldest first; evicted slots before #head are cleared until the array is compacted. */
  #items: Array<{ id: string; item: T } | undefined> = [];
  #head = 0;
  #bytes = 0;

  /** `sizeOf` gives an item's bytes (a datagram's length). */
  constructor(readonly sizeOf: (item: T) => number, readonly maxBytes = MAX_EARLY_BYTES) {}

  get size(): number {
    return this.#items.length - this.#head;
  }

  /** Bytes charged for what is kept. */
  get bytes(): number {
    return this.#bytes;
  }

  keep(id: string, item: T): void {
    const cost = this.sizeOf(item) + ITEM_OVERHEAD;
    if (cost > this.maxBytes) return;
    this.#items.push({ id, item });
    this.#bytes += cost;
    while (this.#bytes > this.maxBytes) {
      this.#bytes -= this.sizeOf(this.#items[this.#head]!.item) + ITEM_OVERHEAD;
      this.#items[this.#head++] = undefined;
    }
    // Compact now and then rather than shift() on every eviction.
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
  }

  /** Removes and returns what was kept for `id`, oldest first. */
  take(id: string): T[] {
    const mine: T[] = [];
    const rest: Array<{ id: string; item: T }> = [];
    for (let i = this.#head; i < this.#items.length; i++) {
      const e = this.#items[i]!;
      if (e.id === id) {
        mine.push(e.item);
        this.#bytes -= this.sizeOf(e.item) + ITEM_OVERHEAD;
      } else {
        rest.push(e);
      }
    }
    if (mine.length > 0) {
      this.#items = rest;
      this.#head = 0;
    }
    return mine;
  }
}
