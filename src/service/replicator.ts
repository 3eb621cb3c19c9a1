/**
 * The replicator's life: stand by until it holds the writer lease, then keep Redis equal to Schematic — connect
 * the datastream, resume from the replay cursor or load everything, apply every change, persist the cursor, watch
 * for Redis losing its data — and step down cleanly when the lease is lost or the process is told to stop.
 */
import { EventEmitter } from "node:events";
import { hostname } from "node:os";
import type { Cluster, Redis } from "ioredis";
import type { Config } from "../config/types.js";
import { AuthRejectedError, DatastreamClient } from "../datastream/client.js";
import { subscribeFrame, subscribeFrames } from "../datastream/protocol.js";
import { ApiKeyMonitor, type ApiKeyState } from "../loader/api-key.js";
import { type LoaderOptions, loadEverything } from "../loader/loader.js";
import { LoadCancelledError, RestClient } from "../loader/rest-client.js";
import { ENTITY_TYPES } from "../model/wire.js";
import { Pipeline } from "../replication/pipeline.js";
import { type RetryContext, StoppedError, withRetry } from "../replication/retry.js";
import { ReplicationStats } from "../replication/stats.js";
import { ClusterCanaries } from "../store/canary.js";
import { scanEveryMaster } from "../store/cluster.js";
import { isCluster, masters, scanNode, writerConnectionName } from "../store/connect.js";
import { ServerChangedError, serverId, serverTime } from "../store/control-keys.js";
import { deleteCursor, loadCursor, saveCursor } from "../store/cursor.js";
import { KeyScheme } from "../store/keys.js";
import { WriterLease } from "../store/lease.js";
import { LeaseHolderWatch } from "../store/lease-holder.js";
import { cleanupOtherVersions, refreshExpiry } from "../store/maintenance.js";
import { type Marker, readMarker, readMarkerAndExpiry, saveMarker } from "../store/marker.js";
import { LeaseLostError, StoreWriter, type WriterLeaseRef } from "../store/writer.js";
import { CircuitBreaker } from "../util/breaker.js";
import type { Logger } from "../util/log.js";
import { backoffDelay, nowIso, sleep } from "../util/time.js";
import { MarkerSync } from "./marker-sync.js";

export type Role = "writer" | "standby";

/** Why a full load runs (logged with it). */
export type LoadReason = "initial" | "data_loss" | "server_restart" | "server_reload" | "no_cursor";
const LOAD_REASONS: Record<LoadReason, string> = {
  initial: "initial load: Redis holds no data set for this cache version",
  data_loss: "Redis lost its data",
  server_restart: "Redis restarted during the load",
  server_reload: "the server asked for a reload",
  no_cursor: "no replay cursor to resume with",
};

/** How often the message counters are logged (when they changed), as the Go original does. */
const MESSAGE_LOG_INTERVAL_MS = 30_000;
/** Longest pause between the passes of an initial load that does not converge. */
const LOAD_AGAIN_MAX_MS = 30_000;
/** First and longest delay of a follow-up pass after a load or pass that did not converge. */
const FOLLOW_UP_MIN_MS = 5_000;
const FOLLOW_UP_MAX_MS = 300_000;
/** How long stepping down waits for the pipeline's calls in flight. */
const PIPELINE_STOP_LIMIT_MS = 10_000;

export interface ReplicatorDeps {
  config: Config;
  redis: Redis | Cluster;
  log: Logger;
  cacheVersion: string;
  clientVersion: string;
}

export interface ReplicatorEvents {
  /** A permanent failure (the API key was rejected): the process must exit. */
  fatal: [err: Error];
  role: [role: Role];
  loaded: [];
}

export class Replicator extends EventEmitter<ReplicatorEvents> {
  readonly keys: KeyScheme;
  readonly writerId = `${hostname()}-${process.pid}`;
  readonly redisBreaker: CircuitBreaker;
  readonly loaderBreaker: CircuitBreaker;
  /** Pipeline counters for the life of the process (every writer tenure adds to them). */
  readonly stats = new ReplicationStats();
  role: Role = "standby";
  pipeline: Pipeline | undefined;
  datastream: DatastreamClient | undefined;
  rest: RestClient | undefined;
  /** Whether this writer has a complete data set in Redis (loaded, or resumed from one). */
  loaded = false;
  loading = false;
  staleSince: string | undefined;
  fullReloads = 0;
  /** Progress of the current or last full load, by REST kind. */
  loadProgress: Record<string, { loaded: number; total: number }> = {};
  /** Set by the metrics module to observe Redis round trips. */
  observeRedis: (operation: string, seconds: number) => void = () => undefined;
  /** Whether Schematic accepts the API key (checked at start-up, then periodically while standing by). */
  readonly apiKey: ApiKeyMonitor;
  private lease: WriterLease | undefined;
  private leaseRef: WriterLeaseRef | undefined;
  private holderWatch: LeaseHolderWatch | undefined;
  /** Why the next full load runs, once needFullLoad is set. */
  private loadReason: LoadReason = "initial";
  /** This process has seen a complete data set in Redis: a missing one later means Redis lost it. */
  private sawDataSet = false;
  private writer: StoreWriter | undefined;
  /** Aborted when this writer tenure ends: its pending marker writes and retries stop. */
  private tenure: AbortController | undefined;
  private markerSync: MarkerSync | undefined;
  /**
   * Until when (the Redis server's clock, ms) every cache key is known to live: the marker and the cursor must not
   * outlive it (docs/design/marker.md). Undefined: no limit (no cache TTL).
   */
  private dataExpireAt: number | undefined;
  /** The run_id of the Redis server this writer last checked; a new one means Redis restarted. */
  private serverId: string | undefined;
  private recovery: Promise<void> | undefined;
  /** Cluster only: the per-master canaries of this tenure (marker loss covers a single node). */
  private canaries: ClusterCanaries | undefined;
  private timers: NodeJS.Timeout[] = [];
  private loadAbort: AbortController | undefined;
  private sessionFlagsApplied = false;
  private flushedCursor: string | undefined;
  private stopping = false;
  private needFullLoad = false;
  private dataLoss = false;
  private reconciling = false;
  /** Follow-up passes in a row that did not converge (see followUp). */
  private followUps = 0;
  private transition: Promise<void> = Promise.resolve();

