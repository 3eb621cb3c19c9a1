/**
 * Runs `schematic-replicator` as a real child process (TypeScript through tsx, or a built `dist/cli/replicator.js`
 * as a user runs it), with settings tuned for tests: its own health port, short timers, JSON logs captured for
 * assertions.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { parseGoDuration } from "../../src/config/index.js";
import { freePort, waitFor } from "./redis.js";

const ENTRY = fileURLToPath(new URL("../../src/cli/replicator.ts", import.meta.url));
/** Node arguments that run the replicator from source. */
export const FROM_SOURCE = ["--import", "tsx", ENTRY];

export interface ReplicatorProcess {
  process: ChildProcess;
  port: number;
  url: string;
  /** Every line written, stdout and stderr interleaved. */
  logs: string[];
  /** The lines written on stderr. */
  stderr: string[];
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
  ready(): Promise<{ status: number; body: Record<string, unknown> }>;
  health(): Promise<{ status: number; body: Record<string, unknown> }>;
  debug(): Promise<Record<string, unknown>>;
  metrics(): Promise<string>;
  waitReady(timeoutMs?: number): Promise<void>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * Settings every test replicator gets unless overridden: fast timers, quiet logs. A lease renewal must fit in a
 * third of WRITER_LOCK_TTL (a setting check), so unless the test sets them, the Redis command timeouts are a
 * quarter of the lease's TTL (at most the 3s default).
 */
export function testEnv(overrides: Record<string, string>): Record<string, string> {
  const env = testDefaults(overrides);
  if (overrides.REDIS_READ_TIMEOUT === undefined && overrides.REDIS_WRITE_TIMEOUT === undefined) {
    const timeout = `${Math.min(3000, Math.floor(parseGoDuration(env.WRITER_LOCK_TTL as string) / 4))}ms`;
    env.REDIS_READ_TIMEOUT = timeout;
    env.REDIS_WRITE_TIMEOUT = timeout;
  }
  return env;
}

function testDefaults(overrides: Record<string, string>): Record<string, string> {
  return {
    SCHEMATIC_API_KEY: "test-api-key",
    LOG_LEVEL: "info",
    LOG_FORMAT: "json",
    // Long enough that a busy CI machine never stalls a writer out of its lease; HA tests shorten it.
    WRITER_LOCK_TTL: "4s",
    REPLAY_FLUSH_INTERVAL: "200ms",
    MARKER_CHECK_INTERVAL: "300ms",
    DATASTREAM_MAX_RECONNECT_DELAY: "300ms",
    CIRCUIT_BREAKER_TIMEOUT: "300ms",
    ASYNC_LOADER_CIRCUIT_BREAKER_TIMEOUT: "300ms",
    ASYNC_LOADER_RATE_LIMIT_RPS: "0",
    SHUTDOWN_TIMEOUT: "10s",
    ...overrides,
  };
}

export interface StartOptions {
  /** How node runs it (default: from source through tsx; `[".../dist/cli/replicator.js"]` runs a build). */
  nodeArgs?: string[];
  /** A command it runs under, e.g. `["unshare", "-rpf", "--kill-child"]` to be PID 1 of a PID namespace (and die with it). */
  wrapper?: string[];
}

export async function startReplicator(
  env: Record<string, string>,
  { nodeArgs = FROM_SOURCE, wrapper = [] }: StartOptions = {},
): Promise<ReplicatorProcess> {
  const port = env.HEALTH_PORT ? Number(env.HEALTH_PORT) : await freePort();
  const [command = process.execPath, ...args] = [...wrapper, process.execPath, ...nodeArgs];
  const child = spawn(command, args, {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env, HEALTH_PORT: String(port) },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: string[] = [];
  const stderr: string[] = [];
  const collect = (into: string[][]) => (chunk: Buffer) => {
    for (const line of chunk.toString().split("\n")) if (line.trim()) for (const list of into) list.push(line);
  };
  child.stdout?.on("data", collect([logs]));
  child.stderr?.on("data", collect([logs, stderr]));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const url = `http://127.0.0.1:${port}`;
  const get = async (path: string) => {
    const res = await fetch(url + path, { signal: AbortSignal.timeout(5000) });
    const text = await res.text();
    return { status: res.status, text };
  };
  const getJson = async (path: string) => {
    const { status, text } = await get(path);
    return { status, body: JSON.parse(text) as Record<string, unknown> };
  };
  return {
    process: child,
    port,
    url,
    logs,
    stderr,
    exited,
    ready: () => getJson("/ready"),
    health: () => getJson("/health"),
    debug: async () => (await getJson("/debug")).body,
    metrics: async () => (await get("/metrics")).text,
    async waitReady(timeoutMs = 60_000) {
      await waitFor(
        async () => {
          if (child.exitCode !== null)
            throw new Error(`replicator exited with ${child.exitCode}:\n${logs.slice(-20).join("\n")}`);
          return (await getJson("/ready")).status === 200;
        },
        { timeoutMs, intervalMs: 100, what: "the replicator to be ready" },
      ).catch((err) => {
        throw new Error(`${(err as Error).message}\n--- replicator logs ---\n${logs.slice(-30).join("\n")}`);
      });
    },
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      return exited;
    },
  };
}

/**
 * Runs the replicator to its exit (SIGKILL after `timeoutMs`); returns the code and its output lines: all, those
 * that are not JSON log records (`plain`), and those on stderr.
 */
export async function runToExit(
  env: Record<string, string>,
  timeoutMs = 120_000,
): Promise<{ code: number | null; lines: string[]; plain: string[]; stderr: string[] }> {
  const rep = await startReplicator(env);
  const timer = setTimeout(() => rep.process.kill("SIGKILL"), timeoutMs);
  try {
    const code = await rep.exited;
    // The exit event may precede the last output chunks.
    await new Promise<void>((resolve) => {
      if (rep.process.stdout?.readableEnded && rep.process.stderr?.readableEnded) resolve();
      else rep.process.once("close", () => resolve());
    });
    return { code, lines: [...rep.logs], plain: rep.logs.filter((l) => !l.startsWith("{")), stderr: [...rep.stderr] };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A Redis that cannot be reached (or not yet) is waited for, not given up on: /health answers 200 with
 * `components.redis` "connecting" and a `redis_error` matching `cause`; SIGTERM then ends the wait with exit 0.
 */
export async function assertWaitsForRedis(env: Record<string, string>, cause: RegExp): Promise<void> {
  const rep = await startReplicator(env);
  try {
    const health = await waitFor(
      async () => {
        if (rep.process.exitCode !== null) throw new Error(`exited with ${rep.process.exitCode}`);
        const h = await rep.health();
        return cause.test(String(h.body.redis_error)) ? h : undefined;
      },
      { timeoutMs: 90_000, what: `/health to report ${cause}` },
    ).catch((err: Error) => {
      throw new Error(`${err.message}\n--- replicator logs ---\n${rep.logs.slice(-20).join("\n")}`);
    });
    assert.equal(health.status, 200);
    assert.equal((health.body.components as Record<string, unknown>).redis, "connecting");
    assert.equal(await rep.stop("SIGTERM"), 0, rep.logs.slice(-10).join("\n"));
  } finally {
    await rep.stop("SIGKILL");
  }
}
