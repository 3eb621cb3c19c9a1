/**
 * Helpers of the operations tests (test/ops-*.test.ts): run `schematic-replicator` subcommands as real processes,
 * talk to a test Redis without ioredis printing connection noise, and read flags through the official TypeScript
 * SDK in replicator mode against any Redis (with a stub `/ready` that reports the cache version).
 */
import { spawn } from "node:child_process";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import sdk from "@schematichq/schematic-typescript-node";
import { Redis } from "ioredis";
import { createClient } from "redis";

export const ROOT = fileURLToPath(new URL("..", import.meta.url));
export const FIXTURE = fileURLToPath(new URL("../examples/fixture.json", import.meta.url));
const REPLICATOR = fileURLToPath(new URL("../src/cli/replicator.ts", import.meta.url));
export const VERSION = "4b54a537";

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `schematic-replicator ARGS` (TypeScript through tsx) with only PATH, HOME and `env` in its environment. */
export async function runCli(args: string[], env: Record<string, string> = {}, timeoutMs = 90_000): Promise<CliResult> {
  const child = spawn(process.execPath, ["--import", "tsx", REPLICATOR, ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => {
    stdout += d;
  });
  child.stderr.on("data", (d) => {
    stderr += d;
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const code = await new Promise<number | null>((resolve) => child.once("close", (c) => resolve(c)));
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** A quiet ioredis client (errors are swallowed: tests assert on results, not on connection noise). */
export function quietRedis(port: number, password?: string): Redis {
  const client = new Redis({ host: "127.0.0.1", port, password, maxRetriesPerRequest: 1 });
  client.on("error", () => {});
  return client;
}

/** Every key (KEYS is fine on a small test Redis) mapped to its string value. */
export async function snapshotKeys(client: Redis, filter: (key: string) => boolean = () => true) {
  const keys = (await client.keys("*")).filter(filter).sort();
  const values = keys.length ? await client.mget(keys) : [];
  return new Map(keys.map((k, i) => [k, values[i] ?? null]));
}

export interface StubReady {
  /** `http://127.0.0.1:PORT/ready` */
  url: string;
  /** `http://127.0.0.1:PORT`: also takes the SDK's event capture (`POST /batch`). */
  base: string;
  close(): Promise<void>;
}

/**
 * A stub answering `GET /ready` with 200 and the replicator's body shape (for an SDK reading a Redis that no
 * replicator serves) and `POST /batch` (the SDK's event capture) with 200.
 */
export async function stubReady(cacheVersion = VERSION): Promise<StubReady> {
  const server: Server = createServer((req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    if (req.method === "POST") {
      res.end("{}");
      req.resume();
      return;
    }
    res.end(
      JSON.stringify({
        status: "healthy",
        ready: true,
        connected: true,
        components: { redis: "connected", datastream: "ready" },
        cache_version: cacheVersion,
        timestamp: new Date().toISOString(),
      }),
    );
    req.resume();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/ready`,
    base: `http://127.0.0.1:${port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

export interface Check {
  flag: string;
  company?: Record<string, string>;
  user?: Record<string, string>;
}

/**
 * Evaluates each check through the official SDK in replicator mode, reading only the given Redis. The API base
 * path points at a closed port: a fallback to the API (a flag missing from Redis) is recorded as an error, and
 * the call fails the check (`value` null). Flag-check events go to `captureBaseUrl` (a stubReady's `base`).
 */
export async function sdkValues(
  redisUrl: string,
  readyUrl: string,
  checks: Check[],
  captureBaseUrl: string,
): Promise<{ values: (boolean | null)[]; reasons: string[]; errors: string[] }> {
  const redis = createClient({ url: redisUrl });
  redis.on("error", () => {});
  await redis.connect();
  const errors: string[] = [];
  const client = new sdk.SchematicClient({
    apiKey: "ops-test-key",
    basePath: "http://127.0.0.1:9/no-api",
    eventCaptureBaseURL: captureBaseUrl,
    useDataStream: true,
    dataStream: { replicatorMode: true, redisClient: redis, replicatorHealthURL: readyUrl, replicatorHealthCheck: 500 },
    logger: { debug() {}, info() {}, warn: (m: string) => errors.push(m), error: (m: string) => errors.push(m) },
  });
  try {
    const ds = (client as unknown as { datastreamClient?: { isReplicatorReady(): boolean } }).datastreamClient;
    const deadline = Date.now() + 10_000;
    while (ds && !ds.isReplicatorReady() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const values: (boolean | null)[] = [];
    const reasons: string[] = [];
    for (const check of checks) {
      const before = errors.length;
      const r = await client.checkFlagWithEntitlement({ company: check.company, user: check.user }, check.flag);
      values.push(errors.length > before ? null : r.value);
      reasons.push(r.reason);
    }
    return { values, reasons, errors };
  } finally {
    await client.close().catch(() => {});
    await redis.quit().catch(() => {});
  }
}

/** Lines of a Prometheus exposition as `name{labels}` → value. */
export function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    out.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return out;
}

/** Sum of every series of `name` whose labels include all of `labels` (e.g. `entity="company"`). */
export function metricSum(metrics: Map<string, number>, name: string, ...labels: string[]): number {
  let sum = 0;
  for (const [series, value] of metrics) {
    const brace = series.indexOf("{");
    const base = brace < 0 ? series : series.slice(0, brace);
    if (base !== name) continue;
    if (labels.every((l) => series.includes(l))) sum += value;
  }
  return sum;
}
