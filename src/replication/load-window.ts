/**
 * What an asynchronous load or an anti-entropy pass must know of the stream changes received while it runs
 * (docs/design/loading.md, "The load window"): which entities the stream replaced or deleted (their REST rows are
 * stale and yield), which it changed with partials (not evicted meanwhile), and the partials that a REST row still to
 * come may predate — those are merged again on top of the row, since a partial alone cannot rebuild the entity.
 *
 * A partial is kept only while a REST row requested before it arrived may still be applied: rows requested after it
 * reflect it. So the partials held are those received during the REST requests and row writes in flight, not every
 * partial of the whole pass.
 */

/** Partials kept at least, before they are pruned (pruning scans the pending changes). */
const MIN_PRUNE = 256;

export interface StreamPartial {
  order: number;
  data: unknown;
}

export class LoadWindow {
  /** Entities (`kind:id`) the stream changed since the window opened: true once a full or delete replaced one. */
  private readonly changed = new Map<string, boolean>();
  private readonly partials = new Map<string, StreamPartial[]>();
  /** The same partials' entities in arrival (= order) order, so the oldest are dropped first. */
  private arrivals: string[] = [];
  private head = 0;
  private pruneAt = MIN_PRUNE;

  /** @param oldestRow the order of the oldest REST row not yet applied, queued or still to come (see Pipeline). */
  constructor(private readonly oldestRow: () => number) {}

  /** Entries held: entities changed, and partials kept. */
  get size(): { changed: number; partials: number } {
    return { changed: this.changed.size, partials: this.arrivals.length - this.head };
  }

  replaced(key: string): void {
    this.changed.set(key, true);
  }

  partial(key: string, order: number, data: unknown): void {
    if (!this.changed.has(key)) this.changed.set(key, false);
    const entry = { order, data };
    const list = this.partials.get(key);
    if (list) list.push(entry);
    else this.partials.set(key, [entry]);
    this.arrivals.push(key);
    if (this.arrivals.length - this.head >= this.pruneAt) this.prune();
  }

  /** Whether a full or delete replaced the entity since the window opened (its REST rows are stale). */
  replacedByStream(key: string): boolean {
    return this.changed.get(key) === true;
  }

  changedByStream(key: string): boolean {
    return this.changed.has(key);
  }

  /** The entity's partials newer than a REST row of `order` (it may not reflect them), in arrival order. */
  partialsAfter(key: string, order: number): StreamPartial[] {
    return this.partials.get(key)?.filter((p) => p.order > order) ?? [];
  }

  /** Drops the partials no pending REST row predates (every row still to be applied was requested after them). */
  prune(): void {
    const oldest = this.oldestRow();
    while (this.head < this.arrivals.length) {
      const key = this.arrivals[this.head]!;
      const list = this.partials.get(key)!;
      if (list[0]!.order > oldest) break;
      list.shift();
      if (list.length === 0) this.partials.delete(key);
      this.head++;
    }
    if (this.head * 2 > this.arrivals.length) {
      this.arrivals = this.arrivals.slice(this.head);
      this.head = 0;
    }
    this.pruneAt = Math.max(MIN_PRUNE, 2 * this.arrivals.length);
  }
}
