import assert from "node:assert/strict";
import { after, before, beforeEach, describe, it } from "node:test";
import type { Redis } from "ioredis";
import { ServerChangedError, serverId, serverTime } from "../src/store/control-keys.js";
import { deleteCursor, loadCursor, saveCursor } from "../src/store/cursor.js";
import { KeyScheme } from "../src/store/keys.js";
import { type Marker, readMarker, readMarkerAndExpiry, saveMarker } from "../src/store/marker.js";
import { LeaseLostError, StoreWriter, type WriteOp } from "../src/store/writer.js";
import { type RedisServer, startRedis } from "./helpers/redis.js";

const LEASE = "schematic:datastream:writer_lock";

/** Every key with its value and whether it expires, for "nothing was written" checks. */
async function snapshot(r: Redis): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const key of (await r.keys("*")).sort()) {
    out[key] = `${await r.get(key)} ttl=${(await r.pttl(key)) > 0 ? "yes" : "no"}`;
  }
  return out;
}

describe("StoreWriter", () => {
  let server: RedisServer;
  let r: Redis;
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

  it("writes without expiry when ttlMs is 0, clearing an expiry the key had", async () => {
    await r.set("k2", "old", "EX", 3600);
    const w = new StoreWriter(r, { ttlMs: 0 });
    await w.apply([
      { op: "set", key: "k1", value: "v1" },
      { op: "set", key: "k2", value: "v2" },
    ]);
    assert.equal(await r.get("k1"), "v1");
    assert.equal(await r.get("k2"), "v2");
    assert.equal(await r.ttl("k1"), -1);
    assert.equal(await r.ttl("k2"), -1);
  });

  it("writes with PX ttl when ttlMs > 0, except ops marked ttl: false", async () => {
    const w = new StoreWriter(r, { ttlMs: 60_000 });
    await w.apply([
      { op: "set", key: "cache", value: "{}" },
      { op: "set", key: "control", value: "1-0", ttl: false },
    ]);
    const pttl = await r.pttl("cache");
    assert.ok(pttl > 0 && pttl <= 60_000, `pttl ${pttl}`);
    assert.equal(await r.ttl("control"), -1);
  });

  it("applies ops in order, deletes, and compare-and-deletes", async () => {
    await r.set("lookup:mine", '"c1"');
    await r.set("lookup:moved", '"c2"');
    const w = new StoreWriter(r, { ttlMs: 0 });
    await w.apply([
      { op: "set", key: "a", value: "1" },
      { op: "del", key: "a" },
      { op: "set", key: "a", value: "2" },
      { op: "set", key: "b", value: "x" },
      { op: "del", key: "b" },
      { op: "delIfEquals", key: "lookup:mine", value: '"c1"' },
      { op: "delIfEquals", key: "lookup:moved", value: '"c1"' },
      { op: "delIfEquals", key: "lookup:absent", value: '"c1"' },
    ]);
    assert.equal(await r.get("a"), "2");
    assert.equal(await r.exists("b"), 0);
    assert.equal(await r.exists("lookup:mine"), 0);
    assert.equal(await r.get("lookup:moved"), '"c2"', "a lookup key pointing at another entity is kept");
  });

  it("does nothing for an empty batch", async () => {
    const w = new StoreWriter(r, { ttlMs: 0, lease: { key: LEASE, token: () => undefined } });
    await w.apply([]);
  });

  it("keeps large batches in one call, and chunks beyond the limits", async () => {
    const body = "x".repeat(2048);
    const ops: WriteOp[] = Array.from({ length: 600 }, (_, i) => ({
      op: "set",
      key: `big:${i}`,
      value: `${i}:${body}`,
    }));
    await new StoreWriter(r, { ttlMs: 0 }).apply(ops);
    assert.equal(await r.dbsize(), 600);
    assert.equal(await r.get("big:599"), `599:${body}`);

    await r.flushall();
    await r.set(LEASE, "tok");
    const chunked = new StoreWriter(r, { ttlMs: 0, maxOpsPerCall: 64, lease: { key: LEASE, token: () => "tok" } });
    await chunked.apply([...ops, { op: "del", key: "big:0" }]);
    assert.equal(await r.dbsize(), 600); // 599 big keys + the lease
    assert.equal(await r.exists("big:0"), 0);
    const bytes = new StoreWriter(r, { ttlMs: 0, maxBytesPerCall: 10_000 });
    await bytes.apply(ops.map((op) => ({ ...op, key: `${op.key}:b` })));
    assert.equal(await r.get("big:3:b"), `3:${body}`);
  });

  it("recovers when the server lost its script cache", async () => {
    const w = new StoreWriter(r, { ttlMs: 0 });
    await w.apply([{ op: "set", key: "s1", value: "1" }]);
    await r.script("FLUSH");
    await w.apply([{ op: "set", key: "s2", value: "2" }]);
    await r.script("FLUSH");
    const chunked = new StoreWriter(r, { ttlMs: 0, maxOpsPerCall: 2 });
    await chunked.apply([
      { op: "set", key: "s3", value: "3" },
      { op: "set", key: "s4", value: "4" },
      { op: "set", key: "s3", value: "5" },
    ]);
    assert.deepEqual(await r.mget("s1", "s2", "s3", "s4"), ["1", "2", "5", "4"]);
  });

  describe("fencing", () => {
    it("writes while the lease key holds our token", async () => {
      await r.set(LEASE, "mine", "PX", 60_000);
      const w = new StoreWriter(r, { ttlMs: 0, lease: { key: LEASE, token: () => "mine" } });
      await w.apply([{ op: "set", key: "k", value: "v" }]);
      assert.equal(await r.get("k"), "v");
    });

    it("after another token replaced the lease, throws LeaseLostError and writes nothing", async () => {
      await r.set(LEASE, "mine", "PX", 60_000);
      await r.set("lookup", '"c1"');
      const w = new StoreWriter(r, { ttlMs: 0, lease: { key: LEASE, token: () => "mine" } });
      await w.apply([{ op: "set", key: "before", value: "1" }]);
      await r.set(LEASE, "theirs", "PX", 60_000);
      const before = await snapshot(r);
      await assert.rejects(
        w.apply([
          { op: "set", key: "after", value: "2" },
          { op: "del", key: "before" },
          { op: "delIfEquals", key: "lookup", value: '"c1"' },
          { op: "set", key: "schematic:datastream:replay_cursor", value: "9-9", ttl: false },
        ]),
        LeaseLostError,
      );
      assert.deepEqual(await snapshot(r), before);

      // A chunked batch is refused as a whole too.
      const chunked = new StoreWriter(r, { ttlMs: 0, maxOpsPerCall: 2, lease: { key: LEASE, token: () => "mine" } });
      const ops: WriteOp[] = Array.from({ length: 9 }, (_, i) => ({ op: "set", key: `n${i}`, value: "x" }));
      await assert.rejects(chunked.apply(ops), LeaseLostError);
      assert.deepEqual(await snapshot(r), before);
    });

    it("refuses when the lease key is gone", async () => {
      const w = new StoreWriter(r, { ttlMs: 0, lease: { key: LEASE, token: () => "mine" } });
      await assert.rejects(w.apply([{ op: "set", key: "k", value: "v" }]), LeaseLostError);
      assert.equal(await r.dbsize(), 0);
    });

    it("refuses without a round trip when the lease is not held locally", async () => {
      await r.set(LEASE, "mine");
      const w = new StoreWriter(r, { ttlMs: 0, lease: { key: LEASE, token: () => undefined } });
      await assert.rejects(w.apply([{ op: "set", key: "k", value: "v" }]), LeaseLostError);
      assert.equal(await r.exists("k"), 0);
    });

    it("lets other errors through", async () => {
      await r.hset("hash", "f", "v");
      const w = new StoreWriter(r, { ttlMs: 0 });
      await assert.rejects(w.apply([{ op: "delIfEquals", key: "hash", value: "x" }]), /WRONGTYPE/);
    });
  });

  it("readMany reads everything in order, in one round trip", async () => {
    const w = new StoreWriter(r, { ttlMs: 0 });
    assert.deepEqual(await w.readMany([]), []);
    await r.mset("r1", "a", "r3", "c");
    assert.deepEqual(await w.readMany(["r1", "r2", "r3"]), ["a", null, "c"]);
    const keys = Array.from({ length: 2500 }, (_, i) => `many:${i}`);
    await w.apply(keys.filter((_, i) => i % 2 === 0).map((key) => ({ op: "set", key, value: key })));
    const values = await w.readMany(keys);
    assert.equal(values.length, 2500);
    assert.deepEqual(
      values,
      keys.map((key, i) => (i % 2 === 0 ? key : null)),
    );
  });
});

