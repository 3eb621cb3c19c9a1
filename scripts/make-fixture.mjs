#!/usr/bin/env node
// Writes examples/fixture.json: a small SaaS ("Acme Analytics") in the datastream wire shape, used by the
// emulator's tests, the demo and local development. Deterministic: run it again and the file is unchanged.
//   node scripts/make-fixture.mjs [OUT]
import { writeFileSync } from "node:fs";

const ACCOUNT = "acc_acme_analytics";
const ENV = "env_production";
const T0 = "2026-06-01T00:00:00Z";
const base = { account_id: ACCOUNT, environment_id: ENV };

// ---- trait definitions -------------------------------------------------------------------------------------
const SEATS = { id: "trdf_seats", comparable_type: "int", entity_type: "company" };
const REGION = { id: "trdf_region", comparable_type: "string", entity_type: "company" };
const BETA_OPT_IN = { id: "trdf_beta_opt_in", comparable_type: "bool", entity_type: "company" };
const ROLE = { id: "trdf_role", comparable_type: "string", entity_type: "user" };
const BETA_TESTER = { id: "trdf_beta_tester", comparable_type: "bool", entity_type: "user" };

// ---- flags -------------------------------------------------------------------------------------------------
let condSeq = 0;
function cond(type, fields = {}) {
  condSeq++;
  return {
    id: `cond_${String(condSeq).padStart(3, "0")}`,
    ...base,
    condition_type: type,
    operator: fields.operator ?? "eq",
    resource_ids: fields.resource_ids ?? [],
    event_subtype: fields.event_subtype ?? null,
    metric_value: fields.metric_value ?? null,
    metric_period: fields.metric_period ?? null,
    metric_period_month_reset: fields.metric_period_month_reset ?? null,
    credit_id: fields.credit_id ?? null,
    consumption_rate: fields.consumption_rate ?? null,
    trait_definition: fields.trait_definition ?? null,
    trait_value: fields.trait_value ?? "",
    comparison_trait_definition: null,
  };
}
function rule(id, flagId, ruleType, name, priority, value, conditions = [], groups = []) {
  return {
    id,
    flag_id: flagId,
    ...base,
    rule_type: ruleType,
    name,
    priority,
    conditions,
    condition_groups: groups.map((conditions) => ({ conditions })),
    value,
  };
}
const PAID = ["plan_starter", "plan_pro", "plan_enterprise"];
const reportRun = (operator, metric_value) =>
  cond("metric", {
    operator,
    metric_value,
    event_subtype: "report_run",
    metric_period: "all_time",
    metric_period_month_reset: "first_of_month",
  });
const apiCalls = (operator, metric_value) =>
  cond("metric", {
    operator,
    metric_value,
    event_subtype: "api_call",
    metric_period: "current_month",
    metric_period_month_reset: "first_of_month",
  });
const exports = (operator, metric_value) =>
  cond("metric", {
    operator,
    metric_value,
    event_subtype: "export",
    metric_period: "all_time",
    metric_period_month_reset: "first_of_month",
  });
const seats = (operator, value) => cond("trait", { operator, trait_definition: SEATS, trait_value: value });

function flag(key, defaultValue, rules) {
  const id = `flag_${key.replaceAll("-", "_")}`;
  return { id, ...base, key, rules: rules(id), default_value: defaultValue };
}

