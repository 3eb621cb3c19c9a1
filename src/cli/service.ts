/**
 * Runs the replicator service: settings → logger → Redis → lease/replication → health server, and the signal
 * handling that turns SIGTERM/SIGINT into a bounded, lossless shutdown.
 */
import { hostname } from "node:os";
import { ConfigError, describeConfig, loadConfig } from "../config/index.js";
import type { Config } from "../config/types.js";
import { AuthRejectedError } from "../datastream/client.js";
import { createMetrics } from "../http/metrics.js";
import { startHealthServer } from "../http/server.js";
import { engineVersionKey } from "../model/engine-version.js";
import { Replicator } from "../service/replicator.js";
import { replicatorDebug, replicatorStatus } from "../service/status.js";
import { createRedis, RedisStartupError, redisConnectionName, waitForRedis } from "../store/connect.js";
import { startHeapCompaction } from "../util/heap-compaction.js";
import { createLogger } from "../util/log.js";
import { PACKAGE_VERSION } from "../version.js";

export const EXIT = { ok: 0, fatal: 1, usage: 2, auth: 3 } as const;

/**
 * Loads settings or prints the one-line reason and returns undefined (the caller exits 2). With `apiKeyOptional`
 * (commands that never talk to Schematic, such as `healthcheck`), a missing API key is not an error.
 */
export function settingsOrExit(opts: { apiKeyOptional?: boolean } = {}): Config | undefined {
  const env = process.env;
  const keyGiven = env.SCHEMATIC_API_KEY !== undefined || env.SCHEMATIC_API_KEY_FILE !== undefined;
  const source = opts.apiKeyOptional && !keyGiven ? { ...env, SCHEMATIC_API_KEY: "unused-by-this-command" } : env;
  try {
    return loadConfig(source, { isTTY: process.stdout.isTTY === true });
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`schematic-replicator: invalid settings: ${err.message}\n`);
      return undefined;
    }
    throw err;
  }
}

export async function runService(): Promise<number> {
  const config = settingsOrExit();
  if (!config) return EXIT.usage;
  const log = createLogger({
    level: config.logLevel,
    format: config.logFormat,
    secrets: [config.apiKey, config.redis.password],
    name: "schematic-replicator",
  });
  const cacheVersion = config.cacheVersion ?? (await engineVersionKey());
  log.info(
    { version: PACKAGE_VERSION, cacheVersion, settings: describeConfig(config) },
    "starting schematic-replicator",
  );
  for (const warning of config.warnings ?? []) log.warn(warning);

  // Named after the writer id (`hostname-pid`, as in the lease token), so CLIENT LIST and MONITOR show who writes.
  const redis = createRedis(config.redis, { log, connectionName: redisConnectionName(`${hostname()}-${process.pid}`) });
  redis.on("error", (err) => log.debug({ err: err.message }, "redis connection error"));
  try {
    await waitForRedis(redis, config.redis, log);
  } catch (err) {
    const message = err instanceof RedisStartupError ? err.message : (err as Error).message;
    log.error({ err: message }, "cannot start: Redis is unavailable");
    process.stderr.write(`schematic-replicator: ${message}\n`);
    redis.disconnect();
    return EXIT.fatal;
  }

  const replicator = new Replicator({ config, redis, log, cacheVersion, clientVersion: PACKAGE_VERSION });
  const stopHeapCompaction = startHeapCompaction(replicator, log);
  const registry = createMetrics(replicator, {
    version: PACKAGE_VERSION,
    cacheVersion,
    status: () => replicatorStatus(replicator),
  });
  let health: Awaited<ReturnType<typeof startHealthServer>>;
  try {
    health = await startHealthServer(
      config.healthPort,
      {
        cacheVersion,
        registry,
        status: () => replicatorStatus(replicator),
        debug: () => replicatorDebug(replicator),
      },
      log,
    );
  } catch (err) {
    const message = `cannot listen on HEALTH_PORT ${config.healthPort}: ${(err as Error).message}`;
    log.error(message);
    process.stderr.write(`schematic-replicator: ${message}\n`);
    stopHeapCompaction();
    redis.disconnect();
    return EXIT.fatal;
  }
  log.info({ port: health.port }, "health server listening (/health /ready /debug /metrics)");

  return await new Promise<number>((resolve) => {
    let exiting = false;
    const stop = async (code: number, why: string) => {
      if (exiting) return;
      exiting = true;
      log.info({ reason: why }, "shutting down");
      try {
        await replicator.shutdown();
      } catch (err) {
        log.error({ err: (err as Error).message }, "shutdown failed");
      }
      await health.close();
      stopHeapCompaction();
      redis.disconnect();
      resolve(code);
    };
    for (const signal of ["SIGTERM", "SIGINT"] as const) {
      process.on(signal, () => {
        if (exiting) {
          log.warn({ signal }, "second signal: exiting now");
          process.exit(EXIT.fatal);
        }
        void stop(EXIT.ok, signal);
      });
    }
    replicator.on("fatal", (err) => {
      const auth = err instanceof AuthRejectedError;
      log.error({ err: err.message }, auth ? "the API key was rejected; exiting" : "fatal error; exiting");
      process.stderr.write(`schematic-replicator: ${err.message}\n`);
      void stop(auth ? EXIT.auth : EXIT.fatal, "fatal error");
    });
    replicator.start();
  });
}

/** `healthcheck`: exit 0 when /ready answers 200 (for container HEALTHCHECKs, no curl needed). */
export async function runHealthcheck(): Promise<number> {
  const config = settingsOrExit({ apiKeyOptional: true });
  if (!config) return EXIT.usage;
  try {
    const res = await fetch(`http://127.0.0.1:${config.healthPort}/ready`, { signal: AbortSignal.timeout(5000) });
    const body = await res.text();
    process.stdout.write(body.endsWith("\n") ? body : `${body}\n`);
    return res.status === 200 ? 0 : 1;
  } catch (err) {
    process.stderr.write(
      `healthcheck: /ready on port ${config.healthPort} did not answer: ${(err as Error).message}\n`,
    );
    return 1;
  }
}
