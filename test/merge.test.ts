import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { mergeCompany, mergeUser } from "../src/model/merge.js";
import {
  COMPANY_FIELDS,
  type Company,
  type CompanyMetric,
  type FeatureEntitlement,
  type Rule,
  USER_FIELDS,
  type User,
} from "../src/model/wire.js";

function metric(event: string, period: CompanyMetric["period"], reset: CompanyMetric["month_reset"], value: number) {
  return {
    account_id: "acc_1",
    environment_id: "env_1",
    company_id: "comp_1",
    event_subtype: event,
    period,
    month_reset: reset,
    value,
    created_at: "2026-01-01T00:00:00Z",
    valid_until: null,
  } satisfies CompanyMetric;
}

function entitlement(over: Partial<FeatureEntitlement>): FeatureEntitlement {
  return {
    allocation: 10,
    credit_id: null,
    credit_remaining: null,
    credit_total: null,
    credit_used: null,
    event_name: null,
    feature_id: "feat_1",
    feature_key: "f1",
    metric_period: null,
    metric_reset_at: null,
    month_reset: null,
    soft_limit: null,
    usage: null,
    value_type: "numeric",
    ...over,
  };
}

function rule(id: string): Rule {
  return {
    id,
    flag_id: "flag_1",
    account_id: "acc_1",
    environment_id: "env_1",
    rule_type: "company_override",
    name: id,
    priority: 1,
    conditions: [],
    condition_groups: [],
    value: true,
  };
}

function company(): Company {
  return {
    id: "comp_1",
    account_id: "acc_1",
    environment_id: "env_1",
    base_plan_id: "plan_base",
    billing_product_ids: ["prod_1"],
    credit_balances: { cred_a: 10, cred_b: 20 },
    entitlements: [
      entitlement({ feature_id: "feat_credit", feature_key: "credits", credit_id: "cred_a", credit_remaining: 10 }),
      entitlement({
        feature_id: "feat_events",
        feature_key: "events",
        event_name: "api_call",
        usage: 1,
        credit_total: 99,
        credit_used: 5,
      }),
      entitlement({
        feature_id: "feat_monthly",
        feature_key: "monthly",
        event_name: "api_call",
        metric_period: "current_month",
        month_reset: "billing_cycle",
        usage: 2,
      }),
    ],
    keys: { domain: "acme.com", slug: "acme" },
    metrics: [
      metric("api_call", "all_time", "first_of_month", 1),
      metric("api_call", "current_month", "billing_cycle", 2),
    ],
    plan_ids: ["plan_base"],
    plan_version_ids: ["plvr_1"],
    rules: [rule("rule_1")],
    subscription: { id: "sub_1", period_start: "2026-01-01T00:00:00Z", period_end: "2026-02-01T00:00:00Z" },
    traits: [{ trait_definition: { id: "tier", comparable_type: "string", entity_type: "company" }, value: "gold" }],
  };
}

function user(): User {
  return {
    id: "user_1",
    account_id: "acc_1",
    environment_id: "env_1",
    keys: { email: "a@example.com" },
    traits: [],
    rules: [],
  };
}

function deepFreeze<T>(v: T): T {
  if (typeof v === "object" && v !== null) {
    for (const x of Object.values(v)) deepFreeze(x);
    Object.freeze(v);
  }
  return v;
}