const flags = [
  flag("dashboards", false, (id) => [
    rule("rule_dashboards_paid", id, "plan_entitlement", "Starter and up", 1, true, [
      cond("plan", { resource_ids: PAID }),
    ]),
  ]),
  flag("advanced-reports", false, (id) => [
    rule("rule_reports_pro", id, "plan_entitlement", "Pro reports", 1, true, [
      cond("plan", { resource_ids: ["plan_pro", "plan_enterprise"] }),
      reportRun("lt", 100),
    ]),
    rule("rule_reports_exceeded", id, "plan_entitlement_usage_exceeded", "Pro reports used up", 2, false, [
      cond("plan", { resource_ids: ["plan_pro", "plan_enterprise"] }),
      reportRun("gte", 100),
    ]),
  ]),
  flag("sso", false, (id) => [
    rule("rule_sso_enterprise", id, "standard", "Enterprise base plan", 1, true, [
      cond("base_plan", { resource_ids: ["plan_enterprise"] }),
    ]),
    rule("rule_sso_addon", id, "standard", "SSO add-on", 2, true, [cond("plan", { resource_ids: ["plan_addon_sso"] })]),
  ]),
  flag("ai-assistant", false, (id) => [
    rule("rule_ai_credits", id, "plan_entitlement", "AI credits", 1, true, [
      cond("billing_product", { resource_ids: ["bilp_ai_credits"] }),
      cond("credit", { credit_id: "bcrd_ai_tokens", consumption_rate: 10 }),
    ]),
  ]),
  flag("priority-support", false, (id) => [
    rule("rule_support_product", id, "standard", "Priority support product", 1, true, [
      cond("billing_product", { resource_ids: ["bilp_priority_support"] }),
    ]),
  ]),
  flag("new-navigation", false, (id) => [
    rule("rule_nav_versions", id, "standard", "Latest plan versions", 1, true, [
      cond("plan_version", { resource_ids: ["plvr_starter_v2", "plvr_pro_v2"] }),
    ]),
  ]),
  flag("beta-program", false, (id) => [
    rule(
      "rule_beta_opt_in",
      id,
      "standard",
      "Opted-in companies, admins and testers",
      1,
      true,
      [cond("trait", { trait_definition: BETA_OPT_IN, trait_value: "true" })],
      [
        [
          cond("trait", { trait_definition: ROLE, trait_value: "admin" }),
          cond("trait", { trait_definition: BETA_TESTER, trait_value: "true" }),
        ],
      ],
    ),
  ]),
  flag("eu-data-residency", false, (id) => [
    rule("rule_eu_region", id, "standard", "EU companies", 1, true, [
      cond("trait", { trait_definition: REGION, trait_value: "eu" }),
    ]),
  ]),
  flag("team-invites", false, (id) => [
    rule("rule_invites_under_limit", id, "plan_entitlement", "Seats under 50", 1, true, [
      cond("plan", { resource_ids: PAID }),
      seats("lt", "50"),
    ]),
    rule("rule_invites_limit", id, "plan_entitlement_usage_exceeded", "Seat limit reached", 2, false, [
      seats("gte", "50"),
    ]),
  ]),
  flag("internal-tools", false, (id) => [
    rule("rule_internal_staff", id, "standard", "Staff users", 1, true, [
      cond("user", { resource_ids: ["user_001", "user_002"] }),
    ]),
    rule("rule_internal_dogfood", id, "standard", "Acme dogfooding", 2, true, [
      cond("company", { resource_ids: ["comp_acme"] }),
    ]),
  ]),
  flag("legacy-export", true, (id) => [rule("rule_legacy_kill", id, "global_override", "Kill switch", 1, false)]),
  flag("onboarding-checklist", false, (id) => [
    rule("rule_onboarding_large", id, "standard", "Large accounts skip onboarding", 1, false, [seats("gte", "100")]),
    rule("rule_onboarding_default", id, "default", "Everyone else", 2, true),
  ]),
  flag("bulk-export", false, (id) => [
    rule("rule_bulk_enterprise", id, "plan_entitlement", "Enterprise export", 1, true, [
      cond("plan", { resource_ids: ["plan_enterprise"] }),
    ]),
  ]),
  flag("api-access", false, (id) => [
    rule("rule_api_paid", id, "plan_entitlement", "Paid plans under quota", 1, true, [
      cond("plan", { operator: "ne", resource_ids: ["plan_free"] }),
      apiCalls("lt", 10000),
    ]),
    rule("rule_api_exceeded", id, "plan_entitlement_usage_exceeded", "Monthly quota used up", 2, false, [
      apiCalls("gte", 10000),
    ]),
  ]),
];
const flagId = (key) => flags.find((f) => f.key === key).id;

