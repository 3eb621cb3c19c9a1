import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { generateFixture } from "../src/emulator/generate.js";
import { expectedCompany, expectedUser, firstDifference, sameEntity } from "../src/model/equivalence.js";
import {
  companyToRest,
  fromUnixSeconds,
  restCompanyToEngine,
  restToEngine,
  restUserToEngine,
  unixSeconds,
  userToRest,
} from "../src/model/rest.js";
import {
  COMPANY_FIELDS,
  COMPARABLE_TYPES,
  CONDITION_TYPES,
  type Company,
  type CompanyMetric,
  type Condition,
  type ConditionType,
  METRIC_PERIODS,
  MONTH_RESETS,
  OPERATORS,
  type Operator,
  type Rule,
  type Trait,
  type TraitDefinition,
  USER_FIELDS,
  type User,
} from "../src/model/wire.js";
import { company } from "./helpers/emulator.js";

// ---------------------------------------------------------------------------------------------------------------
// Builders: entities already in the form the REST load produces (Go times, override rules only, trait definitions
// of the entity's type), so that the round trip must give them back exactly (account_id aside).

const tdef = (id: string, comparable: TraitDefinition["comparable_type"], entity: "company" | "user") => ({
  id,
  comparable_type: comparable,
  entity_type: entity,
});

function condition(type: ConditionType, operator: Operator, over: Partial<Condition> = {}): Condition {
  return {
    id: `cond_${type}_${operator}`,
    account_id: "acc_1",
    environment_id: "env_1",
    condition_type: type,
    operator,
    resource_ids: type === "metric" || type === "trait" || type === "credit" ? [] : [`res_${type}`],
    event_subtype: type === "metric" ? "api_call" : null,
    metric_value: type === "metric" ? 100 : null,
    metric_period: type === "metric" ? "current_week" : null,
    metric_period_month_reset: type === "metric" ? "billing_cycle" : null,
    credit_id: type === "credit" ? "cred_1" : null,
    consumption_rate: type === "credit" ? 2.5 : null,
    trait_definition: type === "trait" ? tdef("plan_tier", "string", "company") : null,
    trait_value: type === "trait" ? "gold" : "",
    comparison_trait_definition: null,
    ...over,
  };
}

function rule(id: string, over: Partial<Rule> = {}): Rule {
  return {
    id,
    flag_id: "flag_1",
    account_id: "acc_1",
    environment_id: "env_1",
    rule_type: "company_override",
    name: `Rule ${id}`,
    priority: 3,
    conditions: [],
    condition_groups: [],
    value: true,
    ...over,
  };
}

function metric(period: CompanyMetric["period"], reset: CompanyMetric["month_reset"], value: number): CompanyMetric {
  return {
    account_id: "acc_1",
    environment_id: "env_1",
    company_id: "comp_full",
    event_subtype: `evt_${period}`,
    period,
    month_reset: reset,
    value,
    created_at: "2026-06-01T12:30:45.123456789Z",
    valid_until: period === "all_time" ? null : "2026-07-01T00:00:00+02:00",
  };
}

