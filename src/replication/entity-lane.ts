/**
 * One lane of company or user changes. Entities are sharded over lanes by id, so each entity's changes are applied
 * in order while different entities proceed in parallel. A lane takes a batch of up to BATCH_SIZE jobs — or, when
 * a backlog has built up, up to {@link BATCHES_PER_ROUND_TRIP} batches at once — reads the stored bodies of their
 * entities in one pipelined round trip, folds each entity's changes, and writes the result in one more round trip.
 * Successive full states of one entity still waiting in the queue are coalesced.
 */
import type { KeyScheme } from "../store/keys.js";
import { StoredKeysChangedError, type StoreWriter, type WriteOp } from "../store/writer.js";
import type { Logger } from "../util/log.js";
import { nextTurn } from "../util/time.js";
import type { LookupClaims } from "./claims.js";
import type { Tracked } from "./cursor.js";
import {
  assumedKeys,
  entityOps,
  type FoldResult,
  foldEntity,
  keysTexts,
  parseStored,
  sameStoredEntity,
  storedKeys,
} from "./fold.js";
import type { EntityJob, EntityKind } from "./jobs.js";
import type { StreamPartial } from "./load-window.js";
import { type RetryContext, StoppedError, withRetry } from "./retry.js";
import type { ReplicationStats } from "./stats.js";

/**
 * How many batches a backlogged lane sends per round trip. Round trips, not Redis, bound a lane under load (each
 * costs the client a pipeline and the server a context switch); with a short queue nothing changes, so latency
 * stays that of one BATCH_SIZE batch. Measured: −21 % CPU per change in a 100k-change burst (docs/performance.md).
 */
export const BATCHES_PER_ROUND_TRIP = 64;

export interface LaneOptions {
  kind: EntityKind;
  index: number;
  capacity: number;
  batchSize: number;
  batchTimeoutMs: number;
  keys: KeyScheme;
  writer: StoreWriter;
  stats: ReplicationStats;
  log: Logger;
  retry: RetryContext;
  /** Lookup keys claimed across lanes, in stream order. */
  claims: LookupClaims;
  /** True when a `load` job must yield to a stream change seen since its load began. */
  supersededByStream(kind: EntityKind, id: string, generation: number | undefined): boolean;
  /** Stream partials of this entity a REST row of `order` may predate: merged again on top of the row. */
  streamPartials?(kind: EntityKind, id: string, order: number): StreamPartial[];
  /** Called for every `load` job once it is applied or skipped. */
  loadJobDone(job: EntityJob): void;
  /** Marks a cursor entry applied. */
  complete(entry: Tracked): void;
  onProgress(): void;
  onFatal(err: unknown): void;
}

export class EntityLane {
  private queue: EntityJob[] = [];
  private head = 0;
  /** Latest queued full job per entity id, for coalescing. */
  private queuedFull = new Map<string, EntityJob>();
  private wake: (() => void) | undefined;
  /** The jobs being applied. */
  private inFlight: EntityJob[] = [];
  private running: Promise<void> | undefined;
  private busy = false;
  private stopped = false;
  /** Jobs ever queued (coalesced pushes excluded), jobs ever taken, and how many of those are applied (FIFO). */
  private enqueued = 0;
  private taken = 0;
  private appliedCount = 0;

  constructor(private readonly o: LaneOptions) {}

  /** A mark covering every job queued so far; {@link reached} tells when all of them are applied. */
  mark(): number {
    return this.enqueued;
  }

  reached(mark: number): boolean {
    return this.appliedCount >= mark;
  }

  get depth(): number {
    return this.queue.length - this.head;
  }

  get full(): boolean {
    return this.depth >= this.o.capacity;
  }

  get idle(): boolean {
    return this.depth === 0 && !this.busy;
  }

  /** The order of the oldest job queued or being applied (Infinity when none). */
  oldestOrder(): number {
    let oldest = Number.POSITIVE_INFINITY;
    for (const job of this.inFlight) if (job.order < oldest) oldest = job.order;
    for (let i = this.head; i < this.queue.length; i++)
      if (this.queue[i]!.order < oldest) oldest = this.queue[i]!.order;
    return oldest;
  }

