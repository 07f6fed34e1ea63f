/**
 * AUTH group repair: the parity pieces of coded AUTH groups (SPEC §6.4, §9.5),
 * held until a rebuild needs them. No crypto here: pieces are opaque (`P`) and
 * checked through the function the caller passes; what a checked piece yields
 * (`D`, its code bytes) is opaque too.
 *
 * Pieces are kept unchecked and verified only when a rebuild needs them.
 * Without loss nothing is ever checked or rebuilt: rebuilding every group as
 * soon as it could be, and checking pieces beyond a budget as they came, cost
 * 19 MiB of peak RSS on a 256 MiB image.
 */

/** Unchecked parity pieces kept, all groups together (about 1.3 KB each). */
export const MAX_UNCHECKED = 1024;
/** Candidates per piece: a forged copy heard first cannot crowd out the genuine one. */
export const MAX_CANDIDATES = 2;

interface GroupPieces<P, D> {
  /** Checked parity pieces by index j. */
  verified: Map<number, D>;
  /** Unchecked candidates by index j, at most MAX_CANDIDATES each. */
  unchecked: Map<number, P[]>;
}

export class AuthGroupRepair<P, D> {
  #groups = new Map<number, GroupPieces<P, D>>();
  #unchecked = 0;

  /** Whether pieces of the group starting at chunk leaf `first` are held. */
  has(first: number): boolean {
    return this.#groups.has(first);
  }

  /** Holds an unchecked piece; says why not if it is a repeat or over the bounds. */
  hold(first: number, index: number, piece: P, same: (a: P, b: P) => boolean): 'auth-repeat' | 'pending-full' | undefined {
    let group = this.#groups.get(first);
    if (!group) this.#groups.set(first, (group = { verified: new Map(), unchecked: new Map() }));
    const candidates = group.unchecked.get(index) ?? [];
    if (group.verified.has(index) || candidates.some((c) => same(c, piece))) return 'auth-repeat';
    if (candidates.length >= MAX_CANDIDATES || this.#unchecked >= MAX_UNCHECKED) return 'pending-full';
    group.unchecked.set(index, [...candidates, piece]);
    this.#unchecked++;
    return undefined;
  }

  /** Whether the held pieces, checked or not, could supply `needed` more pieces. */
  couldSupply(first: number, needed: number): boolean {
    const group = this.#groups.get(first);
    return group !== undefined && group.verified.size + group.unchecked.size >= needed;
  }

  /**
   * Checks unchecked pieces, index by index in the order they were first
   * heard, until `needed` are verified. Returns every verified piece by index
   * once there are enough, else undefined (what was checked stays checked).
   * `onForged` is called for each candidate that fails its check.
   */
  verified(first: number, needed: number, check: (piece: P) => D | undefined, onForged: () => void): ReadonlyMap<number, D> | undefined {
    const group = this.#groups.get(first);
    if (!group) return undefined;
    for (const [index, candidates] of group.unchecked) {
      if (group.verified.size >= needed) break;
      group.unchecked.delete(index);
      this.#unchecked -= candidates.length;
      for (const c of candidates) {
        const data = check(c);
        if (data === undefined) {
          onForged();
          continue;
        }
        group.verified.set(index, data);
        break;
      }
    }
    return group.verified.size >= needed ? group.verified : undefined;
  }

  forget(first: number): void {
    const group = this.#groups.get(first);
    if (!group) return;
    for (const list of group.unchecked.values()) this.#unchecked -= list.length;
    this.#groups.delete(first);
  }
}