describe("marker and cursor", () => {
  let server: RedisServer;
  let r: Redis;
  const keys = new KeyScheme("schematic:", "4b54a537");
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

  it("round-trips the marker, without expiry unless asked, whatever the cache TTL", async () => {
    assert.equal(await readMarker(r, keys), null);
    const marker: Marker = {
      state: "loaded",
      loaded_at: "2026-01-02T03:04:05.678Z",
      stream_id: "1719000000000-3",
      writer: "host-1234",
    };
    await saveMarker(r, keys, marker, {});
    assert.deepEqual(await readMarker(r, keys), marker);
    assert.equal(await r.ttl("schematic:datastream:state:4b54a537"), -1);
    assert.deepEqual(JSON.parse((await r.get("schematic:datastream:state:4b54a537"))!), marker);

    const stale: Marker = {
      state: "reloading",
      loaded_at: marker.loaded_at,
      writer: "h-1",
      stale_since: "2026-01-02T03:05:00Z",
    };
    await saveMarker(r, keys, stale, {});
    assert.deepEqual(await readMarker(r, keys), stale);
    assert.deepEqual(await readMarkerAndExpiry(r, keys), { marker: stale, expireAt: undefined });
  });

  it("gives the marker the absolute expiry it is asked for, in the server's clock", async () => {
    const marker: Marker = { state: "loaded", loaded_at: "2026-01-02T03:04:05.678Z", writer: "host-1234" };
    const expireAt = (await serverTime(r, keys.marker())) + 5000;
    await saveMarker(r, keys, marker, { expireAt });
    const read = await readMarkerAndExpiry(r, keys);
    assert.deepEqual(read.marker, marker);
    assert.ok(Math.abs((read.expireAt ?? 0) - expireAt) <= 5, `${read.expireAt} ≈ ${expireAt}`);
    const pttl = await r.pttl(keys.marker());
    assert.ok(pttl > 0 && pttl <= 5000, String(pttl));
    await saveMarker(r, keys, marker, {});
    assert.equal(await r.pttl(keys.marker()), -1, "rewritten without an expiry: none");
    await saveMarker(r, keys, marker, { expireAt: expireAt - 60_000 });
    assert.equal(await r.exists(keys.marker()), 0, "an expiry in the past: the marker is gone");
  });

  it("reads garbage as no marker", async () => {
    for (const raw of [
      "not json",
      "[]",
      "null",
      '{"state":"weird","loaded_at":"x","writer":"w"}',
      '{"state":"loaded"}',
    ]) {
      await r.set(keys.marker(), raw);
      assert.equal(await readMarker(r, keys), null, raw);
    }
  });

  it("writes the marker only while holding the lease, and only on the server named", async () => {
    const marker: Marker = { state: "loaded", loaded_at: new Date().toISOString(), writer: "me" };
    await r.set(LEASE, "theirs");
    await assert.rejects(saveMarker(r, keys, marker, { lease: { key: LEASE, token: () => "mine" } }), LeaseLostError);
    await assert.rejects(
      saveMarker(r, keys, marker, { lease: { key: LEASE, token: () => undefined } }),
      LeaseLostError,
    );
    await assert.rejects(saveMarker(r, keys, marker, { serverId: "0".repeat(40) }), ServerChangedError);
    assert.equal(await r.exists(keys.marker()), 0);
    await saveMarker(r, keys, marker, {
      lease: { key: LEASE, token: () => "theirs" },
      serverId: await serverId(r, LEASE),
    });
    assert.deepEqual(await readMarker(r, keys), marker);
  });

  it("saves, loads and deletes the replay cursor as a raw string, without expiry unless asked", async () => {
    const key = "schematic:datastream:replay_cursor";
    const w = new StoreWriter(r, { ttlMs: 60_000 });
    const server = await serverId(r, key);
    assert.match(server, /^[0-9a-f]{40}$/);
    assert.equal(await loadCursor(r, key), null);
    await saveCursor(r, key, "1719000000000-3", { serverId: server });
    assert.equal(await r.get(key), "1719000000000-3");
    assert.equal(await r.ttl(key), -1);
    assert.equal(await loadCursor(r, key), "1719000000000-3");
    const expireAt = (await serverTime(r, key)) + 5000;
    await saveCursor(r, key, "1719000000000-4", { serverId: server, expireAt });
    const pttl = await r.pttl(key);
    assert.ok(pttl > 0 && pttl <= 5000, String(pttl));
    await deleteCursor(w, key);
    assert.equal(await r.exists(key), 0);

    await r.set(key, '"1-2"');
    assert.equal(await loadCursor(r, key), null, "a JSON-quoted or garbage cursor is ignored");
    await assert.rejects(saveCursor(r, key, "nope", { serverId: server }), /not a stream id/);
  });

  it("saves the cursor only while holding the lease", async () => {
    const key = "schematic:datastream:replay_cursor";
    await r.set(key, "1-0");
    await r.set(LEASE, "theirs");
    const lease = { key: LEASE, token: () => "mine" };
    const w = new StoreWriter(r, { ttlMs: 0, lease });
    await assert.rejects(saveCursor(r, key, "5-0", { serverId: await serverId(r, key), lease }), LeaseLostError);
    await assert.rejects(deleteCursor(w, key), LeaseLostError);
    assert.equal(await r.get(key), "1-0");
  });

  it("saves the cursor only on the server the writer last checked", async () => {
    const key = "schematic:datastream:replay_cursor";
    await r.set(key, "1-0");
    const server = await serverId(r, key);
    const other = "0".repeat(40);
    await assert.rejects(
      saveCursor(r, key, "5-0", { serverId: other }),
      (err: unknown) => err instanceof ServerChangedError && err.serverId === server,
    );
    assert.equal(await r.get(key), "1-0", "nothing saved");
  });
});
