import assert from "node:assert/strict";
import { after, before, beforeEach, describe, it } from "node:test";
import type { Redis } from "ioredis";
import { KeyScheme } from "../src/store/keys.js";
import { cleanupOtherVersions, refreshExpiry } from "../src/store/maintenance.js";
import { type RedisServer, startRedis } from "./helpers/redis.js";

const CUR = "4b54a537";

async function allKeys(r: Redis): Promise<string[]> {
  return (await r.keys("*")).sort();
}

describe("cleanupOtherVersions", () => {
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

  it("deletes only cache keys of other versions", async () => {
    const keep = [
      `schematic:flags:${CUR}:new-checkout`,
      `schematic:company:${CUR}:comp_1`,
      `schematic:company:${CUR}:domain:acme.com`,
      `schematic:user:${CUR}:user_1`,
      `schematic:user:${CUR}:email:a@b.c`,
      "schematic:datastream:writer_lock",
      "schematic:datastream:replay_cursor",
      `schematic:datastream:state:${CUR}`,
      "schematic:datastream:state:14269364",
      "schematic:credit-lease:x:y:z",
      "schematic:company:14269364", // too few segments
      "other:flags:14269364:f",
      "schematic:flagsx:14269364:f",
    ];
    const drop = [
      "schematic:flags:14269364:new-checkout",
      "schematic:company:14269364:comp_1",
      "schematic:company:14269364:domain:acme.com",
      "schematic:user:1:user_1",
      "schematic:user:1:email:a@b.c",
      "schematic:company:1:id:with:colons",
    ];
    // Enough keys to span many SCAN pages and several DEL batches.
    for (let i = 0; i < 1200; i++) drop.push(`schematic:company:5a07fcb2:c${i}`);
    for (let i = 0; i < 300; i++) keep.push(`schematic:company:${CUR}:k${i}`);
    const pipe = r.pipeline();
    for (const k of [...keep, ...drop]) pipe.set(k, "v");
    await pipe.exec();

    const result = await cleanupOtherVersions(r, new KeyScheme("schematic:", CUR), undefined, { scanCount: 100 });
    assert.deepEqual(result, {
      deleted: drop.length,
      byVersion: { "14269364": 3, "1": 3, "5a07fcb2": 1200 },
    });
    assert.deepEqual(await allKeys(r), [...keep].sort());
    assert.deepEqual(await cleanupOtherVersions(r, new KeyScheme("schematic:", CUR)), { deleted: 0, byVersion: {} });
  });

  it("stays inside a prefix with glob characters", async () => {
    const keys = new KeyScheme("a*[x]:", CUR);
    await r.mset({
      "a*[x]:flags:old:f": "1",
      [`a*[x]:flags:${CUR}:f`]: "1",
      "aZx:flags:old:f": "1",
      "ax:flags:old:f": "1",
      "schematic:flags:old:f": "1",
    });
    const result = await cleanupOtherVersions(r, keys);
    assert.deepEqual(result, { deleted: 1, byVersion: { old: 1 } });
    assert.deepEqual(await allKeys(r), [
      `a*[x]:flags:${CUR}:f`,
      "aZx:flags:old:f",
      "ax:flags:old:f",
      "schematic:flags:old:f",
    ]);
  });
});

describe("refreshExpiry", () => {
  let server: RedisServer;
  let r: Redis;
  const keys = new KeyScheme("schematic:", CUR);
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

  it("with a TTL, sets the expiry of every current-version cache key and nothing else", async () => {
    const current = [
      `schematic:flags:${CUR}:f`,
      `schematic:company:${CUR}:c1`,
      `schematic:company:${CUR}:domain:acme.com`,
      `schematic:user:${CUR}:u1`,
    ];
    for (let i = 0; i < 1500; i++) current.push(`schematic:user:${CUR}:email:u${i}@x`);
    const untouched = [
      "schematic:flags:other:f",
      `schematic:datastream:state:${CUR}`,
      "schematic:datastream:replay_cursor",
      "schematic:datastream:writer_lock",
    ];
    const pipe = r.pipeline();
    for (const k of [...current, ...untouched]) pipe.set(k, "v");
    await pipe.exec();

    const result = await refreshExpiry(r, keys, 120_000);
    assert.deepEqual(result, { scanned: current.length, updated: current.length, failed: 0 });
    for (const k of [current[0]!, current[1]!, current[2]!, current[3]!, current.at(-1)!]) {
      const pttl = await r.pttl(k);
      assert.ok(pttl > 100_000 && pttl <= 120_000, `${k}: ${pttl}`);
    }
    for (const k of untouched) assert.equal(await r.ttl(k), -1, k);
  });

  it("without a TTL, removes expiries that foreign writers added", async () => {
    await r.set(`schematic:company:${CUR}:c1`, "{}", "EX", 86_400); // as the SDKs' track() leaves it
    await r.set(`schematic:company:${CUR}:domain:acme.com`, '"c1"', "EX", 86_400);
    await r.set(`schematic:company:${CUR}:c2`, "{}");
    await r.set("schematic:company:other:c1", "{}", "EX", 86_400);
    await r.set("schematic:datastream:writer_lock", "tok", "EX", 60);

    const result = await refreshExpiry(r, keys, 0);
    assert.deepEqual(result, { scanned: 3, updated: 2, failed: 0 });
    assert.equal(await r.ttl(`schematic:company:${CUR}:c1`), -1);
    assert.equal(await r.ttl(`schematic:company:${CUR}:domain:acme.com`), -1);
    assert.equal(await r.ttl(`schematic:company:${CUR}:c2`), -1);
    assert.ok((await r.ttl("schematic:company:other:c1")) > 0);
    assert.ok((await r.ttl("schematic:datastream:writer_lock")) > 0);
  });

  it("stops early when aborted", async () => {
    await r.set(`schematic:flags:${CUR}:f`, "v");
    const controller = new AbortController();
    controller.abort();
    assert.deepEqual(await refreshExpiry(r, keys, 1000, { signal: controller.signal }), {
      scanned: 0,
      updated: 0,
      failed: 0,
    });
    assert.equal(await r.ttl(`schematic:flags:${CUR}:f`), -1);
  });
});