  constructor(private readonly d: ReplicatorDeps) {
    super();
    const c = d.config;
    this.keys = new KeyScheme(c.redis.keyPrefix, d.cacheVersion);
    this.redisBreaker = new CircuitBreaker("redis", c.circuitBreakerThreshold, c.circuitBreakerTimeoutMs);
    this.loaderBreaker = new CircuitBreaker("api", c.loader.circuitBreakerThreshold, c.loader.circuitBreakerTimeoutMs);
    this.redisBreaker.on("state", (to) => d.log.warn({ breaker: "redis", state: to }, "circuit breaker changed state"));
    this.loaderBreaker.on("state", (to) => d.log.warn({ breaker: "api", state: to }, "circuit breaker changed state"));
    this.apiKey = new ApiKeyMonitor({
      apiUrl: c.apiUrl,
      apiKey: c.apiKey,
      timeoutMs: c.apiTimeoutMs,
      intervalMs: c.apiKeyCheckIntervalMs,
      userAgent: `schematic-datastream-replicator/${d.clientVersion}`,
      log: d.log,
    });
  }

  /** false while Schematic rejects the API key, true once it accepted it, undefined before any verdict. */
  get apiKeyValid(): boolean | undefined {
    return this.apiKey.state === "unchecked" ? undefined : this.apiKey.state === "valid";
  }
  /** When Schematic last gave a verdict on the API key (ms since the epoch). */
  get apiKeyCheckedAt(): number | undefined {
    return this.apiKey.checkedAt;
  }
  /** Who holds the writer lease (`hostname-pid`), null for nobody, undefined when unknown or disabled. */
  get leaseHolder(): string | null | undefined {
    // While we hold it we know; the watch reads the key only every TTL/3 and may still hold the read from before.
    if (this.lease?.holds()) return this.writerId;
    return this.holderWatch?.holder;
  }

  get config(): Config {
    return this.d.config;
  }
  get redis(): Redis | Cluster {
    return this.d.redis;
  }
  get holdsLease(): boolean {
    return this.d.config.writerLock.disabled || (this.lease?.holds() ?? false);
  }

  start(): void {
    const c = this.d.config;
    if (c.writerLock.disabled) {
      this.d.log.warn(
        "the writer lease is disabled (WRITER_LOCK_DISABLED): make sure only one replicator writes to this Redis",
      );
      this.serialise(() => this.becomeWriter());
      return;
    }
    this.d.log.info({ key: c.writerLock.key }, "waiting for the writer lease");
    this.holderWatch = new LeaseHolderWatch(this.d.redis, c.writerLock.key, c.writerLock.ttlMs / 3, (from, to) =>
      this.onHolderChange(from, to),
    );
    this.holderWatch.start();
    // A standby checks its key while it waits, so that a rejected one shows before the failover that needs it.
    this.apiKey.on("change", (state) => this.onApiKeyState(state));
    this.apiKey.start(() => this.role === "standby");
    if (this.apiKey.state !== "rejected") this.contendForLease();
  }

  private contendForLease(): void {
    const c = this.d.config;
    const lease = new WriterLease(this.d.redis, {
      key: c.writerLock.key,
      ttlMs: c.writerLock.ttlMs,
      owner: this.writerId,
    });
    this.lease = lease;
    lease.on("acquired", () => this.serialise(() => this.becomeWriter()));
    lease.on("lost", () => this.serialise(() => this.becomeStandby("the writer lease was lost")));
    lease.start();
  }

  /** A standby whose key Schematic rejects must not become the writer: it would exit at once and leave none. */
  private onApiKeyState(state: ApiKeyState): void {
    if (this.stopping || this.role !== "standby") return;
    if (state === "rejected" && this.lease) {
      this.lease.stop();
      this.lease = undefined;
      this.d.log.warn("not contending for the writer lease while Schematic rejects the API key");
    } else if (state === "valid" && !this.lease) {
      this.contendForLease();
    }
  }

  private onHolderChange(from: string | null | undefined, to: string | null): void {
    if (this.role !== "standby" || to === this.writerId) return;
    if (to === null) {
      if (from) this.d.log.info({ previous: from }, "no replicator holds the writer lease");
    } else if (from === undefined || from === null || from === this.writerId) {
      this.d.log.info({ holder: to }, `standing by: ${to} holds the writer lease`);
    } else {
      this.d.log.info({ holder: to, previous: from }, `the writer lease passed from ${from} to ${to}`);
    }
  }

