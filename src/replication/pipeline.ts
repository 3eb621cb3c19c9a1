/**
 * Routes datastream frames and REST rows into the lanes: companies and users sharded by id over NUM_WORKERS lanes
 * each, flags through one ordered lane. It owns the two loading disciplines of docs/design/decisions.md "Loading modes"
 * — holding stream changes while a synchronous load runs, and letting stream changes win over REST rows during an
 * asynchronous one — and the backpressure that pauses the socket when queues are full instead of dropping anything.
 */
import { EventEmitter } from "node:events";
import { type FrameError, parseFrame, streamIdTime } from "../datastream/protocol.js";
import { ENTITY_TYPES } from "../model/wire.js";
import type { KeyScheme } from "../store/keys.js";
import type { StoreWriter } from "../store/writer.js";
import type { CircuitBreaker } from "../util/breaker.js";
import { memberSpan } from "../util/json-span.js";
import type { Logger } from "../util/log.js";
import { LookupClaims } from "./claims.js";
import { ReplayCursor, type Tracked } from "./cursor.js";
import { EntityLane } from "./entity-lane.js";
import { FlagLane } from "./flag-lane.js";
import { checkFull } from "./fold.js";
import type { EntityJob, EntityKind, EntityOp } from "./jobs.js";
import { LoadWindow } from "./load-window.js";
import type { RetryContext } from "./retry.js";
import { ReplicationStats } from "./stats.js";

export interface PipelineOptions {
  numWorkers: number;
  batchSize: number;
  batchTimeoutMs: number;
  companyChannelSize: number;
  userChannelSize: number;
  flagsChannelSize: number;
  keys: KeyScheme;
  writer: StoreWriter;
  breaker: CircuitBreaker;
  log: Logger;
  /** Counters to add to (default: fresh ones). */
  stats?: ReplicationStats;
  listFlagKeys(): Promise<string[]>;
  /** Socket flow control. */
  pause(): void;
  resume(): void;
}

export interface PipelineEvents {
  reload: [];
  subscribed: [entityType: string];
  flagsSnapshot: [count: number];
  fatal: [err: unknown];
}

/** A REST request of a load: its rows carry `order`; done() once they are queued (or the request is given up). */
export interface LoadRequest {
  readonly order: number;
  done(): void;
}

const ENTITY_OPS = new Set(["full", "partial", "delete"]);
/** Longest wait for the answers to a session's subscriptions before the replay cursor may move again. */
const SESSION_START_LIMIT_MS = 60_000;

export class Pipeline extends EventEmitter<PipelineEvents> {
  /** Counters (owned by the replicator when given, so they outlive one writer tenure). */
  readonly stats: ReplicationStats;
  readonly cursor = new ReplayCursor();
  private readonly lanes: Record<EntityKind, EntityLane[]>;
  private readonly flags: FlagLane;
  private readonly everyLane: readonly (EntityLane | FlagLane)[];
  private readonly abort = new AbortController();
  private readonly retry: RetryContext;
  private held: EntityJob[] | undefined;
  private heldCapacity: number;
  /** Stream changes an asynchronous load (or anti-entropy pass) must know of, while one runs (load-window.ts). */
  private window: LoadWindow | undefined;
  /** endLoad was called; the window closes once the load's queued rows are written. */
  private loadEnded = false;
  private loadGeneration = 0;
  private paused = false;
  /** Company and user stream changes received so far: the arrival number of the last one (see EntityJob.order). */
  private arrivals = 0;
  /** While a synchronous load holds stream changes: `arrivals` when it began (see loadRequest). */
  private holdingSince: number | undefined;
  /** Lookup keys claimed across lanes (claims.ts). */
  private readonly claims = new LookupClaims(() => this.oldestPendingOrder());
  /** REST rows still to be applied, by order: queued, or still to come from a request in flight (counted once). */
  private readonly loadRows = new Map<number, number>();
  /** Stream fulls received per kind (a load allows for entities created while it pages; see fullsSeen). */
  private readonly fulls: Record<EntityKind, number> = { company: 0, user: 0 };
  private loadOutstanding = 0;
  /** Load jobs applied so far (the window's partials are pruned every so many). */
  private loadJobsDone = 0;
  private progressWaiters: (() => void)[] = [];
  private sessionTimer: NodeJS.Timeout | undefined;

