/**
 * `--generate companies=N,users=N,flags=N,seed=S[,rows=full|lean]`: a synthetic data set, deterministic by seed.
 * - `rows=full` (the default): records of about 2 KB (companies: keys, plans, products, credit balance, five
 *   metrics, four traits, an entitlement, a subscription, sometimes an override; users: two keys and fourteen
 *   traits), about 7.4 KB each in the REST API's shapes.
 * - `rows=lean`: the same kinds of fields, fewer of them (companies: two metrics, the two traits the flags test,
 *   a product and a subscription on one in ten; users: one key, one trait), about 3.5 KB (companies) and
 *   1.1 KB (users) in the REST shapes: the row sizes of a typical account, for load benchmarks at scale.
 * Built straight into wire objects. Trait definitions and traits (definition, value) are shared objects, so a
 * million users fit in a few hundred MB: treat entities as immutable (the emulator replaces, never mutates).
 */
import type {
  Company,
  CompanyMetric,
  Condition,
  Fixture,
  Flag,
  Rule,
  Trait,
  TraitDefinition,
  User,
} from "../model/wire.js";
import { prng } from "./faults.js";

export type RowShape = "full" | "lean";

export interface GenerateSpec {
  companies: number;
  users: number;
  flags: number;
  seed: number;
  /** Default "full". */
  rows?: RowShape;
}

export const DEFAULT_GENERATE: GenerateSpec = { companies: 1000, users: 1000, flags: 20, seed: 1, rows: "full" };

const SPEC_FORM = "companies=N,users=N,flags=N,seed=S,rows=full|lean";

/** Parses `companies=N,users=N,flags=N,seed=S,rows=full|lean` (any subset, any order); throws Error with the problem. */
export function parseGenerateSpec(spec: string): GenerateSpec {
  const out = { ...DEFAULT_GENERATE };
  for (const part of spec.split(",")) {
    if (part.trim() === "") continue;
    const rows = /^\s*rows\s*=\s*(full|lean)\s*$/.exec(part);
    if (rows) {
      out.rows = rows[1] as RowShape;
      continue;
    }
    const m = /^\s*(companies|users|flags|seed)\s*=\s*(\d+)\s*$/.exec(part);
    if (!m) throw new Error(`--generate: bad item ${JSON.stringify(part)} (expected ${SPEC_FORM})`);
    const n = Number(m[2]);
    if (!Number.isSafeInteger(n) || (m[1] !== "seed" && n > 10_000_000))
      throw new Error(`--generate: ${m[1]} is too large`);
    out[m[1] as "companies" | "users" | "flags" | "seed"] = n;
  }
  return out;
}

const ACCOUNT = "acc_synthetic";
const ENV = "env_synthetic";
const PLANS = ["plan_free", "plan_starter", "plan_pro", "plan_enterprise"] as const;
const ADDONS = ["plan_addon_sso", "plan_addon_ai", "plan_addon_audit"] as const;
const PRODUCTS = ["bilp_seats", "bilp_ai_credits", "bilp_priority_support", "bilp_storage"] as const;
const CREDIT = "bcrd_ai_tokens";
const REGIONS = ["us", "eu", "apac", "latam"] as const;
const INDUSTRIES = ["software", "finance", "healthcare", "retail", "education", "media"] as const;
const EVENTS = [
  ["api_call", "current_month"],
  ["report_run", "all_time"],
  ["export", "current_month"],
  ["seat_added", "all_time"],
  ["ai_query", "current_day"],
] as const;
const CREATED = ["2026-01-05T09:30:00Z", "2026-02-11T14:00:00Z", "2026-03-20T08:15:00Z", "2026-04-02T17:45:00Z"];

const tdef = (id: string, comparable_type: TraitDefinition["comparable_type"], entity_type: "company" | "user") =>
  ({ id, comparable_type, entity_type }) as TraitDefinition;

