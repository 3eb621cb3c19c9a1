/**
 * Which entity last wrote each lookup key, and how recent in stream order the change was that wrote it. Lanes are
 * sharded by entity id, yet a lookup key can move between entities on different lanes: B gains k, B is deleted,
 * A gains k. If B's lane is behind, its stale "k → B" would land after "k → A", and B's compare-and-delete would
 * then remove k while A's body has it. So a lane writes a lookup key only if no newer change of another entity has
 * claimed it (docs/design/loading.md, "Lookup keys across lanes"). Claims no pending change is older than are
 * dropped, so the map holds little more than the keys of the changes in flight.
 */

/** Claims kept at least, before the map is pruned (pruning scans the pending changes). */
const MIN_PRUNE = 1024;

interface Claim {
  /** The value written: the owning entity's id as JSON. */
  owner: string;
  order: number;
}

export class LookupClaims {
  private readonly claims = new Map<string, Claim>();
  private pruneAt = MIN_PRUNE;

  /** @param lowWater the order of the oldest change not yet applied (every pending change is at least as new). */
  constructor(private readonly lowWater: () => number) {}

  get size(): number {
    return this.claims.size;
  }

  /**
   * Whether a change of `order` may point `key` at `owner` (a lookup key's value); if so, the claim is now its.
   * Refused when a newer change pointed it at another entity.
   */
  admit(key: string, owner: string, order: number): boolean {
    const claim = this.claims.get(key);
    if (claim === undefined) {
      this.claims.set(key, { owner, order });
      if (this.claims.size >= this.pruneAt) this.prune();
      return true;
    }
    if (claim.owner !== owner) {
      if (claim.order > order) return false;
      claim.owner = owner;
    }
    if (order > claim.order) claim.order = order;
    return true;
  }

  /** Whether an admitted write of `key` → `owner` is still the newest (a retried batch must not undo a later one). */
  current(key: string, owner: string): boolean {
    const claim = this.claims.get(key);
    return claim === undefined || claim.owner === owner;
  }

  clear(): void {
    this.claims.clear();
    this.pruneAt = MIN_PRUNE;
  }

  /** Drops the claims no pending change is older than (none of them can be refused by such a claim any more). */
  private prune(): void {
    const low = this.lowWater();
    for (const [key, claim] of this.claims) if (claim.order <= low) this.claims.delete(key);
    this.pruneAt = Math.max(MIN_PRUNE, 2 * this.claims.size);
  }
}
