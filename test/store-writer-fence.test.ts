/**
 * The fenced write path of StoreWriter on a single node (writer.ts): `WATCH lease · EVAL fence · MULTI · ops · EXEC`
 * per chunk, one pipeline. First the Redis and ioredis behaviour it relies on, checked on the installed server; then
 * that no write lands without the lease, however it was lost (another token, absent, expired, a different type,
 * changed between the fence and the EXEC), and that the connection is left clean after a failure.
 */
import assert from "node:assert/strict";
import { connect, createServer, type Server, type Socket } from "node:net";
import { after, before, beforeEach, describe, it } from "node:test";
import { Redis } from "ioredis";
import { LeaseLostError, StoredKeysChangedError, StoreWriter, type WriteOp } from "../src/store/writer.js";
import { type RedisServer, startRedis, waitFor } from "./helpers/redis.js";

const LEASE = "schematic:datastream:writer_lock";

/** Every key with its type, value and expiry, for "nothing was written" checks. */
async function snapshot(r: Redis): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const key of (await r.keys("*")).sort()) {
    const type = await r.type(key);
    const value = type === "string" ? await r.get(key) : JSON.stringify(await r.hgetall(key));
    out[key] = `${type} ${value} expires=${await r.pexpiretime(key)}`;
  }
  return out;
}

const batch: WriteOp[] = [
  { op: "set", key: "company:1", value: '{"id":"1"}' },
  { op: "set", key: "lookup:a", value: '"1"' },
  { op: "del", key: "company:old" },
  { op: "delIfEquals", key: "lookup:old", value: '"old"' },
  { op: "set", key: "schematic:datastream:replay_cursor", value: "9-9", ttl: false },
];

/** The same batch, but only its effects: for "everything was written" checks. */
async function batchApplied(r: Redis): Promise<boolean> {
  return (
    (await r.get("company:1")) === '{"id":"1"}' &&
    (await r.get("lookup:a")) === '"1"' &&
    (await r.exists("company:old", "lookup:old")) === 0 &&
    (await r.get("schematic:datastream:replay_cursor")) === "9-9"
  );
}

async function seedOld(r: Redis): Promise<void> {
  await r.set("company:old", "{}");
  await r.set("lookup:old", '"old"');
}

/**
 * A TCP proxy in front of Redis that can hold the client's bytes just before a given command (as ioredis writes it)
 * until a hook has run, once: how a test gets between the fence and the EXEC of one pipeline.
 */
interface HoldingProxy {
  port: number;
  /** Next time `command` (without arguments) is sent, forward what comes before it, run `hook`, then the rest. */
  holdBefore(
    command: string,
    hook: (ctx: { client: Socket; upstream: Socket; replies: () => string }) => Promise<void>,
  ): void;
  close(): Promise<void>;
}

