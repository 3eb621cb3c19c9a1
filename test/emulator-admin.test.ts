/**
 * The emulator's admin API under /_emulator/: entity changes and their validation, bulk (all-or-nothing),
 * faults, state and dump. Real HTTP against an in-process emulator.
 */
import assert from "node:assert/strict";
import { after, before, beforeEach, describe, test } from "node:test";
import { parseFixture, type RunningEmulator, startEmulator } from "../src/emulator/index.js";
import type { FeatureEntitlement, Fixture, Flag } from "../src/model/wire.js";
import { A, company, flag, metric, user } from "./helpers/emulator.js";

const entitlement: FeatureEntitlement = {
  allocation: 100,
  credit_id: "bcrd_1",
  credit_remaining: 10,
  credit_total: 50,
  credit_used: 40,
  event_name: "report_run",
  feature_id: "feat_1",
  feature_key: "reports",
  metric_period: "all_time",
  metric_reset_at: null,
  month_reset: "first_of_month",
  soft_limit: null,
  usage: 3,
  value_type: "numeric",
};

function fixture(): Fixture {
  return {
    flags: [flag("alpha"), flag("beta", true)],
    companies: [
      company(
        "comp_1",
        { domain: "one.example" },
        {
          credit_balances: { bcrd_1: 10, bcrd_2: 5 },
          entitlements: [entitlement],
          metrics: [metric("comp_1", "report_run", 3), metric("comp_1", "export", 1)],
        },
      ),
      company("comp_2", { domain: "two.example" }),
    ],
    users: [user("user_1", { email: "ann@one.example" }), user("user_2", { email: "bob@two.example" })],
  };
}