  start(): void {
    this.running ??= this.loop().catch((err) => {
      if (!(err instanceof StoppedError)) this.o.onFatal(err);
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.running;
  }

  /** Discards queued work (the lease was lost: the next writer replays it from the persisted cursor). */
  clear(): void {
    this.queue = [];
    this.head = 0;
    this.queuedFull.clear();
    // Discarded jobs count as done for marks: nobody must wait for them.
    this.taken = this.enqueued;
    this.appliedCount = this.enqueued;
  }

  push(job: EntityJob): void {
    if (job.op === "full" && job.source === "stream") {
      const waiting = this.queuedFull.get(job.id);
      if (waiting && waiting.source === "stream") {
        waiting.data = job.data;
        waiting.text = job.text;
        waiting.checked = job.checked;
        waiting.tracked.push(...job.tracked);
        waiting.streamTime = job.streamTime ?? waiting.streamTime;
        waiting.order = job.order;
        this.o.stats.coalesced++;
        return;
      }
    }
    this.queue.push(job);
    this.enqueued++;
    if (job.op === "full" && job.source === "stream") this.queuedFull.set(job.id, job);
    else this.queuedFull.delete(job.id);
    this.wake?.();
  }

  /** Whether the queue was full before `taken` jobs were taken from it. */
  private wasFull(taken: number): boolean {
    return this.depth + taken >= this.o.capacity;
  }

  private take(max: number): EntityJob[] {
    const end = Math.min(this.queue.length, this.head + max);
    const batch = this.queue.slice(this.head, end);
    this.head = end;
    this.taken += batch.length;
    if (this.head === this.queue.length) {
      // Drained: drop the array, or it would keep the jobs taken from it (and their entities) alive while idle.
      this.queue = [];
      this.head = 0;
    } else if (this.head > 4096 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    for (const job of batch) if (this.queuedFull.get(job.id) === job) this.queuedFull.delete(job.id);
    return batch;
  }

  private async loop(): Promise<void> {
    let woken = false;
    while (!this.stopped) {
      if (this.depth === 0) {
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
        this.wake = undefined;
        woken = true;
        continue;
      }
      // After a batch, let frames already in the socket buffer reach the queue, so a burst fills the next one;
      // never wait longer than BATCH_TIMEOUT for it. A lane woken from idle goes at once: the frames read with the
      // one that woke it are queued already, and a lone change should not wait a turn of the event loop.
      if (this.depth < this.o.batchSize && !woken) {
        await nextTurn(this.o.batchTimeoutMs);
      }
      woken = false;
      this.busy = true;
      try {
        const batch = this.take(this.o.batchSize * BATCHES_PER_ROUND_TRIP);
        this.inFlight = batch;
        // The queue has room again: let the socket (or the loader) refill it while this batch is written, so that
        // parsing overlaps the round trips instead of waiting for them. At most capacity + one batch are held.
        if (this.wasFull(batch.length)) this.o.onProgress();
        await this.applyBatch(batch);
        this.appliedCount = Math.max(this.appliedCount, this.taken);
      } finally {
        this.busy = false;
        this.inFlight = [];
      }
      this.o.onProgress();
    }
  }

  private async applyBatch(batch: EntityJob[]): Promise<void> {
    const { kind, keys, writer, stats, retry, claims } = this.o;
    const live = batch.filter(
      (job) => job.source === "stream" || !this.o.supersededByStream(kind, job.id, job.generation),
    );
    const byId = new Map<string, EntityJob[]>();
    for (const job of live) {
      const list = byId.get(job.id) ?? [];
      if (list.length === 0) byId.set(job.id, list);
      list.push(job);
      if (job.source !== "load" || job.op !== "full") continue;
      // A REST row may predate partials already applied (or skipped for want of a base): apply them again on top.
      for (const { order, data } of this.o.streamPartials?.(kind, job.id, job.order) ?? []) {
        list.push({ kind, id: job.id, op: "partial", data, tracked: [], source: "stream", order });
      }
    }
    const ids = [...byId.keys()];
    const idKeys = ids.map((id) => (kind === "company" ? keys.companyId(id) : keys.userId(id)));
    // Fulls and deletes replace the body, so only its keys matter: when the writer can check them in the write's own
    // round trip, assume they are those of the first change and read nothing (docs/design/lookup-keys.md).
    const assumed = ids.map((id) => (writer.checksStoredKeys ? assumedKeys(byId.get(id)!) : undefined));
    // Anti-entropy rows write only what differs: read their lookup keys too (same round trip) to compare.
    const lookups: string[] = [];
    const idKeySet = new Set(idKeys);
    const lookupsAt = new Map<string, number>();
    for (const id of ids) {
      const jobs = byId.get(id)!;
      if (!jobs.every((job) => job.reconcile)) continue;
      const desired = entityOps(keys, kind, id, null, foldEntity(kind, null, jobs));
      for (const op of desired) {
        if (op.op === "set" && !lookupsAt.has(op.key) && !idKeySet.has(op.key)) {
          lookupsAt.set(op.key, lookups.length);
          lookups.push(op.key);
        }
      }
    }
    const stored: (string | null)[] = ids.map(() => null);
    let lookupValues: (string | null)[] = [];
    /** Reads the bodies of the entities at `at` (and the anti-entropy lookups, the first time) in one round trip. */
    const read = async (at: number[], withLookups: boolean) => {
      const readKeys = [...at.map((i) => idKeys[i]!), ...(withLookups ? lookups : [])];
      if (readKeys.length === 0) return;
      const values = await withRetry(`reading ${kind} bodies`, retry, () => writer.readMany(readKeys));
      at.forEach((i, n) => {
        stored[i] = values[n] ?? null;
      });
      if (withLookups) lookupValues = values.slice(at.length);
    };
    await read(
      ids.flatMap((_, i) => (assumed[i] === undefined ? [i] : [])),
      true,
    );

    const folds = new Map<number, FoldResult>();
    /** The writes of the entity at `i`, from what was read of it (or what is assumed of it). */
    const writesOf = (i: number): WriteOp[] => {
      const id = ids[i]!;
      const jobs = byId.get(id)!;
      // Partials merge onto the stored body, anti-entropy compares it: for them (and only them) it is parsed.
      const raw = stored[i] ?? null;
      const body = jobs.some((job) => job.op === "partial" || job.reconcile) ? parseStored(kind, raw) : null;
      let fold = folds.get(i);
      if (!fold) {
        // Without a body (fulls and deletes only) the fold does not depend on what is stored: made once.
        fold = foldEntity(kind, body, jobs);
        folds.set(i, fold);
        for (const { job, reason } of fold.invalid) {
          stats.skipped++;
          this.o.log.warn({ kind, id, op: job.op, reason }, "skipping an invalid change");
        }
      }
      if (!fold.touched) return [];
      const keysAssumed = assumed[i];
      const previous = keysAssumed ? { keys: keysAssumed } : (body ?? storedKeys(kind, raw));
      const entityWrites = entityOps(keys, kind, id, previous, fold);
      // The body's SET or DEL comes first: the check goes with it, in the transaction that replaces the body.
      const first = entityWrites[0];
      if (keysAssumed && first && first.op !== "delIfEquals") first.ifStoredKeys = keysTexts(keysAssumed);
      // A lookup key is written only if no newer change of another entity claimed it (claims.ts).
      let order = 0;
      for (const job of jobs) if (job.order > order) order = job.order;
      const idKey = idKeys[i]!;
      if (!jobs.every((job) => job.reconcile)) return entityWrites.filter((op) => admitted(claims, op, idKey, order));
      const sameBody = body !== null && fold.next !== null && sameStoredEntity(kind, body, fold.next);
      const differing = entityWrites.filter((op) => {
        if (op.op !== "set") return true;
        if (op.key === idKey) return !sameBody;
        const at = lookupsAt.get(op.key);
        return at === undefined || lookupValues[at] !== op.value;
      });
      const out: WriteOp[] = [];
      for (const op of differing) {
        if (!admitted(claims, op, idKey, order)) continue;
        stats.repaired++;
        out.push(op);
      }
      return out;
    };
    const writes = ids.map((_, i) => writesOf(i));

    // Any attempt after the first — a retry, or the batch sent again after a failed check — comes after other lanes'
    // writes: lookup keys they took over since are left to them.
    let attempt = 0;
    const current = (op: WriteOp) => op.op !== "set" || claims.current(op.key, op.value.toString());
    for (;;) {
      const ops = writes.flat();
      if (ops.length === 0) break;
      try {
        await withRetry(`writing ${kind} batch`, retry, () =>
          writer.apply(attempt++ === 0 ? ops : ops.filter(current)),
        );
        break;
      } catch (err) {
        if (!(err instanceof StoredKeysChangedError)) throw err;
        // Some stored keys were not those assumed: read those bodies, and write the batch again.
        const changed = new Set(err.keys);
        let at = ids.flatMap((_, i) => (assumed[i] !== undefined && changed.has(idKeys[i]!) ? [i] : []));
        if (at.length === 0) at = ids.flatMap((_, i) => (assumed[i] !== undefined ? [i] : []));
        if (at.length === 0) throw err;
        for (const i of at) assumed[i] = undefined;
        await read(at, false);
        for (const i of at) writes[i] = writesOf(i);
      }
    }

    for (const job of batch) stats.countApplied(kind, job.op, job.source, job.streamTime);
    for (const job of batch) {
      for (const t of job.tracked) this.o.complete(t);
      if (job.source === "load") this.o.loadJobDone(job);
    }
  }
}

/** Whether an op may be written: anything but a lookup key, or a lookup key the claims let this change write. */
function admitted(claims: LookupClaims, op: WriteOp, idKey: string, order: number): boolean {
  // Only lookup keys are claimed; their value (the owner's id) is always a string.
  return op.op !== "set" || op.key === idKey || claims.admit(op.key, op.value.toString(), order);
}
