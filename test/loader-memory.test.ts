/**
 * The load's memory does not grow with the number of entities (issue 16): pages are received into a few reused
 * bodies and parsed one row at a time; a malformed page is fetched again; the ids the load saw are kept in Redis, and
 * only when Redis held entities of that kind before the load (else there is nothing to evict). Driven directly
 * against a real Redis and the emulator's REST API.
 */
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { describe, test } from "node:test";
import type { PageBody } from "../src/loader/page-rows.js";
import { RestClient } from "../src/loader/rest-client.js";
import { SeenIds } from "../src/loader/seen-ids.js";
import type { Fixture } from "../src/model/wire.js";
import { ReplicationStats } from "../src/replication/stats.js";
import { CircuitBreaker } from "../src/util/breaker.js";
import { createLogger } from "../src/util/log.js";
import { startCluster } from "./helpers/cluster.js";
import { company, templates, user } from "./helpers/faults.js";
import { keys, log, type PipelineRig, withPipelineRig } from "./helpers/pipeline.js";
import { startRedis } from "./helpers/redis.js";

/** Companies c000 … and users u000 … (several pages of the rig's 10 rows each). */
function source(companies: number, users: number): { fixture: Fixture } {
  const t = templates();
  const id = (p: string, i: number) => `${p}${String(i).padStart(3, "0")}`;
  return {
    fixture: {
      flags: [],
      companies: Array.from({ length: companies }, (_, i) => company(t.company, id("c", i), "eu")),
      users: Array.from({ length: users }, (_, i) => user(t.user, id("u", i), "dev")),
    },
  };
}

/** A REST client of the rig's emulator allowing `concurrency` requests at once. */
function restClient(rig: PipelineRig, concurrency: number): RestClient {
  return new RestClient({
    apiUrl: rig.emu!.url,
    apiKey: "test-api-key",
    timeoutMs: 5000,
    breaker: new CircuitBreaker("api", 5, 100),
    log,
    rateLimitRps: 0,
    maxConcurrent: concurrency,
    userAgent: "test",
  });
}

/** A logger whose warnings the test can read. */
function capturingLog() {
  const lines: { msg: string; [k: string]: unknown }[] = [];
  const destination = new Writable({
    write(chunk, _enc, done) {
      for (const line of String(chunk).split("\n")) if (line) lines.push(JSON.parse(line));
      done();
    },
  });
  return { log: createLogger({ level: "warn", format: "json", name: "test", destination }), lines };
}

/** Calls of a Redis command so far (INFO commandstats). */
async function calls(rig: PipelineRig, command: string): Promise<number> {
  const info = await rig.client.info("commandstats");
  return Number(new RegExp(`^cmdstat_${command}:calls=(\\d+)`, "m").exec(info)?.[1] ?? 0);
}

const seenSets = (rig: PipelineRig) => rig.client.keys(`${keys.prefix}datastream:load-seen:*`);

async function storedIds(rig: PipelineRig, kind: "company" | "user"): Promise<string[]> {
  const all = await rig.client.keys(keys.scanPattern(kind));
  return all.map((k) => k.slice(keys.entityId(kind, "").length)).filter((rest) => !rest.includes(":"));
}