  constructor(private readonly o: PipelineOptions) {
    super();
    this.stats = o.stats ?? new ReplicationStats();
    const retry: RetryContext = { breaker: o.breaker, stats: this.stats, log: o.log, signal: this.abort.signal };
    this.retry = retry;
    const common = {
      batchSize: o.batchSize,
      batchTimeoutMs: o.batchTimeoutMs,
      keys: o.keys,
      writer: o.writer,
      stats: this.stats,
      log: o.log,
      retry,
      claims: this.claims,
      supersededByStream: (kind: EntityKind, id: string, generation: number | undefined) =>
        generation !== this.loadGeneration || (this.window?.replacedByStream(`${kind}:${id}`) ?? false),
      streamPartials: (kind: EntityKind, id: string, order: number) =>
        this.window?.partialsAfter(`${kind}:${id}`, order) ?? [],
      complete: (t: Tracked) => this.cursor.complete(t),
      loadJobDone: (job: EntityJob) => {
        this.loadOutstanding = Math.max(0, this.loadOutstanding - 1);
        this.loadRowsDone(job.order);
        // Rows written: partials only they could predate can go (now and then; pruning scans the queues).
        if (this.loadOutstanding === 0 || (++this.loadJobsDone & 255) === 0) this.window?.prune();
        this.closeLoadWindowIfApplied();
      },
      onProgress: () => this.onProgress(),
      onFatal: (err: unknown) => this.emit("fatal", err),
    };
    const make = (kind: EntityKind, capacity: number) =>
      Array.from({ length: o.numWorkers }, (_, index) => new EntityLane({ ...common, kind, index, capacity }));
    this.lanes = { company: make("company", o.companyChannelSize), user: make("user", o.userChannelSize) };
    this.heldCapacity = o.numWorkers * Math.max(o.companyChannelSize, o.userChannelSize);
    this.flags = new FlagLane({
      capacity: o.flagsChannelSize,
      keys: o.keys,
      writer: o.writer,
      stats: this.stats,
      log: o.log,
      retry,
      listFlagKeys: o.listFlagKeys,
      complete: (t) => this.cursor.complete(t),
      onSnapshotApplied: (n) => this.emit("flagsSnapshot", n),
      onProgress: () => this.onProgress(),
      onFatal: (err) => this.emit("fatal", err),
    });
    this.everyLane = [...this.lanes.company, ...this.lanes.user, this.flags];
  }

  start(): void {
    for (const lane of this.allLanes()) lane.start();
  }

  /** Stops the lanes after the batch in flight; queued work stays unapplied (and the cursor short of it). */
  async stop(): Promise<void> {
    clearTimeout(this.sessionTimer);
    this.abort.abort();
    await Promise.all(this.allLanes().map((lane) => lane.stop()));
    this.onProgress();
  }

  /** Drops all queued work (the lease was lost; the next writer replays from the persisted cursor). */
  clear(): void {
    for (const lane of this.allLanes()) lane.clear();
    this.held = this.held ? [] : undefined;
    this.loadOutstanding = 0;
    this.loadRows.clear();
    this.closeLoadWindowIfApplied();
    this.cursor.reset();
    this.claims.clear();
    this.updateFlow();
  }

  get queueDepths(): Record<"company" | "user" | "flags" | "held", number> {
    return {
      company: sum(this.lanes.company.map((l) => l.depth)),
      user: sum(this.lanes.user.map((l) => l.depth)),
      flags: this.flags.depth,
      held: this.held?.length ?? 0,
    };
  }

  /** What each queue of {@link queueDepths} holds before the socket is paused. */
  get queueCapacities(): Record<"company" | "user" | "flags" | "held", number> {
    const { numWorkers, companyChannelSize, userChannelSize, flagsChannelSize } = this.o;
    return {
      company: numWorkers * companyChannelSize,
      user: numWorkers * userChannelSize,
      flags: flagsChannelSize,
      held: this.heldCapacity,
    };
  }

  /** What the pipeline remembers besides its queues, in entries (bounded; for tests and diagnostics). */
  get bookkeeping(): { lookupClaims: number; loadWindow: { open: boolean; changed: number; partials: number } } {
    const window = this.window?.size ?? { changed: 0, partials: 0 };
    return { lookupClaims: this.claims.size, loadWindow: { open: this.window !== undefined, ...window } };
  }

  get isIdle(): boolean {
    return this.allLanes().every((lane) => lane.idle) && (this.held?.length ?? 0) === 0;
  }

  /** Resolves once every queue is empty and nothing is being written. */
  async whenIdle(): Promise<void> {
    while (!this.isIdle && !this.abort.signal.aborted) await this.nextProgress();
  }

  private nextProgress(): Promise<void> {
    return new Promise((resolve) => this.progressWaiters.push(resolve));
  }

