/**
 * Datagrams of a release whose manifest has not arrived yet, kept and handed
 * back once it is accepted: a receiver that joins between two manifest copies
 * does not throw away what it heard meanwhile. Bounded by count (about 0.6 MB
 * of datagrams at the default size); the oldest go first.
 */
export const MAX_EARLY = 512;

export class EarlyBacklog<T> {
  #items: Array<{ id: string; item: T }> = [];

  constructor(readonly limit = MAX_EARLY) {}

  get size(): number {
    return this.#items.length;
  }

  keep(id: string, item: T): void {
    this.#items.push({ id, item });
    if (this.#items.length > this.limit) this.#items.shift();
  }

  /** Removes and returns what was kept for `id`, oldest first. */
  take(id: string): T[] {
    const mine: T[] = [];
    const rest: Array<{ id: string; item: T }> = [];
    for (const e of this.#items) {
      if (e.id === id) mine.push(e.item);
      else rest.push(e);
    }
    if (mine.length > 0) this.#items = rest;
    return mine;
  }
}