describe("the load's pages", () => {
  test("are received into reused bodies: no more at once than the pages in flight", async () => {
    await withPipelineRig(source(95, 87), async (rig) => {
      const rest = restClient(rig, 3);
      const bodies = new Set<PageBody>();
      const pageBody = rest.pageBody.bind(rest);
      rest.pageBody = (kind, limit, offset, signal, into) => {
        bodies.add(into);
        return pageBody(kind, limit, offset, signal, into);
      };
      const result = await rig.load(rig.pipeline.beginLoad("stream-wins"), { rest });
      await rig.endLoad();
      assert.deepEqual([result.companies, result.users, result.complete], [95, 87, true]);
      assert.equal((await storedIds(rig, "company")).length, 95);
      assert.equal((await storedIds(rig, "user")).length, 87);
      // 20 pages of companies and users, fetched up to 3 at once ahead of the page each of the two walks holds.
      assert.ok(bodies.size <= 3 + 2, `${bodies.size} bodies for ${rest.requests} requests`);
      assert.ok(rest.requests >= 20);
    });
  });

  test("a page cut short, or with a row that is not JSON, is fetched again", async () => {
    await withPipelineRig(source(35, 25), async (rig) => {
      const rest = restClient(rig, 2);
      const pageBody = rest.pageBody.bind(rest);
      let spoiled = 0;
      rest.pageBody = async (kind, limit, offset, signal, into) => {
        const body = await pageBody(kind, limit, offset, signal, into);
        if (offset === 0 && kind === "companies" && spoiled++ === 0) body.length -= 20; // the first one: cut short
        if (offset === 0 && kind === "users" && spoiled++ < 3) {
          // `"id":"u000"` becomes `"id":u"000"`: still delimited (strings and brackets balance), but not JSON.
          const at = body.bytes.indexOf('"id":"u');
          body.bytes.write('"id":u"', at, "latin1");
        }
        return body;
      };
      const { log: capture, lines } = capturingLog();
      const result = await rig.load(rig.pipeline.beginLoad("stream-wins"), { rest, log: capture });
      await rig.endLoad();
      assert.deepEqual([result.companies, result.users, result.complete], [35, 25, true]);
      assert.equal((await storedIds(rig, "company")).length, 35);
      assert.equal((await storedIds(rig, "user")).length, 25);
      const refetched = lines.filter((l) => l.msg === "malformed REST page; fetching it again");
      assert.deepEqual(refetched.map((l) => l.kind).sort(), ["companies", "users"]);
    });
  });
});

describe("the ids a load saw", () => {
  test("are not kept when Redis held no entity of that kind: nothing to evict", async () => {
    await withPipelineRig(source(45, 33), async (rig) => {
      const sadds = await calls(rig, "sadd");
      const result = await rig.load(rig.pipeline.beginLoad("stream-wins"));
      await rig.endLoad();
      assert.deepEqual([result.companies, result.users, result.complete, result.evicted], [45, 33, true, 0]);
      assert.equal(await calls(rig, "sadd"), sadds, "no set of seen ids was written");
      assert.deepEqual(await seenSets(rig), []);
    });
  });

  test("are kept in Redis when it held entities: the ones missing upstream are evicted, the sets deleted", async () => {
    await withPipelineRig(source(45, 33), async (rig) => {
      // A user from before the load that the source no longer has; companies: none in Redis.
      await rig.client.set(keys.userId("ghost"), JSON.stringify({ ...templates().user, id: "ghost", keys: {} }));
      let during: string[] = [];
      const rest = restClient(rig, 2);
      const count = rest.count.bind(rest);
      rest.count = async (kind, signal) => {
        during = [...during, ...(await seenSets(rig))];
        return await count(kind, signal);
      };
      const sadds = await calls(rig, "sadd");
      const result = await rig.load(rig.pipeline.beginLoad("stream-wins"), { rest });
      await rig.endLoad();
      assert.deepEqual([result.users, result.complete, result.evicted], [33, true, 1]);
      assert.equal(await rig.client.exists(keys.userId("ghost")), 0, "evicted");
      assert.equal((await storedIds(rig, "user")).length, 33);
      assert.ok((await calls(rig, "sadd")) > sadds);
      assert.ok(
        during.some((k) => k.includes(":user:")),
        "the users' set existed while the load ran",
      );
      assert.ok(!during.some((k) => k.includes(":company:")), "no set for companies: Redis held none");
      assert.deepEqual(await seenSets(rig), [], "deleted at the end");
    });
  });

  test("lost by Redis before the eviction: nothing is evicted this time", async () => {
    await withPipelineRig(source(25, 15), async (rig) => {
      await rig.client.set(keys.userId("ghost"), JSON.stringify({ ...templates().user, id: "ghost", keys: {} }));
      const rest = restClient(rig, 2);
      const count = rest.count.bind(rest);
      let counted = 0;
      rest.count = async (kind, signal) => {
        // The second count of users comes after their walk, before the eviction: the sets vanish then.
        if (kind === "users" && ++counted === 2) for (const key of await seenSets(rig)) await rig.client.del(key);
        return await count(kind, signal);
      };
      const { log: capture, lines } = capturingLog();
      const result = await rig.load(rig.pipeline.beginLoad("stream-wins"), { rest, log: capture });
      await rig.endLoad();
      assert.equal(result.evicted, 0);
      assert.equal(await rig.client.exists(keys.userId("ghost")), 1, "not evicted on the word of a set Redis lost");
      assert.ok(lines.some((l) => l.msg === "Redis lost the ids the load saw; nothing will be evicted this time"));
      assert.equal((await storedIds(rig, "user")).length, 16);
    });
  });
});

