/**
 * The replay cursor: the last `stream_id` up to which every received change has been applied to Redis (a
 * contiguous low-water mark). Changes are tracked in arrival order and completed in any order; the cursor only
 * moves over a prefix of completed ones, so a change that is still queued or failing holds it back and will be
 * replayed after a restart.
 */
import { compareStreamIds } from "../datastream/protocol.js";

export interface Tracked {
  readonly id: string;
  done: boolean;
}

export class ReplayCursor {
  private pending: Tracked[] = [];
  private head = 0;
  private committedId: string | undefined;

  constructor(initial?: string) {
    this.committedId = initial || undefined;
  }

  get committed(): string | undefined {
    return this.committedId;
  }

  get pendingCount(): number {
    return this.pending.length - this.head;
  }

  /** Registers a received change; returns undefined for ids at or below the cursor (re-delivered by replay). */
  track(id: string | undefined | null): Tracked | undefined {
    if (!id) return undefined;
    const last = this.pending.length > this.head ? this.pending[this.pending.length - 1]!.id : this.committedId;
    if (last !== undefined && compareStreamIds(id, last) <= 0) return undefined;
    const entry: Tracked = { id, done: false };
    this.pending.push(entry);
    return entry;
  }

  complete(entry: Tracked | undefined): void {
    if (!entry) return;
    entry.done = true;
    while (this.head < this.pending.length && this.pending[this.head]!.done) {
      this.committedId = this.pending[this.head]!.id;
      this.head++;
    }
    if (this.head > 1024 && this.head * 2 > this.pending.length) {
      this.pending = this.pending.slice(this.head);
      this.head = 0;
    }
  }

  /** Forgets everything (the server asked for a full reload, or Redis lost the data). */
  reset(): void {
    this.pending = [];
    this.head = 0;
    this.committedId = undefined;
  }
}
