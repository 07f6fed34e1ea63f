/**
 * One consumer's bounded queue behind `for await (const m of socket.messages())`:
 * datagrams arrive whether or not the application is reading, so a reader that
 * falls behind loses the newest ones (counted by the caller) instead of
 * growing memory without bound.
 */
export class MessageQueue<T> implements AsyncIterableIterator<T> {
  #items: T[] = [];
  #waiting: ((r: IteratorResult<T>) => void) | undefined;
  #done = false;

  constructor(readonly limit: number, private readonly onEnd: () => void) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`maxQueued: ${limit} is not a positive integer`);
  }

  /** Queues one item; false if the queue is full or ended (the item is not kept). */
  push(item: T): boolean {
    if (this.#done) return false;
    if (this.#waiting) {
      const wake = this.#waiting;
      this.#waiting = undefined;
      wake({ value: item, done: false });
      return true;
    }
    if (this.#items.length >= this.limit) return false;
    this.#items.push(item);
    return true;
  }

  /** Ends the iteration: items already queued are still read, then it is done. */
  end(): void {
    if (this.#done) return;
    this.#done = true;
    this.onEnd();
    const wake = this.#waiting;
    this.#waiting = undefined;
    wake?.({ value: undefined, done: true });
  }

  next(): Promise<IteratorResult<T>> {
    const item = this.#items.shift();
    if (item !== undefined) return Promise.resolve({ value: item, done: false });
    if (this.#done) return Promise.resolve({ value: undefined, done: true });
    if (this.#waiting) return Promise.reject(new Error('next() called again before the previous one settled'));
    return new Promise((resolve) => (this.#waiting = resolve));
  }

  /** `break` out of a for-await loop: stop listening, drop what is queued. */
  return(): Promise<IteratorResult<T>> {
    this.#items = [];
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }
}