describe("the ids a load saw, in Redis", () => {
  const retry = () => ({
    breaker: new CircuitBreaker("redis", 3, 100),
    stats: new ReplicationStats(),
    log,
    signal: new AbortController().signal,
  });

  test("a set that expired and was written again since does not pass for whole", async () => {
    await withPipelineRig(source(0, 0), async (rig) => {
      const seen = new SeenIds(rig.client, keys, "user", retry());
      await seen.add(["u1", "u2"]);
      assert.deepEqual(await seen.has(["u1", "u3", ""]), [true, false, false]);
      assert.equal(await seen.intact(), true);
      const [set] = await seenSets(rig);
      await rig.client.del(set!); // as if it had expired during a long stall of the REST API
      await seen.add(["u3"]);
      assert.deepEqual(await seen.has(["u1", "u3"]), [false, true]);
      assert.equal(await seen.intact(), false, "u1 was lost with the set");
      await seen.clear();
      assert.deepEqual(await seenSets(rig), []);
    });
  });
});

describe("the ids a load saw, on a Redis without SMISMEMBER (before 6.2)", () => {
  test("are asked for one by one, with the same answers", async () => {
    const redis = await startRedis({ args: ["--rename-command", "SMISMEMBER", ""] });
    try {
      const client = redis.client();
      await assert.rejects(client.smismember("k", "a"), /unknown command/i);
      const seen = new SeenIds(client, keys, "company", {
        breaker: new CircuitBreaker("redis", 3, 100),
        stats: new ReplicationStats(),
        log,
        signal: new AbortController().signal,
      });
      await seen.add(["c1", "c2", "c3"]);
      assert.deepEqual(await seen.has(["c2", "c9", "", "c1"]), [true, false, false, true]);
      assert.deepEqual(await seen.has(["c3", "c4"]), [true, false]);
      assert.equal(await seen.intact(), true);
    } finally {
      await redis.stop();
    }
  });
});

describe("the ids a load saw, on a Redis Cluster", () => {
  test("are spread over the masters, answered exactly, and deleted", async () => {
    const cluster = await startCluster({ masters: 3 });
    try {
      const client = cluster.client();
      const retry = {
        breaker: new CircuitBreaker("redis", 3, 100),
        stats: new ReplicationStats(),
        log,
        signal: new AbortController().signal,
      };
      const seen = new SeenIds(client, keys, "user", retry);
      const ids = Array.from({ length: 3000 }, (_, i) => `user-${i}`);
      for (let i = 0; i < ids.length; i += 500) await seen.add(ids.slice(i, i + 500));
      const asked = ["nobody", ...ids.filter((_, i) => i % 7 === 0), "user-3000", "user-1"];
      assert.deepEqual(
        await seen.has(asked),
        asked.map((id) => ids.includes(id)),
      );
      assert.equal(await seen.intact(), true);
      const sets = new Set<string>();
      for (const node of client.nodes("master")) {
        if ((await node.keys("*load-seen*")).length > 0) sets.add(`${node.options.port}`);
      }
      assert.ok(sets.size >= 2, `the sets live on ${sets.size} masters`);
      await seen.clear();
      for (const node of client.nodes("master")) assert.deepEqual(await node.keys("*load-seen*"), []);
      assert.equal(await seen.intact(), false, "a set that was given ids and is gone");
    } finally {
      await cluster.stop();
    }
  });
});
