/**
 * Shared rig for the fault tests (test/faults-*.test.ts): one private redis-server, one in-process emulator and one
 * real replicator process per suite, plus the checks every fault test ends with — the consistency checker against
 * the emulator's dump (zero differences) and the official TypeScript SDK in replicator mode reading a changed value.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import sdk from "@schematichq/schematic-typescript-node";
import type { Redis } from "ioredis";
import { createClient } from "redis";
import { loadFixtureFile, type RunningEmulator, startEmulator } from "../../src/emulator/index.js";
import type { Company, Fixture, Trait, User } from "../../src/model/wire.js";
import { KeyScheme } from "../../src/store/keys.js";
import { type Difference, diffRedis } from "../../src/verify/diff.js";
import { type RedisServer, startRedis, waitFor } from "./redis.js";
import { type ReplicatorProcess, startReplicator, testEnv } from "./replicator.js";

export const VERSION = "4b54a537";
export const KEYS = new KeyScheme("schematic:", VERSION);
export const FIXTURE_PATH = fileURLToPath(new URL("../../examples/fixture.json", import.meta.url));

export function fixture(): Fixture {
  return loadFixtureFile(FIXTURE_PATH);
}

export interface StackOptions {
  /** Replicator settings on top of testEnv's. */
  env?: Record<string, string>;
  replayLog?: number;
  fixture?: Fixture;
  /** Extra redis-server arguments. */
  redisArgs?: string[];
  /** Do not start the replicator (the test starts it itself). */
  noReplicator?: boolean;
}

export interface Stack {
  redis: RedisServer;
  /** An ioredis client on the test Redis (for the checker and direct pokes). */
  client: Redis;
  emu: RunningEmulator;
  rep: ReplicatorProcess;
  env: Record<string, string>;
  /** Set by close(): background senders stop. */
  closed: boolean;
  admin<T = Record<string, unknown>>(method: string, path: string, body?: unknown): Promise<T>;
  /** Starts a (new) replicator process with the suite's settings plus `overrides`. */
  startReplicator(overrides?: Record<string, string>): Promise<ReplicatorProcess>;
  differences(): Promise<Difference[]>;
  /** Polls until Redis equals the emulator's state; fails with the remaining differences. */
  waitConsistent(timeoutMs?: number): Promise<void>;
  debugNumber(path: string): Promise<number>;
  close(): Promise<void>;
}

