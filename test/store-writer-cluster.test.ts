/**
 * The batch writer on a real Redis Cluster (three masters with a replica each), with what keeps a deposed writer from
 * writing there (issue 13, defect 6): its own named connections, closed by its successor on every master before the
 * successor writes; a lease check before every pipeline it sends, redirected ones included; nothing left to the
 * cluster client's queues; and, for an ACL user that may not list or kill connections, writes all the same (with a
 * warning). The end-to-end partition is test/ha-cluster-partition.test.ts.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Cluster } from "ioredis";
import type { RedisConfig } from "../src/config/types.js";
import { keySlot } from "../src/store/cluster.js";
import { createRedis, type RedisClient, redisConnectionName, writerConnectionName } from "../src/store/connect.js";
import { LeaseLostError, otherWriterConnections, StoreWriter, type WriteOp } from "../src/store/writer.js";
import { type RedisClusterServer, startCluster } from "./helpers/cluster.js";
import { command } from "./helpers/procs.js";
import { waitFor } from "./helpers/redis.js";

/** Keys on every master: 60 keys spread over the slots. */
const KEYS = Array.from({ length: 60 }, (_, i) => `schematic:company:test:wc-${i}`);
const sets = (value: string): WriteOp[] => KEYS.map((key) => ({ op: "set", key, value }));

