/**
 * Counters of what the replicator did, for /debug, /metrics and the logs. The sites that count only bump a field;
 * /metrics reads them at scrape time (docs/operations.md lists the metrics). Two measures are distributions and go
 * to `observer` as they happen: replication lag and load durations. `dropped` exists only to prove a negative:
 * nothing in the pipeline ever increments it.
 */
export type StatKind = "company" | "user" | "flag" | "flags" | "other";
export type ChangeSource = "stream" | "load";
export type LoadPass = "full" | "reconcile";
/** REST failures by class: an HTTP status class, no response at all, or a 2xx whose body could not be read. */
export type RestErrorClass = "4xx" | "5xx" | "network" | "invalid_response";

export interface StatsObserver {
  /** Seconds from a change's stream time (its stream_id) to the moment it was written to Redis. */
  lag(seconds: number): void;
  loadDuration(pass: LoadPass, seconds: number): void;
}

const NO_OBSERVER: StatsObserver = { lag: () => undefined, loadDuration: () => undefined };

export class ReplicationStats {
  received = 0;
  /** Everything written: stream changes, REST rows and evictions. */
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
  /** Times the writer found that Redis had lost its data (the marker vanished) and rebuilt it. */
  dataLossEvents = 0;
  /** `${entity}:${type}` → count: datastream messages received; stream changes applied; REST rows and evictions. */
  readonly receivedBy = new Map<string, number>();
  readonly appliedBy = new Map<string, number>();
  readonly loadedBy = new Map<string, number>();
  readonly restErrors = new Map<RestErrorClass, number>();
  lastAppliedAt: number | undefined;
  lastReceivedAt: number | undefined;
  observer: StatsObserver = NO_OBSERVER;

  countReceived(kind: StatKind, type: string): void {
    this.received++;
    this.lastReceivedAt = Date.now();
    bump(this.receivedBy, seriesKey(kind, type));
  }

  /** A change written to Redis; a stream change with a stream time is observed as replication lag. */
  countApplied(kind: StatKind, type: string, source: ChangeSource = "stream", streamTime?: number): void {
    const now = Date.now();
    this.applied++;
    this.lastAppliedAt = now;
    if (source === "load") {
      bump(this.loadedBy, seriesKey(kind, type));
      return;
    }
    bump(this.appliedBy, seriesKey(kind, type));
    if (streamTime === undefined) return;
    // Clocks differ between Schematic and this host: a change can seem to be applied before it was made.
    this.observer.lag(Math.max(0, now - streamTime) / 1000);
  }

  /** A failed REST request: `status` is the HTTP status when a response arrived. */
  countRestError(status: number | undefined): void {
    bump(this.restErrors, restErrorClass(status));
  }

  loadCompleted(pass: LoadPass, ms: number): void {
    this.observer.loadDuration(pass, ms / 1000);
  }
}

/**
 * One vocabulary for the `entity` and `type` labels: entities are singular (`company`, `user`, `flag`); the flags
 * snapshot (wire entity `Flags`, message `full`) is `flag`/`snapshot`; everything else is `other`.
 */
function seriesKey(kind: StatKind, type: string): string {
  return kind === "flags" ? "flag:snapshot" : `${kind}:${type}`;
}

export function restErrorClass(status: number | undefined): RestErrorClass {
  if (status === undefined) return "network";
  if (status >= 500) return "5xx";
  if (status >= 400) return "4xx";
  return "invalid_response";
}

function bump<K>(map: Map<K, number>, key: K, n = 1): void {
  map.set(key, (map.get(key) ?? 0) + n);
}