  /** Role changes run one at a time, in the order they were asked for. */
  private serialise(step: () => Promise<void>): void {
    this.transition = this.transition.then(step).catch((err) => {
      this.d.log.error({ err: (err as Error).message }, "role change failed");
    });
  }

  // ---- writer ------------------------------------------------------------------------------------------------

  private async becomeWriter(): Promise<void> {
    if (this.stopping || this.role === "writer") return;
    this.role = "writer";
    this.emit("role", "writer");
    this.d.log.info({ writer: this.writerId }, "became the writer");
    try {
      await this.startWriting();
    } catch (err) {
      // Never a lease holder that does not replicate: step down, and give the lease up if it is still ours.
      if (!this.stopping) this.d.log.error({ err: (err as Error).message }, "could not start writing; stepping down");
      await this.becomeStandby("could not start writing");
      await this.tryAgainLater();
    }
  }

  /**
   * Gives up a lease this instance holds but could not use (a standby takes over), and competes again after a lease
   * period. The lease's own loop already does so when the lease was lost.
   */
  private async tryAgainLater(): Promise<void> {
    if (this.stopping || (this.lease && !this.holdsLease)) return;
    await this.lease?.release().catch(() => false);
    const timer = setTimeout(() => {
      if (this.stopping) return;
      if (this.d.config.writerLock.disabled) this.serialise(() => this.becomeWriter());
      else if (this.apiKey.state !== "rejected") this.contendForLease();
    }, this.d.config.writerLock.ttlMs);
    timer.unref();
  }

  /** Every step either succeeds, is retried (reads, marker writes), or throws once the lease is gone. */
  private async startWriting(): Promise<void> {
    const c = this.d.config;
    const log = this.d.log;
    const tenure = new AbortController();
    this.tenure = tenure;
    // Writes are fenced with this tenure's token only: a pipeline of an earlier tenure still finishing a call must
    // not write with the token of a later one.
    const tenureToken = this.lease?.token();
    const token = () => {
      const current = this.lease?.token();
      return current !== undefined && current === tenureToken ? current : undefined;
    };
    const lease = this.lease;
    const confirm = async () => token() !== undefined && lease !== undefined && (await lease.confirm()) && !!token();
    this.leaseRef = c.writerLock.disabled ? undefined : { key: c.writerLock.key, token, confirm };
    this.writer = timed(
      new StoreWriter(this.d.redis, {
        ttlMs: c.cacheTtlMs,
        lease: this.leaseRef,
        connectionName: writerConnectionName(this.writerId),
        log,
      }),
      (operation, seconds) => this.observeRedis(operation, seconds),
    );
    const writer = this.writer;
    await this.readWhileWriter("closing a previous writer's connections", () => writer.fenceOthers());
    this.markerSync = new MarkerSync((m) => this.saveMarkerNow(m), this.retryContext(tenure.signal));
    this.canaries = isCluster(this.d.redis) ? new ClusterCanaries(this.d.redis, this.keys, this.writerId) : undefined;
    // A read that fails is not an absent marker or cursor (that would mean a needless full reload): retry while the
    // lease is ours. The server's identity comes first, so a restart after it shows as a new one (checkMarker).
    this.serverId = await this.readWhileWriter("identifying the Redis server", () =>
      serverId(this.d.redis, c.replay.cursorKey),
    );
    const { marker, expireAt } = await this.readWhileWriter("reading the marker", () =>
      readMarkerAndExpiry(this.d.redis, this.keys),
    );
    // The previous writer kept the marker's expiry at or below every cache key's: the data lives at least as long.
    this.dataExpireAt = expireAt;
    const cursor = c.replay.disabled
      ? null
      : await this.readWhileWriter("reading the replay cursor", () => loadCursor(this.d.redis, c.replay.cursorKey));
    this.loaded = marker?.state === "loaded";
    this.dataLoss = marker?.state === "reloading";
    this.needFullLoad = !this.loaded;
    this.sawDataSet ||= this.loaded;
    this.loadReason = this.dataLoss || this.sawDataSet ? "data_loss" : "initial";
    this.flushedCursor = cursor ?? undefined;
    this.markerState = marker ?? undefined;

    const pipeline = new Pipeline({
      numWorkers: c.numWorkers,
      batchSize: c.batchSize,
      batchTimeoutMs: c.batchTimeoutMs,
      companyChannelSize: c.companyChannelSize,
      userChannelSize: c.userChannelSize,
      flagsChannelSize: c.flagsChannelSize,
      keys: this.keys,
      writer: this.writer,
      breaker: this.redisBreaker,
      log,
      stats: this.stats,
      listFlagKeys: () => this.listKeys(this.keys.scanPattern("flags")),
      pause: () => this.datastream?.pause(),
      resume: () => this.datastream?.resume(),
    });
    this.pipeline = pipeline;
    // A persisted cursor is where the previous writer got to: replay resumes from it.
    if (cursor && this.loaded) pipeline.cursor.reset(cursor);
    pipeline.on("fatal", (err) => this.onPipelineFatal(err));
    pipeline.on("reload", () => this.onServerReload());
    pipeline.on("flagsSnapshot", () => {
      this.sessionFlagsApplied = true;
    });
    pipeline.start();

    this.rest = new RestClient({
      apiUrl: c.apiUrl,
      apiKey: c.apiKey,
      timeoutMs: c.apiTimeoutMs,
      breaker: this.loaderBreaker,
      log,
      rateLimitRps: c.useAsyncLoading ? c.loader.rateLimitRps : 0,
      maxConcurrent: c.useAsyncLoading ? c.loader.maxConcurrentRequests : 1,
      userAgent: `schematic-datastream-replicator/${this.d.clientVersion}`,
      onError: (status) => this.stats.countRestError(status),
    });

    this.datastream = new DatastreamClient(
      {
        url: c.datastreamUrl,
        apiKey: c.apiKey,
        clientVersion: this.d.clientVersion,
        pingIntervalMs: c.wsPingIntervalMs,
        pongWaitMs: c.wsPongWaitMs,
        maxReconnectDelayMs: c.datastreamMaxReconnectDelayMs,
        compression: c.datastreamCompression,
      },
      {
        onOpen: () => this.onDatastreamOpen(),
        onFrame: (text, _session, bytes) => pipeline.handleFrame(text, bytes),
        onClose: () => this.onDatastreamClose(),
        onFatal: (err) => this.emit("fatal", err),
      },
      log,
    );
    // Until the datastream is up, the data may fall behind: say so (retried in the background; the datastream's own
    // updates follow it, latest wins).
    if (this.loaded && marker && !marker.stale_since) void this.updateMarker({ stale_since: nowIso() }).catch(noop);
    this.staleSince = this.loaded ? (marker?.stale_since ?? nowIso()) : undefined;
    this.datastream.start();
    this.startTimers();
  }