const COMPANY_TRAITS = {
  seats: tdef("trdf_company_seats", "int", "company"),
  region: tdef("trdf_company_region", "string", "company"),
  industry: tdef("trdf_company_industry", "string", "company"),
  beta: tdef("trdf_company_beta_opt_in", "bool", "company"),
};
const USER_TRAITS = [
  tdef("trdf_user_role", "string", "user"),
  tdef("trdf_user_department", "string", "user"),
  tdef("trdf_user_locale", "string", "user"),
  tdef("trdf_user_timezone", "string", "user"),
  tdef("trdf_user_beta", "bool", "user"),
  tdef("trdf_user_logins", "int", "user"),
  tdef("trdf_user_projects", "int", "user"),
  tdef("trdf_user_last_seen", "date", "user"),
  tdef("trdf_user_title", "string", "user"),
  tdef("trdf_user_plan_interest", "string", "user"),
  tdef("trdf_user_referrer", "string", "user"),
  tdef("trdf_user_signup_source", "string", "user"),
  tdef("trdf_user_theme", "string", "user"),
  tdef("trdf_user_onboarded", "bool", "user"),
];
const ROLES = ["owner", "admin", "member", "viewer", "billing"];
const WORDS = [
  "alpha",
  "bravo",
  "charlie",
  "delta",
  "echo",
  "foxtrot",
  "golf",
  "hotel",
  "india",
  "juliet",
  "kilo",
  "lima",
];

function pad(i: number, width: number): string {
  return String(i).padStart(width, "0");
}

