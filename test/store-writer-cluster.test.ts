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
import { entityOps, foldEntity, storedKeys } from "../src/replication/fold.js";
import type { EntityJob } from "../src/replication/jobs.js";
import { keySlot, scanEveryMaster } from "../src/store/cluster.js";
import {
  createRedis,
  namedDuplicate,
  type RedisClient,
  redisConnectionName,
  waitForRedis,
  writerConnectionName,
} from "../src/store/connect.js";
import { saveCursor } from "../src/store/cursor.js";
import { KeyScheme } from "../src/store/keys.js";
import { LeaseLostError, otherWriterConnections, StoreWriter, type WriteOp } from "../src/store/writer.js";
import { type RedisClusterServer, startCluster } from "./helpers/cluster.js";
import { templates } from "./helpers/faults.js";
import { command } from "./helpers/procs.js";
import { failSocketTwice, waitFor } from "./helpers/redis.js";

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

  it("a second error on a node connection's socket (a TLS alert, then a reset) is caught, also on a duplicate", async () => {
    const shared = instance("host-sockets") as Cluster;
    await waitForRedis(shared, config());
    const own = namedDuplicate(shared, writerConnectionName("host-sockets"));
    try {
      for (const c of [shared, own]) {
        await Promise.all(KEYS.map((key) => c.set(key, "before")));
        const masters = c.nodes("master");
        for (const node of masters) failSocketTwice(node.stream);
        await waitFor(async () => (await Promise.all(KEYS.map((key) => c.set(key, "after")))).length === KEYS.length, {
          what: "writes on new connections",
        });
      }
    } finally {
      own.disconnect();
    }
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

  it("a deposed writer whose lease key was taken writes nothing once its successor closed its connections", async () => {
    // The old writer's lease key vanished with its master's data and another instance took it: the old writer's
    // timing still says held, and only reading the key can tell.
    const lease = "schematic:datastream:writer_lock";
    await db.set(lease, "old-token");
    const confirms: boolean[] = [];
    const confirm = async () => {
      const held = (await db.get(lease)) === "old-token";
      confirms.push(held);
      return held;
    };
    const oldClient = instance("host-deposed");
    const oldWriter = new StoreWriter(oldClient, {
      ttlMs: 0,
      lease: { key: lease, token: () => "old-token", confirm },
      connectionName: writerConnectionName("host-deposed"),
    });
    writers.push(oldWriter);
    await oldWriter.apply(sets("old"));
    assert.equal(confirms.length, 0, "no lease read while nothing fails");

    await db.set(lease, "new-token");
    const newWriter = writer(instance("host-successor"), "host-successor", () => "new-token");
    await newWriter.fenceOthers();
    for (const names of await namesPerMaster()) {
      assert.ok(!names.includes("schematic-replicator-writer:host-deposed"), `closed at takeover: ${names}`);
    }
    await newWriter.apply(sets("new"));
    await assert.rejects(oldWriter.apply(sets("late")), LeaseLostError);
    assert.ok(confirms.includes(false), "the closed connection made it read the lease key");
    for (const key of KEYS) assert.equal(await db.get(key), "new");
    await db.del(lease);
  });

  it("a control key is written only while the lease key holds the writer's token, whatever the lease's timing says", async () => {
    const lease = "schematic:datastream:writer_lock";
    const cursor = "schematic:datastream:replay_cursor";
    const client = instance("host-control");
    const ref = { key: lease, token: () => "old-token", confirm: async () => (await db.get(lease)) === "old-token" };
    await db.set(lease, "old-token");
    await saveCursor(client, cursor, "100-1", { lease: ref });
    assert.equal(await db.get(cursor), "100-1");
    await db.set(lease, "new-token");
    await assert.rejects(saveCursor(client, cursor, "200-1", { lease: ref }), LeaseLostError);
    assert.equal(await db.get(cursor), "100-1", "not written once another instance holds the lease");
    await db.del(lease);
    await db.del(cursor);
  });

  it("a batch cut short on one master never leaves a body without the lookup deletes it implies: its replay does them", async () => {
    // Company X renames its key from k1 to k2. k1 lives on one master, X's body on another.
    await new Promise((resolve) => db.refreshSlotsCache(resolve));
    const master = (key: string) => db.slots[keySlot(key)]![0]!;
    const scheme = new KeyScheme("schematic:", "test");
    const id = Array.from({ length: 200 }, (_, i) => `cut-${i}`).find(
      (x) => master(scheme.companyId(x)) !== master(scheme.companyLookups("slug", `${x}-k1`)[0]!),
    )!;
    const [body, k1, k2] = [scheme.companyId(id), `${id}-k1`, `${id}-k2`];
    const lookup1 = scheme.companyLookups("slug", k1)[0]!;
    const lookup2 = scheme.companyLookups("slug", k2)[0]!;
    const company = (slug: string) => ({ ...structuredClone(templates().company), id, keys: { slug } });
    const rename = (stored: string | null): WriteOp[] => {
      const job = { kind: "company", id, op: "full", data: company(k2), tracked: [], source: "stream", order: 1 };
      return entityOps(
        scheme,
        "company",
        id,
        storedKeys("company", stored),
        foldEntity("company", null, [job as EntityJob]),
      );
    };
    const w = writer(instance("host-cut"), "host-cut");
    await w.apply(
      entityOps(
        scheme,
        "company",
        id,
        null,
        foldEntity("company", null, [
          { kind: "company", id, op: "full", data: company(k1), tracked: [], source: "stream", order: 0 },
        ]),
      ),
    );
    assert.equal(await db.get(lookup1), JSON.stringify(id));

    // k1's master refuses the compare-and-delete (EVAL): the batch fails there, as one cut short by a failover.
    const port = Number(master(lookup1).split(":")[1]);
    await command(port, ["ACL", "SETUSER", "default", "-eval"]);
    try {
      await assert.rejects(w.apply(rename(await db.get(body))));
    } finally {
      await command(port, ["ACL", "SETUSER", "default", "+eval"]);
    }
    assert.deepEqual(JSON.parse((await db.get(body))!).keys, { slug: k1 }, "the body waits for the lookup deletes");

    // The next writer replays the change from the body it finds: the delete is derived again.
    await w.apply(rename(await db.get(body)));
    assert.equal(await db.get(lookup1), null, "k1 no longer finds X");
    assert.equal(await db.get(lookup2), JSON.stringify(id));
    assert.deepEqual(JSON.parse((await db.get(body))!).keys, { slug: k2 });
  });

  it("a scan of every master fails, to be started over, when a slot moves during it (its keys could be missed)", async () => {
    const pattern = "schematic:company:test:wc-*";
    const scan = scanEveryMaster(db, pattern, 1);
    const first = await scan.next();
    assert.equal(first.done, false);
    // A key on the master scanned last moves to the one scanned first: a plain scan of each master would miss it.
    const firstMaster = db.slots[0]![0]!;
    const lastMaster = db.slots[16383]![0]!;
    assert.notEqual(firstMaster, lastMaster);
    const moving = KEYS.find((k) => db.slots[keySlot(k)]![0] === lastMaster)!;
    await cluster.migrateSlot(keySlot(moving), firstMaster);
    await assert.rejects(async () => {
      for (let r = await scan.next(); !r.done; r = await scan.next());
    }, /slot map changed/);
    const found: string[] = [];
    for await (const batch of scanEveryMaster(db, pattern)) found.push(...batch);
    assert.deepEqual(found.sort(), [...KEYS].sort(), "a scan started again finds every key");
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

describe("StoreWriter on a Redis Cluster that is down when a writer starts", { timeout: 120_000 }, () => {
  let cluster: RedisClusterServer;

  before(async () => {
    cluster = await startCluster({ masters: 3 });
  });
  after(async () => {
    await cluster?.stop();
  });

  it("closing the other writers' connections fails within the dial timeout instead of waiting for ever; it works once the cluster is back", async () => {
    const seeds = cluster.seeds.split(",").map((a) => ({ host: "127.0.0.1", port: Number(a.split(":")[1]) }));
    const client = createRedis({
      topology: { kind: "cluster", nodes: seeds },
      maxRetries: 1,
      dialTimeoutMs: 2000,
      readTimeoutMs: 1000,
      writeTimeoutMs: 1000,
      maxRedirects: 5,
      routeByLatency: false,
      keyPrefix: "schematic:",
    });
    const writer = new StoreWriter(client, {
      ttlMs: 0,
      lease: { key: "schematic:datastream:writer_lock", token: () => "t" },
      connectionName: writerConnectionName("late"),
    });
    // A master and its replica stop: no failover can serve its slots, so the cluster says cluster_state:fail and the
    // cluster client's ready check fails (ioredis then reconnects, and its connect() promise never settles).
    const topology = await cluster.topology();
    const master = topology.find((n) => n.role === "master" && n.slots > 0)!;
    const replica = topology.find((n) => n.masterId === master.id)!;
    const stopped = cluster.nodes.filter((n) => n.port === master.port || n.port === replica.port);
    assert.equal(stopped.length, 2);
    for (const n of stopped) n.process.kill("SIGSTOP");
    try {
      const live = topology.find((n) => n.port !== master.port && n.port !== replica.port)!;
      await waitFor(async () => /cluster_state:fail/.test(String(await command(live.port, ["CLUSTER", "INFO"]))), {
        what: "the cluster to fail",
      });
      const outcome = await Promise.race([
        writer.fenceOthers().then(
          () => "resolved",
          () => "rejected",
        ),
        new Promise((resolve) => setTimeout(() => resolve("still waiting"), 20_000)),
      ]);
      assert.equal(outcome, "rejected", "a call the caller can retry, not one that never returns");
    } finally {
      for (const n of stopped) n.process.kill("SIGCONT");
    }
    await cluster.waitHealthy({ replicas: false });
    await waitFor(
      async () =>
        await writer.fenceOthers().then(
          () => true,
          () => false,
        ),
      { what: "the writer's cluster client to be ready again" },
    );
    await writer.apply([{ op: "set", key: "schematic:company:test:late", value: "1" }]);
    assert.equal(await client.get("schematic:company:test:late"), "1");
    writer.close();
    client.disconnect();
  });
});