function fullCompany(): Company {
  const conditions = CONDITION_TYPES.map((t, i) => condition(t, OPERATORS[i % OPERATORS.length]!));
  return {
    id: "comp_full",
    account_id: "acc_1",
    environment_id: "env_1",
    base_plan_id: "plan_base",
    billing_product_ids: ["prod_1", "prod_2", "prod_1"],
    credit_balances: { cred_1: 12.5, cred_2: 0 },
    entitlements: [
      {
        allocation: 100,
        consumption_rate: 1.5,
        credit_id: "cred_1",
        credit_remaining: 12.5,
        credit_reserved: 1,
        credit_settled: 2,
        credit_total: 20,
        credit_used: 7.5,
        event_name: "api_call",
        event_subtype: "api_call",
        feature_id: "feat_1",
        feature_key: "api-calls",
        metric_period: "current_month",
        metric_reset_at: "2026-07-01T00:00:00Z",
        month_reset: "billing_cycle",
        soft_limit: 90,
        usage: 42,
        value_type: "numeric",
        warning_tiers: [{ key: "warn", value: 80 }],
      },
      { feature_id: "feat_2", feature_key: "sso", value_type: "boolean" },
    ],
    keys: { domain: "acme.com", stripe_id: "cus_ABC", slug: "Acme" },
    metrics: METRIC_PERIODS.flatMap((p, i) => MONTH_RESETS.map((r, j) => metric(p, r, i * 10 + j))),
    plan_ids: ["plan_base", "plan_addon_a", "plan_addon_b"],
    plan_version_ids: ["plvr_base", "plvr_a", "plvr_b"],
    rules: [
      rule("rule_all_conditions", { conditions }),
      rule("rule_groups", {
        rule_type: "company_override_usage_exceeded",
        flag_id: null,
        value: false,
        priority: 0,
        condition_groups: [
          { conditions: [condition("plan", "eq"), condition("plan_version", "ne")] },
          {
            conditions: [
              condition("trait", "gte", {
                trait_definition: tdef("seats", "int", "company"),
                comparison_trait_definition: tdef("max_seats", "int", "user"),
              }),
            ],
          },
          { conditions: [] },
        ],
      }),
    ],
    subscription: { id: "sub_1", period_start: "2026-06-01T00:00:00Z", period_end: "2026-07-01T00:00:00Z" },
    traits: COMPARABLE_TYPES.map(
      (t): Trait => ({
        trait_definition: tdef(`trait_${t}`, t, "company"),
        value: t === "bool" ? "true" : t === "int" ? "7" : t === "date" ? "2026-01-01" : "hello",
      }),
    ),
  };
}

function minimalCompany(): Company {
  return company("comp_min", { id: "min" });
}

function variants(): [string, Company][] {
  const full = fullCompany();
  return [
    ["every field", full],
    ["empty lists, null base plan, no subscription", minimalCompany()],
    [
      "null base plan with plan versions",
      { ...minimalCompany(), id: "comp_pv", plan_version_ids: ["plvr_x", "plvr_y"] },
    ],
    [
      "products without a subscription",
      { ...minimalCompany(), id: "comp_prod", billing_product_ids: ["prod_9", "prod_8"] },
    ],
    [
      "subscription without products",
      {
        ...minimalCompany(),
        id: "comp_sub",
        subscription: { id: "sub_9", period_start: "1999-12-31T23:59:59Z", period_end: "2100-01-01T00:00:00Z" },
      },
    ],
    ["entitlements empty", { ...full, id: "comp_noent", entitlements: [] }],
    [
      "base plan without versions",
      { ...minimalCompany(), id: "comp_bp", base_plan_id: "plan_x", plan_ids: ["plan_x"] },
    ],
  ];
}

function fullUser(): User {
  return {
    id: "user_1",
    account_id: "acc_1",
    environment_id: "env_1",
    keys: { email: "Jane@Example.com", user_id: "u-1" },
    traits: COMPARABLE_TYPES.map((t) => ({ trait_definition: tdef(`u_${t}`, t, "user"), value: `v_${t}` })),
    rules: [],
  };
}

// ---------------------------------------------------------------------------------------------------------------