  // ---- loading disciplines ---------------------------------------------------------------------------------

  /** Starts a load window: returns its generation, to stamp the load's jobs. */
  beginLoad(mode: "hold" | "stream-wins"): number {
    this.loadGeneration++;
    this.loadEnded = false;
    if (mode === "hold") {
      // Changes held for a load that was cut short happened before anything this load will read: apply them now,
      // ahead of its rows. Held back until after them, they would overwrite newer REST data with older states.
      for (const job of this.held ?? []) this.route(job);
      this.held = [];
      this.holdingSince = this.arrivals;
      // Stream changes are held from now on, so none can be newer than this load's rows: a window an earlier
      // (asynchronous or anti-entropy) load left open must not make them yield.
      this.window = undefined;
    } else {
      this.window = new LoadWindow(() => this.oldestPendingLoad());
    }
    return this.loadGeneration;
  }

  /** Ends the load window: held stream changes are released, in order, behind the loaded rows. */
  endLoad(): void {
    const held = this.held ?? [];
    this.held = undefined;
    this.holdingSince = undefined;
    for (const job of held) this.route(job);
    this.loadEnded = true;
    this.closeLoadWindowIfApplied();
    this.onProgress();
  }

  /**
   * Gives up the load of `generation` (it failed): its rows still queued are skipped, stream changes it held are
   * released, and its window closes at once — left open, it would keep every stream change until the next load.
   * Ignored when a later load has begun since.
   */
  abandonLoad(generation: number): void {
    if (generation !== this.loadGeneration) return;
    this.loadGeneration++;
    const held = this.held ?? [];
    this.held = undefined;
    this.holdingSince = undefined;
    for (const job of held) this.route(job);
    this.loadEnded = false;
    this.window = undefined;
    this.onProgress();
  }

  /** REST rows still queued keep yielding to stream changes until they are written; then the window closes. */
  private closeLoadWindowIfApplied(): void {
    if (!this.loadEnded || this.loadOutstanding > 0) return;
    this.loadEnded = false;
    this.window = undefined;
  }

  /**
   * Resolves once every company and user job queued so far is written (later ones may still be queued). The loader
   * waits for it before scanning for entities to evict, so a queued write cannot recreate one after the scan.
   */
  async flushed(): Promise<void> {
    const lanes = [...this.lanes.company, ...this.lanes.user];
    const marks = lanes.map((lane) => lane.mark());
    while (!this.abort.signal.aborted && lanes.some((lane, i) => !lane.reached(marks[i]!))) await this.nextProgress();
  }

  /** How many company or user fulls (creations among them) the datastream has sent so far (held ones included). */
  fullsSeen(kind: EntityKind): number {
    return this.fulls[kind];
  }

  /** Whether a stream change to this entity arrived since the current load began (async loading). */
  changedByStream(kind: EntityKind, id: string): boolean {
    return this.window?.changedByStream(`${kind}:${id}`) ?? false;
  }

  /**
   * Registers a REST request about to be made for a load. Its rows are as old as the stream changes received so far
   * and older than any received later (they may not reflect those): they carry the returned order. A synchronous
   * load's rows are older than every change it holds, which it applies after them, whatever the API answered.
   */
  loadRequest(): LoadRequest {
    const order = (this.holdingSince ?? this.arrivals) + 0.5;
    this.loadRowsAdded(order);
    let open = true;
    return {
      order,
      done: () => {
        if (!open) return;
        open = false;
        this.loadRowsDone(order);
      },
    };
  }

  private loadRowsAdded(order: number): void {
    this.loadRows.set(order, (this.loadRows.get(order) ?? 0) + 1);
  }

  private loadRowsDone(order: number): void {
    const left = (this.loadRows.get(order) ?? 0) - 1;
    if (left > 0) this.loadRows.set(order, left);
    else this.loadRows.delete(order);
  }

  /** The order of the oldest REST row not yet applied (queued or still to come), or of a request made now. */
  private oldestPendingLoad(): number {
    let oldest = this.arrivals + 0.5;
    for (const order of this.loadRows.keys()) if (order < oldest) oldest = order;
    return oldest;
  }

  /** The order of the oldest company or user change not yet applied: queued, held, or a REST row still to come. */
  private oldestPendingOrder(): number {
    let oldest = this.oldestPendingLoad();
    for (const lane of this.lanes.company) oldest = Math.min(oldest, lane.oldestOrder());
    for (const lane of this.lanes.user) oldest = Math.min(oldest, lane.oldestOrder());
    for (const job of this.held ?? []) if (job.order < oldest) oldest = job.order;
    return oldest;
  }

