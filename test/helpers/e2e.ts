/**
 * Building blocks of the end-to-end tests (test/e2e-*.test.ts): the emulator's admin API, a REST stub that
 * counts (and fails) every request an SDK sends to the Schematic API, the official TypeScript SDK in replicator
 * mode and in direct datastream mode, and "Redis equals the emulator" (diffRedis against `GET /_emulator/dump`).
 *
 * The SDK's silent failure modes (docs/reference/sdk-replicator-mode.md, "Surprises") are turned into test
 * failures here: a non-empty API key and `useDataStream: true` are always set; `basePath` points at the stub, so a
 * flag missing from Redis (or a cache-version mismatch) shows up as a counted API call; the replicator-mode client
 * is handed out only once it reports the replicator ready and knows the replicator's cache version; and
 * `checkSdk` rejects results the rules engine could not compute.
 */
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import sdk from "@schematichq/schematic-typescript-node";
import type { Redis } from "ioredis";
import { createClient } from "redis";
import type { Fixture } from "../../src/model/wire.js";
import { KeyScheme } from "../../src/store/keys.js";
import { type Difference, diffRedis } from "../../src/verify/diff.js";
import { waitFor } from "./redis.js";
import type { Context } from "./sdk-table.js";

export const DEFAULT_CACHE_VERSION = "4b54a537";
export const defaultKeys = (prefix = "schematic:", version = DEFAULT_CACHE_VERSION) => new KeyScheme(prefix, version);

// ---- emulator admin -------------------------------------------------------------------------------------------

export interface AdminReply {
  status: number;
  body: Record<string, unknown>;
}

/** One admin request (`/_emulator{path}`); asserts 200 unless `expectStatus` says otherwise. */
export async function admin(
  emulatorUrl: string,
  method: string,
  path: string,
  body?: unknown,
  expectStatus = 200,
): Promise<Record<string, unknown>> {
  const res = await fetch(`${emulatorUrl}/_emulator${path}`, {
    method,
    headers: body === undefined ? undefined : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  assert.equal(res.status, expectStatus, `${method} /_emulator${path}: ${text}`);
  return text ? (JSON.parse(text) as Record<string, unknown>) : {};
}

export async function emulatorDump(emulatorUrl: string): Promise<Fixture> {
  return (await admin(emulatorUrl, "GET", "/dump")) as unknown as Fixture;
}

export interface EmulatorStateView {
  companies: number;
  users: number;
  flags: number;
  connections: number;
  stream_id: string | null;
  connections_by_mode: Record<string, number>;
  requests: { rest: number; flag_checks: number; capture_batches: number };
  connections_compressed: number;
}

export async function emulatorState(emulatorUrl: string): Promise<EmulatorStateView> {
  return (await admin(emulatorUrl, "GET", "/state")) as unknown as EmulatorStateView;
}

/** The replicator's JSON log lines, parsed (other lines, such as a final stderr line, are skipped). */
export function jsonLogs(lines: string[]): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of lines) {
    if (!line.startsWith("{")) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // not a log record
    }
  }
  return out;
}

/** Every key in a single-node Redis matching `pattern` (SCAN, never KEYS). */
export async function scanKeys(db: Redis, pattern = "*"): Promise<string[]> {
  const out: string[] = [];
  let cursor = "0";
  do {
    const [next, batch] = await db.scan(cursor, "MATCH", pattern, "COUNT", 1000);
    out.push(...batch);
    cursor = next;
  } while (cursor !== "0");
  return out;
}

// ---- Redis equals the emulator ------------------------------------------------------------------------------

export function formatDifferences(diffs: Difference[], max = 15): string {
  const lines = diffs.slice(0, max).map((d) => `${d.kind} ${d.key}${d.detail ? ` (${d.detail})` : ""}`);
  if (diffs.length > max) lines.push(`… and ${diffs.length - max} more`);
  return lines.join("\n");
}

/**
 * Polls until the current version's keyspace equals the emulator's state (zero differences from diffRedis
 * against `GET /_emulator/dump`, re-read on every attempt), and fails with the differences otherwise.
 */