// ---- companies -----------------------------------------------------------------------------------------------
function override(company, key, value, type = "company_override", conditions = []) {
  return rule(
    `rule_${company}_${key.replaceAll("-", "_")}_${type === "company_override" ? "on" : "exceeded"}`,
    flagId(key),
    type,
    `${key} override for ${company}`,
    0,
    value,
    conditions,
  );
}
function metric(companyId, event_subtype, period, value) {
  return {
    ...base,
    company_id: companyId,
    event_subtype,
    period,
    month_reset: "first_of_month",
    value,
    created_at: T0,
    valid_until: null,
  };
}
function company(slug, p) {
  const id = `comp_${slug}`;
  const traits = [];
  if (p.seats !== undefined) traits.push({ trait_definition: SEATS, value: String(p.seats) });
  if (p.region !== undefined) traits.push({ trait_definition: REGION, value: p.region });
  if (p.beta !== undefined) traits.push({ trait_definition: BETA_OPT_IN, value: String(p.beta) });
  const metrics = [];
  if (p.reports !== undefined) metrics.push(metric(id, "report_run", "all_time", p.reports));
  if (p.api !== undefined) metrics.push(metric(id, "api_call", "current_month", p.api));
  if (p.exports !== undefined) metrics.push(metric(id, "export", "all_time", p.exports));
  const out = {
    id,
    ...base,
    base_plan_id: p.base ?? null,
    billing_product_ids: p.products ?? [],
    credit_balances: p.credits ?? {},
  };
  if (p.entitlements) out.entitlements = p.entitlements;
  Object.assign(out, {
    keys: p.keys ?? { domain: `${slug}.example`, slug },
    metrics,
    plan_ids: p.plans ?? (p.base ? [p.base] : []),
    plan_version_ids: p.versions ?? [],
    rules: (p.overrides ?? []).map((o) => override(slug, ...o)),
    subscription:
      p.subscription === false
        ? null
        : { id: `bsub_${slug}`, period_start: "2026-06-01T00:00:00Z", period_end: "2026-07-01T00:00:00Z" },
    traits,
  });
  return out;
}
const reportsEntitlement = (usage) => ({
  allocation: 100,
  credit_id: null,
  credit_remaining: null,
  credit_total: null,
  credit_used: null,
  event_name: "report_run",
  feature_id: "feat_advanced_reports",
  feature_key: "advanced-reports",
  metric_period: "all_time",
  metric_reset_at: null,
  month_reset: "first_of_month",
  soft_limit: 80,
  usage,
  value_type: "numeric",
});
const aiEntitlement = (remaining) => ({
  allocation: null,
  credit_id: "bcrd_ai_tokens",
  credit_remaining: remaining,
  credit_total: 1000,
  credit_used: Math.max(0, 1000 - remaining),
  event_name: null,
  feature_id: "feat_ai_assistant",
  feature_key: "ai-assistant",
  metric_period: null,
  metric_reset_at: null,
  month_reset: null,
  soft_limit: null,
  usage: null,
  value_type: "credit",
});

const exportOverrides = () => [
  ["bulk-export", true, "company_override", [exports("lt", 500)]],
  ["bulk-export", false, "company_override_usage_exceeded", [exports("gte", 500)]],
];

const companies = [
  company("acme", {
    base: "plan_pro",
    plans: ["plan_pro", "plan_addon_ai"],
    versions: ["plvr_pro_v2", "plvr_addon_ai_v1"],
    products: ["bilp_seats", "bilp_ai_credits"],
    credits: { bcrd_ai_tokens: 250 },
    reports: 42,
    api: 5200,
    exports: 10,
    seats: 35,
    region: "us",
    beta: true,
    entitlements: [reportsEntitlement(42), aiEntitlement(250)],
  }),
  company("globex", {
    base: "plan_starter",
    versions: ["plvr_starter_v1"],
    products: ["bilp_seats"],
    credits: { bcrd_ai_tokens: 0 },
    reports: 250,
    api: 800,
    exports: 0,
    seats: 12,
    region: "eu",
    beta: false,
    overrides: [["advanced-reports", true]],
  }),
  company("initech", {
    base: "plan_starter",
    plans: ["plan_starter", "plan_addon_sso"],
    versions: ["plvr_starter_v2", "plvr_addon_sso_v1"],
    products: ["bilp_seats", "bilp_priority_support"],
    credits: { bcrd_ai_tokens: 5 },
    reports: 0,
    api: 9999,
    exports: 120,
    seats: 60,
    region: "us",
    beta: true,
    overrides: exportOverrides(),
  }),
  company("umbrella", {
    base: "plan_pro",
    versions: ["plvr_pro_v1"],
    products: ["bilp_ai_credits"],
    credits: { bcrd_ai_tokens: 9 },
    reports: 150,
    api: 15000,
    exports: 800,
    seats: 150,
    region: "apac",
    beta: false,
    overrides: exportOverrides(),
    entitlements: [reportsEntitlement(150)],
  }),
  company("hooli", {
    base: "plan_enterprise",
    versions: ["plvr_enterprise_v1"],
    products: ["bilp_seats", "bilp_ai_credits", "bilp_priority_support"],
    credits: { bcrd_ai_tokens: 10 },
    reports: 99,
    api: 20000,
    exports: 3000,
    seats: 400,
    region: "eu",
    beta: true,
    overrides: [["sso", false]],
  }),
  company("soylent", {
    base: "plan_free",
    versions: ["plvr_free_v1"],
    seats: 3,
    region: "latam",
    subscription: false,
    overrides: [["legacy-export", true]],
  }),
  company("stark", {
    plans: ["plan_addon_sso"],
    versions: ["plvr_addon_sso_v1"],
    credits: { bcrd_ai_tokens: 1000 },
    reports: 5,
    seats: 49,
    region: "us",
    beta: true,
    subscription: false,
  }),
  company("wayne", {
    base: "plan_enterprise",
    plans: ["plan_enterprise", "plan_addon_ai"],
    versions: ["plvr_enterprise_v1", "plvr_addon_ai_v1"],
    products: ["bilp_ai_credits"],
    credits: { bcrd_ai_tokens: 100000 },
    reports: 1000,
    api: 100,
    exports: 499,
    seats: 99,
    region: "us",
    beta: false,
  }),
  company("cyberdyne", {
    base: "plan_pro",
    versions: ["plvr_pro_v2"],
    products: ["bilp_priority_support"],
    credits: { bcrd_ai_tokens: 50 },
    reports: 100,
    api: 10000,
    exports: 0,
    seats: 50,
    region: "apac",
    beta: false,
  }),
  company("tyrell", {
    base: "plan_free",
    plans: ["plan_free", "plan_addon_ai"],
    versions: ["plvr_free_v1", "plvr_addon_ai_v1"],
    products: ["bilp_ai_credits"],
    credits: { bcrd_ai_tokens: 10 },
    api: 0,
    seats: 1,
    region: "eu",
    beta: true,
  }),
];

