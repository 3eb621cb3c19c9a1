/**
 * A Cluster writer cut off from every master by a network partition, with writes in flight (issue 13, defect 6), with
 * real processes: three masters with a replica each, each behind a TCP proxy that the masters announce (so every
 * client connection goes through one), the emulator, and two replicators.
 *
 * The writer's connections are frozen while it applies a change (its commands sit in the partition), its lease lapses,
 * the other instance takes over and writes newer values of the same entities; then the partition heals and the
 * commands the old writer sent into it arrive. They must change nothing: on Cluster no server-side script can fence a
 * batch (its keys span every master), so the new writer closes the old writer's write connections on every master
 * before it writes there, and whatever was in flight on them dies with them.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import type { Cluster } from "ioredis";
import { loadFixtureFile, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import { type RedisClusterServer, startCluster } from "./helpers/cluster.js";
import { admin } from "./helpers/e2e.js";
import { company, templates } from "./helpers/faults.js";
import { waitFor } from "./helpers/redis.js";
import { type ReplicatorProcess, startReplicator, testEnv } from "./helpers/replicator.js";
import { waitEqual } from "./helpers/topology.js";

const FIXTURE_FILE = fileURLToPath(new URL("../examples/fixture.json", import.meta.url));

describe("Cluster: the writer partitioned from every master with writes in flight", () => {
  let cluster: RedisClusterServer;
  let db: Cluster;
  let emu: RunningEmulator;
  let a: ReplicatorProcess;
  let b: ReplicatorProcess;
  const logs = () => [...(a?.logs.slice(-15) ?? []), ...(b?.logs.slice(-15) ?? [])];
  const roleOf = async (r: ReplicatorProcess) => String((await r.health()).body.role);

  before(async () => {
    [cluster, emu] = await Promise.all([
      startCluster({ masters: 3, proxied: true }),
      startEmulator({ fixture: loadFixtureFile(FIXTURE_FILE) }),
    ]);
    db = cluster.client();
    const env = testEnv({ SCHEMATIC_API_URL: emu.url, REDIS_CLUSTER_ADDRS: cluster.seeds, WRITER_LOCK_TTL: "1500ms" });
    a = await startReplicator(env);
    await a.waitReady();
    b = await startReplicator(env);
    await b.waitReady();
  });

  after(async () => {
    for (const node of cluster?.nodes ?? []) node.proxy?.thaw();
    await Promise.all([a?.stop("SIGKILL"), b?.stop("SIGKILL")]);
    await emu?.close();
    await cluster?.stop();
  });

  /** The same 40 companies, all with the region `region`, in one bulk change. */
  const setRegions = async (region: string) => {
    const tpl = templates().company;
    const changes = Array.from({ length: 40 }, (_, i) => {
      const id = `part-co-${i}`;
      return { method: "PUT", path: `/companies/${id}`, body: company(tpl, id, region) };
    });
    await admin(emu.url, "POST", "/bulk", { changes });
  };

  test("the commands the old writer sent into the partition change nothing once it heals", {
    timeout: 120_000,
  }, async (t) => {
    assert.equal(await roleOf(a), "writer");
    assert.equal(await roleOf(b), "standby");
    await setRegions("us");
    await waitEqual(db, emu.url, { logs });

    // Change the companies, and cut the writer off from every master (all its connections: their names end with its
    // pid) as it writes them: the partition starts with the first write of one of them, which it holds.
    const proxies = cluster.nodes.map((n) => n.proxy!);
    const ofA = (name: string | undefined) => name?.endsWith(`-${a.process.pid}`) ?? false;
    const writesACompany = (sent: string) => /\$3\r\nset\r\n[\s\S]*part-co-/i.test(sent);
    for (const proxy of proxies) proxy.freeze(ofA, writesACompany);
    await setRegions("eu");
    const inFlight = () => proxies.map((p) => p.held()).join("");
    await waitFor(() => inFlight().includes("part-co-"), {
      timeoutMs: 10_000,
      intervalMs: 2,
      what: "the writer to send the changes (into the partition)",
    });
    for (const proxy of proxies) proxy.freeze(ofA);

    // Its lease lapses; the other instance takes over and writes newer values of the same companies.
    await waitFor(async () => (await roleOf(b)) === "writer", { timeoutMs: 30_000, what: "the standby to take over" });
    await setRegions("apac");
    await waitEqual(db, emu.url, { logs, what: "the new writer to write the newer values" });
    const stale = (inFlight().match(/part-co-\d+/g) ?? []).length;
    assert.ok(stale > 0, "the old writer's writes are still in the partition");
    t.diagnostic(`${stale} mentions of the companies in what the old writer sent into the partition`);

    // The partition heals: what the old writer sent arrives now.
    for (const proxy of proxies) proxy.thaw();
    await waitFor(async () => (await roleOf(a)) === "standby", { what: "the old writer to stand by" });
    await new Promise((r) => setTimeout(r, 2000));
    await waitEqual(db, emu.url, { logs, timeoutMs: 5000, what: "Redis to keep the new writer's values" });

    // And replication goes on with the new writer alone.
    await setRegions("us");
    await waitEqual(db, emu.url, { logs });
    assert.equal(await roleOf(b), "writer");
    assert.equal(await roleOf(a), "standby");
    assert.equal((await b.ready()).status, 200);
  });
});