async function startHoldingProxy(target: number): Promise<HoldingProxy> {
  let armed: { marker: string; hook: Parameters<HoldingProxy["holdBefore"]>[1] } | undefined;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(target, "127.0.0.1");
    sockets.add(client).add(upstream);
    for (const s of [client, upstream]) {
      s.on("error", () => undefined);
      s.on("close", () => {
        client.destroy();
        upstream.destroy();
      });
    }
    let fromServer = "";
    upstream.on("data", (d) => {
      fromServer += d.toString("latin1");
      if (!client.destroyed) client.write(d);
    });
    let holding = false;
    const queued: Buffer[] = [];
    client.on("data", (d) => {
      if (holding) {
        queued.push(d);
        return;
      }
      const text = d.toString("latin1");
      const at = armed ? text.indexOf(armed.marker) : -1;
      if (!armed || at < 0) {
        upstream.write(d);
        return;
      }
      const { hook } = armed;
      armed = undefined;
      holding = true;
      upstream.write(d.subarray(0, at));
      queued.push(d.subarray(at));
      const mark = fromServer.length;
      // Whatever the hook does (or if it fails), the held bytes go on afterwards: the test fails, it does not hang.
      void hook({ client, upstream, replies: () => fromServer.slice(mark) })
        .catch(() => undefined)
        .then(() => {
          holding = false;
          if (!upstream.destroyed) for (const q of queued.splice(0)) upstream.write(q);
        });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  return {
    port: typeof address === "object" && address ? address.port : 0,
    holdBefore(command, hook) {
      armed = { marker: `*1\r\n$${command.length}\r\n${command}\r\n`, hook };
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

describe("StoreWriter fencing (WATCH · fence · MULTI · EXEC)", { timeout: 120_000 }, () => {
  let server: RedisServer;
  let r: Redis;
  /** The writer's own connection (so that admin commands on `r` never sit inside its pipeline). */
  let w: Redis;
  before(async () => {
    server = await startRedis();
    r = server.client();
    w = server.client();
  });
  after(async () => {
    await server.stop();
  });
  beforeEach(async () => {
    await r.flushall();
    await r.config("SET", "maxmemory", "0");
  });

  describe("what the fencing relies on (Redis and ioredis)", () => {
    it("runs on Redis 6 or later", async () => {
      const version = /redis_version:(\d+)\./.exec(await r.info("server"))?.[1];
      assert.ok(Number(version) >= 6, `redis_version ${version}`);
    });

    it("aborts EXEC when the same connection modified a watched key, and when it expired", async () => {
      await r.set("watched", "a", "PX", 60_000);
      const p = r.pipeline();
      p.watch("watched");
      p.set("watched", "a", "KEEPTTL"); // same value, same connection: still a modification
      p.call("multi");
      p.set("x", "1");
      p.call("exec");
      const replies = await p.exec();
      assert.deepEqual(replies, [
        [null, "OK"],
        [null, "OK"],
        [null, "OK"],
        [null, "QUEUED"],
        [null, null],
      ]);
      assert.equal(await r.exists("x"), 0);

      // Expired between WATCH and EXEC (the server decides at EXEC time).
      const c = server.client();
      // SET and WATCH in one round trip: a key already expired when WATCH runs is not watched at all.
      await c.pipeline().set("watched", "a", "PX", 200).watch("watched").exec();
      await c.call("multi");
      await c.set("x", "1");
      await new Promise((resolve) => setTimeout(resolve, 400));
      assert.equal(await c.call("exec"), null);
      assert.equal(await r.exists("x"), 0);
      c.disconnect();
    });

    it("gives one reply per command in a pipeline with raw MULTI/EXEC: the EXEC's is the array of results", async () => {
      const p = r.pipeline();
      p.watch("k");
      p.eval("return 1", 0);
      p.call("multi");
      p.mset("a", "1", "b", "2");
      p.del("b");
      p.eval("return redis.call('GET', KEYS[1])", 1, "a");
      p.call("exec");
      p.get("a");
      assert.equal(p.length, 8);
      const replies = await p.exec();
      assert.deepEqual(replies, [
        [null, "OK"],
        [null, 1],
        [null, "OK"],
        [null, "QUEUED"],
        [null, "QUEUED"],
        [null, "QUEUED"],
        [null, ["OK", 1, "1"]],
        [null, "1"],
      ]);
      // A command failing inside EXEC is an Error in the array; the others ran.
      await r.hset("h", "f", "v");
      const q = r.pipeline();
      q.call("multi");
      q.set("c", "1");
      q.get("h");
      q.set("d", "1");
      q.call("exec");
      const [execErr, exec] = (await q.exec())![4]!;
      assert.equal(execErr, null);
      assert.ok(Array.isArray(exec));
      assert.equal(exec[0], "OK");
      assert.match(String(exec[1]), /WRONGTYPE/);
      assert.ok(exec[1] instanceof Error);
      assert.equal(await r.get("d"), "1");
    });
  });

  describe("no write without the lease", () => {
    it("writes the whole batch while the lease key holds our token, without changing the lease", async () => {
      await seedOld(r);
      await r.set(LEASE, "mine", "PX", 60_000);
      const expires = await r.pexpiretime(LEASE);
      const writer = new StoreWriter(w, { ttlMs: 0, lease: { key: LEASE, token: () => "mine" } });
      await writer.apply(batch);
      assert.ok(await batchApplied(r));
      assert.equal(await r.get(LEASE), "mine");
      assert.equal(await r.pexpiretime(LEASE), expires);
    });

    it("another holder: LeaseLostError, nothing written, the holder's lease unchanged (value and expiry)", async () => {
      await seedOld(r);
      await r.set(LEASE, "theirs", "PX", 60_000);
      const before = await snapshot(r);
      const writer = new StoreWriter(w, { ttlMs: 0, lease: { key: LEASE, token: () => "mine" } });
      await assert.rejects(writer.apply(batch), LeaseLostError);
      assert.deepEqual(await snapshot(r), before);
      // A holder without expiry keeps none.
      await r.set(LEASE, "theirs");
      await assert.rejects(writer.apply(batch), LeaseLostError);
      assert.equal(await r.pttl(LEASE), -1);
      assert.equal(await r.get(LEASE), "theirs");
      assert.equal(await r.exists("company:1"), 0);
    });

    it("absent lease key: LeaseLostError, nothing written, the key still absent", async () => {
      await seedOld(r);
      const before = await snapshot(r);
      const writer = new StoreWriter(w, { ttlMs: 60_000, lease: { key: LEASE, token: () => "mine" } });
      await assert.rejects(writer.apply(batch), LeaseLostError);
      assert.deepEqual(await snapshot(r), before);
      assert.equal(await r.exists(LEASE), 0);
      // Another instance can take it at once.
      assert.equal(await r.set(LEASE, "theirs", "PX", 60_000, "NX"), "OK");
    });

    it("expired lease (our token, past its expiry): LeaseLostError, nothing written", async () => {
      await seedOld(r);
      await r.set(LEASE, "mine", "PX", 30);
      await new Promise((resolve) => setTimeout(resolve, 80));
      const before = await snapshot(r);
      const writer = new StoreWriter(w, { ttlMs: 0, lease: { key: LEASE, token: () => "mine" } });
      await assert.rejects(writer.apply(batch), LeaseLostError);
      assert.deepEqual(await snapshot(r), before);
    });

    it("lease key of another type: LeaseLostError, nothing written, the key untouched", async () => {
      await seedOld(r);
      await r.hset(LEASE, "owner", "someone");
      await r.pexpire(LEASE, 60_000);
      const before = await snapshot(r);
      const writer = new StoreWriter(w, { ttlMs: 0, lease: { key: LEASE, token: () => "mine" } });
      await assert.rejects(writer.apply(batch), LeaseLostError);
      assert.deepEqual(await snapshot(r), before);
      await r.persist(LEASE);
      await assert.rejects(writer.apply(batch), LeaseLostError);
      assert.equal(await r.pttl(LEASE), -1);
      assert.equal(await r.exists("company:1"), 0);
    });

    it("another client takes the lease between two batches: the second writes nothing; the new holder writes", async () => {
      await r.set(LEASE, "mine", "PX", 60_000);
      const mine = new StoreWriter(w, { ttlMs: 0, lease: { key: LEASE, token: () => "mine" } });
      await mine.apply([{ op: "set", key: "first", value: "1" }]);
      // The lease expires and another instance acquires it (SET NX, as WriterLease does).
      await r.del(LEASE);
      assert.equal(await r.set(LEASE, "theirs", "PX", 60_000, "NX"), "OK");
      await seedOld(r);
      const before = await snapshot(r);
      await assert.rejects(mine.apply(batch), LeaseLostError);
      assert.deepEqual(await snapshot(r), before);

      const theirs = new StoreWriter(r, { ttlMs: 0, lease: { key: LEASE, token: () => "theirs" } });
      await theirs.apply(batch);
      assert.ok(await batchApplied(r));
    });

    it("a chunked batch with a stale token writes no chunk", async () => {
      await r.set(LEASE, "theirs", "PX", 60_000);
      const writer = new StoreWriter(w, { ttlMs: 0, maxOpsPerCall: 3, lease: { key: LEASE, token: () => "mine" } });
      const ops: WriteOp[] = Array.from({ length: 20 }, (_, i) => ({ op: "set", key: `n${i}`, value: "x" }));
      await assert.rejects(writer.apply(ops), LeaseLostError);
      assert.equal(await r.dbsize(), 1);
    });

    it("the lease changes hands between the fence and the EXEC: LeaseLostError, nothing written", async () => {
      const proxy = await startHoldingProxy(server.port);
      const c = new Redis({ port: proxy.port, host: "127.0.0.1" });
      try {
        await r.set(LEASE, "mine", "PX", 60_000);
        await seedOld(r);
        const writer = new StoreWriter(c, { ttlMs: 0, lease: { key: LEASE, token: () => "mine" } });
        await c.ping();
        let fenceReply = "";
        proxy.holdBefore("multi", async ({ replies }) => {
          // The WATCH and the fence ran (the fence found our token); now someone else takes the lease.
          await waitFor(() => replies().includes(":1\r\n"), { timeoutMs: 5000, what: "the fence's reply" });
          fenceReply = replies();
          await r.del(LEASE);
          await r.set(LEASE, "theirs", "PX", 60_000, "NX");
        });
        const before = await snapshot(r);
        await assert.rejects(writer.apply(batch), (err: unknown) => {
          assert.ok(err instanceof LeaseLostError, String(err));
          assert.match(err.message, /changed during the batch/);
          return true;
        });
        assert.match(fenceReply, /^\+OK\r\n:1\r\n/, "WATCH then the fence (1) came back before the hold");
        assert.deepEqual(await snapshot(r), {
          ...before,
          [LEASE]: `string theirs expires=${await r.pexpiretime(LEASE)}`,
        });
        assert.equal(await r.get(LEASE), "theirs");
        assert.equal(await r.exists("company:1"), 0);

        // Our lease merely renewed in between (PEXPIRE from another connection): also refused, and a retry writes.
        await r.set(LEASE, "mine", "PX", 60_000);
        proxy.holdBefore("multi", async ({ replies }) => {
          await waitFor(() => replies().includes(":1\r\n"), { timeoutMs: 5000, what: "the fence's reply" });
          await r.pexpire(LEASE, 60_000);
        });
        await assert.rejects(writer.apply(batch), LeaseLostError);
        assert.equal(await r.exists("company:1"), 0);
        await writer.apply(batch);
        assert.ok(await batchApplied(r));
      } finally {
        c.disconnect();
        await proxy.close();
      }
    });

    it("refused batches leave the connection clean (no WATCH, no MULTI left behind)", async () => {
      await r.set(LEASE, "theirs", "PX", 60_000);
      const writer = new StoreWriter(w, { ttlMs: 0, lease: { key: LEASE, token: () => "mine" } });
      await assert.rejects(writer.apply(batch), LeaseLostError);
      // A transaction on the same connection commits (a leftover dirty WATCH would abort it) ...
      const p = w.pipeline();
      p.call("multi");
      p.set("after", "1");
      p.call("exec");
      const replies = await p.exec();
      assert.deepEqual(replies?.at(-1), [null, ["OK"]]);
      // ... and plain commands answer normally (inside a leftover MULTI they would answer QUEUED).
      assert.equal(await w.get("after"), "1");
    });

    it("a connection cut between the fence and the EXEC: an error, nothing written, the next batch goes through", async () => {
      const proxy = await startHoldingProxy(server.port);
      const c = new Redis({ port: proxy.port, host: "127.0.0.1", retryStrategy: () => 20 });
      c.on("error", () => undefined);
      try {
        await r.set(LEASE, "mine", "PX", 60_000);
        const writer = new StoreWriter(c, { ttlMs: 0, lease: { key: LEASE, token: () => "mine" } });
        await c.ping();
        proxy.holdBefore("multi", async ({ client, upstream, replies }) => {
          await waitFor(() => replies().includes(":1\r\n"), { timeoutMs: 5000, what: "the fence's reply" });
          await new Promise((resolve) => setTimeout(resolve, 20)); // let ioredis read the replies so far
          client.destroy();
          upstream.destroy();
        });
        await assert.rejects(writer.apply(batch), (err: unknown) => !(err instanceof LeaseLostError));
        assert.equal(await r.exists("company:1"), 0);
        await writer.apply(batch);
        assert.ok(await batchApplied(r));
        assert.equal(await c.get("lookup:a"), '"1"');
      } finally {
        c.disconnect();
        await proxy.close();
      }
    });

    it("out of memory: the transaction is refused as a whole (no partial batch), with or without the lease", async () => {
      await seedOld(r);
      await r.set(LEASE, "mine", "PX", 60_000);
      const before = await snapshot(r);
      await r.config("SET", "maxmemory-policy", "noeviction");
      await r.config("SET", "maxmemory", "1");
      try {
        const writer = new StoreWriter(w, { ttlMs: 0, lease: { key: LEASE, token: () => "mine" } });
        await assert.rejects(writer.apply(batch), /EXECABORT|OOM/);
        const stale = new StoreWriter(w, { ttlMs: 0, lease: { key: LEASE, token: () => "stale" } });
        await assert.rejects(stale.apply([{ op: "del", key: "company:old" }]));
        await r.config("SET", "maxmemory", "0");
        assert.deepEqual(await snapshot(r), before);
        await writer.apply(batch);
        assert.ok(await batchApplied(r));
      } finally {
        await r.config("SET", "maxmemory", "0");
      }
    });

    it("a flushed script cache loses no write (the fence and compare-and-delete are sent as EVAL)", async () => {
      await r.set(LEASE, "mine", "PX", 60_000);
      const writer = new StoreWriter(w, { ttlMs: 0, maxOpsPerCall: 2, lease: { key: LEASE, token: () => "mine" } });
      for (let i = 0; i < 3; i++) {
        await r.set(`lookup:${i}`, '"old"');
        await r.script("FLUSH");
        await writer.apply([
          { op: "set", key: `s${i}`, value: String(i) },
          { op: "delIfEquals", key: `lookup:${i}`, value: '"old"' },
          { op: "set", key: `t${i}`, value: String(i) },
        ]);
        assert.equal(await r.get(`s${i}`), String(i));
        assert.equal(await r.get(`t${i}`), String(i));
        assert.equal(await r.exists(`lookup:${i}`), 0);
      }
      // And a stale token stays refused right after a flush.
      await r.script("FLUSH");
      const stale = new StoreWriter(w, { ttlMs: 0, lease: { key: LEASE, token: () => "stale" } });
      await assert.rejects(stale.apply([{ op: "set", key: "nope", value: "1" }]), LeaseLostError);
      assert.equal(await r.exists("nope"), 0);
    });
  });

  describe("ops and order", () => {
    it("keeps the order of long mixed runs (MSET and DEL groups), TTLs and ttl:false", async () => {
      await r.set(LEASE, "mine", "PX", 60_000);
      await r.set("control", "old", "PX", 60_000);
      await r.set("cas", "x");
      const ops: WriteOp[] = [];
      for (let i = 0; i < 1500; i++) ops.push({ op: "set", key: `k${i % 700}`, value: `v${i}` });
      ops.push({ op: "set", key: "dup", value: "first" });
      for (let i = 0; i < 600; i++) ops.push({ op: "del", key: `k${i}` });
      ops.push({ op: "set", key: "k5", value: "again" });
      ops.push({ op: "set", key: "control", value: "1-0", ttl: false });
      ops.push({ op: "delIfEquals", key: "cas", value: "x" });
      ops.push({ op: "set", key: "cas", value: "y" });
      ops.push({ op: "set", key: "dup", value: "second" });
      for (const [max, ttl] of [
        [5000, 0],
        [400, 60_000],
      ] as const) {
        await r.flushall();
        await r.set(LEASE, "mine", "PX", 60_000);
        await r.set("control", "old", "PX", 60_000);
        await r.set("cas", "x");
        const writer = new StoreWriter(w, {
          ttlMs: ttl,
          maxOpsPerCall: max,
          lease: { key: LEASE, token: () => "mine" },
        });
        await writer.apply(ops);
        assert.equal(await r.get("k5"), "again");
        assert.equal(await r.exists("k0", "k599"), 0);
        assert.equal(await r.get("k600"), "v1300");
        assert.equal(await r.get("k699"), "v1399");
        assert.equal(await r.get("dup"), "second");
        assert.equal(await r.get("cas"), "y");
        assert.equal(await r.get("control"), "1-0");
        assert.equal(await r.pttl("control"), -1, "ttl:false clears an expiry the key had");
        const pttl = await r.pttl("k600");
        if (ttl > 0) assert.ok(pttl > 0 && pttl <= ttl, `pttl ${pttl}`);
        else assert.equal(pttl, -1);
      }
    });

    it("without a lease: MULTI/EXEC only, no WATCH or fence (MONITOR)", async () => {
      const monitor = await server.client().monitor();
      const seen: string[] = [];
      monitor.on("monitor", (_time: string, args: string[]) => seen.push(args[0]!.toLowerCase()));
      try {
        const writer = new StoreWriter(w, { ttlMs: 0 });
        await writer.apply(batch);
        await w.ping();
        await waitFor(() => seen.includes("ping"), { what: "MONITOR" });
        const sent = seen.slice(0, seen.indexOf("ping"));
        assert.ok(await batchApplied(r));
        assert.ok(!sent.includes("watch"), sent.join(" "));
        assert.deepEqual(
          sent.filter((c) => c !== "get"),
          ["multi", "mset", "del", "eval", "set", "exec"],
        );
      } finally {
        monitor.disconnect();
      }
    });
  });
});

describe("StoreWriter stored-keys checks (ifStoredKeys, in the fence)", { timeout: 120_000 }, () => {
  let server: RedisServer;
  let r: Redis;
  let w: Redis;
  let writer: StoreWriter;
  const KEYS = '{"id":"c1","domain":"c1.example"}';
  const SORTED = '{"domain":"c1.example","id":"c1"}';
  /** A body with `keys` spelled as given, between other members. */
  const body = (keys: string, extra = "") => `{"id":"c1","traits":[{"value":"v"}]${extra},"keys":${keys},"rules":[]}`;
  /** The batch of one entity whose ops assume its stored keys are KEYS (or SORTED). */
  const written = body(KEYS, ',"n":2');
  const entityBatch: WriteOp[] = [
    { op: "set", key: "company:c1", value: written, ifStoredKeys: [KEYS, SORTED] },
    { op: "set", key: "lookup:id:c1", value: '"c1"' },
    { op: "set", key: "lookup:domain:c1.example", value: '"c1"' },
  ];
  before(async () => {
    server = await startRedis();
    r = server.client();
    w = server.client();
    writer = new StoreWriter(w, { ttlMs: 0, lease: { key: LEASE, token: () => "mine" } });
  });
  after(async () => {
    await server.stop();
  });
  beforeEach(async () => {
    await r.flushall();
    await r.set(LEASE, "mine", "PX", 60_000);
  });

  /** Applies the entity batch over `stored` and returns the error, or undefined when it was written. */
  async function applyOver(stored: string | undefined): Promise<unknown> {
    if (stored !== undefined) await r.set("company:c1", stored);
    const before = await snapshot(r);
    const expires = await r.pexpiretime(LEASE);
    try {
      await writer.apply(entityBatch);
      assert.equal(await r.get("company:c1"), written);
      return undefined;
    } catch (err) {
      assert.deepEqual(await snapshot(r), before, "nothing written, the lease unchanged");
      assert.equal(await r.pexpiretime(LEASE), expires);
      return err;
    }
  }

  it("writes when the stored body has the keys as assumed, in either spelling, or is absent", async () => {
    assert.equal(writer.checksStoredKeys, true);
    for (const stored of [undefined, body(KEYS), body(SORTED), `{"keys":${KEYS}}`]) {
      await r.flushall();
      await r.set(LEASE, "mine", "PX", 60_000);
      assert.equal(await applyOver(stored), undefined, String(stored));
      assert.equal(await r.get("lookup:domain:c1.example"), '"c1"');
    }
  });

  it("refuses the transaction when the stored keys differ or cannot be told exactly, naming the entity", async () => {
    const refused = [
      body('{"id":"c1","domain":"old.example"}'), // another key set
      body('{"id":"c1"}'), // fewer keys
      body('{"id":"c1","domain":"c1.example","slug":"c1"}'), // more keys: a prefix of the text is not enough
      body(`${KEYS.slice(0, -1)} }`), // other spacing
      body(KEYS).replace('"keys":', '"keys" :'),
      body('{"id":"c1","domain":"old.example"}', `,"x":{"keys":${KEYS}}`), // a nested "keys" first
      `{"id":"c1","keys":{"id":"c1","domain":"old.example"},"x":{"keys":${KEYS}}}`, // a nested "keys" last
      `{"x":{"keys":${KEYS}},"k\\u0065ys":{"id":"c1","domain":"old.example"}}`, // the real one escaped
      body('{"id":"c1","domain":"old.example"}', `,"keys":${KEYS}`), // duplicate member: JSON.parse keeps the last
      `{"keys":"${KEYS}"}`, // not an object
      "not json",
    ];
    for (const stored of refused) {
      const err = await applyOver(stored);
      assert.ok(err instanceof StoredKeysChangedError, `${stored}: ${String(err)}`);
      assert.deepEqual(err.keys, ["company:c1"]);
    }
    // A key of another type is refused too (the check must not fail the script, which would let the EXEC commit).
    await r.del("company:c1");
    await r.hset("company:c1", "keys", KEYS);
    const err = await applyOver(undefined);
    assert.ok(err instanceof StoredKeysChangedError, String(err));
    assert.equal(await r.type("company:c1"), "hash");
  });

  it("checks each entity in the transaction of its first op; other transactions of the batch commit", async () => {
    const chunked = new StoreWriter(w, { ttlMs: 0, maxOpsPerCall: 3, lease: { key: LEASE, token: () => "mine" } });
    await r.set("company:c2", body('{"id":"c2","domain":"old.example"}'));
    await r.set("lookup:domain:old.example", '"c2"');
    const ops: WriteOp[] = [
      { op: "set", key: "first", value: "1" },
      { op: "set", key: "a", value: "1" },
      { op: "set", key: "b", value: "1" },
      // The second transaction: c1 (its check holds), then c2's body (its check fails); c2's lookup is in the third.
      { op: "set", key: "company:c1", value: body(KEYS), ifStoredKeys: [KEYS] },
      { op: "set", key: "lookup:id:c1", value: '"c1"' },
      { op: "set", key: "company:c2", value: body('{"id":"c2"}'), ifStoredKeys: ['{"id":"c2"}'] },
      { op: "set", key: "lookup:id:c2", value: '"c2"' },
      { op: "set", key: "last", value: "1" },
    ];
    await assert.rejects(chunked.apply(ops), (err: unknown) => {
      assert.ok(err instanceof StoredKeysChangedError, String(err));
      assert.deepEqual(err.keys, ["company:c2"]);
      return true;
    });
    assert.equal(await r.get("first"), "1", "the first transaction committed");
    assert.equal(await r.get("company:c2"), body('{"id":"c2","domain":"old.example"}'), "c2's body kept");
    assert.equal(await r.exists("company:c1"), 0, "c1 shared c2's transaction: not written");
    assert.equal(await r.get("last"), "1", "the third transaction committed");
    assert.equal(await r.get("lookup:domain:old.example"), '"c2"', "c2's old lookup kept with its body");
  });

  it("the lease still comes first: another holder's lease gives LeaseLostError, however the checks would go", async () => {
    await r.set(LEASE, "theirs", "PX", 60_000);
    await r.set("company:c1", body('{"id":"c1","domain":"old.example"}'));
    const before = await snapshot(r);
    await assert.rejects(writer.apply(entityBatch), LeaseLostError);
    assert.deepEqual(await snapshot(r), before);
  });

  it("a writer that cannot check (no lease) refuses such ops before writing anything", async () => {
    const unfenced = new StoreWriter(w, { ttlMs: 0 });
    assert.equal(unfenced.checksStoredKeys, false);
    const before = await snapshot(r);
    await assert.rejects(unfenced.apply([{ op: "set", key: "x", value: "1" }, ...entityBatch]), (err: unknown) => {
      assert.ok(err instanceof StoredKeysChangedError, String(err));
      assert.deepEqual(err.keys, ["company:c1"]);
      return true;
    });
    assert.deepEqual(await snapshot(r), before);
  });
});

describe("StoreWriter fencing with replica acknowledgements (ROLE first, WAIT last)", { timeout: 60_000 }, () => {
  let master: RedisServer;
  let replica: RedisServer;
  let r: Redis;
  before(async () => {
    master = await startRedis();
    replica = await startRedis({ args: ["--replicaof", "127.0.0.1", String(master.port)] });
    r = master.client();
    await waitFor(async () => /slave0:.*state=online/.test(await r.info("replication")), { what: "the replica" });
  });
  after(async () => {
    await replica.stop();
    await master.stop();
  });

  it("parses the acknowledgements around several fenced transactions, and refuses a stale token", async () => {
    await r.set(LEASE, "mine", "PX", 60_000);
    await seedOld(r);
    const c = master.client();
    const writer = new StoreWriter(c, {
      ttlMs: 0,
      maxOpsPerCall: 2,
      lease: { key: LEASE, token: () => "mine" },
      acks: { timeoutMs: 2000, graceMs: 60_000 },
    });
    // First batch: ROLE reveals the replica (WAIT then follows in a second round trip); second: WAIT in the pipeline.
    await writer.apply(batch);
    await writer.apply([{ op: "set", key: "second", value: "2" }, ...batch]);
    const rr = replica.client();
    assert.ok(await batchApplied(rr), "the replica has the batch when apply() returns");
    assert.equal(await rr.get("second"), "2");

    const stale = new StoreWriter(c, {
      ttlMs: 0,
      lease: { key: LEASE, token: () => "stale" },
      acks: { timeoutMs: 2000, graceMs: 60_000 },
    });
    await assert.rejects(stale.apply([{ op: "set", key: "nope", value: "1" }]), LeaseLostError);
    assert.equal(await r.exists("nope"), 0);
  });
});
