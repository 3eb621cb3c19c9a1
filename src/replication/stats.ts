/**
 * Counters of what the pipeline did with each message, for /debug, /metrics and the logs. `dropped` exists only
 * to prove a negative: nothing in the pipeline ever increments it.
 */
export type StatKind = "company" | "user" | "flag" | "flags" | "other";

export class ReplicationStats {
  received = 0;
  applied = 0;
  coalesced = 0;
  retried = 0;
  skipped = 0;
  /** Keys an anti-entropy pass found different from the source and rewrote (or deleted). */
  repaired = 0;
  reconciles = 0;
  readonly dropped = 0;
  connections = 0;
  replaysEngaged = 0;
  fullReloads = 0;
  /** `${kind}:${message_type}` → count, for the labelled metrics. */
  readonly receivedBy = new Map<string, number>();
  readonly appliedBy = new Map<string, number>();
  /** Time (ms) of the newest applied stream id, for replication lag. */
  lastAppliedStreamTime: number | undefined;
  lastAppliedAt: number | undefined;

  countReceived(kind: StatKind, type: string): void {
    this.received++;
    bump(this.receivedBy, `${kind}:${type}`);
  }

  countApplied(kind: StatKind, type: string, n = 1): void {
    this.applied += n;
    bump(this.appliedBy, `${kind}:${type}`, n);
    this.lastAppliedAt = Date.now();
  }
}

function bump(map: Map<string, number>, key: string, n = 1): void {
  map.set(key, (map.get(key) ?? 0) + n);
}