  private async readWhileWriter<T>(what: string, read: () => Promise<T>): Promise<T> {
    // An attempt that neither answers nor fails within a lease period counts as failed: a call that hangs (a client
    // waiting on a connection that never comes back) must not keep a writer that holds the lease from writing.
    const bound = this.d.config.writerLock.ttlMs;
    for (let attempt = 1; ; attempt++) {
      try {
        return await settledWithin(bound, read(), what);
      } catch (err) {
        if (this.stopping || !this.holdsLease) throw err;
        if (attempt === 1) this.d.log.warn({ err: (err as Error).message }, `${what} failed; retrying`);
        await sleep(backoffDelay(attempt, 50, 2000));
      }
    }
  }

  private async becomeStandby(reason: string): Promise<void> {
    if (this.role !== "writer") return;
    this.d.log.warn({ reason }, "stepping down to standby");
    try {
      await this.stopWriting();
    } finally {
      this.role = "standby";
      this.emit("role", "standby");
    }
  }

  private async stopWriting(): Promise<void> {
    this.tenure?.abort();
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    this.loadAbort?.abort();
    await this.datastream?.stop();
    this.pipeline?.clear();
    // On a Cluster the writer's own connections go at once: nothing this tenure queued may reach Redis later.
    this.writer?.close();
    // Bounded: a Redis call that never returns must not keep the role machine (and so the next tenure) waiting.
    // A lane still in such a call is fenced (its tenure's token is gone) and stops at its next attempt.
    const stopped = await within(PIPELINE_STOP_LIMIT_MS, this.pipeline?.stop());
    if (!stopped) this.d.log.warn({ ms: PIPELINE_STOP_LIMIT_MS }, "the pipeline did not stop in time; going on");
    this.datastream = undefined;
    this.pipeline = undefined;
    this.markerSync = undefined;
    this.loaded = false;
    this.loading = false;
  }

  /** Retries of this tenure: they stop when it ends. */
  private retryContext(signal: AbortSignal): RetryContext {
    return { breaker: this.redisBreaker, stats: this.stats, log: this.d.log, signal };
  }

  private onPipelineFatal(err: unknown): void {
    if (err instanceof LeaseLostError) {
      // The lease alone decides the role (see retry.ts): step down only if it agrees it is gone; its "lost" event
      // follows anyway. Stepping down while it still renews would leave nobody writing.
      if (!this.holdsLease) this.serialise(() => this.becomeStandby("a write was refused: the lease is not held"));
      return;
    }
    if (err instanceof StoppedError) return;
    this.d.log.error({ err: (err as Error).message }, "the pipeline failed");
    this.emit("fatal", err as Error);
  }

  // ---- datastream sessions -------------------------------------------------------------------------------------

  private onDatastreamOpen(): void {
    const pipeline = this.pipeline;
    if (!pipeline || !this.datastream) return;
    const c = this.d.config;
    pipeline.stats.connections++;
    this.sessionFlagsApplied = false;
    // Until the answers to the subscriptions are in (the flags snapshot comes last), a backlog may still bring
    // changes older than those already applied: the cursor stays put meanwhile.
    pipeline.beginSession();
    const replayFrom = c.replay.disabled || this.needFullLoad ? undefined : pipeline.cursor.committed;
    // Without a cursor we cannot know what a reconnect missed: load everything again (subscribed first).
    const fullLoad = this.needFullLoad || !replayFrom;
    for (const frame of subscribeFrames(replayFrom)) this.datastream.send(frame);
    if (replayFrom) {
      pipeline.stats.replaysEngaged++;
      this.d.log.info({ replayFrom }, "resuming the datastream from the replay cursor");
    }
    this.staleSince = undefined;
    void this.updateMarker({ stale_since: undefined }).catch(noop);
    if (fullLoad) this.startFullLoad(this.needFullLoad ? this.loadReason : "no_cursor");
  }