// 40 more customers with a deterministic spread of plans, usage and traits.
const PLAN_CYCLE = [
  ["plan_free", "plvr_free_v1"],
  ["plan_starter", "plvr_starter_v1"],
  ["plan_starter", "plvr_starter_v2"],
  ["plan_pro", "plvr_pro_v1"],
  ["plan_pro", "plvr_pro_v2"],
  ["plan_enterprise", "plvr_enterprise_v1"],
];
const REGIONS = ["us", "eu", "apac", "latam"];
for (let i = 11; i <= 50; i++) {
  const n = String(i).padStart(3, "0");
  const [plan, version] = PLAN_CYCLE[i % PLAN_CYCLE.length];
  const overrides = [];
  if (i % 7 === 0) overrides.push(["new-navigation", true]);
  if (i % 11 === 0) overrides.push(["dashboards", false]);
  companies.push(
    company(`c${n}`, {
      base: plan,
      versions: [version],
      keys: { domain: `customer${n}.example`, slug: `customer-${n}` },
      products: i % 3 === 0 ? ["bilp_seats", "bilp_ai_credits"] : ["bilp_seats"],
      credits: { bcrd_ai_tokens: (i * 37) % 200 },
      reports: (i * 13) % 180,
      api: (i * 577) % 14000,
      exports: (i * 29) % 900,
      seats: ((i * 17) % 160) + 1,
      region: REGIONS[i % REGIONS.length],
      beta: i % 4 === 0,
      overrides,
    }),
  );
}

// ---- users ---------------------------------------------------------------------------------------------------
function user(n, email, traits) {
  const id = `user_${String(n).padStart(3, "0")}`;
  return {
    id,
    ...base,
    keys: { email, user_id: `u-${String(n).padStart(3, "0")}` },
    traits: [
      ...(traits.role !== undefined ? [{ trait_definition: ROLE, value: traits.role }] : []),
      ...(traits.beta !== undefined ? [{ trait_definition: BETA_TESTER, value: String(traits.beta) }] : []),
    ],
    rules: [],
  };
}
const users = [
  user(1, "alice@acme.example", { role: "admin", beta: false }),
  user(2, "bob@acme.example", { role: "member", beta: true }),
  user(3, "carol@globex.example", { role: "admin", beta: false }),
  user(4, "dave@initech.example", { role: "member", beta: true }),
  user(5, "erin@initech.example", { role: "viewer", beta: false }),
  user(6, "frank@hooli.example", { role: "admin", beta: false }),
  user(7, "grace@hooli.example", { role: "viewer", beta: false }),
  user(8, "heidi@stark.example", {}),
];
const ROLES = ["member", "viewer", "admin", "billing"];
for (let n = 9; n <= 100; n++) {
  users.push(
    user(n, `person${String(n).padStart(3, "0")}@customers.example`, {
      role: ROLES[n % ROLES.length],
      beta: n % 5 === 0,
    }),
  );
}

const out = process.argv[2] ?? new URL("../examples/fixture.json", import.meta.url).pathname;
writeFileSync(out, `${JSON.stringify({ flags, companies, users }, null, 2)}\n`);
console.log(`wrote ${out}: ${flags.length} flags, ${companies.length} companies, ${users.length} users`);