function condition(id: string, fields: Partial<Condition> & Pick<Condition, "condition_type">): Condition {
  return {
    id,
    account_id: ACCOUNT,
    environment_id: ENV,
    condition_type: fields.condition_type,
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

function rule(
  id: string,
  flagId: string | null,
  fields: Pick<Rule, "rule_type" | "name" | "priority" | "value"> & Partial<Rule>,
): Rule {
  return {
    id,
    flag_id: flagId,
    account_id: ACCOUNT,
    environment_id: ENV,
    rule_type: fields.rule_type,
    name: fields.name,
    priority: fields.priority,
    conditions: fields.conditions ?? [],
    condition_groups: fields.condition_groups ?? [],
    value: fields.value,
  };
}

function makeFlag(i: number, rand: () => number): Flag {
  const id = `flag_${pad(i, 4)}`;
  const key = `synthetic-flag-${pad(i, 4)}`;
  const rules: Rule[] = [];
  const r = (n: number, f: Parameters<typeof rule>[2]) => rules.push(rule(`rule_${pad(i, 4)}_${n}`, id, f));
  const c = (n: number, f: Parameters<typeof condition>[1]) => condition(`cond_${pad(i, 4)}_${n}`, f);
  switch (i % 6) {
    case 0:
      r(1, {
        rule_type: "plan_entitlement",
        name: "Paid plans",
        priority: 1,
        value: true,
        conditions: [c(1, { condition_type: "plan", resource_ids: ["plan_starter", "plan_pro", "plan_enterprise"] })],
      });
      break;
    case 1: {
      const limit = 100 + Math.floor(rand() * 900);
      const metric = { condition_type: "metric", event_subtype: "api_call", metric_period: "current_month" } as const;
      r(1, {
        rule_type: "plan_entitlement",
        name: "Pro usage",
        priority: 1,
        value: true,
        conditions: [
          c(1, { condition_type: "plan", resource_ids: ["plan_pro", "plan_enterprise"] }),
          c(2, { ...metric, operator: "lt", metric_value: limit }),
        ],
      });
      r(2, {
        rule_type: "plan_entitlement_usage_exceeded",
        name: "Pro usage exceeded",
        priority: 2,
        value: false,
        conditions: [c(3, { ...metric, operator: "gte", metric_value: limit })],
      });
      break;
    }
    case 2:
      r(1, {
        rule_type: "standard",
        name: "EU companies",
        priority: 1,
        value: true,
        conditions: [c(1, { condition_type: "trait", trait_definition: COMPANY_TRAITS.region, trait_value: "eu" })],
        condition_groups: [
          { conditions: [c(2, { condition_type: "base_plan", resource_ids: ["plan_pro", "plan_enterprise"] })] },
        ],
      });
      break;
    case 3:
      r(1, {
        rule_type: "standard",
        name: "AI credits",
        priority: 1,
        value: true,
        conditions: [
          c(1, { condition_type: "credit", credit_id: CREDIT, consumption_rate: 5 }),
          c(2, { condition_type: "billing_product", resource_ids: ["bilp_ai_credits"] }),
        ],
      });
      break;
    case 4:
      r(1, {
        rule_type: "standard",
        name: "Beta",
        priority: 1,
        value: true,
        conditions: [c(1, { condition_type: "trait", trait_definition: COMPANY_TRAITS.beta, trait_value: "true" })],
      });
      r(2, {
        rule_type: "standard",
        name: "New plan versions",
        priority: 2,
        value: true,
        conditions: [c(2, { condition_type: "plan_version", resource_ids: ["plan_pro_v2", "plan_starter_v2"] })],
      });
      break;
    default:
      r(1, { rule_type: "global_override", name: "Kill switch", priority: 1, value: false });
  }
  if (i % 4 === 0) r(9, { rule_type: "default", name: "Default on", priority: 99, value: true });
  return { id, account_id: ACCOUNT, environment_id: ENV, key, rules, default_value: false };
}

type Picker = <T>(xs: readonly T[]) => T;

/** What varies between the row shapes; everything else is built the same way. */
interface Shape {
  /** The company metrics, as indexes into EVENTS (api_call first: the entitlement's usage is its value). */
  events: readonly number[];
  /** Products a company may have, each with probability `productChance`. */
  products: readonly string[];
  productChance: number;
  /** Every company has a subscription, or only those with a product. */
  subscriptionForAll: boolean;
  companyTraits: readonly (keyof typeof COMPANY_TRAITS)[];
  /** Users: both keys (email, user_id) or only the email. */
  userKeys: "both" | "email";
  /** Users: the first N of USER_TRAITS. */
  userTraits: number;
}

const SHAPES: Record<RowShape, Shape> = {
  full: {
    events: [0, 1, 2, 3, 4],
    products: PRODUCTS,
    productChance: 0.4,
    subscriptionForAll: true,
    companyTraits: ["seats", "region", "industry", "beta"],
    userKeys: "both",
    userTraits: USER_TRAITS.length,
  },
  // The traits the synthetic flags test (region, beta), the metric their usage limits read (api_call), the credit
  // and plan conditions' inputs; fewer of everything else.
  lean: {
    events: [0, 4],
    products: ["bilp_ai_credits"],
    productChance: 0.1,
    subscriptionForAll: false,
    companyTraits: ["region", "beta"],
    userKeys: "email",
    userTraits: 1,
  },
};

const COMPANY_TRAIT_VALUE: Record<keyof typeof COMPANY_TRAITS, (rand: () => number, pick: Picker) => string> = {
  seats: (rand) => String(1 + Math.floor(rand() * 500)),
  region: (_, pick) => pick(REGIONS),
  industry: (_, pick) => pick(INDUSTRIES),
  beta: (rand) => (rand() < 0.2 ? "true" : "false"),
};

/** One shared Trait object per (definition, value): a million users then hold pointers, not copies. */
type TraitOf = (definition: TraitDefinition, value: string) => Trait;

function traitInterner(): TraitOf {
  const byDefinition = new Map<TraitDefinition, Map<string, Trait>>();
  return (trait_definition, value) => {
    let byValue = byDefinition.get(trait_definition);
    if (!byValue) {
      byValue = new Map();
      byDefinition.set(trait_definition, byValue);
    }
    let trait = byValue.get(value);
    if (!trait) {
      trait = { trait_definition, value };
      byValue.set(value, trait);
    }
    return trait;
  };
}

function makeCompany(
  i: number,
  width: number,
  rand: () => number,
  flags: Flag[],
  shape: Shape,
  traitOf: TraitOf,
): Company {
  const id = `comp_${pad(i, width)}`;
  const pick: Picker = (xs) => xs[Math.floor(rand() * xs.length)]!;
  const base = pick(PLANS);
  const version = `${base}_v${1 + Math.floor(rand() * 2)}`;
  const planIds: string[] = [base];
  const versions = [version];
  if (rand() < 0.3) {
    const addon = pick(ADDONS);
    planIds.push(addon);
    versions.push(`${addon}_v1`);
  }
  const products = shape.products.filter(() => rand() < shape.productChance);
  const created = pick(CREATED);
  const metrics: CompanyMetric[] = shape.events.map((e) => ({
    account_id: ACCOUNT,
    environment_id: ENV,
    company_id: id,
    event_subtype: EVENTS[e]![0],
    period: EVENTS[e]![1],
    month_reset: "first_of_month",
    value: Math.floor(rand() * 2000),
    created_at: created,
    valid_until: null,
  }));
  const traits = shape.companyTraits.map((t) => traitOf(COMPANY_TRAITS[t], COMPANY_TRAIT_VALUE[t](rand, pick)));
  const rules: Rule[] = [];
  if (flags.length > 0 && rand() < 0.1) {
    const flag = pick(flags);
    rules.push(
      rule(`rule_override_${pad(i, width)}`, flag.id, {
        rule_type: "company_override",
        name: `Override for ${id}`,
        priority: 0,
        value: rand() < 0.5,
      }),
    );
  }
  const apiCalls = metrics[0]!.value;
  const allocation = base === "plan_enterprise" ? 100000 : base === "plan_pro" ? 10000 : 1000;
  return {
    id,
    account_id: ACCOUNT,
    environment_id: ENV,
    base_plan_id: base,
    billing_product_ids: products,
    credit_balances: { [CREDIT]: Math.floor(rand() * 10000) },
    entitlements: [
      {
        allocation,
        credit_id: null,
        credit_remaining: null,
        credit_total: null,
        credit_used: null,
        event_name: "api_call",
        feature_id: "feat_api_access",
        feature_key: "api-access",
        metric_period: "current_month",
        metric_reset_at: "2026-08-01T00:00:00Z",
        month_reset: "first_of_month",
        soft_limit: Math.floor(allocation * 0.8),
        usage: apiCalls,
        value_type: "numeric",
      },
    ],
    keys: { id: `company-${pad(i, width)}`, domain: `company-${pad(i, width)}.example.com` },
    metrics,
    plan_ids: planIds,
    plan_version_ids: versions,
    rules,
    subscription:
      shape.subscriptionForAll || products.length > 0
        ? { id: `bsub_${pad(i, width)}`, period_start: "2026-07-01T00:00:00Z", period_end: "2026-08-01T00:00:00Z" }
        : null,
    traits,
  };
}

function makeUser(i: number, width: number, rand: () => number, shape: Shape, traitOf: TraitOf): User {
  const id = `user_${pad(i, width)}`;
  const word = () => WORDS[Math.floor(rand() * WORDS.length)]!;
  const values = [
    ROLES[Math.floor(rand() * ROLES.length)]!,
    `${word()}-department`,
    rand() < 0.5 ? "en-US" : "de-DE",
    rand() < 0.5 ? "America/New_York" : "Europe/Berlin",
    rand() < 0.3 ? "true" : "false",
    String(Math.floor(rand() * 1000)),
    String(Math.floor(rand() * 50)),
    "2026-07-15",
    `${word()} ${word()} engineer`,
    `${word()}-${word()}`,
    `https://${word()}.example.org/ref/${word()}`,
    `${word()}-campaign-${Math.floor(rand() * 100)}`,
    rand() < 0.5 ? "dark" : "light",
    rand() < 0.7 ? "true" : "false",
  ];
  const email = `user-${pad(i, width)}@example.com`;
  return {
    id,
    account_id: ACCOUNT,
    environment_id: ENV,
    keys: shape.userKeys === "both" ? { email, user_id: `u-${pad(i, width)}` } : { email },
    traits: USER_TRAITS.slice(0, shape.userTraits).map((definition, t) => traitOf(definition, values[t]!)),
    rules: [],
  };
}

/** Builds the synthetic data set (already in normalised wire shape). */
export function generateFixture(spec: GenerateSpec): Fixture {
  const rand = prng(spec.seed);
  const flags: Flag[] = [];
  for (let i = 1; i <= spec.flags; i++) flags.push(makeFlag(i, rand));
  const cw = Math.max(6, String(spec.companies).length);
  const uw = Math.max(6, String(spec.users).length);
  const shape = SHAPES[spec.rows ?? "full"];
  const traitOf = traitInterner();
  const companies: Company[] = new Array(spec.companies);
  for (let i = 0; i < spec.companies; i++) companies[i] = makeCompany(i + 1, cw, rand, flags, shape, traitOf);
  const users: User[] = new Array(spec.users);
  for (let i = 0; i < spec.users; i++) users[i] = makeUser(i + 1, uw, rand, shape, traitOf);
  return { flags, companies, users };
}
