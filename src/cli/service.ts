/**
 * Runs the replicator service. Order matters for operators: settings → logger → signal handlers → the health
 * server (so that SIGTERM works, also as PID 1, and /health answers before anything can hang) → Redis, waited for
 * as long as it takes, and the API key checked meanwhile → lease/replication; then SIGTERM/SIGINT turn into a
 * bounded, lossless shutdown. docs/design/probes.md explains the choices.
 */
import { hostname } from "node:os";
import { ConfigError, describeConfig, loadConfig, logFormatOf } from "../config/index.js";
import type { Config } from "../config/types.js";
import { AuthRejectedError } from "../datastream/client.js";
import { createMetrics } from "../http/metrics.js";
import { probeTransitions } from "../http/probe-log.js";
import { type HealthStatus, startHealthServer } from "../http/server.js";
import { engineVersionKey } from "../model/engine-version.js";
import { Replicator } from "../service/replicator.js";
import { replicatorDebug, replicatorStatus } from "../service/status.js";
import {
  connectionProblem,
  createRedis,
  describeRedis,
  RedisStartupError,
  redisConnectionName,
  waitForRedis,
} from "../store/connect.js";
import { startHeapCompaction } from "../util/heap-compaction.js";
import { createLogger } from "../util/log.js";
import { nowIso } from "../util/time.js";
import { PACKAGE_VERSION } from "../version.js";

export const EXIT = { ok: 0, fatal: 1, usage: 2, auth: 3 } as const;

const NAME = "schematic-replicator";
/** How often the probes' answers are looked at to log their changes when nothing polls them. */
const PROBE_LOG_INTERVAL_MS = 5_000;

const isTTY = () => process.stdout.isTTY === true;

/**
 * Loads settings or prints the one-line reason and returns undefined (the caller exits 2). With `apiKeyOptional`
 * (commands that never talk to Schematic, such as `healthcheck`), a missing API key is not an error.
 */
export function settingsOrExit(opts: { apiKeyOptional?: boolean } = {}): Config | undefined {
  const env = process.env;
  const keyGiven = env.SCHEMATIC_API_KEY !== undefined || env.SCHEMATIC_API_KEY_FILE !== undefined;
  const source = opts.apiKeyOptional && !keyGiven ? { ...env, SCHEMATIC_API_KEY: "unused-by-this-command" } : env;
  try {
    return loadConfig(source, { isTTY: isTTY() });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`${NAME}: invalid settings: ${err.message}\n`);
    return undefined;
  }
}

/** The service's settings; invalid ones are reported as one line on stderr, a JSON log record under json logs. */
function serviceSettings(): Config | undefined {
  try {
    return loadConfig(process.env, { isTTY: isTTY() });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const message = `invalid settings: ${err.message}`;
    if (logFormatOf(process.env, isTTY()) === "json") {
      const log = createLogger({ level: "error", format: "json", destination: process.stderr, name: NAME });
      log.error({ variable: err.variable }, message);
    } else {
      process.stderr.write(`${NAME}: ${message}\n`);
    }
    return undefined;
  }
}