  /** How the loader retries its own Redis calls: as the lanes do, until `signal` aborts or the pipeline stops. */
  redisRetry(signal: AbortSignal): RetryContext {
    return { ...this.retry, signal: AbortSignal.any([signal, this.abort.signal]) };
  }

  /**
   * Queues a REST row or eviction. While its lane is full, returns a promise that resolves once it is queued
   * (backpressure on the loader); else queues it at once and returns undefined (a load queues a row a few µs, so it
   * does not wait a turn of the microtask queue for each).
   */
  enqueueLoad(job: EntityJob): Promise<void> | undefined {
    const lane = this.laneFor(job.kind, job.id);
    if (lane.full && !this.abort.signal.aborted) return this.enqueueLoadWhenRoom(job, lane);
    this.pushLoad(job, lane);
    return undefined;
  }

  private async enqueueLoadWhenRoom(job: EntityJob, lane: EntityLane): Promise<void> {
    while (lane.full && !this.abort.signal.aborted) await this.nextProgress();
    this.pushLoad(job, lane);
  }

  private pushLoad(job: EntityJob, lane: EntityLane): void {
    this.loadOutstanding++;
    this.loadRowsAdded(job.order);
    lane.push(job);
  }

  /** Resolves once every queued REST row and eviction has been written (stream changes may keep flowing). */
  async whenLoadApplied(): Promise<void> {
    while (this.loadOutstanding > 0 && !this.abort.signal.aborted) await this.nextProgress();
  }

  // ---- datastream ----------------------------------------------------------------------------------------

  /**
   * A datastream session opened and is about to subscribe: until the answers are in (the flags snapshot, answering
   * the last subscription), a company or user backlog may still bring changes older than some already applied, so
   * the cursor stays put (see ReplayCursor). A server that never answers the flags subscription cannot freeze it
   * for good: after SESSION_START_LIMIT_MS without backpressure it moves again.
   */
  beginSession(): void {
    this.cursor.hold();
    clearTimeout(this.sessionTimer);
    const expire = () => {
      // While backpressure holds the socket, the answers may simply not have been read yet: keep waiting.
      if (this.paused) {
        this.sessionTimer = setTimeout(expire, SESSION_START_LIMIT_MS);
        this.sessionTimer.unref();
        return;
      }
      this.o.log.warn({ ms: SESSION_START_LIMIT_MS }, "no flags snapshot since the datastream connected");
      this.endSessionStart();
    };
    this.sessionTimer = setTimeout(expire, SESSION_START_LIMIT_MS);
    this.sessionTimer.unref();
  }

  private endSessionStart(): void {
    clearTimeout(this.sessionTimer);
    this.sessionTimer = undefined;
    this.cursor.release();
  }

