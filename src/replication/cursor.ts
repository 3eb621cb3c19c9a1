/**
 * The replay cursor: the last `stream_id` up to which every received change has been applied to Redis (a low-water
 * mark in stream order). Changes are completed in any order; the cursor only moves over a prefix of completed ones,
 * so a change that is still queued or failing holds it back and will be replayed after a restart.
 *
 * Changes do not always arrive in stream order: on a resume the server answers each subscription with its own
 * backlog (every company change after the cursor, then every user change after it), so user changes older than the
 * newest company change arrive after it. They are tracked in their stream-order place, not ignored; and while a
 * session's subscriptions are being answered (`hold()` … `release()`, released when the flags snapshot — the answer
 * to the last subscription — arrives) the cursor does not move at all, since a backlog still to come may hold
 * changes older than those already applied. The Go original advances over such changes and can lose them on a crash.
 */
import { compareStreamIds } from "../datastream/protocol.js";

export interface Tracked {
  readonly id: string;
  done: boolean;
}

export class ReplayCursor {
  /** Entries from `head` on are pending, sorted by stream id. */
  private pending: Tracked[] = [];
  private head = 0;
  private committedId: string | undefined;
  private held = false;

  constructor(initial?: string) {
    this.committedId = initial || undefined;
  }

  get committed(): string | undefined {
    return this.committedId;
  }

  get pendingCount(): number {
    return this.pending.length - this.head;
  }

  /** Registers a received change; returns undefined for ids at or below the cursor or already tracked (re-deliveries). */
  track(id: string | undefined | null): Tracked | undefined {
    if (!id) return undefined;
    if (this.committedId !== undefined && compareStreamIds(id, this.committedId) <= 0) return undefined;
    const entry: Tracked = { id, done: false };
    const n = this.pending.length;
    if (n === this.head || compareStreamIds(id, this.pending[n - 1]!.id) > 0) {
      this.pending.push(entry);
      return entry;
    }
    // Older than the newest pending change: find its place (binary search over the pending part).
    let lo = this.head;
    let hi = n - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const d = compareStreamIds(this.pending[mid]!.id, id);
      if (d === 0) return undefined;
      if (d < 0) lo = mid + 1;
      else hi = mid - 1;
    }
    this.pending.splice(lo, 0, entry);
    return entry;
  }

  complete(entry: Tracked | undefined): void {
    if (!entry) return;
    entry.done = true;
    this.advance();
  }

  /** Freezes the cursor (completions are recorded, the cursor does not move) until release(). */
  hold(): void {
    this.held = true;
  }

  release(): void {
    this.held = false;
    this.advance();
  }

  /**
   * Forgets everything (the server asked for a full reload, or Redis lost the data), or starts again from `to` (what
   * Redis kept after a restart).
   */
  reset(to?: string): void {
    this.pending = [];
    this.head = 0;
    this.committedId = to || undefined;
  }

  private advance(): void {
    if (this.held) return;
    while (this.head < this.pending.length && this.pending[this.head]!.done) {
      this.committedId = this.pending[this.head]!.id;
      this.head++;
    }
    if (this.head > 1024 && this.head * 2 > this.pending.length) {
      this.pending = this.pending.slice(this.head);
      this.head = 0;
    }
  }
}