describe("REST round trip", () => {
  for (const [name, c] of variants()) {
    it(`company: ${name}`, () => {
      const back = restCompanyToEngine(JSON.parse(JSON.stringify(companyToRest(c))));
      // Go's omitempty: an empty entitlements list is left out
      const want = c.entitlements?.length === 0 ? { ...c, entitlements: undefined } : c;
      assert.equal(firstDifference(back, want), null);
      assert.equal(back.account_id, "");
      assert.ok(sameEntity(back, expectedCompany(c)));
      const order = Object.keys(back);
      assert.deepEqual(
        order,
        COMPANY_FIELDS.filter((f) => f !== "entitlements" || (c.entitlements?.length ?? 0) > 0),
      );
    });
  }

  it("user with traits of every comparable type", () => {
    const u = fullUser();
    const back = restUserToEngine(JSON.parse(JSON.stringify(userToRest(u))));
    assert.equal(firstDifference(back, u), null);
    assert.deepEqual(Object.keys(back), [...USER_FIELDS]);
    assert.equal(back.account_id, "");
  });

  it("user without traits", () => {
    const u: User = { ...fullUser(), traits: [] };
    assert.ok(sameEntity(expectedUser(u), u));
  });

  it("expectedCompany/expectedUser are idempotent", () => {
    for (const [, c] of variants()) {
      const once = expectedCompany(c);
      assert.deepEqual(expectedCompany(once), once);
    }
    const once = expectedUser(fullUser());
    assert.deepEqual(expectedUser(once), once);
  });
});

describe("equivalence form (what the REST load cannot carry)", () => {
  it("keeps only company_override rules, drops user rules, forces trait entity types, drops definition-less traits", () => {
    const c: Company = {
      ...minimalCompany(),
      rules: [rule("keep"), rule("std", { rule_type: "standard" }), rule("pe", { rule_type: "plan_entitlement" })],
      traits: [
        { trait_definition: tdef("t", "int", "user"), value: "1" },
        { trait_definition: null, value: "orphan" },
      ],
    };
    const e = expectedCompany(c);
    assert.deepEqual(
      e.rules.map((r) => r.id),
      ["keep"],
    );
    assert.deepEqual(e.traits, [{ trait_definition: tdef("t", "int", "company"), value: "1" }]);
    const u = expectedUser({ ...fullUser(), rules: [rule("r")] });
    assert.deepEqual(u.rules, []);
  });

  it("normalises times: subscription to whole UTC seconds, others Go-formatted", () => {
    const c: Company = {
      ...minimalCompany(),
      subscription: { id: "s", period_start: "2026-06-01T02:00:00.750+02:00", period_end: "1970-01-01T00:00:00Z" },
      metrics: [{ ...metric("all_time", "first_of_month", 1), created_at: "2026-01-01T00:00:00.100000-00:00" }],
    };
    const e = expectedCompany(c);
    // unix 0 is Go's "no period" and comes back as the zero time
    assert.deepEqual(e.subscription, {
      id: "s",
      period_start: "2026-06-01T00:00:00Z",
      period_end: "0001-01-01T00:00:00Z",
    });
    assert.equal(e.metrics[0]?.created_at, "2026-01-01T00:00:00.1Z");
  });

  it("maps an empty base_plan_id to null and drops empty ids", () => {
    const e = expectedCompany({
      ...minimalCompany(),
      base_plan_id: "",
      plan_ids: ["", "p"],
      plan_version_ids: ["", "v"],
      billing_product_ids: ["", "b"],
    });
    assert.equal(e.base_plan_id, null);
    assert.deepEqual([e.plan_ids, e.plan_version_ids, e.billing_product_ids], [["p"], ["v"], ["b"]]);
  });

  it("sameEntity ignores account_id everywhere, key order, and null versus absent", () => {
    assert.ok(sameEntity({ a: 1, account_id: "x", n: { account_id: "y", b: null } }, { n: { c: undefined }, a: 1 }));
    assert.ok(!sameEntity({ a: [1, 2] }, { a: [2, 1] }));
    assert.ok(!sameEntity({ a: {} }, { a: [] }));
    assert.ok(!sameEntity({ a: 0 }, { a: null }));
    assert.match(firstDifference({ t: [{ v: "a" }] }, { t: [{ v: "b" }] }) ?? "", /^\.t\[0\]\.v: "a" vs "b"$/);
  });
});