  /** One datastream frame; `bytes`, when given, are its UTF-8 encoding (see DatastreamHandlers.onFrame). */
  handleFrame(text: string, bytes?: Buffer): void {
    let msg: ReturnType<typeof parseFrame>;
    try {
      msg = parseFrame(text);
    } catch (err) {
      this.stats.skipped++;
      this.stats.countReceived("other", "malformed");
      this.o.log.warn({ reason: (err as FrameError).message, bytes: text.length }, "skipping a malformed frame");
      return;
    }
    const { entity_type: entityType, message_type: messageType } = msg;

    if (messageType === "reload") {
      this.stats.countReceived("other", "reload");
      this.o.log.warn({ entityType }, "the server asked for a full reload");
      this.emit("reload");
      return;
    }
    if (messageType === "error") {
      this.stats.countReceived("other", "error");
      const data = (msg.data ?? {}) as { error?: unknown };
      this.o.log.warn({ entityType, err: data.error }, "the datastream reported an error");
      // The flags subscription was answered (with an error): the session's backlogs are all in.
      if (entityType === ENTITY_TYPES.flags) this.endSessionStart();
      return;
    }

    const tracked = this.cursor.track(msg.stream_id);
    const streamTime = streamIdTime(msg.stream_id);
    switch (entityType) {
      case ENTITY_TYPES.company:
      case ENTITY_TYPES.user: {
        const kind: EntityKind = entityType === ENTITY_TYPES.company ? "company" : "user";
        this.stats.countReceived(kind, messageType);
        const data = msg.data as { id?: unknown } | null | undefined;
        const id = msg.entity_id ?? (typeof data?.id === "string" ? data.id : undefined);
        if (!id || !ENTITY_OPS.has(messageType)) {
          this.skip(tracked, { entityType, messageType }, id ? "unknown message type" : "no entity id");
          return;
        }
        if (messageType === "full" && data?.id !== id) {
          this.skip(tracked, { entityType, id }, "entity_id does not match data.id");
          return;
        }
        // A full is validated now, so that its queue holds its text and keys rather than its object graph; the text
        // is stored unchanged if validation finds nothing to drop or fill in.
        const dataText = messageType === "full" ? dataOf(text, bytes) : undefined;
        const checked = messageType === "full" ? checkFull(kind, msg.data, dataText) : undefined;
        const job: EntityJob = {
          kind,
          id,
          op: messageType as EntityOp,
          data: checked ? undefined : msg.data,
          text: dataText,
          checked,
          tracked: tracked ? [tracked] : [],
          source: "stream",
          streamTime,
          order: ++this.arrivals,
        };
        if (messageType === "full") this.fulls[kind]++;
        if (this.window) {
          if (messageType === "partial") this.window.partial(`${kind}:${id}`, job.order, msg.data);
          else this.window.replaced(`${kind}:${id}`);
        }
        if (this.held) this.held.push(job);
        else this.route(job);
        break;
      }
      case ENTITY_TYPES.flags:
        this.stats.countReceived("flags", messageType);
        if (messageType !== "full" || !Array.isArray(msg.data)) {
          this.skip(tracked, { entityType, messageType }, "a flags snapshot must be a full array");
          return;
        }
        this.flags.push({ type: "snapshot", flags: msg.data });
        if (tracked) this.cursor.complete(tracked);
        // The answer to the session's last subscription: the company and user backlogs are all in.
        this.endSessionStart();
        break;
      case ENTITY_TYPES.flag:
        this.stats.countReceived("flag", messageType);
        if (messageType === "full" || messageType === "partial") {
          this.flags.push({ type: "full", data: msg.data, tracked, streamTime });
        } else if (messageType === "delete") {
          this.flags.push({ type: "delete", data: msg.data, tracked, streamTime });
        } else {
          this.skip(tracked, { entityType, messageType }, "unknown message type");
          return;
        }
        break;
      case ENTITY_TYPES.companies:
      case ENTITY_TYPES.users:
        this.stats.countReceived("other", "subscribed");
        if (tracked) this.cursor.complete(tracked);
        this.emit("subscribed", entityType);
        break;
      default:
        this.stats.countReceived("other", "unknown");
        this.skip(tracked, { entityType, messageType }, "unknown entity type");
        return;
    }
    this.updateFlow();
  }

  private skip(tracked: Tracked | undefined, context: Record<string, unknown>, reason: string): void {
    this.stats.skipped++;
    this.o.log.warn({ ...context, reason }, "skipping a datastream message");
    if (tracked) this.cursor.complete(tracked);
  }

  private route(job: EntityJob): void {
    this.laneFor(job.kind, job.id).push(job);
  }

  private laneFor(kind: EntityKind, id: string): EntityLane {
    const lanes = this.lanes[kind];
    return lanes[laneOf(id, lanes.length)]!;
  }

  private allLanes(): readonly (EntityLane | FlagLane)[] {
    return this.everyLane;
  }

  private onProgress(): void {
    this.updateFlow();
    const waiters = this.progressWaiters;
    this.progressWaiters = [];
    for (const wake of waiters) wake();
  }

  private updateFlow(): void {
    const overfull =
      this.allLanes().some((lane) => lane.full) || (this.held !== undefined && this.held.length >= this.heldCapacity);
    if (overfull && !this.paused) {
      this.paused = true;
      this.o.pause();
    } else if (!overfull && this.paused) {
      this.paused = false;
      this.o.resume();
    }
  }
}

/**
 * The text of a full's `data` as received: a slice of the frame's bytes when the frame is ASCII (then offsets in
 * the text are offsets in the bytes), so the decoded frame can be dropped at once; else of its text.
 */
function dataOf(text: string, bytes: Buffer | undefined): string | Buffer | undefined {
  const span = memberSpan(text, "data");
  if (!span) return undefined;
  return bytes?.length === text.length ? bytes.subarray(span[0], span[1]) : text.slice(span[0], span[1]);
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

/** The lane (of `lanes`) an entity id is sharded to. */
export function laneOf(id: string, lanes: number): number {
  return fnv1a(id) % lanes;
}

/** FNV-1a (32 bit): a cheap, stable hash to shard entity ids over lanes. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}
