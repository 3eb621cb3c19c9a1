import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { after, before, beforeEach, describe, it } from "node:test";
import { Cluster, type Redis } from "ioredis";
import { expectedCompany, expectedUser } from "../src/model/equivalence.js";
import type { Company, Fixture, Flag, User } from "../src/model/wire.js";
import { KeyScheme } from "../src/store/keys.js";
import { diffRedis } from "../src/verify/diff.js";
import { type RedisServer, startRedis, waitFor } from "./helpers/redis.js";

const keys = new KeyScheme("schematic:", "testver1");

function flag(id: string, key: string): Flag {
  return {
    id,
    account_id: "acc_1",
    environment_id: "env_1",
    key,
    rules: [
      {
        id: `rule_${id}`,
        flag_id: id,
        account_id: "acc_1",
        environment_id: "env_1",
        rule_type: "standard",
        name: "r",
        priority: 1,
        conditions: [
          {
            id: "cond",
            account_id: "acc_1",
            environment_id: "env_1",
            condition_type: "company",
            operator: "eq",
            resource_ids: ["comp_1"],
            event_subtype: null,
            metric_value: null,
            metric_period: null,
            metric_period_month_reset: null,
            credit_id: null,
            consumption_rate: null,
            trait_definition: null,
            trait_value: "",
            comparison_trait_definition: null,
          },
        ],
        condition_groups: [],
        value: true,
      },
    ],
    default_value: false,
  };
}

function company(id: string, companyKeys: Record<string, string>): Company {
  return {
    id,
    account_id: "acc_1",
    environment_id: "env_1",
    base_plan_id: "plan_1",
    billing_product_ids: ["prod_1"],
    credit_balances: { cred_1: 5 },
    keys: companyKeys,
    metrics: [
      {
        account_id: "acc_1",
        environment_id: "env_1",
        company_id: id,
        event_subtype: "api_call",
        period: "current_week",
        month_reset: "first_of_month",
        value: 3,
        created_at: "2026-01-01T00:00:00.000Z",
        valid_until: null,
      },
    ],
    plan_ids: ["plan_1"],
    plan_version_ids: ["plvr_1"],
    rules: [],
    subscription: { id: "sub_1", period_start: "2026-01-01T01:00:00+01:00", period_end: "2026-02-01T00:00:00Z" },
    traits: [{ trait_definition: { id: "tier", comparable_type: "string", entity_type: "company" }, value: "gold" }],
  };
}

function user(id: string, email: string): User {
  return {
    id,
    account_id: "acc_1",
    environment_id: "env_1",
    keys: { email },
    traits: [{ trait_definition: { id: "role", comparable_type: "string", entity_type: "user" }, value: "admin" }],
    rules: [],
  };
}

const fixture: Fixture = {
  flags: [flag("flag_1", "New-Checkout"), flag("flag_2", "beta"), flag("flag_3", "")],
  companies: [
    company("comp_1", { domain: "acme.com", stripe_id: "cus_ABC" }),
    company("comp_2", { slug: "İstanbul" }), // Go and JS lower-case İ differently: two lookup keys
    company("comp_3", {}), // no keys: never cached
  ],
  users: [user("user_1", "Jane@Acme.com"), user("user_2", "bob@acme.com")],
};

const K = {
  flag1: keys.flag("New-Checkout"),
  flag2: keys.flag("beta"),
  comp1: keys.companyId("comp_1"),
  comp1Domain: keys.companyLookups("domain", "acme.com")[0]!,
  comp1Stripe: keys.companyLookups("stripe_id", "cus_ABC")[0]!,
  comp2: keys.companyId("comp_2"),
  comp2Js: keys.companyLookups("slug", "İstanbul")[0]!,
  comp2Go: keys.companyLookups("slug", "İstanbul")[1]!,
  user1: keys.userId("user_1"),
  user1Email: keys.userLookups("email", "Jane@Acme.com")[0]!,
  user2: keys.userId("user_2"),
  user2Email: keys.userLookups("email", "bob@acme.com")[0]!,
};
const EXPECTED_KEYS = Object.values(K).length;