describe("StoreWriter on a Redis Cluster", { timeout: 120_000 }, () => {
  let cluster: RedisClusterServer;
  let db: Cluster;
  const clients: RedisClient[] = [];
  const writers: StoreWriter[] = [];

  const config = (): RedisConfig => ({
    topology: {
      kind: "cluster",
      nodes: cluster.seeds.split(",").map((a) => ({ host: "127.0.0.1", port: Number(a.split(":")[1]) })),
    },
    maxRetries: 1,
    dialTimeoutMs: 2000,
    readTimeoutMs: 2000,
    writeTimeoutMs: 2000,
    maxRedirects: 5,
    routeByLatency: false,
    keyPrefix: "schematic:",
  });
  /** An instance's shared client, named like the service's. */
  const instance = (id: string): RedisClient => {
    const c = createRedis(config(), { connectionName: redisConnectionName(id) });
    clients.push(c);
    return c;
  };
  const writer = (client: RedisClient, id: string, token: () => string | undefined = () => "t"): StoreWriter => {
    const w = new StoreWriter(client, {
      ttlMs: 0,
      lease: { key: "schematic:datastream:writer_lock", token },
      connectionName: writerConnectionName(id),
    });
    writers.push(w);
    return w;
  };
  /** The client names connected to each master. */
  const namesPerMaster = async (): Promise<string[][]> =>
    await Promise.all(
      (await cluster.masters()).map(async (m) => {
        const list = String(await command(m.port, ["CLIENT", "LIST", "TYPE", "normal"]));
        return list.split("\n").flatMap((line) => /(?:^|\s)name=(\S+)/.exec(line)?.[1] ?? []);
      }),
    );

  before(async () => {
    cluster = await startCluster({ masters: 3 });
    db = cluster.client();
  });

  after(async () => {
    for (const w of writers) w.close();
    for (const c of clients) c.disconnect();
    await cluster?.stop();
  });

  it("finds other writers' connections in CLIENT LIST, not its own, not other clients'", () => {
    const list = [
      "id=7 addr=127.0.0.1:50001 laddr=127.0.0.1:7000 fd=8 name=schematic-replicator-writer:host-1 age=3",
      "id=8 addr=127.0.0.1:50002 laddr=127.0.0.1:7000 fd=9 name=schematic-replicator-writer:host-2 age=3",
      "id=9 addr=127.0.0.1:50003 laddr=127.0.0.1:7000 fd=10 name=schematic-replicator:host-1 age=3",
      "id=10 addr=127.0.0.1:50004 laddr=127.0.0.1:7000 fd=11 name= age=3",
      "id=11 addr=127.0.0.1:50005 laddr=127.0.0.1:7000 fd=12 name=ioredis-cluster(refresher):schematic-replicator-writer:host-1 age=0",
      "",
    ].join("\n");
    assert.deepEqual(otherWriterConnections(list, "schematic-replicator-writer:host-2"), [
      { id: "7", name: "schematic-replicator-writer:host-1" },
    ]);
  });

  it("a new writer closes the old writer's connections on every master before writing, and nobody else's", async () => {
    const oldWriter = writer(instance("host-old"), "host-old");
    await oldWriter.apply(sets("old"));
    await oldWriter.readMany(KEYS); // through the instance's shared client, on every master
    const standby = instance("host-standby");
    for (const key of KEYS) await standby.get(key);
    const before = await namesPerMaster();
    for (const names of before) assert.ok(names.includes("schematic-replicator-writer:host-old"), names.join(" "));

    const newWriter = writer(instance("host-new"), "host-new");
    await newWriter.apply(sets("new"));
    const afterwards = await namesPerMaster();
    assert.equal(afterwards.length, 3);
    for (const names of afterwards) {
      assert.ok(!names.includes("schematic-replicator-writer:host-old"), `the old writer's are gone: ${names}`);
      assert.ok(names.includes("schematic-replicator-writer:host-new"), names.join(" "));
      // The instances' shared connections (lease, reads, a standby's probes) are left alone.
      assert.ok(names.includes("schematic-replicator:host-old"), names.join(" "));
    }
    for (const names of afterwards) assert.ok(names.includes("schematic-replicator:host-standby"), names.join(" "));
    for (const key of KEYS) assert.equal(await db.get(key), "new");
  });

  it("a redirected write is sent again only while the lease is still held", async () => {
    // The writer checks the lease on entry and before every pipeline it sends: let it hold for the first two checks.
    let checks = 0;
    const w = writer(instance("host-moved"), "host-moved", () => (checks++ < 2 ? "t" : undefined));
    const key = KEYS[0]!;
    await w.apply([{ op: "set", key, value: "before" }]);
    // A slot map made stale by a migration the writer has not seen: its first send is answered MOVED.
    await new Promise((resolve) => db.refreshSlotsCache(resolve));
    const from = db.slots[keySlot(key)]![0]!;
    const to = (await cluster.masters()).find((m) => m.addr !== from)!;
    await cluster.migrateSlot(keySlot(key), to.addr);
    const moved = await movedCount();

    checks = 0;
    await assert.rejects(w.apply([{ op: "set", key, value: "after" }]), LeaseLostError);
    assert.ok((await movedCount()) > moved, "the first send was redirected");
    assert.equal(await db.get(key), "before", "nothing written once the lease was lost");

    checks = 0;
    await w.apply([{ op: "set", key, value: "after" }]);
    assert.equal(await db.get(key), "after", "with the lease, the write follows the redirect");
  });

  it("an ACL user without CLIENT LIST/KILL: the writer writes all the same, and says it cannot close others", async () => {
    for (const n of cluster.nodes) {
      await command(n.port, ["ACL", "SETUSER", "limited", "on", ">pw", "~*", "+@all", "-client|list", "-client|kill"]);
    }
    const warnings: string[] = [];
    const log = { debug() {}, info() {}, warn: (_: object, msg?: string) => warnings.push(String(msg)), error() {} };
    const client = createRedis({ ...config(), username: "limited", password: "pw" }, { log });
    clients.push(client);
    const w = new StoreWriter(client, { ttlMs: 0, connectionName: writerConnectionName("host-limited"), log });
    writers.push(w);
    await w.apply(sets("limited"));
    for (const key of KEYS) assert.equal(await db.get(key), "limited");
    assert.equal(warnings.filter((m) => m.includes("CLIENT LIST/KILL not allowed")).length, 1, warnings.join("\n"));
  });

  it("a closed writer writes nothing more, and its connections are gone", async () => {
    const w = writer(instance("host-closed"), "host-closed");
    await w.apply(sets("closed"));
    w.close();
    await assert.rejects(w.apply(sets("after-close")), LeaseLostError);
    await waitFor(async () => !(await namesPerMaster()).flat().includes("schematic-replicator-writer:host-closed"), {
      what: "the closed writer's connections to go",
    });
    for (const key of KEYS) assert.equal(await db.get(key), "closed");
  });

  /** MOVED errors answered by the masters so far (INFO errorstats). */
  const movedCount = async (): Promise<number> => {
    let total = 0;
    for (const m of await cluster.masters()) {
      const info = String(await command(m.port, ["INFO", "errorstats"]));
      total += Number(/errorstat_MOVED:count=(\d+)/.exec(info)?.[1] ?? 0);
    }
    return total;
  };
});