describe("companyToRest / userToRest", () => {
  it("is deterministic, also across key order", () => {
    const c = fullCompany();
    const reverseKeys = (v: unknown): unknown =>
      Array.isArray(v)
        ? v.map(reverseKeys)
        : typeof v === "object" && v !== null
          ? Object.fromEntries(
              Object.entries(v)
                .reverse()
                .map(([k, x]) => [k, reverseKeys(x)]),
            )
          : v;
    const shuffled = reverseKeys(c) as Company;
    assert.notEqual(JSON.stringify(shuffled), JSON.stringify(c));
    assert.equal(JSON.stringify(companyToRest(c)), JSON.stringify(companyToRest(c)));
    assert.equal(JSON.stringify(companyToRest(shuffled)), JSON.stringify(companyToRest(c)));
    assert.equal(JSON.stringify(userToRest(fullUser())), JSON.stringify(userToRest(fullUser())));
  });

  it("produces the API's shape", () => {
    const r = companyToRest(fullCompany());
    assert.equal(r.id, "comp_full");
    assert.equal(typeof r.name, "string");
    assert.match(r.created_at, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/);
    assert.deepEqual(
      r.keys.map((k) => [k.key, k.value, k.entity_type, k.entity_id]),
      [
        ["domain", "acme.com", "company", "comp_full"],
        ["slug", "Acme", "company", "comp_full"],
        ["stripe_id", "cus_ABC", "company", "comp_full"],
      ],
    );
    assert.deepEqual(
      r.entity_traits.map((t) => t.definition?.trait_type),
      ["boolean", "date", "number", "string"],
    );
    assert.equal(r.plan?.id, "plan_base");
    assert.equal(r.plan?.plan_version_id, "plvr_base");
    assert.deepEqual(
      r.add_ons.map((a) => a.plan_version_id),
      ["plvr_a", "plvr_b"],
    );
    assert.equal(r.billing_subscription?.period_start, 1_780_272_000);
    assert.equal(r.billing_subscription?.id, "sub_1");
    assert.deepEqual(r.billing_credit_balances, { cred_1: 12.5, cred_2: 0 });
    const m = companyToRest(minimalCompany());
    assert.ok(!("plan" in m) && !("billing_subscription" in m) && !("billing_credit_balances" in m));
    assert.deepEqual(m.billing_subscriptions, []);
    assert.deepEqual(m.entitlements, []);
  });
});