describe("mergeCompany", () => {
  it("replaces id/account_id/environment_id, and null leaves them", () => {
    const m = mergeCompany(company(), { account_id: "acc_2", environment_id: null, id: null });
    assert.equal(m.account_id, "acc_2");
    assert.equal(m.environment_id, "env_1");
    assert.equal(m.id, "comp_1");
  });

  it("replaces base_plan_id, null clears it", () => {
    assert.equal(mergeCompany(company(), { base_plan_id: "plan_x" }).base_plan_id, "plan_x");
    assert.equal(mergeCompany(company(), { base_plan_id: null }).base_plan_id, null);
  });

  it("replaces lists wholesale; null becomes []", () => {
    const m = mergeCompany(company(), {
      billing_product_ids: ["prod_2", "prod_3"],
      plan_ids: [],
      plan_version_ids: null,
      rules: [rule("rule_2")],
      traits: [],
    });
    assert.deepEqual(m.billing_product_ids, ["prod_2", "prod_3"]);
    assert.deepEqual(m.plan_ids, []);
    assert.deepEqual(m.plan_version_ids, []);
    assert.deepEqual(
      m.rules.map((r) => r.id),
      ["rule_2"],
    );
    assert.deepEqual(m.traits, []);
  });

  it("shallow-merges keys and never removes one", () => {
    const m = mergeCompany(company(), { keys: { slug: "acme-2", stripe: "cus_1" } });
    assert.deepEqual(m.keys, { domain: "acme.com", slug: "acme-2", stripe: "cus_1" });
    assert.deepEqual(mergeCompany(company(), { keys: null }).keys, company().keys);
    assert.deepEqual(mergeCompany(company(), { keys: {} }).keys, company().keys);
  });

  it("shallow-merges credit_balances and syncs credit_remaining of matching entitlements", () => {
    const m = mergeCompany(company(), { credit_balances: { cred_a: 3, cred_c: 7 } });
    assert.deepEqual(m.credit_balances, { cred_a: 3, cred_b: 20, cred_c: 7 });
    assert.equal(m.entitlements?.[0]?.credit_remaining, 3);
    // metrics were not in the partial: usage untouched
    assert.equal(m.entitlements?.[1]?.usage, 1);
  });

  it("upserts metrics by (event_subtype, period, month_reset) and syncs usage", () => {
    const m = mergeCompany(company(), {
      metrics: [
        metric("api_call", "current_month", "billing_cycle", 42),
        metric("api_call", "current_week", "first_of_month", 5),
        metric("api_call", "all_time", "billing_cycle", 6),
      ],
    });
    assert.deepEqual(
      m.metrics.map((x) => [x.event_subtype, x.period, x.month_reset, x.value]),
      [
        ["api_call", "all_time", "first_of_month", 1],
        ["api_call", "current_month", "billing_cycle", 42],
        ["api_call", "current_week", "first_of_month", 5],
        ["api_call", "all_time", "billing_cycle", 6],
      ],
    );
    // entitlement with defaults (all_time, first_of_month) matches the first metric (unchanged value 1)
    assert.equal(m.entitlements?.[1]?.usage, 1);
    // entitlement with current_month/billing_cycle takes the upserted value
    assert.equal(m.entitlements?.[2]?.usage, 42);
    // credit fields never touched by the sync
    assert.equal(m.entitlements?.[1]?.credit_total, 99);
    assert.equal(m.entitlements?.[1]?.credit_used, 5);
    // balances were not in the partial: credit_remaining untouched
    assert.equal(m.entitlements?.[0]?.credit_remaining, 10);
  });

  it("does not sync derived fields when entitlements come in the partial", () => {
    const m = mergeCompany(company(), {
      credit_balances: { cred_a: 1 },
      entitlements: [{ feature_id: "feat_credit", feature_key: "credits", value_type: "credit", credit_id: "cred_a" }],
    });
    assert.equal(m.entitlements?.length, 1);
    assert.equal(m.entitlements?.[0]?.credit_remaining, null);
    assert.equal(m.credit_balances.cred_a, 1);
  });

  it("merges subscription field-wise; null clears it", () => {
    const m = mergeCompany(company(), { subscription: { period_end: "2026-03-01T00:00:00.000+00:00" } });
    assert.deepEqual(m.subscription, {
      id: "sub_1",
      period_start: "2026-01-01T00:00:00Z",
      period_end: "2026-03-01T00:00:00Z",
    });
    assert.equal(mergeCompany(company(), { subscription: null }).subscription, null);
    const fresh = mergeCompany({ ...company(), subscription: null }, { subscription: { id: "sub_new" } });
    assert.deepEqual(fresh.subscription, {
      id: "sub_new",
      period_start: "0001-01-01T00:00:00Z",
      period_end: "0001-01-01T00:00:00Z",
    });
  });

  it("ignores credit_lease_balance and unknown keys", () => {
    const base = company();
    const m = mergeCompany(base, {
      credit_lease_balance: { cred_a: { remaining: 1, reserved: 2 } },
      crm_product_ids: ["x"],
      name: "ignored",
    });
    assert.deepEqual(m, base);
    assert.ok(!("crm_product_ids" in m));
  });

  it("normalises nested values the way Go decodes them", () => {
    const m = mergeCompany(company(), {
      rules: [{ id: "r", rule_type: "company_override", value: true, extra: 1, conditions: [{ id: "c" }] }],
      metrics: [{ event_subtype: "x", period: "all_time", month_reset: "first_of_month", value: 1 }],
    });
    assert.deepEqual(m.rules[0], {
      id: "r",
      flag_id: null,
      account_id: "",
      environment_id: "",
      rule_type: "company_override",
      name: "",
      priority: 0,
      conditions: [
        {
          id: "c",
          account_id: "",
          environment_id: "",
          condition_type: "",
          operator: "",
          resource_ids: [],
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
    });
    assert.equal(m.metrics.at(-1)?.created_at, "0001-01-01T00:00:00Z");
  });

  it("throws, naming the field, on a value of the wrong type", () => {
    assert.throws(() => mergeCompany(company(), { plan_ids: "plan_x" }), /"plan_ids"/);
    assert.throws(() => mergeCompany(company(), { credit_balances: { a: "1" } }), /"credit_balances\.a"/);
    assert.throws(() => mergeCompany(company(), { rules: [{ priority: 1.5 }] }), /"rules\[0\]\.priority"/);
    assert.throws(() => mergeCompany(company(), { id: 7 }), /"id"/);
    assert.throws(() => mergeCompany(company(), { subscription: { period_start: "yesterday" } }), /period_start/);
  });

  it("is pure and keeps Go field order", () => {
    const base = deepFreeze(company());
    const before = JSON.stringify(base);
    const partial = deepFreeze({
      keys: { x: "y" },
      credit_balances: { cred_a: 0 },
      metrics: [metric("api_call", "all_time", "first_of_month", 9)],
      subscription: { id: "sub_2" },
      traits: [],
    });
    const m = mergeCompany(base, partial);
    assert.equal(JSON.stringify(base), before);
    assert.notEqual(m.keys, base.keys);
    assert.notEqual(m.entitlements, base.entitlements);
    assert.deepEqual(Object.keys(m), [...COMPANY_FIELDS]);
    const noEnts = mergeCompany(base, { entitlements: [] });
    assert.deepEqual(
      Object.keys(noEnts),
      COMPANY_FIELDS.filter((f) => f !== "entitlements"),
    );
    // mutating the result does not reach the base
    m.rules.push(rule("late"));
    m.metrics[0]!.value = 1000;
    assert.equal(JSON.stringify(base), before);
  });
});

describe("mergeUser", () => {
  it("merges id/account_id/environment_id, keys, traits, rules and ignores the rest", () => {
    const m = mergeUser(user(), {
      account_id: "acc_9",
      keys: { user_id: "u1" },
      traits: [{ trait_definition: { id: "t", comparable_type: "int", entity_type: "user" }, value: "3" }],
      rules: [rule("r1")],
      base_plan_id: "plan_x",
      metrics: [],
      environment_id: null,
    });
    assert.deepEqual(Object.keys(m), [...USER_FIELDS]);
    assert.equal(m.account_id, "acc_9");
    assert.equal(m.environment_id, "env_1");
    assert.deepEqual(m.keys, { email: "a@example.com", user_id: "u1" });
    assert.equal(m.traits[0]?.value, "3");
    assert.equal(m.rules[0]?.id, "r1");
    assert.ok(!("base_plan_id" in m));
  });

  it("is pure", () => {
    const base = deepFreeze(user());
    const m = mergeUser(base, { keys: { k: "v" }, traits: null });
    assert.deepEqual(base.keys, { email: "a@example.com" });
    assert.deepEqual(m.traits, []);
    assert.throws(() => mergeUser(base, { keys: ["x"] }), /"keys"/);
  });
});
