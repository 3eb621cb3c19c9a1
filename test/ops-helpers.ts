/**
 * Helpers of the operations tests (test/ops-*.test.ts): run `schematic-replicator` subcommands as real processes,
 * talk to a test Redis without ioredis printing connection noise, and read flags through the official TypeScript
 * SDK in replicator mode against any Redis (with a stub `/ready` that reports the cache version).
 */
import { spawn } from "node:child_process";
import { cpSync, existsSync, symlinkSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { delimiter, join } from "node:path";
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
  return await runNode(["--import", "tsx", REPLICATOR, ...args], ROOT, env, timeoutMs);
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

/** The SDK's RedisClient type (node-redis v4's own types differ from it slightly). */
type SdkRedisClient = NonNullable<
  NonNullable<NonNullable<ConstructorParameters<typeof sdk.SchematicClient>[0]>["dataStream"]>["redisClient"]
>;

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
    dataStream: {
      replicatorMode: true,
      // node-redis v4, the client the SDK's RedisClient interface was written against (its types differ slightly).
      redisClient: redis as unknown as SdkRedisClient,
      replicatorHealthURL: readyUrl,
      replicatorHealthCheck: 500,
    },
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

/** Whether the exposition has a sample named exactly `name` (with or without labels). */
export function hasMetric(metrics: Map<string, number>, name: string): boolean {
  for (const series of metrics.keys()) if (series === name || series.startsWith(`${name}{`)) return true;
  return false;
}

/** The distinct values of one label across every series (of `name` only, when given). */
export function labelValues(metrics: Map<string, number>, label: string, name?: string): string[] {
  const out = new Set<string>();
  const re = new RegExp(`[{,]${label}="([^"]*)"`);
  for (const series of metrics.keys()) {
    if (name !== undefined && !series.startsWith(`${name}{`)) continue;
    const m = re.exec(series);
    if (m) out.add(m[1]!);
  }
  return [...out];
}

/**
 * A plain install in `dir`, as the container image has it: `tsc -p tsconfig.build.json` compiled into `dir/dist`,
 * package.json and examples/ copied, node_modules linked (the build never touches the project's own dist/, which
 * other tests may be using). Returns `dir`.
 */
export async function buildInto(dir: string, extra: string[] = []): Promise<string> {
  const tsc = join(ROOT, "node_modules", "typescript", "bin", "tsc");
  const child = spawn(process.execPath, [tsc, "-p", join(ROOT, "tsconfig.build.json"), "--outDir", join(dir, "dist")], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (d) => {
    output += d;
  });
  child.stderr.on("data", (d) => {
    output += d;
  });
  const code = await new Promise<number | null>((resolve) => child.once("close", resolve));
  if (code !== 0) throw new Error(`the build failed (exit ${code}):\n${output}`);
  cpSync(join(ROOT, "package.json"), join(dir, "package.json"));
  cpSync(join(ROOT, "examples"), join(dir, "examples"), { recursive: true });
  for (const path of extra) cpSync(join(ROOT, path), join(dir, path), { recursive: true });
  symlinkSync(join(ROOT, "node_modules"), join(dir, "node_modules"), "dir");
  return dir;
}

/** Runs `node ARGS` in `cwd` with only PATH, HOME and `env`. */
export async function runNode(
  args: string[],
  cwd: string,
  env: Record<string, string> = {},
  timeoutMs = 60_000,
): Promise<CliResult> {
  return await runProgram(process.execPath, args, cwd, env, timeoutMs);
}

/** Runs `command ARGS` in `cwd` with only PATH, HOME and `env`; killed after `timeoutMs`. */
export async function runProgram(
  command: string,
  args: string[],
  cwd: string,
  env: Record<string, string> = {},
  timeoutMs = 60_000,
): Promise<CliResult> {
  const child = spawn(command, args, {
    cwd,
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

/**
 * A command-line tool of the monitoring tests (helm, promtool) on PATH, or a skip reason when it is missing.
 * `.ci/run` installs both and sets REQUIRE_OPS_TOOLS=1: there a missing tool fails the test instead of skipping it.
 */
export function opsTool(name: string, install: string): { path?: string; skip: string | false } {
  const path = (process.env.PATH ?? "")
    .split(delimiter)
    .map((dir) => join(dir, name))
    .find((candidate) => existsSync(candidate));
  if (path || process.env.REQUIRE_OPS_TOOLS) return { path, skip: false };
  return { skip: `${name} is not on PATH (${install}; .ci/run installs it)` };
}

/** Fails with the reason when a required tool is missing (see opsTool). */
export function requireTool(tool: { path?: string }, name: string): string {
  if (!tool.path) throw new Error(`${name} is required (REQUIRE_OPS_TOOLS is set) but not on PATH`);
  return tool.path;
}
