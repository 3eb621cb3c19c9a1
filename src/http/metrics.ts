/**
 * Prometheus metrics (prefix `schematic_replicator_`; Node's process metrics keep their standard names). Counters
 * are read from the replicator's own counters at scrape time, so the hot path pays nothing for them; only latencies
 * (Redis round trips, replication lag, load durations) are observed as they happen.
 *
 * Role-aware: what only a writer has — a datastream, queues, a load, applied changes — is exported only while this
 * instance is the writer, so a healthy standby never looks like a broken writer. `role`, `ready`,
 * `redis_connected` and the counters are exported by every instance. docs/operations.md lists every metric and
 * the alert rules built on them.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { RedisConfig } from "../config/types.js";
import type { ReplicationStats, RestErrorClass } from "../replication/stats.js";
import type { BreakerState } from "../util/breaker.js";

/** What the metrics read at scrape time: the service's replicator, seen from below (http/ does not import it). */
export interface MetricsSource {
  readonly config: { readonly redis: RedisConfig };
  readonly redis: { on(event: "error" | "node error", listener: () => void): unknown };
  readonly stats: ReplicationStats;
  readonly pipeline:
    | { readonly queueDepths: Record<string, number>; readonly queueCapacities: Record<string, number> }
    | undefined;
  readonly datastream: { readonly connected: boolean } | undefined;
  readonly role: "writer" | "standby";
  /** false while Schematic rejects the API key, true once it accepted it, undefined before any verdict. */
  readonly apiKeyValid: boolean | undefined;
  readonly loaded: boolean;
  readonly loading: boolean;
  readonly redisBreaker: { readonly state: BreakerState };
  readonly loaderBreaker: { readonly state: BreakerState };
  readonly loadProgress: Record<string, { loaded: number; total: number }>;
  on(event: "role", listener: (role: "writer" | "standby") => void): unknown;
  /** Set here: the replicator reports each Redis round trip through it. */
  observeRedis: (operation: string, seconds: number) => void;
}

const P = "schematic_replicator_";

export interface MetricsOptions {
  version: string;
  cacheVersion: string;
  /** The /ready formula and the Redis probe, evaluated at scrape time. */
  status(): Promise<{ ready: boolean; redis: string }>;
}

/** Replication lag: from a few milliseconds to the replay of a ten-minute outage. */
const LAG_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600];
/** Full loads and anti-entropy passes: seconds for a small account, an hour or more for millions of entities. */
const LOAD_BUCKETS = [1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200];
const REDIS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const BREAKER_STATES = ["closed", "half_open", "open"] as const;
const REST_ERROR_CLASSES: RestErrorClass[] = ["4xx", "5xx", "network", "invalid_response"];
/** The pipeline's queue names in the metrics' vocabulary (entities are singular). */
const QUEUE_LABEL: Record<string, string> = { company: "company", user: "user", flags: "flag", held: "held" };
const LOAD_ENTITY: Record<string, string> = { companies: "company", users: "user" };

/**
 * Buckets of the Redis round-trip histogram: the standard ladder, plus the command timeout and twice it, so that
 * calls that run into the timeout land in a bucket of their own instead of all of them in `+Inf`.
 */
export function redisBuckets(commandTimeoutMs: number): number[] {
  const timeout = commandTimeoutMs / 1000;
  const extra = timeout > 0 ? [timeout, timeout * 2] : [];
  return [...new Set([...REDIS_BUCKETS, ...extra])].sort((a, b) => a - b);
}