  private onDatastreamClose(): void {
    if (this.stopping) return;
    this.staleSince ??= nowIso();
    void this.updateMarker({ stale_since: this.staleSince }).catch(noop);
  }

  private onServerReload(): void {
    this.pipeline?.cursor.reset();
    const writer = this.writer;
    if (writer && this.tenure) {
      const key = this.d.config.replay.cursorKey;
      void withRetry("deleting the replay cursor", this.retryContext(this.tenure.signal), () =>
        deleteCursor(writer, key),
      ).catch(noop);
    }
    this.flushedCursor = undefined;
    this.startFullLoad("server_reload");
  }

  /** Runs a full REST load (restarting one already running); marks the data loaded once it and the flags are in. */
  private startFullLoad(reason: LoadReason, again = false): void {
    const pipeline = this.pipeline;
    const rest = this.rest;
    const writer = this.writer;
    if (!pipeline || !rest || !writer) return;
    const c = this.d.config;
    this.loadAbort?.abort();
    const abort = new AbortController();
    this.loadAbort = abort;
    this.loading = true;
    this.fullReloads++;
    pipeline.stats.fullReloads++;
    const mode = c.useAsyncLoading ? "stream-wins" : "hold";
    const generation = pipeline.beginLoad(mode);
    const started = Date.now();
    this.d.log.info(
      { reason, retry: again, mode: c.useAsyncLoading ? "async" : "sync" },
      `starting a full load (${LOAD_REASONS[reason]}${again ? "; again, after a failure" : ""})`,
    );
    const run = async () => {
      // Marker writes are retried (a Redis hiccup must not restart the whole load).
      if (this.dataLoss) await this.updateMarker({ state: "reloading" });
      const options: LoaderOptions = {
        rest,
        pipeline,
        keys: this.keys,
        writer,
        log: this.d.log,
        pageSize: c.loader.pageSize,
        concurrent: c.useAsyncLoading,
        scanKeys: (pattern) => this.scanKeys(pattern),
        onProgress: (kind, loaded, total) => {
          this.loadProgress[kind] = { loaded, total };
        },
      };
      let result = await loadEverything(options, generation, abort.signal);
      // Without a data set to fall back on, a load that did not converge must not claim one: keep paging (the marker
      // keeps /ready 503). With one, the load ends and a follow-up pass soon completes it (docs/design/loading.md).
      for (let attempt = 1; !result.complete && !this.loaded && !abort.signal.aborted; attempt++) {
        const delayMs = backoffDelay(attempt, 1000, LOAD_AGAIN_MAX_MS);
        this.d.log.warn({ delayMs, attempt }, "the load did not converge: not ready until it does; paging again");
        await sleep(delayMs, abort.signal);
        if (abort.signal.aborted) return;
        result = await loadEverything(options, generation, abort.signal);
      }
      if (abort.signal.aborted) return;
      pipeline.endLoad();
      await pipeline.whenLoadApplied();
      while (!this.sessionFlagsApplied && !abort.signal.aborted) await new Promise((r) => setTimeout(r, 20));
      if (abort.signal.aborted) return;
      // With a cache TTL, every key's expiry is pushed out first: the marker must not outlive any of them. Without
      // one, the load rewrote every key without an expiry.
      const retry = this.retryContext(abort.signal);
      if (c.cacheTtlMs > 0) await withRetry("refreshing expiries", retry, () => this.refreshTtl());
      else this.dataExpireAt = undefined;
      // Canaries, then the marker: the marker check (running once loaded) must never find either missing after a
      // load, and a marker saying `loaded` must never lack the canaries that vouch for it.
      const canaries = this.canaries;
      if (canaries) await withRetry("planting the canaries", retry, () => canaries.plant(writer));
      if (abort.signal.aborted) return;
      await this.updateMarker({ state: "loaded", loaded_at: nowIso() });
      if (abort.signal.aborted) return;
      this.needFullLoad = false;
      this.dataLoss = false;
      this.loaded = true;
      this.sawDataSet = true;
      this.loading = false;
      this.stats.loadCompleted("full", Date.now() - started);
      this.d.log.info(
        {
          companies: result.companies,
          users: result.users,
          evicted: result.evicted,
          complete: result.complete,
          ms: Date.now() - started,
        },
        result.complete ? "full load complete: Redis holds the whole data set" : "full load complete (not converged)",
      );
      if (!result.complete) this.followUp();
      this.emit("loaded");
    };
    run().catch((err) => {
      if (err instanceof LoadCancelledError || abort.signal.aborted) return;
      if (err instanceof AuthRejectedError) return this.emit("fatal", err);
      this.d.log.error({ err: (err as Error).message }, "the full load failed; it will be retried");
      setTimeout(() => {
        if (this.loadAbort === abort && !this.stopping) this.startFullLoad(reason, true);
      }, 1000).unref();
    });
  }

  // ---- background duties of the writer ------------------------------------------------------------------------