describe("restCompanyToEngine (lenient REST input)", () => {
  const base = { id: "comp_r", environment_id: "env_r", keys: [{ key: "domain", value: "r.com" }] };

  it("throws naming the field when id or keys are missing", () => {
    assert.throws(() => restCompanyToEngine({ keys: [] }), /"id"/);
    assert.throws(() => restCompanyToEngine({ id: "", keys: [] }), /"id"/);
    assert.throws(() => restCompanyToEngine({ id: "c" }), /"keys"/);
    assert.throws(() => restUserToEngine({ id: "u", keys: null }), /"keys"/);
    assert.throws(() => restUserToEngine(null), /REST user/);
  });

  it("fills every engine field for a bare response", () => {
    const c = restCompanyToEngine(base);
    assert.deepEqual(c, {
      id: "comp_r",
      account_id: "",
      environment_id: "env_r",
      base_plan_id: null,
      billing_product_ids: [],
      credit_balances: {},
      keys: { domain: "r.com" },
      metrics: [],
      plan_ids: [],
      plan_version_ids: [],
      rules: [],
      subscription: null,
      traits: [],
    });
    assert.deepEqual(restUserToEngine({ id: "u", keys: [] }), {
      id: "u",
      account_id: "",
      environment_id: "",
      keys: {},
      traits: [],
      rules: [],
    });
  });

  it("accepts operator aliases, keeps plan_version conditions, blanks unknown condition types", () => {
    const aliases = [
      ["equals", "eq"],
      ["not_equals", "ne"],
      ["greater_than", "gt"],
      ["less_than", "lt"],
      ["greater_than_or_equal", "gte"],
      ["less_than_or_equal", "lte"],
      ["is_empty", "is_empty"],
      ["not_empty", "not_empty"],
      ["weird", "eq"],
    ];
    const c = restCompanyToEngine({
      ...base,
      rules: [
        {
          id: "r",
          rule_type: "company_override",
          value: true,
          conditions: [
            ...aliases.map(([op]) => ({ id: op, condition_type: "plan_version", operator: op })),
            { id: "x", condition_type: "crm_product", operator: "eq" },
          ],
        },
      ],
    });
    const conds = c.rules[0]?.conditions ?? [];
    assert.deepEqual(
      conds.slice(0, aliases.length).map((x) => x.operator),
      aliases.map(([, op]) => op),
    );
    assert.ok(conds.slice(0, aliases.length).every((x) => x.condition_type === "plan_version"));
    assert.equal(conds.at(-1)?.condition_type, "");
  });

  it("maps metric periods (current_week kept) and month resets", () => {
    const c = restCompanyToEngine({
      ...base,
      metrics: [
        {
          event_subtype: "a",
          period: "current_week",
          month_reset: "first",
          value: 1,
          created_at: "2026-01-01T00:00:00Z",
        },
        { event_subtype: "b", period: "current_year", month_reset: "billing_cycle", value: 2.9 },
        { event_subtype: "c", period: "current_day", month_reset: "first_of_month", value: "3" },
      ],
    });
    assert.deepEqual(
      c.metrics.map((m) => [m.period, m.month_reset, m.value, m.created_at]),
      [
        ["current_week", "first_of_month", 1, "2026-01-01T00:00:00Z"],
        ["all_time", "billing_cycle", 2, "0001-01-01T00:00:00Z"],
        ["current_day", "first_of_month", 0, "0001-01-01T00:00:00Z"],
      ],
    );
  });

  it("maps trait types to comparable types", () => {
    const types = ["boolean", "bool", "number", "int", "integer", "date", "string", "currency", "url", undefined];
    const c = restCompanyToEngine({
      ...base,
      entity_traits: [
        ...types.map((t, i) => ({ value: String(i), definition: { id: `t${i}`, trait_type: t } })),
        { value: "no definition" },
      ],
    });
    assert.deepEqual(
      c.traits.map((t) => t.trait_definition?.comparable_type),
      ["bool", "bool", "int", "int", "int", "date", "string", "string", "string", "string"],
    );
    assert.ok(c.traits.every((t) => t.trait_definition?.entity_type === "company"));
  });

  it("collects products from every subscription, deduplicating the main one's against them", () => {
    const c = restCompanyToEngine({
      ...base,
      billing_subscriptions: [{ products: [{ id: "p1" }, { id: "p2" }] }, { products: [{ id: "p1" }] }],
      billing_subscription: {
        id: "s",
        period_start: 0,
        period_end: 1_700_000_000,
        products: [{ id: "p2" }, { id: "p3" }],
      },
      plans: [{ id: "pl1" }, { id: "" }, {}],
      plan: { id: "pl1", plan_version_id: "v1" },
      add_ons: [{ id: "a", plan_version_id: "v2" }, { id: "b" }],
      billing_credit_balances: { c1: 5, c2: "x" },
    });
    assert.deepEqual(c.billing_product_ids, ["p1", "p2", "p1", "p3"]);
    assert.deepEqual(c.plan_ids, ["pl1"]);
    assert.deepEqual(c.plan_version_ids, ["v1", "v2"]);
    assert.equal(c.base_plan_id, "pl1");
    assert.deepEqual(c.credit_balances, { c1: 5 });
    assert.deepEqual(c.subscription, {
      id: "s",
      period_start: "0001-01-01T00:00:00Z",
      period_end: fromUnixSeconds(1_700_000_000),
    });
  });

  it("tolerates wrong types", () => {
    const c = restCompanyToEngine({
      ...base,
      environment_id: 5,
      metrics: "nope",
      rules: [null, { rule_type: "company_override", priority: "high", conditions: "x", value: "yes" }],
      entitlements: [{ feature_id: 1, allocation: "3", value_type: "numeric" }],
    });
    assert.equal(c.environment_id, "5");
    assert.deepEqual(c.metrics, []);
    assert.equal(c.rules[0]?.priority, 0);
    assert.equal(c.rules[0]?.value, false);
    assert.deepEqual(c.rules[0]?.conditions, []);
    assert.equal(c.entitlements?.[0]?.allocation, null);
    assert.equal(c.entitlements?.[0]?.feature_id, "1");
  });
});