export async function waitInSync(
  redis: Redis,
  emulatorUrl: string,
  { keys = defaultKeys(), expectTtl = false, timeoutMs = 60_000, what = "Redis to equal the emulator" } = {},
): Promise<void> {
  let last: Difference[] = [];
  try {
    await waitFor(
      async () => {
        const source = await emulatorDump(emulatorUrl);
        last = (await diffRedis(redis, keys, source, { expectTtl })).differences;
        return last.length === 0;
      },
      { timeoutMs, intervalMs: 150, what },
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}; ${last.length} differences:\n${formatDifferences(last)}`);
  }
}

// ---- a Schematic API stub that counts every request -----------------------------------------------------------

export interface ApiStub {
  /** Base URL for the SDK's `basePath`: every request under it is counted and answered 503. */
  url: string;
  /** Base URL for `eventCaptureBaseURL`: answered 200 and counted apart (event capture is not a fallback). */
  captureUrl: string;
  /** Requests under `url`, as `METHOD /path`. */
  calls: string[];
  captures: number;
  close(): Promise<void>;
}

export async function startApiStub(): Promise<ApiStub> {
  const calls: string[] = [];
  let captures = 0;
  const server: Server = createServer((req: IncomingMessage, res) => {
    req.resume();
    const path = req.url ?? "/";
    if (path.startsWith("/capture")) {
      captures++;
      res.writeHead(200, { "content-type": "application/json" });
      res.end("{}");
      return;
    }
    calls.push(`${req.method} ${path.replace(/^\/api/, "")}`);
    res.writeHead(503, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: "the API stub refuses every request: the SDK must read Redis" }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/api`,
    captureUrl: `http://127.0.0.1:${port}/capture`,
    calls,
    get captures() {
      return captures;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

// ---- the official TypeScript SDK ------------------------------------------------------------------------------

export type SdkClient = InstanceType<typeof sdk.SchematicClient>;
export type SdkResult = Awaited<ReturnType<SdkClient["checkFlagWithEntitlement"]>>;
export type SdkOptions = NonNullable<ConstructorParameters<typeof sdk.SchematicClient>[0]>;

/** The parts of the SDK's private DataStreamClient the tests read (no public readiness signal exists). */
interface DataStreamInternals {
  getFlag(key: string): Promise<unknown>;
  isReplicatorReady(): boolean;
  getReplicatorCacheVersion(): string | undefined;
}

function internals(client: SdkClient): DataStreamInternals {
  const ds = (client as unknown as { datastreamClient?: DataStreamInternals }).datastreamClient;
  assert.ok(ds, "the SDK started its DataStream client (a non-empty apiKey and useDataStream: true are set)");
  return ds;
}

export interface ReplicatorModeSdk {
  client: SdkClient;
  stub: ApiStub;
  /** The cache version the SDK learned from the replicator's health URL. */
  cacheVersion(): string | undefined;
  ready(): boolean;
  close(): Promise<void>;
}

/**
 * The official SDK in replicator mode, reading `redisUrl`, polling `healthUrl` (the replicator's /ready) every
 * 200 ms, its API pointed at a counting stub. Resolves once the SDK reports the replicator ready and knows its
 * cache version (equal to `expectVersion` when given), so no check can run under the SDK's fallback version.
 */
export async function startReplicatorModeSdk(opts: {
  redisUrl: string;
  healthUrl: string;
  keyPrefix?: string;
  expectVersion?: string;
  timeoutMs?: number;
  /** More SDK options (e.g. a `basePath` that answers instead of the counting stub, a logger). */
  sdkOptions?: SdkOptions;
}): Promise<ReplicatorModeSdk> {
  const stub = await startApiStub();
  const redis = createClient({ url: opts.redisUrl });
  redis.on("error", () => undefined);
  await redis.connect();
  const client = new sdk.SchematicClient({
    apiKey: "sch_e2e_replicator_mode", // non-empty: an empty key silently switches the SDK to offline mode
    basePath: stub.url,
    eventCaptureBaseURL: stub.captureUrl,
    logLevel: "error",
    ...opts.sdkOptions,
    useDataStream: true, // without it, replicatorMode is ignored
    dataStream: {
      replicatorMode: true,
      redisClient: redis as unknown as NonNullable<
        NonNullable<ConstructorParameters<typeof sdk.SchematicClient>[0]>["dataStream"]
      >["redisClient"],
      redisKeyPrefix: opts.keyPrefix,
      replicatorHealthURL: opts.healthUrl,
      replicatorHealthCheck: 200,
    },
  });
  const ds = internals(client);
  const close = async () => {
    await client.close().catch(() => undefined);
    await redis.quit().catch(() => undefined);
    await stub.close();
  };
  try {
    await waitFor(
      () => {
        const v = ds.getReplicatorCacheVersion();
        return ds.isReplicatorReady() && !!v && (opts.expectVersion === undefined || v === opts.expectVersion);
      },
      { timeoutMs: opts.timeoutMs ?? 60_000, what: "the SDK to report the replicator ready with its cache version" },
    );
  } catch (err) {
    await close();
    throw err;
  }
  return {
    client,
    stub,
    cacheVersion: () => ds.getReplicatorCacheVersion(),
    ready: () => ds.isReplicatorReady(),
    close,
  };
}

/** The official SDK in direct datastream mode against the emulator, once it holds the flags snapshot. */
export async function startDirectSdk(
  emulatorUrl: string,
  probeFlag: string,
  sdkOptions: SdkOptions = {},
): Promise<SdkClient> {
  const client = new sdk.SchematicClient({
    apiKey: "sch_e2e_direct",
    basePath: emulatorUrl,
    eventCaptureBaseURL: emulatorUrl,
    useDataStream: true,
    logLevel: "error",
    ...sdkOptions,
  });
  const ds = internals(client);
  await waitFor(async () => (await ds.getFlag(probeFlag)) !== null, {
    timeoutMs: 60_000,
    what: "the direct-mode SDK to receive the flags snapshot",
  });
  return client;
}

/**
 * The official SDK in its default mode (datastream off) against the emulator: every check is a REST call. Its
 * 5-second cache of check results is off, so a check right after a change sees it.
 */
export function startRestSdk(emulatorUrl: string, sdkOptions: SdkOptions = {}): SdkClient {
  return new sdk.SchematicClient({
    apiKey: "sch_e2e_rest",
    basePath: emulatorUrl,
    eventCaptureBaseURL: emulatorUrl,
    cacheProviders: { flagChecks: [] },
    logLevel: "error",
    ...sdkOptions,
  });
}

/** An SDK logger that keeps its warnings and errors (a test asserts on them instead of printing them). */
export function recordingLogger(): { logger: NonNullable<SdkOptions["logger"]>; problems: string[] } {
  const problems: string[] = [];
  const keep =
    (level: string) =>
    (message: string, ...args: unknown[]) => {
      problems.push(`${level}: ${[message, ...args.map(String)].join(" ")}`);
    };
  return { logger: { debug() {}, info() {}, warn: keep("warn"), error: keep("error") }, problems };
}

/**
 * One check; fails on results the SDK produced without the rules engine evaluating our data (engine errors,
 * the offline/API-failure "flag default").
 */
export async function checkSdk(client: SdkClient, ctx: Context, flag: string): Promise<SdkResult> {
  const r = await client.checkFlagWithEntitlement(ctx, flag);
  assert.doesNotMatch(
    r.reason,
    /RULES_ENGINE_(ERROR|UNAVAILABLE)|^flag default$/,
    `${flag} for ${JSON.stringify(ctx)}: ${r.reason}${r.err ? ` (${r.err})` : ""}`,
  );
  return r;
}

/** The fields of a result that must agree between SDK modes. */
export function comparable(r: SdkResult): Record<string, unknown> {
  return {
    value: r.value,
    reason: r.reason,
    ruleId: r.ruleId ?? null,
    ruleType: r.ruleType ?? null,
    flagId: r.flagId ?? null,
    companyId: r.companyId ?? null,
    userId: r.userId ?? null,
    err: r.err ?? null,
  };
}
