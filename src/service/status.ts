/**
 * What /health, /ready and /debug report. Every instance, writer or standby, applies one formula
 * (docs/design/decisions.md "Readiness and the marker"): ready iff the marker says `loaded`, a live writer holds the
 * lease (or the lease is disabled), Redis answers, and the data is not staler than READY_GRACE_PERIOD.
 */
import type { HealthStatus } from "../http/server.js";
import { WriterLease } from "../store/lease.js";
import { readMarker } from "../store/marker.js";
import type { Replicator } from "./replicator.js";

const PROBE_TIMEOUT_MS = 1000;

export async function replicatorStatus(r: Replicator, now = Date.now()): Promise<HealthStatus> {
  const c = r.config;
  const isWriter = r.role === "writer";
  const probe = async () => {
    await r.redis.ping();
    const marker = await readMarker(r.redis, r.keys);
    const liveWriter =
      c.writerLock.disabled || (isWriter ? r.holdsLease : await WriterLease.liveWriter(r.redis, c.writerLock.key));
    return { marker, liveWriter };
  };
  let result: Awaited<ReturnType<typeof probe>> | undefined;
  try {
    result = await Promise.race([
      probe(),
      new Promise<undefined>((_, reject) => setTimeout(() => reject(new Error("timeout")), PROBE_TIMEOUT_MS).unref()),
    ]);
  } catch {
    result = undefined;
  }
  const connected = isWriter ? (r.datastream?.connected ?? false) : !result?.marker?.stale_since && !!result?.marker;
  const datastream: HealthStatus["datastream"] = !isWriter
    ? "standby"
    : !connected
      ? "disconnected"
      : r.loaded
        ? "ready"
        : "connected_loading";
  const staleSince = isWriter ? r.staleSince : result?.marker?.stale_since;
  const base = { connected, datastream, role: r.role, staleSince } as const;
  if (!result) return { ...base, ready: false, redis: "disconnected", reason: "Redis does not answer" };
  const { marker, liveWriter } = result;
  let reason: string | undefined;
  if (!marker) reason = "no data set has been loaded into Redis yet";
  else if (marker.state !== "loaded") reason = "Redis lost its data and is being reloaded";
  else if (!liveWriter) reason = "no replicator holds the writer lease";
  else if (staleSince && c.readyGracePeriodMs > 0 && now - Date.parse(staleSince) > c.readyGracePeriodMs) {
    reason = `the datastream has been disconnected since ${staleSince}`;
  } else if (staleSince && c.readyGracePeriodMs === 0) reason = "the datastream is disconnected";
  return { ...base, ready: reason === undefined, redis: "connected", reason };
}

export function replicatorDebug(r: Replicator): Record<string, unknown> {
  const p = r.pipeline;
  const s = r.stats;
  return {
    role: r.role,
    replay: {
      enabled: !r.config.replay.disabled,
      cursor: p?.cursor.committed ?? "",
      pending: p?.cursor.pendingCount ?? 0,
      connections: s?.connections ?? 0,
      reconnects: Math.max(0, (s?.connections ?? 0) - 1),
      replays_engaged: s?.replaysEngaged ?? 0,
      full_reloads: r.fullReloads,
    },
    messages: {
      received: s?.received ?? 0,
      processed: s?.received ?? 0,
      applied: s?.applied ?? 0,
      coalesced: s?.coalesced ?? 0,
      retried: s?.retried ?? 0,
      skipped: s?.skipped ?? 0,
      dropped: 0,
    },
    repair: { reconciles: s.reconciles, repaired: s.repaired },
    queues: p?.queueDepths ?? {},
    bookkeeping: p?.bookkeeping ?? {},
    breakers: { redis: r.redisBreaker.state, api: r.loaderBreaker.state },
    loaded: r.loaded,
    loading: r.loading,
  };
}