export async function startStack(opts: StackOptions = {}): Promise<Stack> {
  const redis = await startRedis({ args: opts.redisArgs });
  const client = redis.client();
  const emu = await startEmulator({ fixture: opts.fixture ?? fixture(), replayLog: opts.replayLog });
  const env = testEnv({
    REDIS_ADDR: redis.addr,
    SCHEMATIC_API_URL: emu.url,
    SCHEMATIC_DATASTREAM_URL: emu.wsUrl,
    ...opts.env,
  });
  const reps: ReplicatorProcess[] = [];
  const admin = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const res = await fetch(`${emu.url}/_emulator${path}`, {
      method,
      headers: { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    assert.equal(res.status, 200, `${method} ${path}: ${text}`);
    return JSON.parse(text) as T;
  };
  const stack: Stack = {
    redis,
    client,
    emu,
    rep: undefined as unknown as ReplicatorProcess,
    env,
    closed: false,
    admin,
    async startReplicator(overrides = {}) {
      const rep = await startReplicator({ ...env, ...overrides });
      reps.push(rep);
      stack.rep = rep;
      return rep;
    },
    async differences() {
      const dump = await admin<Fixture>("GET", "/dump");
      return (await diffRedis(client, KEYS, dump)).differences;
    },
    async waitConsistent(timeoutMs = 30_000) {
      let last: Difference[] = [];
      try {
        await waitFor(
          async () => {
            last = await stack.differences();
            return last.length === 0;
          },
          { timeoutMs, intervalMs: 250, what: "Redis to equal the emulator's state" },
        );
      } catch (err) {
        const rep = stack.rep;
        const kinds = new Map<string, number>();
        for (const d of last) kinds.set(d.kind, (kinds.get(d.kind) ?? 0) + 1);
        const shown = [JSON.stringify(Object.fromEntries(kinds))];
        for (const kind of ["missing", "stale", "extra"]) {
          for (const d of last.filter((x) => x.kind === kind).slice(0, 8))
            shown.push(`${d.kind} ${d.key} ${d.detail ?? ""}`);
        }
        const logs = rep ? rep.logs.slice(-25).join("\n") : "";
        // FAULTS_LOG_DIR=dir keeps the whole replicator log of a failed check, for post-mortems.
        if (rep && process.env.FAULTS_LOG_DIR) {
          writeFileSync(join(process.env.FAULTS_LOG_DIR, `replicator-${rep.process.pid}.log`), rep.logs.join("\n"));
        }
        let debug = "";
        try {
          debug = JSON.stringify(await rep?.debug());
        } catch {}
        throw new Error(
          `${(err as Error).message}\n${last.length} differences, e.g.:\n${shown.join("\n")}\n/debug ${debug}\n--- logs ---\n${logs}`,
        );
      }
    },
    async debugNumber(path: string) {
      let v: unknown = await stack.rep.debug();
      for (const part of path.split(".")) v = (v as Record<string, unknown>)[part];
      return Number(v);
    },
    async close() {
      stack.closed = true;
      await Promise.all([...pollers].map((stop) => stop()));
      for (const rep of reps) {
        if (rep.process.exitCode === null && rep.process.signalCode === null) {
          rep.process.kill("SIGKILL");
          await rep.exited;
        }
      }
      await emu.close();
      await redis.stop();
    },
  };
  if (!opts.noReplicator) await stack.startReplicator();
  return stack;
}

// ---- changes ----------------------------------------------------------------------------------------------------

export interface BulkChange {
  method: string;
  path: string;
  body?: unknown;
}

/** Template entities taken from the fixture, to mint many valid companies and users. */
export function templates(f: Fixture = fixture()): { company: Company; user: User } {
  return { company: f.companies[0]!, user: f.users[0]! };
}

export function region(value: string): Trait {
  return { trait_definition: { id: "trdf_region", comparable_type: "string", entity_type: "company" }, value };
}

/** A full company `id` (keys derived from it) with a region trait. */
export function company(tpl: Company, id: string, regionValue: string, extra = ""): Company {
  return {
    ...structuredClone(tpl),
    id,
    keys: { domain: `${id}${extra}.example`, slug: `${id}${extra}` },
    metrics: [],
    traits: [region(regionValue)],
    rules: [],
  };
}

export function user(tpl: User, id: string, role: string): User {
  return {
    ...structuredClone(tpl),
    id,
    keys: { email: `${id}@example.test` },
    traits: [
      { trait_definition: { id: "trdf_role", comparable_type: "string", entity_type: "user" }, value: role },
    ] as Trait[],
  };
}

/**
 * A deterministic mix of `n` changes over `entities` companies and users: full PUTs, PATCHes, DELETEs and re-creates,
 * flag PUTs, and key moves between companies — what the consistency checker must see applied in order.
 */
export function churn(n: number, opts: { entities?: number; seed?: number; tag?: string } = {}): BulkChange[] {
  const tpl = templates();
  const entities = opts.entities ?? 200;
  const tag = opts.tag ?? "c";
  let s = opts.seed ?? 1;
  const rnd = () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s / 2 ** 32;
  };
  const exists = new Set<string>();
  const out: BulkChange[] = [];
  for (let i = 0; i < n; i++) {
    const r = rnd();
    const k = Math.floor(rnd() * entities);
    const cid = `${tag}-co-${k}`;
    const uid = `${tag}-us-${k}`;
    const regionValue = rnd() < 0.5 ? "eu" : "us";
    if (r < 0.4) {
      out.push({ method: "PUT", path: `/companies/${cid}`, body: company(tpl.company, cid, regionValue) });
      exists.add(cid);
    } else if (r < 0.55) {
      if (exists.has(cid))
        out.push({ method: "PATCH", path: `/companies/${cid}`, body: { traits: [region(regionValue)] } });
      else {
        out.push({ method: "PUT", path: `/companies/${cid}`, body: company(tpl.company, cid, regionValue) });
        exists.add(cid);
      }
    } else if (r < 0.62) {
      if (exists.has(cid)) {
        out.push({ method: "DELETE", path: `/companies/${cid}` });
        exists.delete(cid);
      }
    } else if (r < 0.9) {
      out.push({
        method: "PUT",
        path: `/users/${uid}`,
        body: user(tpl.user, uid, regionValue === "eu" ? "admin" : "viewer"),
      });
      exists.add(uid);
    } else if (r < 0.95) {
      if (exists.has(uid)) {
        out.push({ method: "DELETE", path: `/users/${uid}` });
        exists.delete(uid);
      }
    } else {
      out.push({
        method: "PUT",
        path: `/flags/${tag}-flag-${k % 10}`,
        body: flag(`${tag}-flag-${k % 10}`, rnd() < 0.5),
      });
    }
  }
  return out;
}

export function flag(key: string, defaultValue: boolean) {
  return {
    id: `flag_${key}`,
    account_id: "acc_acme_analytics",
    environment_id: "env_production",
    key,
    rules: [],
    default_value: defaultValue,
  };
}

/** Sends changes through POST /_emulator/bulk in chunks; returns the last stream id. */
export async function bulk(stack: Stack, changes: BulkChange[], chunk = 500): Promise<string> {
  let last = "";
  for (let i = 0; i < changes.length; i += chunk) {
    const res = await stack.admin<{ stream_id: string }>("POST", "/bulk", { changes: changes.slice(i, i + chunk) });
    last = res.stream_id;
  }
  return last;
}

/**
 * The "marker" change every test ends with: comp_acme moves to the EU (so `eu-data-residency` turns true for it) and
 * a new flag `fault-probe` with default true appears. `sdkSeesMarker` then proves the official SDK reads both.
 */
export async function markerChange(stack: Stack): Promise<void> {
  await stack.admin("PATCH", "/companies/comp_acme", {
    traits: [
      region("eu"),
      { trait_definition: { id: "trdf_seats", comparable_type: "int", entity_type: "company" }, value: "35" },
    ],
  });
  await stack.admin("PUT", "/flags/fault-probe", flag("fault-probe", true));
}

/** The official TypeScript SDK in replicator mode, against the stack's Redis and replicator. */
export async function sdkSeesMarker(stack: Stack, rep: ReplicatorProcess = stack.rep): Promise<void> {
  const redisClient = createClient({ url: stack.redis.url });
  await redisClient.connect();
  // A stub for the SDK's REST API (every call counted and answered 500, so a fallback is seen) and event capture.
  const apiCalls: string[] = [];
  const stub = createServer((req, res) => {
    if (req.url?.startsWith("/api")) apiCalls.push(`${req.method} ${req.url}`);
    req.resume();
    res.writeHead(req.url?.startsWith("/api") ? 500 : 200, { "content-type": "application/json" });
    res.end("{}");
  });
  await new Promise<void>((resolve) => stub.listen(0, "127.0.0.1", resolve));
  const stubUrl = `http://127.0.0.1:${(stub.address() as AddressInfo).port}`;
  const client = new sdk.SchematicClient({
    apiKey: "sch_fault_tests",
    // No API behind these: a REST fallback fails the check (it would come back as a flag default).
    basePath: `${stubUrl}/api`,
    eventCaptureBaseURL: `${stubUrl}/capture`,
    useDataStream: true,
    logLevel: "error",
    dataStream: {
      replicatorMode: true,
      // biome-ignore lint/suspicious/noExplicitAny: node-redis v4's client type is wider than the SDK's interface
      redisClient: redisClient as any,
      redisKeyPrefix: "schematic:",
      replicatorHealthURL: `${rep.url}/ready`,
      replicatorHealthCheck: 200,
    },
  } as ConstructorParameters<typeof sdk.SchematicClient>[0]);
  try {
    const check = async (ctx: Record<string, Record<string, string>>, key: string) => {
      const r = await client.checkFlagWithEntitlement(ctx, key);
      return r;
    };
    // The SDK keys Redis on the cache_version of its last successful health check: wait until it has one (its
    // datastream client is private; isConnected() is true once /ready said ready).
    const ds = (client as unknown as { datastreamClient?: { isConnected(): boolean } }).datastreamClient;
    assert.ok(ds, "the SDK started its datastream client");
    await waitFor(() => ds.isConnected(), { what: "the SDK to see the replicator ready" });
    const probe = await waitFor(
      async () => {
        const r = await check({}, "fault-probe");
        return r.value === true ? r : undefined;
      },
      { what: "the SDK to read fault-probe = true", timeoutMs: 10_000 },
    );
    assert.equal(probe.err, undefined, probe.reason);
    assert.doesNotMatch(probe.reason, /RULES_ENGINE/, probe.reason);
    const eu = await check({ company: { domain: "acme.example" } }, "eu-data-residency");
    assert.equal(eu.value, true, `eu-data-residency for acme: ${eu.reason}`);
    assert.equal(eu.companyId, "comp_acme");
    const other = await check({ company: { domain: "globex.example" } }, "eu-data-residency");
    assert.equal(typeof other.value, "boolean");
    assert.doesNotMatch(other.reason, /RULES_ENGINE/, other.reason);
    assert.deepEqual(apiCalls, [], "no check fell back to the REST API");
  } finally {
    await client.close();
    await redisClient.quit().catch(() => undefined);
    await new Promise((resolve) => stub.close(resolve));
  }
}

/** The replicator's resident memory in bytes, from /metrics. */
export async function rssBytes(rep: ReplicatorProcess): Promise<number> {
  const text = await rep.metrics();
  const m = /^process_resident_memory_bytes (\S+)$/m.exec(text);
  assert.ok(m, "process_resident_memory_bytes in /metrics");
  return Number(m[1]);
}

export function logsMatching(rep: ReplicatorProcess, re: RegExp): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of rep.logs) {
    if (!re.test(line)) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      out.push({ raw: line });
    }
  }
  return out;
}