describe("admin API", () => {
  let emu: RunningEmulator;
  const call = async (method: string, path: string, body?: unknown, raw?: string) => {
    const res = await fetch(`${emu.url}/_emulator${path}`, {
      method,
      headers: body === undefined && raw === undefined ? {} : { "content-type": "application/json" },
      body: raw ?? (body === undefined ? undefined : JSON.stringify(body)),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined, headers: res.headers };
  };
  const dump = async () => parseFixture((await call("GET", "/dump")).body);

  before(async () => {
    emu = await startEmulator({ replayLog: 1000 });
  });
  beforeEach(async () => {
    // Reset to the fixture through the API itself: delete everything, then bulk-load.
    const current = await dump();
    const changes = [
      ...current.flags.map((f) => ({ method: "DELETE", path: `/flags/${f.key}` })),
      ...current.companies.map((c) => ({ method: "DELETE", path: `/companies/${c.id}` })),
      ...current.users.map((u) => ({ method: "DELETE", path: `/users/${u.id}` })),
      ...fixture().flags.map((f) => ({ method: "PUT", path: `/flags/${f.key}`, body: f })),
      ...fixture().companies.map((c) => ({ method: "PUT", path: `/companies/${c.id}`, body: c })),
      ...fixture().users.map((u) => ({ method: "PUT", path: `/users/${u.id}`, body: u })),
    ];
    const r = await call("POST", "/bulk", { changes });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    await call("POST", "/faults", {});
  });
  after(() => emu.close());

  test("GET state counts entities and reports the stream head and replay log", async () => {
    const r = await call("GET", "/state");
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("content-type"), "application/json");
    assert.equal(r.body.companies, 2);
    assert.equal(r.body.users, 2);
    assert.equal(r.body.flags, 2);
    assert.equal(r.body.connections, 0);
    assert.match(r.body.stream_id, /^\d+-\d+$/);
    assert.equal(r.body.replay_log.capacity, 1000);
    assert.ok(r.body.replay_log.size > 0);
    assert.match(r.body.replay_log.oldest, /^\d+-\d+$/);
  });

  test("GET dump returns the whole state as a valid fixture", async () => {
    assert.deepEqual(await dump(), fixture());
  });

  test("PUT company: creates and replaces; answers the stream id", async () => {
    const c3 = company("comp_3", { domain: "three.example", "Stripe ID": "cus_3" }, { base_plan_id: "plan_pro" });
    const r = await call("PUT", "/companies/comp_3", c3);
    assert.equal(r.status, 200);
    assert.deepEqual(Object.keys(r.body), ["stream_id"]);
    const replaced = { ...c3, plan_ids: ["plan_pro"] };
    assert.equal((await call("PUT", "/companies/comp_3", replaced)).status, 200);
    const d = await dump();
    assert.deepEqual(
      d.companies.find((c) => c.id === "comp_3"),
      replaced,
    );
  });

  test("PUT normalises: unknown fields dropped, Go field order, absent optional fields filled", async () => {
    const { base_plan_id: _b, subscription: _s, ...rest } = company("comp_4", { k: "v" });
    const body = { extra: true, ...rest, crm_product_ids: ["x"] };
    assert.equal((await call("PUT", "/companies/comp_4", body)).status, 200);
    const stored = (await dump()).companies.find((c) => c.id === "comp_4")!;
    assert.deepEqual(Object.keys(stored), [
      "id",
      "account_id",
      "environment_id",
      "base_plan_id",
      "billing_product_ids",
      "credit_balances",
      "keys",
      "metrics",
      "plan_ids",
      "plan_version_ids",
      "rules",
      "subscription",
      "traits",
    ]);
    assert.equal(stored.base_plan_id, null);
    assert.equal(stored.subscription, null);
  });

  test("PUT refuses invalid bodies with 400 and the JSON path, changing nothing", async () => {
    const before = await dump();
    const c = company("comp_9", { d: "nine" });
    const cases: [unknown, RegExp][] = [
      [{ ...c, keys: {} }, /\$\.keys: must have at least one key/],
      [{ ...c, plan_ids: null }, /\$\.plan_ids: must not be null/],
      [
        { ...c, metrics: [{ ...metric("comp_9", "e", 1), period: "yearly" }] },
        /\$\.metrics\[0\]\.period: unknown value "yearly"/,
      ],
      [
        { ...c, metrics: [{ ...metric("comp_9", "e", 1), created_at: "yesterday" }] },
        /\$\.metrics\[0\]\.created_at: expected an ISO 8601/,
      ],
      [{ ...c, metrics: [{ ...metric("comp_9", "e", 1.5) }] }, /\$\.metrics\[0\]\.value: expected an integer/],
      [{ ...c, credit_balances: { x: "1" } }, /\$\.credit_balances\.x: expected a number/],
      [{ ...c, account_id: undefined }, /\$\.account_id: missing required field/],
      [{ ...c, id: "" }, /\$\.id: must not be empty/],
      [[c], /\$: expected an object/],
    ];
    for (const [body, reason] of cases) {
      const r = await call("PUT", "/companies/comp_9", body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.match(r.body.error, reason);
    }
    const bad = await call("PUT", "/companies/comp_9", undefined, "{not json");
    assert.equal(bad.status, 400);
    assert.match(bad.body.error, /invalid JSON/);
    assert.deepEqual(await dump(), before);
  });

  test("PUT whose body id differs from the path is a 400", async () => {
    const r = await call("PUT", "/companies/comp_1", company("comp_other", { x: "y" }));
    assert.equal(r.status, 400);
    assert.match(r.body.error, /differs from the company id in the path/);
    assert.equal((await call("PUT", "/users/user_1", user("user_x", { e: "x" }))).status, 400);
    assert.equal((await call("PUT", "/flags/alpha", flag("beta"))).status, 400);
  });

  test("two entities sharing a (key name, value) pair is a 400, compared case-insensitively", async () => {
    const r = await call("PUT", "/companies/comp_3", company("comp_3", { DOMAIN: "ONE.example" }));
    assert.equal(r.status, 400);
    assert.match(r.body.error, /already belongs to company "comp_1"/);
    assert.equal((await call("PUT", "/users/user_3", user("user_3", { email: "Bob@two.example" }))).status, 400);
    const p = await call("PATCH", "/companies/comp_2", { keys: { domain: "one.example" } });
    assert.equal(p.status, 400);
    // The same pair on the same entity is fine, and a pair freed by a change can be taken.
    assert.equal((await call("PUT", "/companies/comp_1", company("comp_1", { domain: "uno.example" }))).status, 200);
    assert.equal((await call("PUT", "/companies/comp_3", company("comp_3", { domain: "one.example" }))).status, 200);
    assert.deepEqual(await dump().then((d) => d.companies.map((c) => c.keys.domain)), [
      "uno.example",
      "two.example",
      "one.example",
    ]);
  });

  test("PATCH merges by the partial rules: keys and balances upserted, metrics upserted, lists replaced, usage synced", async () => {
    const r = await call("PATCH", "/companies/comp_1", {
      keys: { slug: "one" },
      credit_balances: { bcrd_1: 7 },
      metrics: [metric("comp_1", "report_run", 9), metric("comp_1", "api_call", 2)],
      plan_ids: ["plan_x"],
      base_plan_id: "plan_x",
    });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const c = (await dump()).companies.find((x) => x.id === "comp_1")!;
    assert.deepEqual(c.keys, { domain: "one.example", slug: "one" });
    assert.deepEqual(c.credit_balances, { bcrd_1: 7, bcrd_2: 5 });
    assert.deepEqual(
      c.metrics.map((m) => [m.event_subtype, m.value]),
      [
        ["report_run", 9],
        ["export", 1],
        ["api_call", 2],
      ],
    );
    assert.deepEqual(c.plan_ids, ["plan_x"]);
    assert.equal(c.base_plan_id, "plan_x");
    assert.equal(c.entitlements![0]!.credit_remaining, 7, "credit_remaining follows the patched balance");
    assert.equal(c.entitlements![0]!.usage, 9, "usage follows the merged metric");
    // null clears a nullable field
    assert.equal((await call("PATCH", "/companies/comp_1", { base_plan_id: null })).status, 200);
    assert.equal((await dump()).companies.find((x) => x.id === "comp_1")!.base_plan_id, null);

    assert.equal(
      (
        await call("PATCH", "/users/user_1", {
          keys: { user_id: "u1" },
          traits: [{ trait_definition: null, value: "x" }],
        })
      ).status,
      200,
    );
    const u = (await dump()).users.find((x) => x.id === "user_1")!;
    assert.deepEqual(u.keys, { email: "ann@one.example", user_id: "u1" });
    assert.deepEqual(u.traits, [{ trait_definition: null, value: "x" }]);
  });

  test("PATCH refusals: unknown id 404; unknown field, id change, empty patch, invalid value 400", async () => {
    const before = await dump();
    assert.equal((await call("PATCH", "/companies/nope", { plan_ids: [] })).status, 404);
    assert.equal((await call("PATCH", "/users/nope", { traits: [] })).status, 404);
    const cases: [string, unknown, RegExp][] = [
      ["/companies/comp_1", { plan_idz: [] }, /\$\.plan_idz: unknown field/],
      ["/companies/comp_1", { id: "comp_x" }, /id cannot be changed/],
      ["/companies/comp_1", {}, /no fields to merge/],
      ["/companies/comp_1", { plan_ids: null }, /\$\.plan_ids: must not be null/],
      ["/companies/comp_1", { metrics: [{ value: 1 }] }, /\$\.metrics\[0\]\.account_id: missing required field/],
      ["/companies/comp_1", [], /expected a JSON object/],
      ["/users/user_1", { base_plan_id: "x" }, /unknown field for a user partial/],
      ["/users/user_1", { keys: { email: 5 } }, /\$\.keys\.email: expected a string/],
    ];
    for (const [path, body, reason] of cases) {
      const r = await call("PATCH", path, body);
      assert.equal(r.status, 400, `${path} ${JSON.stringify(body)}`);
      assert.match(r.body.error, reason);
    }
    assert.deepEqual(await dump(), before);
  });

  test("DELETE removes; unknown ids and keys are 404", async () => {
    assert.equal((await call("DELETE", "/companies/comp_2")).status, 200);
    assert.equal((await call("DELETE", "/users/user_2")).status, 200);
    assert.equal((await call("DELETE", "/flags/beta")).status, 200);
    for (const path of ["/companies/comp_2", "/users/user_2", "/flags/beta", "/companies/never"]) {
      assert.equal((await call("DELETE", path)).status, 404, path);
    }
    const d = await dump();
    assert.deepEqual([d.companies.length, d.users.length, d.flags.map((f) => f.key)], [1, 1, ["alpha"]]);
    // The (key, value) pairs of a deleted entity are free again.
    assert.equal((await call("PUT", "/companies/comp_5", company("comp_5", { domain: "two.example" }))).status, 200);
  });

  test("flags: PUT validates (key case clash, id clash, bad rule), PATCH is not allowed", async () => {
    const good: Flag = {
      ...flag("gamma"),
      rules: [
        {
          id: "rule_1",
          flag_id: "flag_gamma",
          ...A,
          rule_type: "standard",
          name: "r",
          priority: 1,
          conditions: [],
          condition_groups: [],
          value: true,
        },
      ],
    };
    assert.equal((await call("PUT", "/flags/gamma", good)).status, 200);
    assert.deepEqual(
      (await dump()).flags.find((f) => f.key === "gamma"),
      good,
    );
    const clash = await call("PUT", "/flags/ALPHA", { ...flag("ALPHA"), id: "flag_upper" });
    assert.equal(clash.status, 400);
    assert.match(clash.body.error, /differs only in case/);
    assert.equal((await call("PUT", "/flags/delta", { ...flag("delta"), id: "flag_alpha" })).status, 400);
    const badRule = await call("PUT", "/flags/gamma", {
      ...good,
      rules: [{ ...good.rules[0], rule_type: "sometimes" }],
    });
    assert.equal(badRule.status, 400);
    assert.match(badRule.body.error, /\$\.rules\[0\]\.rule_type: unknown value "sometimes"/);
    assert.equal(
      (await call("PUT", "/flags/gamma", { ...good, rules: [{ ...good.rules[0], priority: "1" }] })).status,
      400,
    );
    assert.equal((await call("PUT", "/flags/gamma", { ...good, default_value: null })).status, 400);
    assert.equal((await call("PATCH", "/flags/gamma", { default_value: true })).status, 405);
  });

  test("bulk: applies in order and answers the last stream id and the count", async () => {
    const r = await call("POST", "/bulk", {
      changes: [
        { method: "PUT", path: "/companies/comp_7", body: company("comp_7", { d: "seven" }) },
        { method: "patch", path: "/companies/comp_7", body: { plan_ids: ["p"] } },
        { method: "DELETE", path: "/users/user_2" },
        { method: "PUT", path: "/_emulator/flags/zeta", body: flag("zeta") },
      ],
    });
    assert.equal(r.status, 200);
    assert.equal(r.body.count, 4);
    assert.equal(r.body.stream_id, (await call("GET", "/state")).body.stream_id);
    const d = await dump();
    assert.deepEqual(d.companies.find((c) => c.id === "comp_7")!.plan_ids, ["p"]);
    assert.equal(d.users.length, 1);
    assert.ok(d.flags.some((f) => f.key === "zeta"));
    assert.deepEqual(await call("POST", "/bulk", { changes: [] }), {
      status: 200,
      body: { count: 0 },
      headers: r.headers,
    });
  });

  test("bulk: one bad change (named by index) applies none", async () => {
    const before = await dump();
    const stateBefore = (await call("GET", "/state")).body.stream_id;
    const cases: [unknown[], number, RegExp][] = [
      [
        [
          { method: "PUT", path: "/companies/comp_8", body: company("comp_8", { d: "eight" }) },
          { method: "DELETE", path: "/companies/comp_2" },
          { method: "PUT", path: "/companies/comp_9", body: company("comp_9", { d: "eight" }) },
        ],
        400,
        /^changes\[2\]: .*already belongs to company "comp_8"/,
      ],
      [
        [
          { method: "DELETE", path: "/companies/comp_1" },
          { method: "DELETE", path: "/companies/comp_1" },
        ],
        404,
        /^changes\[1\]/,
      ],
      [[{ method: "PUT", path: "/planets/x", body: {} }], 404, /^changes\[0\]: unknown collection/],
      [[{ method: "POST", path: "/companies/comp_1", body: {} }], 405, /^changes\[0\]/],
      [[{ path: "/companies/comp_1" }], 400, /^changes\[0\]/],
      [
        [{ method: "PATCH", path: "/users/user_1", body: { traits: null } }],
        400,
        /^changes\[0\]: \$\.traits: must not be null/,
      ],
    ];
    for (const [changes, status, reason] of cases) {
      const r = await call("POST", "/bulk", { changes });
      assert.equal(r.status, status, JSON.stringify(changes));
      assert.match(r.body.error, reason);
    }
    assert.equal((await call("POST", "/bulk", { nope: [] })).status, 400);
    assert.deepEqual(await dump(), before);
    assert.equal((await call("GET", "/state")).body.stream_id, stateBefore, "nothing was pushed");
  });

  test("faults: validated; POST replaces the whole set; {} clears; GET shows it", async () => {
    for (const bad of [
      { rest_error_rate: 2 },
      { rest_error_status: 42 },
      { rest_fail_next: -1 },
      { rest_fail_paths: ["companies"] },
      { auth_failure: "sometimes" },
      { datastream_refuse_status: "503" },
      { rest_latency_ms: 1.5 },
      { unknown_fault: 1 },
    ]) {
      assert.equal((await call("POST", "/faults", bad)).status, 400, JSON.stringify(bad));
    }
    assert.equal((await call("POST", "/faults", { rest_fail_next: 2, rest_error_status: 502 })).status, 200);
    assert.deepEqual((await call("GET", "/faults")).body, { rest_fail_next: 2, rest_error_status: 502 });
    assert.equal((await call("POST", "/faults", { rest_latency_ms: 5 })).status, 200);
    assert.deepEqual((await call("GET", "/faults")).body, { rest_latency_ms: 5 });
    assert.equal((await call("POST", "/faults", {})).status, 200);
    assert.deepEqual((await call("GET", "/faults")).body, {});
  });

  test("unknown admin routes are 404, wrong methods 405, endpoints without a change answer {}", async () => {
    assert.equal((await call("GET", "/nothing")).status, 404);
    assert.equal((await call("GET", "/companies/a/b")).status, 404);
    assert.equal((await call("POST", "/state")).status, 405);
    assert.equal((await call("GET", "/bulk")).status, 405);
    assert.equal((await call("GET", "/reload")).status, 405);
    assert.deepEqual((await call("POST", "/reload")).body, {});
    assert.deepEqual((await call("POST", "/disconnect", {})).body, {});
    assert.equal((await call("POST", "/reload", { x: 1 })).status, 400);
  });
});
