/**
 * Data lost on one master of a Redis Cluster (issue 13, defect 3), with real processes: three masters with a replica
 * each, the emulator (examples/fixture.json) and the replicator on REDIS_CLUSTER_ADDRS. The master that loses its
 * data holds neither the readiness marker nor the writer lease, so reading the marker alone cannot notice it.
 *
 * - FLUSHALL on that master during a stream of changes: a full reload starts, /ready is 503 until it is done, then
 *   200, and Redis equals the source again (no restart).
 * - The same master SIGKILLed and restarted empty (no persistence; same node id and slots, its replica kept from
 *   taking over): the same.
 * - A resharding that moves the slot of one of that master's canaries (src/store/canary.ts) elsewhere: no reload,
 *   /ready stays 200, the master gets a canary in another slot, and a later FLUSHALL on it is still noticed.
 * - A writer starting while every master kept its data resumes without a full load; one starting after a master
 *   lost its data while no writer ran notices it and reloads.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import type { Cluster } from "ioredis";
import { loadFixtureFile, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import { PER_MASTER } from "../src/store/canary.js";
import { keySlot } from "../src/store/cluster.js";
import { type RedisClusterServer, startCluster } from "./helpers/cluster.js";
import { admin, defaultKeys } from "./helpers/e2e.js";
import { churn, flag, watchReady } from "./helpers/faults.js";
import { command } from "./helpers/procs.js";
import { waitFor } from "./helpers/redis.js";
import { type ReplicatorProcess, startReplicator, testEnv } from "./helpers/replicator.js";
import { burst, waitEqual } from "./helpers/topology.js";

const FIXTURE_FILE = fileURLToPath(new URL("../examples/fixture.json", import.meta.url));
const LEASE_KEY = "schematic:datastream:writer_lock";
const keys = defaultKeys();

describe("Redis Cluster: one master loses its data (not the marker's, not the lease's)", () => {
  let cluster: RedisClusterServer;
  let db: Cluster;
  let emu: RunningEmulator;
  let rep: ReplicatorProcess;
  const logs = () => rep?.logs ?? [];
  const env = () =>
    testEnv({
      SCHEMATIC_API_URL: emu.url,
      REDIS_CLUSTER_ADDRS: cluster.seeds,
      // The cursor in the marker's slot (hash tag): the master that loses its data then holds no control key, so
      // only the canaries can tell (a lost cursor alone makes the next session load everything anyway).
      REPLAY_CURSOR_KEY: `{${keys.marker()}}:replay_cursor`,
    });

  before(async () => {
    [cluster, emu] = await Promise.all([
      startCluster({ masters: 3 }),
      startEmulator({ fixture: loadFixtureFile(FIXTURE_FILE) }),
    ]);
    db = cluster.client();
    rep = await startReplicator(env());
    await rep.waitReady();
    await waitEqual(db, emu.url, { logs });
  });

  after(async () => {
    await rep?.stop();
    await emu?.close();
    await cluster?.stop();
  });

  /** The canary keys a master serves (SCAN on it). */
  const canariesOn = async (port: number): Promise<string[]> => {
    const found: string[] = [];
    let cursor = "0";
    do {
      const [next, batch] = (await command(port, ["SCAN", cursor, "MATCH", `${keys.prefix}datastream:canary:*`])) as [
        string,
        string[],
      ];
      found.push(...batch);
      cursor = next;
    } while (cursor !== "0");
    return found;
  };

  const fullReloads = async () => Number(((await rep.debug()).replay as Record<string, unknown>).full_reloads);

  /** A master that serves neither the marker's (nor the cursor's) nor the lease's slot, and holds cache keys. */
  const bystander = async (): Promise<{ addr: string; port: number }> => {
    await new Promise((resolve) => db.refreshSlotsCache(resolve));
    const busy = new Set([keys.marker(), LEASE_KEY].map((k) => db.slots[keySlot(k)]?.[0]));
    const master = (await cluster.masters()).find((m) => !busy.has(m.addr));
    assert.ok(master, "a master without the marker and the lease");
    assert.ok(Number(await command(master.port, ["DBSIZE"])) > 0, `${master.addr} holds keys`);
    return master;
  };

  /** Runs `lose` during a stream of changes and checks the replicator rebuilt everything, /ready honest throughout. */
  const losesAndHeals = async (tag: string, lose: () => Promise<void>) => {
    const reloadsBefore = await fullReloads();
    const ready = watchReady(rep);
    // No deletes: one made upstream while the stream restarts for the reload is removed only by the eviction after a
    // converged load, which a load overlapping a stream of deletes may not reach (the next anti-entropy pass removes
    // it then). On a Cluster the keys of the intact masters outlive the loss, so such a key would linger until that
    // pass: the loader's concern, not what this suite checks.
    const changes = churn(600, { tag, seed: 41, entities: 120 }).filter((c) => c.method !== "DELETE");
    const sending = burst(emu.url, changes, 30, 40);
    await new Promise((r) => setTimeout(r, 300));
    await lose();
    await waitFor(async () => (await fullReloads()) > reloadsBefore, {
      timeoutMs: 30_000,
      what: "a full reload after the master lost its data",
    });
    await sending;
    await rep.waitReady();
    await waitEqual(db, emu.url, { logs });
    await ready.stop();
    assert.ok(ready.seen.has(503), `/ready said 503 during the reload (saw ${[...ready.seen]})`);
    assert.equal((await rep.ready()).status, 200);
    assert.equal(rep.process.exitCode, null, "healed without a restart");
  };

  test("FLUSHALL on that master: a full reload, /ready 503 then 200, Redis equals the source", {
    timeout: 120_000,
  }, async () => {
    const victim = await bystander();
    await losesAndHeals("flush-one", async () => {
      await command(victim.port, ["FLUSHALL"]);
    });
  });

  test("that master SIGKILLed and restarted empty: the same", { timeout: 120_000 }, async () => {
    const victim = await bystander();
    await losesAndHeals("restart-one", () => cluster.restartEmpty(victim.addr));
  });

  test("the slot of one of its canaries migrated away: no reload, it gets another; a later loss is still seen", {
    timeout: 120_000,
  }, async () => {
    const victim = await bystander();
    const before = await canariesOn(victim.port);
    assert.equal(before.length, PER_MASTER, `${victim.addr} serves its canaries: ${before}`);
    const moved = before[0]!;
    const other = (await cluster.masters()).find((m) => m.addr !== victim.addr)!;
    const reloadsBefore = await fullReloads();
    const ready = watchReady(rep);
    await cluster.migrateSlot(keySlot(moved), other.addr);
    await waitFor(
      async () => {
        const now = await canariesOn(victim.port);
        return now.length === PER_MASTER && !now.includes(moved);
      },
      { timeoutMs: 20_000, what: `${victim.addr} to get a canary in place of the one that moved away` },
    );
    assert.ok((await canariesOn(other.port)).includes(moved), "the canary moved with its slot");
    // A few more checks after the move: still no reload.
    await new Promise((r) => setTimeout(r, 1500));
    await ready.stop();
    assert.equal(await fullReloads(), reloadsBefore, "no full reload for a resharding");
    assert.deepEqual([...ready.seen], [200], "/ready stayed 200");

    await losesAndHeals("flush-after-move", async () => {
      await command(victim.port, ["FLUSHALL"]);
    });
  });

  test("FLUSHALL on that master during a reload (the data set still vouched for): /ready 503 at once, rebuilt", {
    timeout: 120_000,
  }, async () => {
    const victim = await bystander();
    // Slow pages: the reload runs for seconds, /ready 200 meanwhile (a server reload leaves the data in place).
    await admin(emu.url, "POST", "/faults", { rest_latency_ms: 8000, rest_fail_paths: ["/companies", "/users"] });
    const reloads = await fullReloads();
    await admin(emu.url, "POST", "/reload");
    await waitFor(async () => (await fullReloads()) > reloads, { what: "the reload" });
    assert.equal((await rep.ready()).status, 200, "ready during a server reload");
    await command(victim.port, ["FLUSHALL"]);
    await waitFor(async () => (await rep.ready()).status === 503, {
      timeoutMs: 6000, // below the pages' latency: the reload is still running
      intervalMs: 50,
      what: "/ready 503 within a few marker checks of the loss, while the reload still runs",
    });
    await admin(emu.url, "POST", "/faults", {});
    await rep.waitReady();
    // A change after the reload gives the writer a replay cursor again (the next test resumes from it).
    await admin(emu.url, "PUT", "/flags/after-the-reload", flag("after-the-reload", true));
    await waitEqual(db, emu.url, { logs });
  });

  test("a writer that starts after a restart trusts intact masters, and notices a loss that happened meanwhile", {
    timeout: 120_000,
  }, async () => {
    // No loss while no writer ran: the next one resumes from the cursor, without a full load.
    assert.equal(await rep.stop(), 0);
    rep = await startReplicator(env());
    await rep.waitReady();
    await new Promise((r) => setTimeout(r, 1500)); // several marker checks
    assert.equal(await fullReloads(), 0, "no full reload when every master kept its data");
    await waitEqual(db, emu.url, { logs });

    // A loss while no writer ran: the next one finds that master without its canaries.
    const victim = await bystander();
    assert.equal(await rep.stop(), 0);
    await command(victim.port, ["FLUSHALL"]);
    await admin(emu.url, "PUT", "/flags/after-the-loss", flag("after-the-loss", true));
    rep = await startReplicator(env());
    await waitFor(async () => (await fullReloads()) > 0, { timeoutMs: 30_000, what: "a full reload" });
    await rep.waitReady();
    await waitEqual(db, emu.url, { logs });
    assert.ok(
      rep.logs.some((l) => l.includes(`the canary keys of Redis master ${victim.addr} are gone`)),
      "the log names the master that lost its data",
    );
  });

  test("a writer whose lease key vanished and was taken by another instance finds the marker gone: it writes nothing and stands by", {
    timeout: 120_000,
  }, async () => {
    // A long lease: its renewal (every 20 s) cannot notice the loss before the marker check (every 300 ms) does.
    assert.equal(await rep.stop(), 0);
    rep = await startReplicator({ ...env(), WRITER_LOCK_TTL: "60s" });
    await rep.waitReady();
    // A FLUSHALL took the lease and the marker (here: removed by hand, whichever masters hold them), and another
    // instance took the lease at once.
    await db.set(LEASE_KEY, "other-host-1-feedface", "PX", 60_000);
    await db.del(keys.marker());
    await waitFor(async () => (await rep.health()).body.role === "standby", {
      timeoutMs: 20_000,
      what: "the deposed writer to stand by",
    });
    // Some more marker checks' time: the deposed writer writes no marker (nor anything else of a reload).
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(await db.get(keys.marker()), null, "the deposed writer wrote no marker");
    assert.equal(await db.get(LEASE_KEY), "other-host-1-feedface");
    assert.ok(!rep.logs.some((l) => l.includes("Redis lost its data")), "it did not act on the loss");
    // The other instance goes away; a writer takes over and rebuilds.
    assert.equal(await rep.stop(), 0);
    await db.del(LEASE_KEY);
    rep = await startReplicator(env());
    await rep.waitReady();
    await waitEqual(db, emu.url, { logs });
  });
});
