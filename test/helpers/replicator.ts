/**
 * Runs `schematic-replicator` as a real child process (TypeScript through tsx, or a built `dist/cli/replicator.js`
 * as a user runs it), with settings tuned for tests: its own health port, short timers, JSON logs captured for
 * assertions.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { freePort, waitFor } from "./redis.js";

const ENTRY = fileURLToPath(new URL("../../src/cli/replicator.ts", import.meta.url));
/** Node arguments that run the replicator from source. */
export const FROM_SOURCE = ["--import", "tsx", ENTRY];

export interface ReplicatorProcess {
  process: ChildProcess;
  port: number;
  url: string;
  logs: string[];
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
  ready(): Promise<{ status: number; body: Record<string, unknown> }>;
  health(): Promise<{ status: number; body: Record<string, unknown> }>;
  debug(): Promise<Record<string, unknown>>;
  metrics(): Promise<string>;
  waitReady(timeoutMs?: number): Promise<void>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Settings every test replicator gets unless overridden: fast timers, quiet logs. */
export function testEnv(overrides: Record<string, string>): Record<string, string> {
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

/** `nodeArgs`: how to run it (default from source; `[".../dist/cli/replicator.js"]` runs a build). */
export async function startReplicator(
  env: Record<string, string>,
  nodeArgs: string[] = FROM_SOURCE,
): Promise<ReplicatorProcess> {
  const port = env.HEALTH_PORT ? Number(env.HEALTH_PORT) : await freePort();
  const child = spawn(process.execPath, nodeArgs, {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env, HEALTH_PORT: String(port) },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: string[] = [];
  const collect = (chunk: Buffer) => {
    for (const line of chunk.toString().split("\n")) if (line.trim()) logs.push(line);
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);
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