/** Writes the keyspace a replicator should leave: bodies as the REST load makes them, or as the stream delivers them. */
async function writeKeyspace(r: Redis | Cluster, form: "rest" | "wire" = "rest"): Promise<void> {
  // Single-key commands, issued together: valid on a Cluster too (a pipeline there must stay on one node).
  const writes: Promise<unknown>[] = [];
  const p = { set: (k: string, v: string) => writes.push(r.set(k, v)) };
  for (const f of fixture.flags) {
    if (f.key) for (const k of keys.flagKeys(f.key)) p.set(k, JSON.stringify(f));
  }
  for (const c of fixture.companies) {
    if (Object.keys(c.keys).length === 0) continue;
    p.set(keys.companyId(c.id), JSON.stringify(form === "rest" ? expectedCompany(c) : c));
    for (const [n, v] of Object.entries(c.keys))
      for (const k of keys.companyLookups(n, v)) p.set(k, JSON.stringify(c.id));
  }
  for (const u of fixture.users) {
    p.set(keys.userId(u.id), JSON.stringify(form === "rest" ? expectedUser(u) : u));
    for (const [n, v] of Object.entries(u.keys)) for (const k of keys.userLookups(n, v)) p.set(k, JSON.stringify(u.id));
  }
  await Promise.all(writes);
}

describe("diffRedis", () => {
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
    await writeKeyspace(r);
  });

  it("reports nothing for a clean keyspace", async () => {
    assert.equal(keys.companyLookups("slug", "İstanbul").length, 2);
    const res = await diffRedis(r, keys, fixture);
    assert.deepEqual(res.differences, []);
    assert.equal(res.checked, EXPECTED_KEYS);
  });

  it("accepts bodies written from the stream (wire form, account_id, other time formats)", async () => {
    await r.flushall();
    await writeKeyspace(r, "wire");
    const res = await diffRedis(r, keys, fixture);
    assert.deepEqual(res.differences, []);
  });

  it("ignores other versions, the marker and control keys", async () => {
    await r.set("schematic:company:oldver:comp_9", "{}");
    await r.set("schematic:flags:oldver:x", "{}");
    await r.set(keys.marker(), JSON.stringify({ state: "loaded" }));
    await r.set("schematic:datastream:replay_cursor", "1-0");
    assert.deepEqual((await diffRedis(r, keys, fixture)).differences, []);
  });

  it("reports a missing key", async () => {
    await r.del(K.comp2Go);
    const res = await diffRedis(r, keys, fixture);
    assert.deepEqual(res.differences, [{ kind: "missing", key: K.comp2Go }]);
  });

  it("reports a stale value", async () => {
    const changed = { ...expectedUser(fixture.users[0]!), traits: [] };
    await r.set(K.user1, JSON.stringify(changed));
    const res = await diffRedis(r, keys, fixture);
    assert.equal(res.differences.length, 1);
    assert.equal(res.differences[0]?.kind, "stale");
    assert.equal(res.differences[0]?.key, K.user1);
    assert.match(res.differences[0]?.detail ?? "", /traits/);
  });

  it("reports a stale flag and ignores account_id differences", async () => {
    await r.set(K.flag2, JSON.stringify({ ...fixture.flags[1], account_id: "other", default_value: true }));
    await r.set(K.flag1, JSON.stringify({ ...fixture.flags[0], account_id: "other" }));
    const res = await diffRedis(r, keys, fixture);
    assert.deepEqual(res.differences, [
      { kind: "stale", key: K.flag2, detail: "value differs at .default_value: true vs false" },
    ]);
  });

  it("reports extra keys under the current version", async () => {
    await r.set(keys.companyId("comp_ghost"), "{}");
    await r.set(keys.flag("removed-flag"), "{}");
    await r.set(keys.companyId("comp_3"), JSON.stringify(expectedCompany(fixture.companies[2]!)));
    const res = await diffRedis(r, keys, fixture);
    assert.deepEqual(
      res.differences,
      [keys.companyId("comp_3"), keys.companyId("comp_ghost"), keys.flag("removed-flag")]
        .sort()
        .map((key) => ({ kind: "extra", key })),
    );
    assert.equal(res.checked, EXPECTED_KEYS + 3);
  });

  it("reports a lookup pointing at the wrong id", async () => {
    await r.set(K.comp1Domain, JSON.stringify("comp_2"));
    const res = await diffRedis(r, keys, fixture);
    assert.deepEqual(res.differences, [
      { kind: "stale", key: K.comp1Domain, detail: 'points to "comp_2", expected "comp_1"' },
    ]);
  });

  it("reports a bare (unquoted) lookup value and a value of the wrong type", async () => {
    await r.set(K.user2Email, "user_2");
    await r.del(K.comp1Stripe);
    await r.hset(K.comp1Stripe, "id", "comp_1");
    const res = await diffRedis(r, keys, fixture);
    assert.equal(res.differences.length, 2);
    assert.equal(res.differences[0]?.key, K.comp1Stripe);
    assert.match(res.differences[0]?.detail ?? "", /WRONGTYPE/);
    assert.deepEqual(res.differences[1], { kind: "stale", key: K.user2Email, detail: "value is not JSON" });
  });

  it("reports an unexpected expiry, or a missing one when expiries are expected", async () => {
    await r.pexpire(K.comp1, 600_000);
    const res = await diffRedis(r, keys, fixture);
    assert.deepEqual(res.differences, [{ kind: "stale", key: K.comp1, detail: "unexpected expiry" }]);

    const withTtl = await diffRedis(r, keys, fixture, { expectTtl: true });
    assert.equal(withTtl.differences.length, EXPECTED_KEYS - 1);
    assert.ok(withTtl.differences.every((d) => d.kind === "stale" && d.detail === "no expiry" && d.key !== K.comp1));
  });

  it("reports every kind of drift at once, sorted by key, one entry per key", async () => {
    await r.del(K.user2);
    await r.set(K.comp2, JSON.stringify({ ...expectedCompany(fixture.companies[1]!), base_plan_id: "plan_other" }));
    await r.pexpire(K.comp2, 600_000);
    await r.set(K.user1Email, JSON.stringify("user_2"));
    await r.set(keys.userId("user_gone"), "{}");
    await r.pexpire(K.flag1, 600_000);
    const res = await diffRedis(r, keys, fixture, { batchSize: 3 });
    const want = [
      {
        kind: "stale",
        key: K.comp2,
        detail: 'value differs at .base_plan_id: "plan_other" vs "plan_1"; unexpected expiry',
      },
      { kind: "stale", key: K.flag1, detail: "unexpected expiry" },
      { kind: "stale", key: K.user1Email, detail: 'points to "user_2", expected "user_1"' },
      { kind: "extra", key: keys.userId("user_gone") },
      { kind: "missing", key: K.user2 },
    ].sort((a, b) => (a.key < b.key ? -1 : 1));
    assert.deepEqual(res.differences, want);
  });
});

