/**
 * The health server on HEALTH_PORT:
 * - `/health`: liveness and the container health check. 200 while the process is alive and doing its job, which
 *   includes waiting for Redis (at start-up or after an outage; `components.redis` and `redis_error` say why); it
 *   does not depend on how fresh the data is. 503 only when the instance cannot do its job however long it waits:
 *   Schematic rejects its API key (a standby then stops contending for the writer lease). docs/design/probes.md
 *   explains why.
 * - `/ready`: the SDK-facing contract: 200 only when Redis holds a complete, current data set.
 * - `/debug` (counters) and `/metrics` (Prometheus).
 * Bodies keep the Go original's fields; `cache_version` is in every answer, whatever the status, because SDKs
 * learn the key namespace from it.
 */
import { createServer, type Server, type ServerResponse } from "node:http";
import type { Registry } from "prom-client";
import type { Logger } from "../util/log.js";

export interface HealthStatus {
  ready: boolean;
  connected: boolean;
  /** `connecting`: Redis has not answered yet since start-up. */
  redis: "connected" | "disconnected" | "connecting";
  datastream: "ready" | "connected_loading" | "disconnected" | "standby";
  role: "writer" | "standby";
  staleSince?: string;
  /** Why /ready is 503, for humans. */
  reason?: string;
  /** The last Redis connection error, while Redis does not answer. */
  redisError?: string;
  apiKey?: "valid" | "rejected" | "unchecked";
  /** RFC 3339: when Schematic last gave a verdict on the API key. */
  apiKeyCheckedAt?: string;
  /** Who holds the writer lease (`hostname-pid`), null for nobody. */
  leaseHolder?: string | null;
  /** Why /health is 503; undefined while healthy. */
  unhealthy?: string;
}

export interface HealthSource {
  cacheVersion: string;
  status(): Promise<HealthStatus>;
  debug(): Record<string, unknown>;
  registry: Registry;
}

/**
 * The body of /health and /ready. `status` is `healthy`, `not_ready` (alive, /ready 503) or, on /health only,
 * `unhealthy` (/health 503, `unhealthy_reason` says why); `reason` always explains a false `ready`.
 */
export function healthBody(
  status: HealthStatus,
  cacheVersion: string,
  endpoint: "health" | "ready" = "ready",
): Record<string, unknown> {
  const unhealthy = endpoint === "health" && status.unhealthy !== undefined;
  return {
    status: unhealthy ? "unhealthy" : status.ready ? "healthy" : "not_ready",
    ready: status.ready,
    connected: status.connected,
    role: status.role,
    components: {
      redis: status.redis,
      datastream: status.datastream,
      ...(status.apiKey ? { api_key: status.apiKey } : {}),
    },
    cache_version: cacheVersion,
    stale_since: status.staleSince ?? null,
    ...(status.reason ? { reason: status.reason } : {}),
    ...(unhealthy ? { unhealthy_reason: status.unhealthy } : {}),
    ...(status.redisError ? { redis_error: status.redisError } : {}),
    ...(status.apiKeyCheckedAt ? { api_key_checked_at: status.apiKeyCheckedAt } : {}),
    ...(status.leaseHolder !== undefined ? { lease_holder: status.leaseHolder } : {}),
    timestamp: new Date().toISOString(),
  };
}

export async function startHealthServer(
  port: number,
  source: HealthSource,
  log: Logger,
  host = "0.0.0.0",
): Promise<{ server: Server; port: number; close(): Promise<void> }> {
  const server = createServer(async (req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    try {
      switch (path) {
        case "/health": {
          const status = await source.status();
          return json(res, status.unhealthy ? 503 : 200, healthBody(status, source.cacheVersion, "health"));
        }
        case "/ready": {
          const status = await source.status();
          return json(res, status.ready ? 200 : 503, healthBody(status, source.cacheVersion));
        }
        case "/debug":
          return json(res, 200, {
            ...source.debug(),
            cache_version: source.cacheVersion,
            timestamp: new Date().toISOString(),
          });
        case "/metrics": {
          const body = await source.registry.metrics();
          res.writeHead(200, { "Content-Type": source.registry.contentType });
          return res.end(body);
        }
        default:
          return json(res, 404, { error: "not found", cache_version: source.cacheVersion });
      }
    } catch (err) {
      log.error({ err: (err as Error).message, path }, "health endpoint failed");
      return json(res, 503, {
        status: "error",
        ready: false,
        cache_version: source.cacheVersion,
        error: (err as Error).message,
      });
    }
  });
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address();
  const boundPort = typeof address === "object" && address ? address.port : port;
  return {
    server,
    port: boundPort,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { "Content-Type": "application/json", "Cache-Control": "no-store" });
  res.end(text);
}