describe("restToEngine (REST rows as the lanes store them)", () => {
  const oddCompany = {
    id: "c3",
    keys: [{ key: "__proto__", value: "x" }, { key: "", value: 5 }, null, "k"],
    environment_id: 5,
    metrics: [{ period: "current_week", value: 2.9, created_at: "2026-01-01T00:00:00.100+02:00" }, "m", null],
    rules: [
      null,
      { rule_type: "company_override", priority: "high", conditions: "x", value: "yes" },
      {
        rule_type: "company_override_usage_exceeded",
        conditions: [{ condition_type: "plan_version", operator: "weird", resource_ids: [1, null, "r"] }],
        condition_groups: [{ conditions: [{ trait_definition: { id: 3, comparable_type: "integer" } }] }, 7],
      },
      { rule_type: "standard", value: true },
    ],
    entitlements: [{ feature_id: 1, allocation: "3", value_type: "numeric" }],
    entity_traits: [{ value: 1, definition: { id: "t", trait_type: "currency" } }, { value: "no definition" }],
    billing_subscriptions: [{ products: [{ id: "p1" }, { id: "" }, {}] }, "s"],
    billing_subscription: { id: 9, period_start: "x", period_end: 1_700_000_000, products: [{ id: "p2" }] },
    billing_credit_balances: { a: 1.5, b: "2" },
    plan: { id: "pl", plan_version_id: "" },
    add_ons: [{ plan_version_id: "v" }, null],
    plans: [{ id: "pl" }, { id: 1 }],
  };

  it("is the lenient mapping itself when the rules engine takes it as it is", () => {
    const generated = generateFixture({ companies: 40, users: 40, flags: 5, seed: 11 });
    for (const row of [...generated.companies.map(companyToRest), oddCompany, { id: "c1", keys: [] }]) {
      assert.deepEqual(restToEngine("company", row), restCompanyToEngine(row));
    }
    const odd = { id: "u1", keys: [{ key: "e", value: "v" }], entity_traits: [{ value: true, definition: { id: 2 } }] };
    for (const row of [...generated.users.map(userToRest), odd]) {
      assert.deepEqual(restToEngine("user", row), restUserToEngine(row));
    }
  });

  it("refuses what the rules engine would refuse, naming it (the loader skips such a row)", () => {
    const row = { ...oddCompany, entitlements: [{ feature_id: "f", value_type: "nope" }] };
    assert.throws(() => restToEngine("company", row), /entitlements\[0\]\.value_type: unknown value "nope"/);
    assert.throws(() => restToEngine("user", { id: "u" }), /"keys" is missing/);
  });
});

describe("time helpers", () => {
  it("convert RFC 3339 to unix seconds and back without Date pitfalls", () => {
    assert.equal(unixSeconds("1970-01-01T00:00:00Z"), 0);
    assert.equal(unixSeconds("2026-06-01T02:00:00.999+02:00"), 1_780_272_000);
    assert.equal(fromUnixSeconds(1_780_272_000), "2026-06-01T00:00:00Z");
    assert.equal(unixSeconds("0001-01-01T00:00:00Z"), -62_135_596_800);
    assert.equal(fromUnixSeconds(-62_135_596_800), "0001-01-01T00:00:00Z");
    assert.equal(fromUnixSeconds(951_782_400), "2000-02-29T00:00:00Z");
    assert.equal(unixSeconds("not a time"), null);
    for (let s = -5_000_000_000; s < 5_000_000_000; s += 86_399 * 1_234) {
      assert.equal(fromUnixSeconds(s), new Date(s * 1000).toISOString().replace(".000Z", "Z"));
      assert.equal(unixSeconds(fromUnixSeconds(s)), s);
    }
  });
});
