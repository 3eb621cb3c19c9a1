import assert from "node:assert/strict";
import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";
import { after, afterEach, before, beforeEach, describe, it } from "node:test";
import { Redis } from "ioredis";
import { WriterLease } from "../src/store/lease.js";
import { LeaseLostError, StoreWriter } from "../src/store/writer.js";
import { type RedisServer, startRedis, waitFor } from "./helpers/redis.js";

const KEY = "schematic:datastream:writer_lock";
const TTL = 600;

/** A TCP proxy in front of Redis that can stop forwarding (a network partition for one client only). */
async function startProxy(
  target: number,
): Promise<{ port: number; cut(): void; heal(): void; close(): Promise<void> }> {
  const sockets: Socket[] = [];
  let cut = false;
  const server: Server = createServer((client) => {
    const upstream = tcpConnect(target, "127.0.0.1");
    for (const s of [client, upstream]) {
      sockets.push(s);
      s.on("error", () => {});
      if (cut) s.pause();
    }
    client.pipe(upstream);
    upstream.pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    port,
    cut() {
      cut = true;
      for (const s of sockets) s.pause();
    },
    heal() {
      cut = false;
      for (const s of sockets) s.resume();
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

describe("WriterLease", () => {
  let server: RedisServer;
  let r: Redis;
  const leases: WriterLease[] = [];
  const extra: Redis[] = [];
  const lease = (client: Redis, owner: string, ttlMs = TTL) => {
    const l = new WriterLease(client, { key: KEY, ttlMs, owner });
    leases.push(l);
    return l;
  };

  before(async () => {
    server = await startRedis();
    r = server.client();
  });
  after(async () => {
    await server.stop();
  });
  beforeEach(async () => {
    await r.flushall();
  });
  afterEach(async () => {
    for (const l of leases.splice(0)) l.stop();
    for (const c of extra.splice(0)) c.disconnect();
  });

  it("one instance holds, the other stands by, and takes over once the holder stops renewing", async () => {
    // A longer TTL here: the holder must keep its lease through the wait even on a loaded machine (it holds while a
    // renewal was confirmed within two thirds of the TTL, so a stall of a third of it is survived).
    const ttl = 3000;
    const a = lease(r, "host-a-1", ttl);
    const acquiredA = new Promise<string>((resolve) => a.once("acquired", resolve));
    a.start();
    const tokenA = await acquiredA;
    assert.match(tokenA, /^host-a-1-[0-9a-f]{32}$/);
    assert.ok(a.holds());
    assert.equal(a.token(), tokenA);
    assert.equal(await r.get(KEY), tokenA);
    const pttl = await r.pttl(KEY);
    assert.ok(pttl > 0 && pttl <= ttl);

    const b = lease(server.client(), "host-b-2", ttl);
    b.start();
    // Past two TTLs: A keeps renewing, B keeps standing by.
    await new Promise((resolve) => setTimeout(resolve, ttl * 2));
    assert.ok(a.holds());
    assert.equal(b.holds(), false);
    assert.equal(b.token(), undefined);
    assert.equal(b.status, "standby");
    assert.equal(await r.get(KEY), tokenA);

    a.stop(); // crashes: no release, no renewals
    assert.equal(a.holds(), false);
    await waitFor(() => b.holds(), { what: "standby takes over" });
    assert.match((await r.get(KEY)) ?? "", /^host-b-2-/);
  });

  it("a holder whose lease was taken emits lost, stands by, and re-acquires when it is free", async () => {
    const a = lease(r, "host-a-1");
    a.start();
    await waitFor(() => a.holds(), { what: "acquired" });
    const lost = new Promise<{ reason: string }>((resolve) => a.once("lost", resolve));
    await r.set(KEY, "intruder", "PX", 60_000);
    assert.deepEqual(await lost, { reason: "taken" });
    assert.equal(a.holds(), false);
    assert.equal(a.status, "standby");
    await r.del(KEY);
    await waitFor(() => a.holds(), { what: "re-acquired" });
    assert.notEqual(await r.get(KEY), "intruder");
  });

  it("confirm() reads the key: true while it holds the token; another token (or none) loses the lease at once", async () => {
    const a = lease(r, "host-a-1", 60_000); // renewals 20 s apart: only confirm() can notice
    a.start();
    await waitFor(() => a.holds(), { what: "acquired" });
    assert.equal(await a.confirm(), true);
    assert.equal(a.holds(), true);
    const lost = new Promise<{ reason: string }>((resolve) => a.once("lost", resolve));
    await r.del(KEY); // the key vanished with the data (a FLUSHALL)…
    await r.set(KEY, "successor", "PX", 60_000); // …and another instance took it
    assert.equal(a.holds(), true, "the timing alone still says held");
    assert.equal(await a.confirm(), false);
    assert.deepEqual(await lost, { reason: "taken" });
    assert.equal(a.token(), undefined);
    assert.equal(await a.confirm(), false);
    await r.del(KEY);
  });

  it("holds() turns false on its own while Redis is paused, and the writer stops writing", async () => {
    const client = server.client();
    const a = lease(client, "host-a-1");
    a.start();
    await waitFor(() => a.holds(), { what: "acquired" });
    const writer = new StoreWriter(client, { ttlMs: 0, lease: { key: KEY, token: () => a.token() } });
    await writer.apply([{ op: "set", key: "k", value: "1" }]);

    const lost = new Promise<{ reason: string }>((resolve) => a.once("lost", resolve));
    server.process.kill("SIGSTOP");
    try {
      await waitFor(() => !a.holds(), { what: "holds() false while Redis is stopped" });
      // Still paused: nothing answered, yet the holder gave up on its own.
      assert.equal(a.token(), undefined);
      await assert.rejects(writer.apply([{ op: "set", key: "k", value: "2" }]), LeaseLostError);
      assert.deepEqual(await lost, { reason: "unconfirmed" });
    } finally {
      server.process.kill("SIGCONT");
    }
    // A standby never gives up: it gets the lease back once Redis answers again.
    await waitFor(() => a.holds(), { what: "re-acquired after the pause" });
    assert.equal(await r.get("k"), "1");
  });

  it("a holder cut off from Redis stops holding before a standby can take over", async () => {
    const proxy = await startProxy(server.port);
    try {
      const viaProxy = new Redis({ host: "127.0.0.1", port: proxy.port, maxRetriesPerRequest: 1 });
      viaProxy.on("error", () => {});
      extra.push(viaProxy);
      const a = lease(viaProxy, "host-a-1");
      a.start();
      await waitFor(() => a.holds(), { what: "A acquired" });
      const tokenA = a.token();
      const b = lease(server.client(), "host-b-2");
      let aHeldWhenBAcquired: boolean | undefined;
      b.on("acquired", () => {
        aHeldWhenBAcquired = a.holds();
      });
      b.start();

      proxy.cut();
      await waitFor(() => b.holds(), { what: "B takes over" });
      assert.equal(aHeldWhenBAcquired, false, "A still claimed the lease when B acquired it");
      assert.equal(a.holds(), false);

      // A reconnects later: even a write that ignored its local lease state is fenced off on the server.
      proxy.heal();
      const writer = new StoreWriter(viaProxy, { ttlMs: 0, lease: { key: KEY, token: () => tokenA } });
      await assert.rejects(writer.apply([{ op: "set", key: "late", value: "x" }]), LeaseLostError);
      assert.equal(await r.exists("late"), 0);
    } finally {
      await proxy.close();
    }
  });

  it("release deletes the key only for its owner; liveWriter reports a held lease", async () => {
    const a = lease(r, "host-a-1");
    const b = lease(server.client(), "host-b-2");
    assert.equal(await WriterLease.liveWriter(r, KEY), false);
    a.start();
    await waitFor(() => a.holds(), { what: "A acquired" });
    b.start();
    assert.equal(await WriterLease.liveWriter(r, KEY), true);
    const token = await r.get(KEY);
    assert.equal(await b.release(), false);
    assert.equal(await r.get(KEY), token);
    assert.equal(await a.release(), true);
    assert.equal(a.holds(), false);
    assert.equal(await r.exists(KEY), 0);
    assert.equal(await WriterLease.liveWriter(r, KEY), false);
    await r.set(KEY, "no-expiry");
    assert.equal(await WriterLease.liveWriter(r, KEY), false, "a lock without expiry is not a live writer");
  });
});