  private startTimers(): void {
    const c = this.d.config;
    const every = (name: string, ms: number, task: () => Promise<unknown>, { now = false } = {}) => {
      if (ms <= 0) return;
      let running = false;
      const run = () => {
        if (running) return;
        running = true;
        task()
          .catch((err) =>
            this.d.log.warn({ task: name, err: (err as Error).message }, `background task failed: ${name}`),
          )
          .finally(() => {
            running = false;
          });
      };
      const timer = setInterval(run, ms);
      timer.unref();
      this.timers.push(timer);
      if (now) run();
    };
    if (!c.replay.disabled) every("persisting the replay cursor", c.replay.flushIntervalMs, () => this.flushCursor());
    every("checking the readiness marker", c.markerCheckIntervalMs, () => this.checkMarker());
    every("removing keys of other cache versions", c.cacheCleanupIntervalMs, async () => {
      const result = await cleanupOtherVersions(this.d.redis, this.keys, this.d.log);
      if (result.deleted > 0) this.d.log.info(result, "removed keys of other cache versions");
    });
    // At once too: until its first pass, this writer knows the data's expiry only from the marker it found.
    if (c.cacheTtlMs > 0) {
      every("refreshing expiries", Math.max(1000, Math.floor(c.cacheTtlMs / 3)), () => this.refreshTtl(), {
        now: true,
      });
    }
    every("anti-entropy pass", c.reconcileIntervalMs, () => this.reconcile());
    let logged = -1;
    every("logging message counts", MESSAGE_LOG_INTERVAL_MS, async () => {
      if (this.stats.received === logged) return;
      logged = this.stats.received;
      this.d.log.info({ messages: this.messageCounts() }, "message metrics");
    });
  }

  /** The message counters of /debug, for the logs. */
  messageCounts(): Record<string, number> {
    const s = this.stats;
    return {
      received: s.received,
      applied: s.applied,
      coalesced: s.coalesced,
      retried: s.retried,
      skipped: s.skipped,
      dropped: s.dropped,
    };
  }

  /**
   * One anti-entropy pass (docs/design/decisions.md "Repair"): restores expiries, asks for a fresh flags snapshot,
   * pages through REST and rewrites only the keys that differ from it — never an entity the stream changed since
   * the pass began — then, if the pass was complete, evicts entities missing upstream. It is not a reload: the marker,
   * the cursor and /ready are untouched, and stream changes keep flowing in either loading mode. A full load started
   * meanwhile cancels it.
   */
  private async reconcile(): Promise<void> {
    const { pipeline, rest, writer } = this;
    if (!this.loaded || this.loading || this.reconciling || this.role !== "writer" || !pipeline || !rest || !writer)
      return;
    this.reconciling = true;
    const c = this.d.config;
    const log = this.d.log;
    const abort = new AbortController();
    this.loadAbort = abort;
    this.stats.reconciles++;
    const repairedBefore = this.stats.repaired;
    const started = Date.now();
    // The pass's load window until it is ended normally: a pass that fails or is cancelled must close it, or the
    // pipeline would keep every stream change received meanwhile until the next pass.
    let window: number | undefined;
    try {
      await this.refreshTtl();
      this.datastream?.send(subscribeFrame(ENTITY_TYPES.flags));
      const generation = pipeline.beginLoad("stream-wins");
      window = generation;
      const result = await loadEverything(
        {
          rest,
          pipeline,
          keys: this.keys,
          writer,
          log,
          pageSize: c.loader.pageSize,
          concurrent: c.useAsyncLoading,
          scanKeys: (pattern) => this.scanKeys(pattern),
          reconcile: true,
        },
        generation,
        abort.signal,
      );
      if (abort.signal.aborted) return;
      pipeline.endLoad();
      window = undefined;
      await pipeline.whenLoadApplied();
      this.stats.loadCompleted("reconcile", Date.now() - started);
      log.info(
        { ...result, repaired: this.stats.repaired - repairedBefore, ms: Date.now() - started },
        "anti-entropy pass complete",
      );
      if (result.complete) this.followUps = 0;
      else this.followUp();
    } catch (err) {
      if (err instanceof LoadCancelledError || abort.signal.aborted) return;
      throw err;
    } finally {
      this.reconciling = false;
      if (window !== undefined) pipeline.abandonLoad(window);
      if (this.loadAbort === abort) this.loadAbort = undefined;
    }
  }

  /**
   * A load or pass that did not converge left the data set possibly incomplete (entities it missed, or stale ones it
   * could not evict): another anti-entropy pass follows soon, backing off, until one converges — whatever
   * RECONCILE_INTERVAL says, since this one completes a load rather than checking on the stream.
   */
  private followUp(): void {
    const delayMs = backoffDelay(++this.followUps, FOLLOW_UP_MIN_MS, FOLLOW_UP_MAX_MS);
    this.d.log.warn({ delayMs }, "the load did not converge: a follow-up pass will complete it");
    const timer = setTimeout(() => {
      this.reconcile().catch((err) =>
        this.d.log.warn({ err: (err as Error).message }, "background task failed: follow-up pass"),
      );
    }, delayMs);
    timer.unref();
    this.timers.push(timer);
  }

  /** Pushes every cache key's expiry out again, then the marker's and the cursor's, which may live that long too. */
  private async refreshTtl(): Promise<void> {
    if (this.role !== "writer" || !this.holdsLease) return;
    const ttl = this.d.config.cacheTtlMs;
    // Read before the first key is touched; later writes only push a key's expiry further out.
    const started = await serverTime(this.d.redis, this.keys.marker());
    const result = await refreshExpiry(this.d.redis, this.keys, ttl);
    if (result.failed > 0) throw new Error(`the expiry of ${result.failed} keys could not be refreshed`);
    this.dataExpireAt = ttl > 0 ? started + ttl : undefined;
    if (this.markerState?.state === "loaded") void this.updateMarker({}).catch(noop);
    await this.flushCursor({ force: true });
  }