/** Polls /ready in the background and records every status seen (0: no answer). */
/** Pollers started by watchReady, stopped by Stack.close() if a failed test left them running. */
const pollers = new Set<() => Promise<void>>();

/**
 * Polls /ready in the background and records every status seen (0: no answer). Stops by itself when the replicator
 * exits; Stack.close() stops any left running (a failed assertion skips the test's own stop()).
 */
export function watchReady(rep: ReplicatorProcess, intervalMs = 25): { seen: Set<number>; stop(): Promise<void> } {
  const seen = new Set<number>();
  let running = true;
  const loop = (async () => {
    while (running && rep.process.exitCode === null && rep.process.signalCode === null) {
      try {
        seen.add((await rep.ready()).status);
      } catch {
        seen.add(0);
      }
      await new Promise((r) => setTimeout(r, intervalMs).unref());
    }
  })();
  const stop = async () => {
    running = false;
    pollers.delete(stop);
    await loop;
  };
  pollers.add(stop);
  return { seen, stop };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Sends `changes` in chunks in the background, `pauseMs` apart; resolves with the last stream id. */
export function background(stack: Stack, changes: BulkChange[], chunk = 200, pauseMs = 20): Promise<string> {
  const sending = (async () => {
    let last = "";
    for (let i = 0; i < changes.length && !stack.closed; i += chunk) {
      last = (await stack.admin<{ stream_id: string }>("POST", "/bulk", { changes: changes.slice(i, i + chunk) }))
        .stream_id;
      if (pauseMs > 0) await sleep(pauseMs);
    }
    return last;
  })();
  // A test that fails before awaiting it must not turn its late failure into an unhandled rejection.
  sending.catch(() => undefined);
  return sending;
}

export interface RestProxy {
  /** The URL to give the replicator as SCHEMATIC_API_URL. */
  url: string;
  /** Run before each `GET /companies/count` is forwarded, while set: an upstream change at an exact moment of a load. */
  beforeCount: (() => Promise<void>) | undefined;
  /** `GET /companies/count` requests forwarded so far. */
  counts: number;
  close(): Promise<void>;
}

/** An HTTP proxy in front of the emulator's REST API (every request forwarded as it is). */
export async function startRestProxy(target: string): Promise<RestProxy> {
  const proxy: RestProxy = { url: "", beforeCount: undefined, counts: 0, close: async () => {} };
  const server = createServer((req, res) => {
    const forward = async () => {
      if (req.method === "GET" && req.url?.startsWith("/companies/count")) {
        await proxy.beforeCount?.();
        proxy.counts++;
      }
      const upstream = await fetch(`${target}${req.url}`, {
        method: req.method,
        headers: { "x-schematic-api-key": String(req.headers["x-schematic-api-key"] ?? "") },
      });
      res.writeHead(upstream.status, { "content-type": upstream.headers.get("content-type") ?? "application/json" });
      res.end(Buffer.from(await upstream.arrayBuffer()));
    };
    forward().catch((err: unknown) => {
      res.writeHead(502);
      res.end(String(err));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  proxy.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  proxy.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return proxy;
}

/** The example fixture plus `n` extra companies and users (so a load spans many pages). */
export function bigFixture(n: number): Fixture {
  const f = fixture();
  const tpl = templates(f);
  for (let i = 0; i < n; i++) {
    f.companies.push(company(tpl.company, `big-co-${String(i).padStart(4, "0")}`, i % 2 ? "eu" : "us"));
    f.users.push(user(tpl.user, `big-us-${String(i).padStart(4, "0")}`, i % 2 ? "admin" : "viewer"));
  }
  return f;
}

/** How every fault test ends: the marker change, zero differences, the SDK reading it, nothing dropped. */
export async function endsConsistent(stack: Stack, timeoutMs = 40_000): Promise<void> {
  await markerChange(stack);
  await stack.waitConsistent(timeoutMs);
  await sdkSeesMarker(stack);
  assert.equal(await stack.debugNumber("messages.dropped"), 0);
}