export async function runService(): Promise<number> {
  const config = serviceSettings();
  if (!config) return EXIT.usage;
  const log = createLogger({ level: config.logLevel, format: config.logFormat, secrets: config.secrets, name: NAME });

  // ---- stopping: by a signal at any moment from here on, or by a fatal error once running
  const stop = new AbortController();
  let stopCode: number = EXIT.ok;
  const requestStop = (code: number, why: string) => {
    if (stop.signal.aborted) return;
    stopCode = code;
    log.info({ reason: why }, "shutting down");
    stop.abort();
  };
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    process.on(signal, () => {
      if (stop.signal.aborted) {
        log.warn({ signal }, "second signal: exiting now");
        process.exit(EXIT.fatal);
      }
      requestStop(EXIT.ok, signal);
    });
  }

  const cacheVersion = config.cacheVersion ?? (await engineVersionKey());
  if (stop.signal.aborted) return stopCode;
  log.info({ version: PACKAGE_VERSION, cacheVersion, settings: describeConfig(config) }, `starting ${NAME}`);
  for (const warning of config.warnings) log.warn(warning);

  // Named after the writer id (`hostname-pid`, as in the lease token), so CLIENT LIST and MONITOR show who writes.
  const redis = createRedis(config.redis, { log, connectionName: redisConnectionName(`${hostname()}-${process.pid}`) });
  const replicator = new Replicator({ config, redis, log, cacheVersion, clientVersion: PACKAGE_VERSION });
  const stopHeapCompaction = startHeapCompaction(replicator, log);
  const fail = (code: number, message: string) => {
    log.error({ err: message }, code === EXIT.auth ? "the API key was rejected; exiting" : "fatal error; exiting");
    process.stderr.write(`${NAME}: ${message}\n`);
    return code;
  };
  replicator.on("fatal", (err) => {
    requestStop(fail(err instanceof AuthRejectedError ? EXIT.auth : EXIT.fatal, err.message), "fatal error");
  });

  // ---- probes: up before Redis, so that /health says what start-up waits for
  const startup = { running: false, redisAnswered: false, redisFailure: undefined as string | undefined };
  const observe = probeTransitions(log);
  const status = async (): Promise<HealthStatus> => {
    const s = startup.running
      ? await replicatorStatus(replicator)
      : startingStatus(startup, describeRedis(config.redis));
    const key = replicator.apiKey;
    s.apiKey = key.state;
    if (key.checkedAt !== undefined) s.apiKeyCheckedAt = nowIso(key.checkedAt);
    if (replicator.leaseHolder !== undefined) s.leaseHolder = replicator.leaseHolder;
    if (startup.running && s.redis !== "connected") s.redisError ??= connectionProblem(redis)?.message;
    if (key.state === "rejected") s.unhealthy = `${key.rejectionMessage}; this instance does not take the writer lease`;
    observe(s);
    return s;
  };
  const registry = createMetrics(replicator, { version: PACKAGE_VERSION, cacheVersion, status });
  const cleanup = async (health?: { close(): Promise<void> }) => {
    await health?.close();
    stopHeapCompaction();
    redis.disconnect();
  };
  let health: Awaited<ReturnType<typeof startHealthServer>>;
  try {
    health = await startHealthServer(
      config.healthPort,
      { cacheVersion, registry, status, debug: () => replicatorDebug(replicator) },
      log,
    );
  } catch (err) {
    await cleanup();
    return fail(EXIT.fatal, `cannot listen on HEALTH_PORT ${config.healthPort}: ${(err as Error).message}`);
  }
  log.info({ port: health.port }, "health server listening (/health /ready /debug /metrics)");

  // ---- start-up: Redis and the API key, side by side; a rejected key need not wait for Redis
  const startupOver = new AbortController();
  const startupSignal = AbortSignal.any([stop.signal, startupOver.signal]);
  const keyCheck = replicator.apiKey.check(startupSignal).then((state) => {
    if (state === "rejected") startupOver.abort();
    return state;
  });
  let redisAnswered: boolean;
  try {
    redisAnswered = await waitForRedis(redis, config.redis, {
      log,
      untilReachable: true,
      signal: startupSignal,
      onFailure: (f) => {
        startup.redisFailure = f.message;
      },
    });
  } catch (err) {
    startupOver.abort();
    await keyCheck;
    await cleanup(health);
    return fail(EXIT.fatal, err instanceof RedisStartupError ? err.message : (err as Error).message);
  }
  startup.redisAnswered = redisAnswered;
  startup.redisFailure = undefined;
  const key = await keyCheck;
  if (key === "rejected") {
    await cleanup(health);
    return fail(EXIT.auth, replicator.apiKey.rejectionMessage);
  }
  if (stop.signal.aborted) {
    await cleanup(health);
    return stopCode;
  }
  if (key === "unchecked") {
    log.warn("starting without a verdict on the API key; it is checked again while standing by");
  }

  // ---- running
  startup.running = true;
  replicator.start();
  const probeLog = setInterval(() => void status(), PROBE_LOG_INTERVAL_MS);
  probeLog.unref();
  if (!stop.signal.aborted) await new Promise((resolve) => stop.signal.addEventListener("abort", resolve));
  clearInterval(probeLog);
  try {
    await replicator.shutdown();
  } catch (err) {
    log.error({ err: (err as Error).message }, "shutdown failed");
  }
  await cleanup(health);
  return stopCode;
}

/** What the probes answer before the replicator runs: waiting for Redis, or for the API key's verdict. */
function startingStatus(
  startup: { redisAnswered: boolean; redisFailure: string | undefined },
  where: string,
): HealthStatus {
  const waiting = startup.redisAnswered
    ? "starting: checking the API key with Schematic"
    : `starting: waiting for Redis at ${where} to answer`;
  return {
    ready: false,
    connected: false,
    redis: startup.redisAnswered ? "connected" : "connecting",
    datastream: "standby",
    role: "standby",
    reason: waiting,
    ...(startup.redisFailure ? { redisError: startup.redisFailure } : {}),
  };
}

const HEALTHCHECK_USAGE = `Usage: schematic-replicator healthcheck [--ready]

Asks the replicator on HEALTH_PORT (default 8090) and prints the answer's body.
  (default)   /health: exit 0 while the process is alive and doing its job (waiting for Redis counts), else 1.
              For container HEALTHCHECKs and liveness probes.
  --ready     /ready: exit 0 only while Redis holds a complete, current data set (what SDKs rely on), else 1.
`;

/** `healthcheck [--ready]`: exit 0 when /health (or /ready) answers 200, for probes without curl. */
export async function runHealthcheck(args: string[]): Promise<number> {
  if (args.includes("-h") || args.includes("--help")) {
    process.stdout.write(HEALTHCHECK_USAGE);
    return 0;
  }
  const unknown = args.find((a) => a !== "--ready");
  if (unknown !== undefined) {
    process.stderr.write(`healthcheck: unknown argument ${JSON.stringify(unknown)}\n\n${HEALTHCHECK_USAGE}`);
    return EXIT.usage;
  }
  const path = args.includes("--ready") ? "/ready" : "/health";
  const config = settingsOrExit({ apiKeyOptional: true });
  if (!config) return EXIT.usage;
  try {
    const res = await fetch(`http://127.0.0.1:${config.healthPort}${path}`, { signal: AbortSignal.timeout(5000) });
    const body = await res.text();
    process.stdout.write(body.endsWith("\n") ? body : `${body}\n`);
    return res.status === 200 ? 0 : 1;
  } catch (err) {
    process.stderr.write(
      `healthcheck: ${path} on port ${config.healthPort} did not answer: ${(err as Error).message}\n`,
    );
    return 1;
  }
}