  async flushCursor({ force = false } = {}): Promise<void> {
    const committed = this.pipeline?.cursor.committed;
    // While a full load runs, Redis is not yet complete up to the cursor: a restart that resumed from it would skip
    // the rest of the load (the Go original's W4). The cursor is persisted once the load is done.
    if (this.loading) return;
    const server = this.serverId;
    if (!this.writer || !committed || !server || (committed === this.flushedCursor && !force)) return;
    try {
      await saveCursor(this.d.redis, this.d.config.replay.cursorKey, committed, {
        serverId: server,
        lease: this.leaseRef,
        expireAt: this.dataExpireAt,
      });
    } catch (err) {
      if (!(err instanceof ServerChangedError)) throw err;
      return await this.onServerChanged(err.serverId);
    }
    if (this.serverId === server) this.flushedCursor = committed;
  }

  /**
   * Watches for Redis losing data: a new server identity means it restarted (or failed over) and may have lost the
   * writes it acknowledged last; the marker vanishing means it lost everything (a flush, a restart without
   * persistence, a failover to an empty replica, or the cache TTL ran out while no writer refreshed it); on a
   * Cluster, so do the canaries of any master vanishing (docs/design/cluster-data-loss.md).
   */
  private async checkMarker(): Promise<void> {
    if (this.role !== "writer") return;
    const id = await serverId(this.d.redis, this.d.config.replay.cursorKey);
    if (id !== this.serverId) return await this.onServerChanged(id);
    const writer = this.writer;
    // Also during a reload of a data set still vouched for (a server reload): /ready says 200 meanwhile, so a loss
    // must not wait for the load to end. A load after data loss is not checked: the marker says `reloading`.
    if (!this.loaded || !writer) return;
    const marker = await readMarker(this.d.redis, this.keys);
    const lost = marker ? await this.canaries?.check(writer) : "the readiness marker is gone";
    if (lost) await this.onDataLoss(lost);
  }

  private async onDataLoss(why: string): Promise<void> {
    // The lease key may have gone with the data, and another instance taken the lease meanwhile: then this one is
    // not the writer any more, and must not write (the lease's own timing would notice only at its next renewal).
    if (this.leaseRef?.confirm && !(await this.leaseRef.confirm())) {
      this.d.log.warn(`${why}, and the writer lease is not ours any more: standing by`);
      return;
    }
    this.d.log.warn(`${why}: Redis lost its data; rebuilding the whole keyspace`);
    this.stats.dataLossEvents++;
    this.loaded = false;
    this.dataLoss = true;
    this.needFullLoad = true;
    this.loadReason = "data_loss";
    this.pipeline?.cursor.reset();
    this.flushedCursor = undefined;
    void this.updateMarker({ state: "reloading" }).catch(noop);
    // A new session brings a fresh flags snapshot; its open handler starts the full load.
    this.datastream?.restart("Redis lost its data");
  }

  /** One recovery at a time, whichever check noticed the new server first. */
  private onServerChanged(id: string): Promise<void> {
    this.recovery ??= this.resumeOnNewServer(id).finally(() => {
      this.recovery = undefined;
    });
    return this.recovery;
  }

  /**
   * Redis restarted or failed over: what it kept is a prefix of what it was sent (an append-only file loses up to its
   * last second), so its cursor is at or behind every change it still holds. Resume from there (a load in progress
   * starts again); without a marker, it lost everything.
   */
  private async resumeOnNewServer(id: string): Promise<void> {
    const pipeline = this.pipeline;
    if (id === this.serverId || this.role !== "writer" || this.stopping || !pipeline) return;
    const c = this.d.config;
    const marker = await readMarker(this.d.redis, this.keys);
    const kept = c.replay.disabled ? null : await loadCursor(this.d.redis, c.replay.cursorKey);
    this.serverId = id;
    this.d.log.warn({ server: id, cursor: kept }, "Redis restarted or failed over: it may have lost its latest writes");
    if (this.loading) return this.startFullLoad("server_restart");
    if (!this.loaded) return;
    if (!marker) return this.onDataLoss("the readiness marker is gone");
    // No progress until the new session's backlog is in: a change the old session still delivers must not move the
    // cursor past the ones Redis lost. Without a kept cursor the new session loads everything.
    pipeline.cursor.reset(kept ?? undefined);
    pipeline.beginSession();
    this.flushedCursor = kept ?? undefined;
    void this.updateMarker({}).catch(noop); // the copy Redis kept may be older than ours
    this.datastream?.restart("resuming from the cursor Redis kept");
  }

  private markerState: Marker | undefined;

  /**
   * One attempt at writing the marker (MarkerSync retries). A `loaded` marker expires with the data. On a single node
   * and through Sentinel it is written only to the server this writer knows: a restarted one may have lost what it
   * would vouch for (on Cluster the marker's master need not be the cursor's, whose identity is the one tracked).
   */
  private async saveMarkerNow(marker: Marker): Promise<void> {
    try {
      await saveMarker(this.d.redis, this.keys, marker, {
        lease: this.leaseRef,
        serverId: isCluster(this.d.redis) ? undefined : this.serverId,
        expireAt: marker.state === "loaded" ? this.dataExpireAt : undefined,
      });
    } catch (err) {
      if (err instanceof ServerChangedError) await this.onServerChanged(err.serverId);
      throw err;
    }
  }