export function createMetrics(r: MetricsSource, o: MetricsOptions): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const registers = [registry];
  const isWriter = () => r.role === "writer";

  // ---- every instance ----------------------------------------------------------------------------------------

  new Gauge({
    name: `${P}build_info`,
    help: "Build information; the value is always 1.",
    labelNames: ["version", "cache_version", "node_version"],
    registers,
  }).set({ version: o.version, cache_version: o.cacheVersion, node_version: process.version }, 1);
  new Gauge({
    name: `${P}role`,
    help: "1 for this instance's role: writer (holds the lease, or the lease is disabled) or standby.",
    labelNames: ["role"],
    registers,
    collect() {
      this.set({ role: "writer" }, isWriter() ? 1 : 0);
      this.set({ role: "standby" }, isWriter() ? 0 : 1);
    },
  });
  // One status probe per scrape serves both gauges (prom-client collects them concurrently).
  let probe: { at: number; status: ReturnType<MetricsOptions["status"]> } | undefined;
  const status = () => {
    if (!probe || Date.now() - probe.at > 1000) probe = { at: Date.now(), status: o.status() };
    return probe.status;
  };
  new Gauge({
    name: `${P}ready`,
    help: "1 when /ready answers 200: Redis holds a complete, current data set and a live writer maintains it.",
    registers,
    async collect() {
      this.set((await status()).ready ? 1 : 0);
    },
  });
  new Gauge({
    name: `${P}redis_connected`,
    help: "1 when Redis answered this scrape's probe.",
    registers,
    async collect() {
      this.set((await status()).redis === "connected" ? 1 : 0);
    },
  });
  new OptionalGauge(
    `${P}api_key_valid`,
    "1 when Schematic accepted the API key at its last answer, 0 when it rejected it; absent until asked.",
    registers,
    () => (r.apiKeyValid === undefined ? undefined : r.apiKeyValid ? 1 : 0),
  );

  const counter = (name: string, help: string, read: () => number) =>
    new Counter({
      name: `${P}${name}`,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  const byEntity = (name: string, help: string, map: Map<string, number>) =>
    new Counter({
      name: `${P}${name}`,
      help,
      labelNames: ["entity", "type"],
      registers,
      collect() {
        this.reset();
        for (const [key, value] of map) {
          const [entity, type] = key.split(":");
          this.inc({ entity, type }, value);
        }
      },
    });
  const s = r.stats;
  byEntity("messages_received_total", "Datastream messages received, by entity and message type.", s.receivedBy);
  byEntity(
    "messages_applied_total",
    "Datastream changes written to Redis, by entity and message type (REST rows are in load_entities_applied_total).",
    s.appliedBy,
  );
  byEntity(
    "load_entities_applied_total",
    "REST rows applied by full loads and anti-entropy passes (type full; a pass writes only what differs), evictions (type delete).",
    s.loadedBy,
  );
  counter(
    "messages_coalesced_total",
    "Full states merged into a later full state of the same entity before writing.",
    () => s.coalesced,
  );
  counter("messages_skipped_total", "Malformed or invalid messages skipped (logged with the reason).", () => s.skipped);
  counter("messages_dropped_total", "Messages dropped. Always 0: full queues pause the socket instead.", () => 0);
  counter("datastream_reconnects_total", "Datastream reconnections.", () => Math.max(0, s.connections - 1));
  counter("replays_total", "Reconnections that resumed from the replay cursor.", () => s.replaysEngaged);
  counter(
    "full_loads_total",
    "Full loads of companies and users over REST (the first one included).",
    () => s.fullReloads,
  );
  counter(
    "data_loss_events_total",
    "Times Redis was found to have lost its data (and was rebuilt).",
    () => s.dataLossEvents,
  );
  counter("reconcile_passes_total", "Anti-entropy passes started.", () => s.reconciles);
  counter(
    "reconcile_repaired_keys_total",
    "Keys an anti-entropy pass found different from Schematic and rewrote or deleted.",
    () => s.repaired,
  );
  counter("redis_retries_total", "Redis reads or writes that failed and were retried.", () => s.retried);

  let redisErrors = 0;
  const onRedisError = () => {
    redisErrors++;
  };
  r.redis.on("error", onRedisError);
  r.redis.on("node error", onRedisError); // Cluster: errors of one node's connection
  counter("redis_errors_total", "Errors of the Redis connection (refused, reset, timed out, auth).", () => redisErrors);
  new Counter({
    name: `${P}rest_errors_total`,
    help: "Failed Schematic REST requests, by class: 4xx, 5xx, network (no response) or invalid_response.",
    labelNames: ["status_class"],
    registers,
    collect() {
      this.reset();
      for (const c of REST_ERROR_CLASSES) this.inc({ status_class: c }, s.restErrors.get(c) ?? 0);
    },
  });
  const leaseChanges = { acquired: 0, lost: 0 };
  r.on("role", (role) => {
    leaseChanges[role === "writer" ? "acquired" : "lost"]++;
  });
  new Counter({
    name: `${P}lease_changes_total`,
    help: "Writer lease acquired (this instance became the writer) or lost (it stepped down to standby).",
    labelNames: ["change"],
    registers,
    collect() {
      this.reset();
      for (const [change, n] of Object.entries(leaseChanges)) this.inc({ change }, n);
    },
  });
  new Gauge({
    name: `${P}circuit_breaker_state`,
    help: "1 for each circuit breaker's current state (closed, half_open, open).",
    labelNames: ["breaker", "state"],
    registers,
    collect() {
      for (const [breaker, b] of [
        ["redis", r.redisBreaker],
        ["api", r.loaderBreaker],
      ] as const) {
        for (const state of BREAKER_STATES) this.set({ breaker, state }, b.state === state ? 1 : 0);
      }
    },
  });

  const lag = new Histogram({
    name: `${P}replication_lag_seconds`,
    help: "Time from a datastream change's stream time to its write to Redis, per applied change.",
    buckets: LAG_BUCKETS,
    registers,
  });
  const loads = new Histogram({
    name: `${P}load_duration_seconds`,
    help: "Duration of completed full loads (pass full) and anti-entropy passes (pass reconcile).",
    labelNames: ["pass"],
    buckets: LOAD_BUCKETS,
    registers,
  });
  for (const pass of ["full", "reconcile"]) loads.zero({ pass });
  s.observer = {
    lag: (seconds) => lag.observe(seconds),
    loadDuration: (pass, seconds) => loads.observe({ pass }, seconds),
  };
  const redisCfg = r.config.redis;
  const latency = new Histogram({
    name: `${P}redis_command_duration_seconds`,
    help: "Duration of the writer's Redis round trips, by operation.",
    labelNames: ["operation"],
    buckets: redisBuckets(Math.max(redisCfg.readTimeoutMs, redisCfg.writeTimeoutMs)),
    registers,
  });
  r.observeRedis = (operation, seconds) => latency.observe({ operation }, seconds);

  // ---- the writer only (absent on a standby) ----------------------------------------------------------------

  const writerGauge = (name: string, help: string, read: () => number | undefined) =>
    new OptionalGauge(`${P}${name}`, help, registers, () => (isWriter() ? read() : undefined));
  const seconds = (ms: number | undefined) => (ms === undefined ? undefined : ms / 1000);
  writerGauge("datastream_connected", "1 while the writer's datastream is connected.", () =>
    r.datastream?.connected ? 1 : 0,
  );
  writerGauge(
    "datastream_last_message_timestamp_seconds",
    "Unix time of the last datastream message received (absent before the first).",
    () => seconds(s.lastReceivedAt),
  );
  writerGauge(
    "last_applied_timestamp_seconds",
    "Unix time of the last write to Redis of a change or a REST row (absent before the first).",
    () => seconds(s.lastAppliedAt),
  );
  writerGauge("data_loaded", "1 once Redis holds a complete data set maintained by this writer.", () =>
    r.loaded ? 1 : 0,
  );
  writerGauge("load_in_progress", "1 while a full load runs.", () => (r.loading ? 1 : 0));
  const queues = (name: string, help: string, read: () => Record<string, number> | undefined) =>
    new Gauge({
      name: `${P}${name}`,
      help,
      labelNames: ["queue"],
      registers,
      collect() {
        this.reset();
        const values = isWriter() ? read() : undefined;
        for (const [queue, n] of Object.entries(values ?? {})) this.set({ queue: QUEUE_LABEL[queue] ?? queue }, n);
      },
    });
  queues("queue_depth", "Changes waiting in the pipeline's queues (company, user, flag, held).", () => {
    return r.pipeline?.queueDepths;
  });
  queues("queue_capacity", "What each queue holds before the datastream socket is paused.", () => {
    return r.pipeline?.queueCapacities;
  });
  const loadGauge = (name: string, help: string, pick: (p: { loaded: number; total: number }) => number) =>
    new Gauge({
      name: `${P}${name}`,
      help,
      labelNames: ["entity"],
      registers,
      collect() {
        this.reset();
        if (!isWriter()) return;
        for (const [kind, p] of Object.entries(r.loadProgress))
          this.set({ entity: LOAD_ENTITY[kind] ?? kind }, pick(p));
      },
    });
  loadGauge("load_entities_loaded", "Entities read over REST by the current or last full load.", (p) => p.loaded);
  loadGauge("load_entities_expected", "Entities the current or last full load expects (the API's count).", (p) => {
    return p.total;
  });
  return registry;
}

/** A gauge without labels that is exported only while `read` gives a value (prom-client would export a 0). */
class OptionalGauge extends Gauge {
  constructor(
    name: string,
    help: string,
    registers: Registry[],
    private readonly read: () => number | undefined,
  ) {
    super({ name, help, registers });
  }

  override async get(): ReturnType<Gauge["get"]> {
    const value = this.read();
    return { ...(await super.get()), values: value === undefined ? [] : [{ value, labels: {} }] };
  }
}
