/**
 * Redis Cluster, end to end with real processes: three masters with a replica each (redis-server
 * --cluster-enabled, joined by redis-cli --cluster create), the emulator (examples/fixture.json), the replicator on
 * REDIS_CLUSTER_ADDRS (with REDIS_CLUSTER_MODE, REDIS_MAX_REDIRECTS and REDIS_ROUTE_BY_LATENCY set), and the
 * official TypeScript SDK reading through a node-redis cluster client (`createCluster`).
 *
 * - The keyspace equals the fixture (diffRedis over every master) and is spread over all three masters; the SDK
 *   table of test/e2e-sdk.test.ts passes unchanged through the cluster client (and through the Go SDK's cluster
 *   client, skipped naming the cause when the Go module proxy does not serve the SDK).
 * - Cleanup of other cache versions reaches every master and keeps everything else; a flags snapshot deletes the
 *   flags missing from it on every master.
 * - A resharding during a burst of changes (slots migrating: ASK, then MOVED to a stale slot map) loses nothing,
 *   reloads nothing, and the cluster really redirected the replicator.
 * - SIGKILL of the master holding the writer lease during a burst, until its replica is promoted, loses nothing;
 *   the SDK (on a new cluster client) passes the table again and reads a change made after the failover.
 * - Unreachable cluster nodes: exit 1 with one line naming the nodes and the cause.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { Cluster } from "ioredis";
import { createCluster } from "redis";
import { loadFixtureFile, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import type { Fixture } from "../src/model/wire.js";
import { keySlot } from "../src/store/cluster.js";
import { type RedisClusterServer, startCluster } from "./helpers/cluster.js";
import {
  admin,
  checkSdk,
  DEFAULT_CACHE_VERSION,
  defaultKeys,
  jsonLogs,
  type SdkClient,
  startApiStub,
  startDirectSdk,
} from "./helpers/e2e.js";
import { churn, region } from "./helpers/faults.js";
import { buildGoChecker, GoSdkUnavailableError, runGoChecks } from "./helpers/go-sdk.js";
import { parseInfo } from "./helpers/procs.js";
import { freePort, waitFor } from "./helpers/redis.js";
import { assertWaitsForRedis, type ReplicatorProcess, startReplicator, testEnv } from "./helpers/replicator.js";
import { allChecks } from "./helpers/sdk-table.js";
import { assertSdkTable, burst, type SdkOnRedis, startSdkOn, waitEqual } from "./helpers/topology.js";

const run = promisify(execFile);
const FIXTURE_FILE = fileURLToPath(new URL("../examples/fixture.json", import.meta.url));
const keys = defaultKeys();
const LEASE_KEY = "schematic:datastream:writer_lock";

describe("Redis Cluster: three masters with a replica each", () => {
  const fixture: Fixture = loadFixtureFile(FIXTURE_FILE);
  let cluster: RedisClusterServer;
  let db: Cluster;
  let emu: RunningEmulator;
  let rep: ReplicatorProcess;
  let sdkR: SdkOnRedis | undefined;
  let direct: SdkClient | undefined;
  const logs = () => rep?.logs ?? [];

  /** Cache keys per master (SCAN on each), keyed by the master's address. */
  const keysPerMaster = async (pattern: string): Promise<Map<string, string[]>> => {
    const out = new Map<string, string[]>();
    for (const node of db.nodes("master")) {
      const found: string[] = [];
      let cursor = "0";
      do {
        const [next, batch] = await node.scan(cursor, "MATCH", pattern, "COUNT", 1000);
        found.push(...batch);
        cursor = next;
      } while (cursor !== "0");
      out.set(`${node.options.host}:${node.options.port}`, found);
    }
    return out;
  };

  /** Sum over the live masters of the MOVED and ASK errors Redis answered (INFO errorstats). */
  const redirects = async (): Promise<number> => {
    let total = 0;
    for (const node of db.nodes("master")) {
      const info = parseInfo(String(await node.call("INFO", "errorstats")));
      for (const name of ["errorstat_MOVED", "errorstat_ASK"]) {
        const m = /count=(\d+)/.exec(info[name] ?? "");
        if (m) total += Number(m[1]);
      }
    }
    return total;
  };

  before(async () => {
    [cluster, emu] = await Promise.all([startCluster({ masters: 3 }), startEmulator({ fixture })]);
    db = cluster.client();
    rep = await startReplicator(
      testEnv({
        SCHEMATIC_API_URL: emu.url,
        REDIS_CLUSTER_ADDRS: cluster.seeds,
        REDIS_CLUSTER_MODE: "true",
        REDIS_MAX_REDIRECTS: "5",
        REDIS_ROUTE_BY_LATENCY: "true",
        CACHE_CLEANUP_INTERVAL: "1s",
        // Long enough to ride through a failover of the master holding the lease without stepping down.
        WRITER_LOCK_TTL: "10s",
      }),
    );
    await rep.waitReady();
  });

  after(async () => {
    await sdkR?.close();
    await direct?.close();
    await rep?.stop();
    await emu?.close();
    await cluster?.stop();
  });

  test("the replicator loads the fixture into every master; Redis equals the source", { timeout: 60_000 }, async () => {
    await waitEqual(db, emu.url, { logs });
    const perMaster = await keysPerMaster(keys.scanPattern("company"));
    assert.equal(perMaster.size, 3);
    for (const [addr, found] of perMaster) assert.ok(found.length > 0, `master ${addr} holds company keys`);
    const ready = await rep.ready();
    assert.equal(ready.status, 200);
    assert.equal(ready.body.role, "writer");
    assert.equal(ready.body.cache_version, DEFAULT_CACHE_VERSION);
    // REDIS_ROUTE_BY_LATENCY is accepted; the client cannot route by latency, and says so.
    assert.ok(
      jsonLogs(rep.logs).some((l) => String(l.msg).includes("REDIS_ROUTE_BY_LATENCY")),
      "a log line explains REDIS_ROUTE_BY_LATENCY",
    );
  });

  test("the official TypeScript SDK reads the cluster through createCluster: the end-to-end table passes", {
    timeout: 60_000,
  }, async () => {
    const rootNodes = cluster.seeds.split(",").map((addr) => ({ url: `redis://${addr}` }));
    [sdkR, direct] = await Promise.all([
      startSdkOn(createCluster({ rootNodes }), `${rep.url}/ready`, DEFAULT_CACHE_VERSION),
      startDirectSdk(emu.url, "legacy-export"),
    ]);
    await assertSdkTable(sdkR, direct, fixture);
  });

  test("the Go SDK reads the cluster through its cluster client: the same table", { timeout: 600_000 }, async (t) => {
    let bin: string;
    try {
      bin = await buildGoChecker();
    } catch (err) {
      if (err instanceof GoSdkUnavailableError) {
        const cause = err.message.split("\n").find((l) => /403|404|410/.test(l)) ?? err.message.split("\n")[0];
        t.skip(
          `Go SDK unavailable: the Go module proxy refuses github.com/schematichq/schematic-go (${cause?.trim()})`,
        );
        return;
      }
      throw err;
    }
    const stub = await startApiStub();
    try {
      const checks = allChecks();
      const out = await runGoChecks(bin, {
        redis_addr: "",
        redis_cluster_addrs: cluster.seeds.split(","),
        health_url: `${rep.url}/ready`,
        api_url: stub.url,
        wait: "ready",
        checks: checks.map((c) => ({
          name: c.name,
          flag: c.flag,
          company: c.row.context.company ?? null,
          user: c.row.context.user ?? null,
        })),
      });
      assert.equal(out.cache_version, DEFAULT_CACHE_VERSION);
      const problems: string[] = [];
      out.results.forEach((r, i) => {
        const c = checks[i]!;
        if (r.error || r.api_calls?.length) problems.push(`${c.name}: ${r.error} ${r.api_calls?.join(", ") ?? ""}`);
        if (r.value !== c.expected) problems.push(`${c.name}: Go says ${r.value}, written by hand: ${c.expected}`);
        if (c.row.context.company && !r.company_id) problems.push(`${c.name}: Go did not find the company`);
      });
      assert.equal(out.results.length, checks.length);
      assert.deepEqual(problems, []);
      assert.deepEqual(stub.calls, [], "the Go SDK never called the API");
    } finally {
      await stub.close();
    }
  });

  test("cleanup removes other versions' keys on every master and nothing else", { timeout: 60_000 }, async () => {
    // Keys of an old version, on every master (slots are spread: 60 keys land on all three).
    const old = Array.from({ length: 60 }, (_, i) => `schematic:company:0ldvers1:comp_${i}`);
    const unrelated = "unrelated:company:0ldvers1:x";
    for (const k of old) await db.set(k, "{}");
    await db.set(unrelated, "keep");
    const owners = new Set(old.map((k) => db.slots[keySlot(k)]?.[0]));
    assert.equal(owners.size, 3, "the old keys sit on all three masters");
    await waitFor(
      async () => [...(await keysPerMaster("schematic:company:0ldvers1:*")).values()].every((l) => l.length === 0),
      {
        timeoutMs: 20_000,
        what: "cleanup to remove the old version's keys from every master",
      },
    );
    assert.equal(await db.get(unrelated), "keep");
    await waitEqual(db, emu.url, { logs });
  });

  test("a flags snapshot removes flags missing from it on every master", { timeout: 60_000 }, async () => {
    // Flag keys nobody publishes, on all three masters: the next snapshot (after a reconnect) must find them all.
    const ghosts = Array.from({ length: 30 }, (_, i) => keys.flag(`ghost-flag-${i}`));
    for (const k of ghosts) await db.set(k, JSON.stringify({ id: "x", key: "x", rules: [], default_value: true }));
    assert.equal(new Set(ghosts.map((k) => db.slots[keySlot(k)]?.[0])).size, 3, "ghost flags on all three masters");
    await admin(emu.url, "POST", "/disconnect", { code: 1012 });
    await waitFor(async () => (await Promise.all(ghosts.map((k) => db.exists(k)))).every((n) => n === 0), {
      timeoutMs: 20_000,
      what: "the next flags snapshot to delete the flags missing from it on every master",
    });
    await waitEqual(db, emu.url, { logs });
  });

  test("a resharding during a burst of changes (ASK, then MOVED) loses nothing, and reloads nothing", {
    timeout: 90_000,
  }, async () => {
    const before = await redirects();
    const reloads = async () => Number(((await rep.debug()).replay as Record<string, unknown>).full_reloads);
    const reloadsBefore = await reloads();
    const [from, to] = await cluster.masters();
    assert.ok(from && to);
    const changes = churn(900, { tag: "reshard", seed: 11, entities: 150 });
    const sending = burst(emu.url, changes, 30, 40);
    await new Promise((r) => setTimeout(r, 300));
    await run(
      "redis-cli",
      [
        "--cluster",
        "reshard",
        from.addr,
        "--cluster-from",
        from.id,
        "--cluster-to",
        to.id,
        "--cluster-slots",
        "1500",
        "--cluster-yes",
      ],
      { timeout: 60_000, maxBuffer: 64 * 1024 * 1024 },
    );
    await sending;
    await waitEqual(db, emu.url, { logs, what: "Redis to equal the emulator after the resharding" });
    assert.ok((await redirects()) > before, "the masters answered MOVED or ASK (the replicator was redirected)");
    await cluster.waitHealthy();
    // Slots carry their keys, the canaries of src/store/canary.ts included: no master lost data, so no full reload.
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(await reloads(), reloadsBefore, "no full reload for a resharding");
  });

  test("SIGKILL of a master during a burst: its replica takes over and nothing is lost", {
    timeout: 120_000,
  }, async () => {
    // The master that holds the writer lease: the hardest one to lose (the cursor's may be another).
    await new Promise((resolve) => db.refreshSlotsCache(resolve));
    const leaseOwner = db.slots[keySlot(LEASE_KEY)]![0]!;
    assert.ok(await db.get(LEASE_KEY), "the lease is held");
    const changes = churn(1200, { tag: "failover", seed: 7, entities: 150 });
    const sending = burst(emu.url, changes, 25, 40);
    await new Promise((r) => setTimeout(r, 500));
    const promoted = await cluster.killMaster(leaseOwner);
    await sending;
    await waitEqual(db, emu.url, { logs, what: `Redis to equal the emulator after ${promoted} took over` });
    assert.equal((await rep.ready()).status, 200);

    // The SDK, on a new cluster client (node-redis 4 does not rediscover the slot map when a master dies: commands
    // for the dead master's slots wait forever, so an application needs a new client), passes the table again.
    await sdkR?.close();
    const rootNodes = (await cluster.masters()).map((m) => ({ url: `redis://${m.addr}` }));
    sdkR = await startSdkOn(createCluster({ rootNodes }), `${rep.url}/ready`, DEFAULT_CACHE_VERSION);
    assert.ok(direct);
    await assertSdkTable(sdkR, direct, fixture);

    // A change after the failover reaches the SDK.
    await admin(emu.url, "PATCH", "/companies/comp_acme", {
      traits: [
        region("eu"),
        { trait_definition: { id: "trdf_seats", comparable_type: "int", entity_type: "company" }, value: "35" },
      ],
    });
    const sdk = sdkR;
    await waitFor(
      async () => (await checkSdk(sdk.client, { company: { domain: "acme.example" } }, "eu-data-residency")).value,
      {
        timeoutMs: 30_000,
        what: "the SDK to read the change made after the failover",
      },
    );
    await waitEqual(db, emu.url, { logs });
    assert.deepEqual(sdk.stub.calls, [], "the SDK never called the API");
  });

  test("unreachable cluster nodes: waited for, /health naming them and the cause", { timeout: 60_000 }, async () => {
    const [a, b] = [await freePort(), await freePort()];
    await assertWaitsForRedis(
      {
        SCHEMATIC_API_KEY: "k",
        SCHEMATIC_API_URL: emu.url,
        LOG_FORMAT: "json",
        REDIS_CLUSTER_ADDRS: `127.0.0.1:${a},127.0.0.1:${b}`,
        REDIS_MAX_RETRIES: "1",
        REDIS_DIAL_TIMEOUT: "500ms",
      },
      new RegExp(`^Redis at cluster 127\\.0\\.0\\.1:${a},127\\.0\\.0\\.1:${b} is unreachable: .*ECONNREFUSED`),
    );
  });
});