describe("diffRedis on a Cluster", {
  skip: spawnSync("redis-cli", ["--version"]).status !== 0 && "no redis-cli",
}, () => {
  const servers: RedisServer[] = [];
  let cluster: Cluster;

  before(async () => {
    for (let i = 0; i < 3; i++) {
      servers.push(await startRedis({ args: ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"] }));
    }
    const create = spawnSync(
      "redis-cli",
      ["--cluster", "create", ...servers.map((s) => s.addr), "--cluster-replicas", "0", "--cluster-yes"],
      { encoding: "utf8" },
    );
    assert.equal(create.status, 0, create.stderr || create.stdout);
    await waitFor(
      async () => {
        for (const s of servers) {
          const info = String(await s.client().cluster("INFO"));
          if (!info.includes("cluster_state:ok")) return false;
        }
        return true;
      },
      { what: "cluster_state:ok" },
    );
    cluster = new Cluster(servers.map((s) => ({ host: s.host, port: s.port })));
    await waitFor(() => cluster.status === "ready", { what: "cluster client ready" });
  });
  after(async () => {
    cluster?.disconnect();
    for (const s of servers) await s.stop();
  });

  it("reads every key and scans every master", async () => {
    await writeKeyspace(cluster);
    // the keys really are spread over the masters
    const perNode = await Promise.all(cluster.nodes("master").map((n) => n.dbsize()));
    assert.ok(perNode.filter((n) => n > 0).length >= 2, `keys per master: ${perNode}`);
    assert.deepEqual((await diffRedis(cluster, keys, fixture)).differences, []);

    const extras = ["a", "b", "c", "d", "e", "f"].map((x) => keys.companyId(`ghost_${x}`));
    await Promise.all(extras.map((k) => cluster.set(k, "{}")));
    await cluster.del(K.user1Email);
    await cluster.set(K.comp1Domain, JSON.stringify("comp_2"));
    await cluster.pexpire(K.flag2, 600_000);
    const res = await diffRedis(cluster, keys, fixture, { batchSize: 4 });
    const want = [
      ...extras.map((key) => ({ kind: "extra", key })),
      { kind: "missing", key: K.user1Email },
      { kind: "stale", key: K.comp1Domain, detail: 'points to "comp_2", expected "comp_1"' },
      { kind: "stale", key: K.flag2, detail: "unexpected expiry" },
    ].sort((a, b) => (a.key < b.key ? -1 : 1));
    assert.deepEqual(res.differences, want);
    assert.equal(res.checked, EXPECTED_KEYS + extras.length);
  });
});