  /**
   * Records a change of the marker and writes it (retried until it lands or the tenure ends; only the latest version
   * is written). Resolves once it is in Redis.
   */
  private updateMarker(change: Partial<Marker>): Promise<void> {
    const sync = this.markerSync;
    if (!sync) return Promise.resolve();
    const base: Marker = this.markerState ?? {
      state: this.loaded ? "loaded" : "reloading",
      loaded_at: nowIso(),
      writer: this.writerId,
    };
    const next: Marker = { ...base, ...change, writer: this.writerId };
    if (next.stale_since === undefined) delete next.stale_since;
    const committed = this.pipeline?.cursor.committed;
    if (committed) next.stream_id = committed;
    this.markerState = next;
    // Until a load completes there is nothing to vouch for: only data loss writes "reloading" before that.
    if (next.state === "reloading" && !this.dataLoss) return Promise.resolve();
    return sync.set(next);
  }

  // ---- Redis helpers ---------------------------------------------------------------------------------------------

  async *scanKeys(pattern: string): AsyncIterable<string[]> {
    // On Cluster, a failover during the scan makes it fail (and be started over) rather than miss a master's keys.
    if (isCluster(this.d.redis)) return yield* scanEveryMaster(this.d.redis, pattern);
    for (const node of masters(this.d.redis)) yield* scanNode(node, pattern);
  }

  private async listKeys(pattern: string): Promise<string[]> {
    const out: string[] = [];
    for await (const batch of this.scanKeys(pattern)) out.push(...batch);
    return out;
  }

  // ---- shutdown --------------------------------------------------------------------------------------------------

  /**
   * Stops intake, drains what was received into Redis (bounded by SHUTDOWN_TIMEOUT), flushes the cursor and releases
   * the lease. What could not be applied in time stays behind the cursor and is replayed by the next writer.
   */
  async shutdown(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const log = this.d.log;
    const c = this.d.config;
    const deadline = Date.now() + c.shutdownTimeoutMs;
    // A role change under way ends first, within the bound: one stuck on Redis must not hold the exit for ever.
    if (!(await within(deadline - Date.now(), this.transition))) {
      log.warn("a role change did not end within SHUTDOWN_TIMEOUT; stopping anyway");
      this.tenure?.abort();
    }
    this.apiKey.stop();
    this.holderWatch?.stop();
    for (const t of this.timers) clearInterval(t);
    const loadCutShort = this.loading;
    this.loadAbort?.abort();
    if (this.role === "writer") {
      await this.datastream?.stop();
      // A load cut short leaves changes that may only be applied after it (held, or queued behind its rows): leave
      // them, and the rows, to the next writer. The persisted cursor never passed them: it waits for loads.
      if (loadCutShort) this.pipeline?.clear();
      const drained = await within(deadline - Date.now(), this.pipeline?.whenIdle());
      const depths = this.pipeline?.queueDepths;
      if (!drained) log.warn({ queued: depths }, "shutdown timeout reached; unapplied changes will be replayed");
      await this.pipeline?.stop();
      // The last cursor and marker, within what is left of the bound (a second at least: they are one round trip).
      const last = Promise.all([this.flushCursor(), this.updateMarker({ stale_since: nowIso() })]);
      const saved = await within(Math.max(1000, deadline - Date.now()), last).catch((err) => {
        log.warn({ err: (err as Error).message }, "could not flush the cursor at shutdown");
        return true;
      });
      if (!saved) log.warn("could not flush the cursor at shutdown: Redis did not answer in time");
      this.tenure?.abort();
      last.catch(noop);
      this.writer?.close();
    }
    await this.lease?.release().catch(() => undefined);
    this.lease?.stop();
    log.info({ cursor: this.pipeline?.cursor.committed, messages: this.messageCounts() }, "replicator stopped");
  }
}

/** Wraps the writer's two round trips with a latency observer. */
function timed(writer: StoreWriter, observe: (operation: string, seconds: number) => void): StoreWriter {
  const apply = writer.apply.bind(writer);
  const readMany = writer.readMany.bind(writer);
  const time = async <T>(operation: string, call: () => Promise<T>): Promise<T> => {
    const start = process.hrtime.bigint();
    try {
      return await call();
    } finally {
      observe(operation, Number(process.hrtime.bigint() - start) / 1e9);
    }
  };
  writer.apply = (ops) => time("write", () => apply(ops));
  writer.readMany = (keys) => time("read", () => readMany(keys));
  return writer;
}

/** Whether `work` settled within `ms` (a rejection propagates); nothing to wait for counts as done. */
async function within(ms: number, work: Promise<unknown> | undefined): Promise<boolean> {
  if (!work) return true;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), Math.max(0, ms));
    timer.unref();
  });
  try {
    return await Promise.race([work.then(() => true as const), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** `work`'s result, or a rejection naming `what` when it has not settled within `ms`. */
async function settledWithin<T>(ms: number, work: Promise<T>, what: string): Promise<T> {
  work.catch(noop); // a late rejection is not unhandled
  if (!(await within(ms, work))) throw new Error(`${what}: no answer within ${ms} ms`);
  return work;
}

function noop(): void {}
