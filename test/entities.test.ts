/**
 * src/model/entities.ts: validation and normalisation of wire entities at the two strictness levels.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fixture from "../examples/fixture.json" with { type: "json" };
import {
  EntityError,
  parseCompany,
  parseCompanyPartial,
  parseEngineEntity,
  parseFlag,
  parseUser,
  parseUserPartial,
} from "../src/model/entities.js";
import { COMPANY_FIELDS, FLAG_FIELDS, USER_FIELDS } from "../src/model/wire.js";

const A = { account_id: "acc_1", environment_id: "env_1" };

function condition(extra: Record<string, unknown> = {}) {
  return {
    id: "cond_1",
    ...A,
    condition_type: "metric",
    operator: "lt",
    resource_ids: [],
    event_subtype: "api_call",
    metric_value: 100,
    metric_period: "current_month",
    metric_period_month_reset: "first_of_month",
    credit_id: null,
    consumption_rate: null,
    trait_definition: null,
    trait_value: "",
    comparison_trait_definition: null,
    ...extra,
  };
}

function rule(extra: Record<string, unknown> = {}) {
  return {
    id: "rule_1",
    flag_id: "flag_1",
    ...A,
    rule_type: "plan_entitlement",
    name: "Pro",
    priority: 1,
    conditions: [condition()],
    condition_groups: [
      { conditions: [condition({ id: "cond_2", condition_type: "plan", operator: "eq", resource_ids: ["plan_pro"] })] },
    ],
    value: true,
    ...extra,
  };
}

function flag(extra: Record<string, unknown> = {}) {
  return { id: "flag_1", ...A, key: "reports", rules: [rule()], default_value: false, ...extra };
}

const TRAIT_DEF = { id: "trdf_seats", comparable_type: "int", entity_type: "company" };

function company(extra: Record<string, unknown> = {}) {
  return {
    id: "comp_1",
    ...A,
    base_plan_id: "plan_pro",
    billing_product_ids: ["bilp_1"],
    credit_balances: { bcrd_1: 12.5 },
    entitlements: [
      {
        allocation: 100,
        credit_id: null,
        credit_remaining: null,
        credit_total: null,
        credit_used: null,
        event_name: "api_call",
        feature_id: "feat_1",
        feature_key: "reports",
        metric_period: "current_month",
        metric_reset_at: "2026-07-01T00:00:00Z",
        month_reset: "first_of_month",
        soft_limit: null,
        usage: 12,
        value_type: "numeric",
      },
    ],
    keys: { domain: "acme.example" },
    metrics: [
      {
        ...A,
        company_id: "comp_1",
        event_subtype: "api_call",
        period: "current_month",
        month_reset: "first_of_month",
        value: 12,
        created_at: "2026-06-01T00:00:00Z",
        valid_until: null,
      },
    ],
    plan_ids: ["plan_pro"],
    plan_version_ids: ["plvr_1"],
    rules: [rule({ rule_type: "company_override", conditions: [], condition_groups: [] })],
    subscription: { id: "bsub_1", period_start: "2026-06-01T00:00:00Z", period_end: "2026-07-01T00:00:00Z" },
    traits: [{ trait_definition: TRAIT_DEF, value: "25" }],
    ...extra,
  };
}

function user(extra: Record<string, unknown> = {}) {
  return {
    id: "user_1",
    ...A,
    keys: { email: "a@b.example" },
    traits: [{ trait_definition: null, value: "x" }],
    rules: [],
    ...extra,
  };
}

function fails(fn: () => unknown, path: string, reason: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof EntityError, String(err));
    assert.equal(err.path, path);
    assert.match(err.reason, reason);
    assert.equal(err.message, `${err.path}: ${err.reason}`);
    return true;
  });
}

describe("wire strictness", () => {
  test("valid entities come back equal, as new objects, keys in Go struct order", () => {
    for (const [parse, input, fields] of [
      [parseFlag, flag(), FLAG_FIELDS],
      [parseCompany, company(), COMPANY_FIELDS],
      [parseUser, user(), USER_FIELDS],
    ] as const) {
      const raw = JSON.parse(JSON.stringify(input));
      const out = (parse as (r: unknown, m: "wire") => object)(raw, "wire");
      assert.deepEqual(out, input);
      assert.notEqual(out, raw);
      assert.deepEqual(Object.keys(out), fields);
    }
    const c = parseCompany(company(), "wire");
    assert.deepEqual(Object.keys(c.rules[0]!), [
      "id",
      "flag_id",
      "account_id",
      "environment_id",
      "rule_type",
      "name",
      "priority",
      "conditions",
      "condition_groups",
      "value",
    ]);
    assert.notEqual(c.rules[0]!.conditions, company().rules[0]!.conditions);
  });

  test("keys are reordered and unknown fields dropped at every level", () => {
    const shuffled = {
      default_value: true,
      rules: [{ ...rule(), surprise: 1, conditions: [{ ...condition(), extra: "x" }], condition_groups: [] }],
      key: "k",
      environment_id: "e",
      account_id: "a",
      id: "f",
      crm_product_ids: [],
    };
    const out = parseFlag(shuffled, "wire");
    assert.deepEqual(Object.keys(out), FLAG_FIELDS);
    assert.equal("surprise" in out.rules[0]!, false);
    assert.equal("extra" in out.rules[0]!.conditions[0]!, false);
    assert.equal("crm_product_ids" in out, false);
  });

  test("optional fields: absent nullable → null, entitlements only when present, omitempty entitlement fields omitted", () => {
    const { base_plan_id: _b, subscription: _s, entitlements: _e, ...rest } = company();
    const c = parseCompany(rest, "wire");
    assert.equal(c.base_plan_id, null);
    assert.equal(c.subscription, null);
    assert.equal("entitlements" in c, false);
    assert.equal("entitlements" in parseCompany({ ...rest, entitlements: null }, "wire"), false);
    assert.deepEqual(parseCompany({ ...rest, entitlements: [] }, "wire").entitlements, []);

    const e = parseCompany(
      company({ entitlements: [{ feature_id: "f", feature_key: "k", value_type: "boolean" }] }),
      "wire",
    ).entitlements![0]!;
    assert.deepEqual(Object.keys(e), [
      "allocation",
      "credit_id",
      "credit_remaining",
      "credit_total",
      "credit_used",
      "event_name",
      "feature_id",
      "feature_key",
      "metric_period",
      "metric_reset_at",
      "month_reset",
      "soft_limit",
      "usage",
      "value_type",
    ]);
    assert.equal(e.allocation, null);
    const { flag_id: _f, ...noFlagId } = rule();
    assert.equal(parseFlag(flag({ rules: [noFlagId] }), "wire").rules[0]!.flag_id, null);
  });

  test("missing, null, mistyped and unknown values are rejected with the JSON path", () => {
    fails(() => parseFlag({ ...flag(), rules: undefined }, "wire"), "$.rules", /missing required field/);
    fails(() => parseFlag(flag({ rules: null }), "wire"), "$.rules", /must not be null/);
    fails(() => parseFlag(flag({ default_value: "false" }), "wire"), "$.default_value", /expected a boolean/);
    fails(() => parseFlag(flag({ key: "" }), "wire"), "$.key", /must not be empty/);
    fails(
      () => parseFlag(flag({ rules: [rule({ priority: 1.5 })] }), "wire"),
      "$.rules[0].priority",
      /expected an integer, got a number \(1\.5\)/,
    );
    fails(
      () =>
        parseFlag(flag({ rules: [rule({ conditions: [condition(), condition({ operator: "approx" })] })] }), "wire"),
      "$.rules[0].conditions[1].operator",
      /unknown value "approx" \(expected one of eq, ne/,
    );
    fails(
      () =>
        parseFlag(
          flag({ rules: [rule({ condition_groups: [{ conditions: [condition({ condition_type: "weather" })] }] })] }),
          "wire",
        ),
      "$.rules[0].condition_groups[0].conditions[0].condition_type",
      /unknown value "weather"/,
    );
    fails(
      () =>
        parseFlag(
          flag({
            rules: [rule({ conditions: [condition({ trait_definition: { ...TRAIT_DEF, entity_type: "team" } })] })],
          }),
          "wire",
        ),
      "$.rules[0].conditions[0].trait_definition.entity_type",
      /unknown value "team"/,
    );
    fails(() => parseFlag(flag({ rules: [null] }), "wire"), "$.rules[0]", /expected an object \(Rule\), got null/);
    fails(() => parseCompany(company({ keys: {} }), "wire"), "$.keys", /must have at least one key/);
    fails(() => parseCompany(company({ keys: { domain: 1 } }), "wire"), "$.keys.domain", /expected a string/);
    fails(() => parseCompany(company({ keys: { "a b": 1 } }), "wire"), '$.keys["a b"]', /expected a string/);
    fails(() => parseCompany(company({ credit_balances: null }), "wire"), "$.credit_balances", /must not be null/);
    fails(
      () => parseCompany(company({ credit_balances: { c: Number.NaN } }), "wire"),
      "$.credit_balances.c",
      /expected a number/,
    );
    fails(() => parseCompany(company({ plan_ids: ["a", 2] }), "wire"), "$.plan_ids[1]", /expected a string/);
    fails(() => parseCompany(company({ id: "" }), "wire"), "$.id", /must not be empty/);
    fails(
      () =>
        parseCompany(
          company({ subscription: { id: "s", period_start: "soon", period_end: "2026-07-01T00:00:00Z" } }),
          "wire",
        ),
      "$.subscription.period_start",
      /ISO 8601/,
    );
    fails(
      () =>
        parseCompany(company({ entitlements: [{ feature_id: "f", feature_key: "k", value_type: "lots" }] }), "wire"),
      "$.entitlements[0].value_type",
      /unknown value "lots"/,
    );
    fails(() => parseUser(user({ keys: {} }), "wire"), "$.keys", /must have at least one key/);
    fails(
      () => parseUser(user({ traits: [{ trait_definition: null }] }), "wire"),
      "$.traits[0].value",
      /missing required field/,
    );
    fails(() => parseUser([], "wire"), "$", /expected an object \(User\), got an array/);
    fails(() => parseUser(user({ id: 7 }), "wire", "$.users[3]"), "$.users[3].id", /expected a string/);
  });

  test("timestamps: RFC 3339 date-times in wire mode", () => {
    const withCreated = (created_at: string) => company({ metrics: [{ ...company().metrics[0]!, created_at }] });
    for (const ok of ["2026-06-01T00:00:00Z", "2026-06-01T10:20:30.123456+02:00", "2026-06-01t00:00:00z"]) {
      assert.equal(parseCompany(withCreated(ok), "wire").metrics[0]!.created_at, ok);
    }
    for (const bad of [
      "2026-06-01",
      "2026-13-01T00:00:00Z",
      "2026-06-01T25:00:00Z",
      "June 1st",
      "2026-06-01T00:00:00",
    ]) {
      fails(() => parseCompany(withCreated(bad), "wire"), "$.metrics[0].created_at", /ISO 8601/);
    }
    // The engine level is as lenient as the SDK's ISO 8601 parser.
    assert.equal(parseCompany(withCreated("2026-06-01"), "engine").metrics[0]!.created_at, "2026-06-01");
  });

  test("numbers are untouched; __proto__ map keys stay data", () => {
    const big = 2 ** 53 - 1;
    const c = parseCompany(
      JSON.parse(
        JSON.stringify(company({ credit_balances: { a: 0.1, b: big, c: -3 } })).replace(
          '"keys":{',
          '"keys":{"__proto__":"x",',
        ),
      ),
      "wire",
    );
    assert.deepEqual(c.credit_balances, { a: 0.1, b: big, c: -3 });
    assert.equal(Object.getPrototypeOf(c.keys), Object.prototype);
    assert.deepEqual(Object.keys(c.keys), ["__proto__", "domain"]);
    assert.equal(Object.getOwnPropertyDescriptor(JSON.parse(JSON.stringify(c.keys)), "__proto__")?.value, "x");
  });
});

describe("engine strictness", () => {
  test("only the fields the rules engine requires must be present; the rest is filled in", () => {
    assert.deepEqual(parseCompany({ id: "c", ...A }, "engine"), {
      id: "c",
      ...A,
      base_plan_id: null,
      billing_product_ids: [],
      credit_balances: {},
      keys: {},
      metrics: [],
      plan_ids: [],
      plan_version_ids: [],
      rules: [],
      subscription: null,
      traits: [],
    });
    assert.deepEqual(parseUser({ id: "u", ...A, keys: null, traits: null }, "engine"), {
      id: "u",
      ...A,
      keys: {},
      traits: [],
      rules: [],
    });
    const f = parseFlag(
      {
        id: "f",
        ...A,
        key: "k",
        default_value: true,
        rules: [
          {
            id: "r",
            ...A,
            rule_type: "standard",
            name: "n",
            priority: 2,
            value: false,
            conditions: [{ id: "c", ...A, condition_type: "plan", operator: "eq", trait_value: "" }],
          },
        ],
      },
      "engine",
    );
    assert.deepEqual(f.rules[0]!.condition_groups, []);
    assert.equal(f.rules[0]!.flag_id, null);
    assert.deepEqual(f.rules[0]!.conditions[0]!.resource_ids, []);
    assert.equal(f.rules[0]!.conditions[0]!.metric_value, null);
    assert.deepEqual(Object.keys(f.rules[0]!.conditions[0]!), Object.keys(condition()));
    assert.deepEqual(parseCompany({ id: "c", ...A, entitlements: [] }, "engine").entitlements, []);
  });

  test("fields the engine requires are still required, and its strict enums and integers checked", () => {
    fails(() => parseCompany({ id: "c", environment_id: "e" }, "engine"), "$.account_id", /missing required field/);
    fails(() => parseFlag({ ...flag(), default_value: null }, "engine"), "$.default_value", /must not be null/);
    fails(
      () => parseFlag(flag({ rules: [rule({ rule_type: "sometimes" })] }), "engine"),
      "$.rules[0].rule_type",
      /unknown value/,
    );
    fails(
      () => parseFlag(flag({ rules: [rule({ priority: "1" })] }), "engine"),
      "$.rules[0].priority",
      /expected an integer/,
    );
    fails(
      () => parseFlag(flag({ rules: [rule({ conditions: [condition({ metric_value: 2.5 })] })] }), "engine"),
      "$.rules[0].conditions[0].metric_value",
      /expected an integer/,
    );
    const { trait_value: _t, ...noTraitValue } = condition();
    fails(
      () => parseFlag(flag({ rules: [rule({ conditions: [noTraitValue] })] }), "engine"),
      "$.rules[0].conditions[0].trait_value",
      /missing/,
    );
    fails(
      () => parseCompany(company({ metrics: [{ ...company().metrics[0]!, period: "fortnight" }] }), "engine"),
      "$.metrics[0].period",
      /unknown value "fortnight"/,
    );
    fails(
      () =>
        parseCompany(company({ entitlements: [{ feature_id: "f", feature_key: "k", value_type: "lots" }] }), "engine"),
      "$.entitlements[0].value_type",
      /unknown value/,
    );
    fails(
      () => parseCompany(company({ subscription: { id: "s" } }), "engine"),
      "$.subscription.period_start",
      /missing/,
    );
    fails(() => parseCompany({ id: "", ...A }, "engine"), "$.id", /must not be empty/);
  });

  test("enums the engine tolerates pass as strings; empty keys are accepted", () => {
    const f = parseFlag(
      flag({ rules: [rule({ conditions: [condition({ condition_type: "future_type", operator: "approx" })] })] }),
      "engine",
    );
    assert.equal(f.rules[0]!.conditions[0]!.condition_type, "future_type");
    assert.equal(parseCompany(company({ keys: {} }), "engine").keys instanceof Object, true);
    fails(
      () => parseFlag(flag({ rules: [rule({ conditions: [condition({ condition_type: 5 })] })] }), "engine"),
      "$.rules[0].conditions[0].condition_type",
      /expected a string/,
    );
  });
});

describe("partials", () => {
  test("only the fields present, validated, in Go order; unknown fields dropped", () => {
    const p = parseCompanyPartial(
      { traits: [], keys: { slug: "a" }, credit_lease_balance: {}, base_plan_id: null },
      "wire",
    );
    assert.deepEqual(p, { base_plan_id: null, keys: { slug: "a" }, traits: [] });
    assert.deepEqual(Object.keys(p), ["base_plan_id", "keys", "traits"]);
    assert.deepEqual(parseCompanyPartial({ keys: {} }, "wire"), { keys: {} });
    assert.deepEqual(parseUserPartial({ rules: [], plan_ids: [] }, "wire"), { rules: [] });
    fails(() => parseCompanyPartial({ metrics: [{}] }, "wire"), "$.metrics[0].account_id", /missing/);
    fails(() => parseCompanyPartial("x", "wire"), "$", /expected an object/);
  });

  test("null: clears nullable fields; lists and maps need a value on the wire, become empty for the engine", () => {
    fails(() => parseCompanyPartial({ plan_ids: null }, "wire"), "$.plan_ids", /must not be null/);
    fails(() => parseUserPartial({ account_id: null }, "wire"), "$.account_id", /must not be null/);
    assert.deepEqual(
      parseCompanyPartial({ plan_ids: null, keys: null, account_id: null, subscription: null }, "engine"),
      {
        keys: {},
        plan_ids: [],
        subscription: null,
      },
    );
  });
});

describe("parseEngineEntity (the stream's hot path)", () => {
  test("gives what parseCompany/parseUser give, in place when nothing changes, and says whether it changed", () => {
    const check = (kind: "company" | "user", raw: unknown) => {
      const copy = structuredClone(raw);
      const expected = kind === "company" ? parseCompany(copy, "engine") : parseUser(copy, "engine");
      const { entity, exact } = parseEngineEntity(kind, raw);
      assert.deepEqual(JSON.parse(JSON.stringify(entity)), JSON.parse(JSON.stringify(expected)));
      assert.equal(exact, entity === raw, "in place exactly when exact");
      assert.deepEqual(raw, copy, "the input is never modified");
      return exact;
    };
    for (const c of fixture.companies) assert.equal(check("company", c), true, (c as { id: string }).id);
    for (const u of fixture.users) assert.equal(check("user", u), true, (u as { id: string }).id);
    const base = fixture.companies[0] as Record<string, unknown>;
    assert.equal(check("company", { ...base, unknown: 1 }), false);
    assert.equal(check("company", { ...base, plan_ids: null }), false);
    assert.equal(check("company", { ...base, subscription: null }), true);
    const { traits: _, ...withoutTraits } = base;
    assert.equal(check("company", withoutTraits), false);
  });

  test("rejects what parseCompany rejects, with the same message, whether or not it would copy", () => {
    const base = fixture.companies[0] as Record<string, unknown>;
    for (const bad of [
      { ...base, id: "" },
      { ...base, keys: { a: 1 } },
      { ...base, rules: [{ id: "r" }] },
      { ...base, unknown: 1, rules: [{ id: "r" }] },
      { ...base, metrics: "x" },
    ]) {
      const expected = (() => {
        try {
          parseCompany(bad, "engine");
        } catch (err) {
          return (err as Error).message;
        }
        return "accepted";
      })();
      assert.notEqual(expected, "accepted");
      assert.throws(() => parseEngineEntity("company", bad), { message: expected });
    }
  });
});
