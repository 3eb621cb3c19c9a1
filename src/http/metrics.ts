/**
 * Prometheus metrics (prefix `schematic_replicator_`). Counters are read from the pipeline's own counters at
 * scrape time, so the hot path pays nothing for them; only Redis write latency is observed as it happens.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { ReplicationStats } from "../replication/stats.js";
import type { BreakerState } from "../util/breaker.js";

/** What the metrics read at scrape time: the service's replicator, seen from below (http/ does not import it). */
export interface MetricsSource {
  readonly stats: ReplicationStats;
  readonly fullReloads: number;
  readonly pipeline: { readonly queueDepths: Record<string, number> } | undefined;
  readonly datastream: { readonly connected: boolean } | undefined;
  readonly role: "writer" | "standby";
  readonly loaded: boolean;
  readonly redisBreaker: { readonly state: BreakerState };
  readonly loaderBreaker: { readonly state: BreakerState };
  readonly loadProgress: Record<string, { loaded: number; total: number }>;
  /** Set here: the replicator reports each Redis round trip through it. */
  observeRedis: (operation: string, seconds: number) => void;
}

const P = "schematic_replicator_";
const BREAKER_VALUE = { closed: 0, half_open: 1, open: 2 } as const;

export function createMetrics(r: MetricsSource, build: { version: string; cacheVersion: string }): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: P });

  const byLabel = (name: string, help: string, pick: "receivedBy" | "appliedBy") =>
    new Counter({
      name,
      help,
      labelNames: ["entity", "type"],
      registers: [registry],
      collect() {
        this.reset();
        const map = r.stats[pick];
        if (!map) return;
        for (const [key, value] of map) {
          const [entity, type] = key.split(":");
          this.inc({ entity, type }, value);
        }
      },
    });
  byLabel(`${P}messages_received_total`, "Datastream messages received, by entity and message type.", "receivedBy");
  byLabel(`${P}messages_applied_total`, "Changes applied to Redis, by entity and message type.", "appliedBy");

  const simple = (name: string, help: string, read: () => number) =>
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  simple(
    `${P}messages_coalesced_total`,
    "Full states merged into a later full state of the same entity before writing.",
    () => r.stats.coalesced ?? 0,
  );
  simple(`${P}redis_retries_total`, "Redis reads or writes that failed and were retried.", () => r.stats.retried ?? 0);
  simple(
    `${P}messages_skipped_total`,
    "Malformed or invalid messages skipped (logged with the reason).",
    () => r.stats.skipped ?? 0,
  );
  simple(`${P}messages_dropped_total`, "Messages dropped. Always 0: full queues pause the socket instead.", () => 0);
  simple(`${P}datastream_reconnects_total`, "Datastream reconnections.", () =>
    Math.max(0, (r.stats.connections ?? 0) - 1),
  );
  simple(`${P}replays_total`, "Reconnections that resumed from the replay cursor.", () => r.stats.replaysEngaged ?? 0);
  simple(`${P}full_reloads_total`, "Full loads of companies and users over REST.", () => r.fullReloads);

  new Gauge({
    name: `${P}queue_depth`,
    help: "Changes waiting in the pipeline's queues.",
    labelNames: ["queue"],
    registers: [registry],
    collect() {
      this.reset();
      const depths = r.pipeline?.queueDepths;
      if (depths) for (const [queue, depth] of Object.entries(depths)) this.set({ queue }, depth);
    },
  });
  new Gauge({
    name: `${P}replication_lag_seconds`,
    help: "Age of the newest applied change, from its stream_id time to now.",
    registers: [registry],
    collect() {
      const t = r.stats.lastAppliedStreamTime;
      this.set(t === undefined ? 0 : Math.max(0, (Date.now() - t) / 1000));
    },
  });
  new Gauge({
    name: `${P}last_applied_timestamp_seconds`,
    help: "Unix time when the last change was applied to Redis (0 before the first); alert on time() minus this.",
    registers: [registry],
    collect() {
      const t = r.stats.lastAppliedAt;
      this.set(t === undefined ? 0 : t / 1000);
    },
  });
  new Gauge({
    name: `${P}datastream_connected`,
    help: "1 while this instance's datastream is connected.",
    registers: [registry],
    collect() {
      this.set(r.datastream?.connected ? 1 : 0);
    },
  });
  new Gauge({
    name: `${P}is_writer`,
    help: "1 while this instance holds the writer lease.",
    registers: [registry],
    collect() {
      this.set(r.role === "writer" ? 1 : 0);
    },
  });
  new Gauge({
    name: `${P}data_loaded`,
    help: "1 once Redis holds a complete data set written by this instance.",
    registers: [registry],
    collect() {
      this.set(r.loaded ? 1 : 0);
    },
  });
  new Gauge({
    name: `${P}circuit_breaker_state`,
    help: "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
    labelNames: ["breaker"],
    registers: [registry],
    collect() {
      this.set({ breaker: "redis" }, BREAKER_VALUE[r.redisBreaker.state]);
      this.set({ breaker: "api" }, BREAKER_VALUE[r.loaderBreaker.state]);
    },
  });
  new Gauge({
    name: `${P}initial_load_entities`,
    help: "Progress of the current or last full load: entities loaded and expected, by kind.",
    labelNames: ["kind", "stage"],
    registers: [registry],
    collect() {
      this.reset();
      for (const [kind, p] of Object.entries(r.loadProgress)) {
        this.set({ kind, stage: "loaded" }, p.loaded);
        this.set({ kind, stage: "total" }, p.total);
      }
    },
  });
  const latency = new Histogram({
    name: `${P}redis_command_duration_seconds`,
    help: "Duration of the replicator's Redis round trips, by operation.",
    labelNames: ["operation"],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  r.observeRedis = (operation, seconds) => latency.observe({ operation }, seconds);
  new Gauge({
    name: `${P}build_info`,
    help: "Build information; the value is always 1.",
    labelNames: ["version", "cache_version", "node_version"],
    registers: [registry],
  }).set({ version: build.version, cache_version: build.cacheVersion, node_version: process.version }, 1);
  return registry;
}
