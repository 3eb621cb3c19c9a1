/**
 * The REST API shapes of companies and users (docs/reference/protocol.md §5), in both directions:
 *
 * - `companyToRest` / `userToRest`: a wire entity as the real API's `CompanyDetailResponseData` /
 *   `UserDetailResponseData` (what the emulator serves on GET /companies and /users). Fields the wire shape lacks
 *   (names, timestamps, key and trait ids, display names, billing details) are synthesised deterministically from
 *   the entity, so one entity always gives the same bytes. Every rules-engine field is carried so that the mapping
 *   below gets it back (see equivalence.ts).
 * - `restCompanyToEngine` / `restUserToEngine`: the REST → rules-engine mapping of the replicator's bulk load
 *   (schematic-replicator `convertToRulesEngineCompany` / `convertToRulesEngineUser`,
 *   docs/reference/protocol.md §5.3), with docs/design/decisions.md "REST mapping": `plan_version` conditions and
 *   `current_week` metrics are kept, `account_id` is `""`, only `company_override` /
 *   `company_override_usage_exceeded` company rules are kept, users get `rules: []`, and entitlements are copied
 *   field for field (all fields the REST FeatureEntitlement carries). Input is parsed leniently (a wrong type gives
 *   the zero value), except that a missing `id` or `keys` throws.
 */
import { parseEngineEntity } from "./entities.js";
import {
  type DecodeMode,
  decodeEntitlements,
  decodeStringList,
  GO_ZERO_TIME,
  goTimeString,
  isObject,
  orderCompany,
  orderUser,
  setOwn,
} from "./merge.js";
import type {
  Company,
  CompanyMetric,
  ComparableType,
  Condition,
  ConditionGroup,
  ConditionType,
  EntitlementValueType,
  FeatureEntitlement,
  MetricPeriod,
  MonthReset,
  Operator,
  Rule,
  Subscription,
  Trait,
  TraitDefinition,
  TraitEntityType,
  User,
  WarningTier,
} from "./wire.js";

// ---------------------------------------------------------------------------------------------------------------
// REST types (schematic-go v1.5.2 types.go / companies.go; fields in the Go structs' alphabetical order)

export type RestTraitType = "boolean" | "currency" | "date" | "number" | "string" | "url";

export interface RestEntityKeyDefinition {
  created_at: string;
  entity_type: TraitEntityType;
  id: string;
  key: string;
  updated_at: string;
}

export interface RestEntityKey {
  created_at: string;
  definition?: RestEntityKeyDefinition;
  definition_id: string;
  entity_id: string;
  entity_type: TraitEntityType;
  environment_id: string;
  id: string;
  key: string;
  updated_at: string;
  value: string;
}

export interface RestEntityTraitDefinition {
  created_at: string;
  display_name: string;
  entity_type: TraitEntityType;
  hierarchy: string[];
  id: string;
  trait_type: RestTraitType;
  updated_at: string;
}

export interface RestEntityTrait {
  created_at: string;
  definition?: RestEntityTraitDefinition;
  definition_id: string;
  environment_id: string;
  id: string;
  updated_at: string;
  value: string;
}

export interface RestPlanView {
  added_on?: string;
  id: string;
  included_credit_grants: unknown[];
  name: string;
  plan_version_id?: string;
}

export interface RestPreviewObject {
  id: string;
  name: string;
}

export interface RestBillingProduct {
  billing_scheme: string;
  created_at: string;
  currency: string;
  environment_id: string;
  external_id: string;
  id: string;
  interval: string;
  name: string;
  package_size: number;
  price: number;
  price_external_id: string;
  price_id: string;
  price_tier: unknown[];
  provider_type: string;
  quantity: number;
  subscription_id: string;
  updated_at: string;
  usage_type: string;
}

export interface RestBillingSubscription {
  cancel_at_period_end: boolean;
  company_id?: string;
  created_at: string;
  currency: string;
  customer_external_id: string;
  discounts: unknown[];
  id: string;
  interval: string;
  /** Unix seconds. */
  period_end: number;
  /** Unix seconds. */
  period_start: number;
  products: RestBillingProduct[];
  provider_type: string;
  status: string;
  subscription_external_id: string;
  total_price: number;
}

export interface RestMetric {
  account_id: string;
  captured_at_max: string;
  captured_at_min: string;
  company_id: string;
  created_at: string;
  environment_id: string;
  event_subtype: string;
  month_reset: string;
  period: string;
  valid_until?: string;
  value: number;
}

export interface RestTraitDefinitionRef {
  comparable_type: string;
  entity_type: string;
  id: string;
}

export interface RestCondition {
  account_id: string;
  comparison_trait_definition?: RestTraitDefinitionRef;
  condition_type: string;
  consumption_rate?: number;
  credit_id?: string;
  environment_id: string;
  event_subtype?: string;
  id: string;
  metric_period?: string;
  metric_period_month_reset?: string;
  metric_value?: number;
  operator: string;
  resource_ids: string[];
  trait_definition?: RestTraitDefinitionRef;
  trait_value: string;
}

export interface RestConditionGroup {
  conditions: RestCondition[];
}

export interface RestRule {
  account_id: string;
  condition_groups: RestConditionGroup[];
  conditions: RestCondition[];
  environment_id: string;
  flag_id?: string;
  id: string;
  name: string;
  priority: number;
  rule_type: string;
  value: boolean;
}

/** REST FeatureEntitlement: the rules-engine fields, `null`s left out (Go `omitempty`). */
export type RestEntitlement = { [K in keyof FeatureEntitlement]?: Exclude<FeatureEntitlement[K], null> } & {
  feature_id: string;
  feature_key: string;
  value_type: EntitlementValueType;
};

/** `CompanyDetailResponseData` as GET /companies returns it (the fields we produce). */
export interface RestCompany {
  add_ons: RestPlanView[];
  billing_credit_balances?: Record<string, number>;
  billing_subscription?: RestBillingSubscription;
  billing_subscriptions: RestBillingSubscription[];
  created_at: string;
  custom_plan_billings: unknown[];
  entitlements: RestEntitlement[];
  entity_traits: RestEntityTrait[];
  environment_id: string;
  id: string;
  keys: RestEntityKey[];
  metrics: RestMetric[];
  name: string;
  payment_methods: unknown[];
  plan?: RestPlanView;
  plans: RestPreviewObject[];
  rules: RestRule[];
  /** Trait display name → value. */
  traits?: Record<string, string>;
  updated_at: string;
  user_count: number;
}

/** `UserDetailResponseData` as GET /users returns it (the fields we produce). */
export interface RestUser {
  company_memberships: unknown[];
  created_at: string;
  entity_traits: RestEntityTrait[];
  environment_id: string;
  id: string;
  keys: RestEntityKey[];
  name: string;
  traits?: Record<string, string>;
  updated_at: string;
}

// ---------------------------------------------------------------------------------------------------------------
// Time helpers (no Date: years below 100 and nanoseconds must survive)

function daysFromCivil(y: number, m: number, d: number): number {
  const yy = m <= 2 ? y - 1 : y;
  const era = Math.floor(yy / 400);
  const yoe = yy - era * 400;
  const doy = Math.floor((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

function civilFromDays(days: number): [number, number, number] {
  const z = days + 719468;
  const era = Math.floor(z / 146097);
  const doe = z - era * 146097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36524) - Math.floor(doe / 146096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const d = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const m = mp < 10 ? mp + 3 : mp - 9;
  return [yoe + era * 400 + (m <= 2 ? 1 : 0), m, d];
}

const TIME_PARTS = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|([+-])(\d{2}):(\d{2}))$/;

/** Unix seconds of an RFC 3339 timestamp (fraction dropped, i.e. Go's `Time.Unix()`), or null if unparsable. */
export function unixSeconds(iso: string): number | null {
  const m = TIME_PARTS.exec(iso);
  if (!m) return null;
  const n = (i: number) => Number(m[i] ?? 0);
  const offset = m[7] ? (m[7] === "-" ? -1 : 1) * (n(8) * 3600 + n(9) * 60) : 0;
  return daysFromCivil(n(1), n(2), n(3)) * 86400 + n(4) * 3600 + n(5) * 60 + n(6) - offset;
}

const pad = (v: number, w = 2) => String(v).padStart(w, "0");

/** Unix seconds as Go prints `time.Unix(s, 0)` in UTC: `YYYY-MM-DDTHH:MM:SSZ`. */
export function fromUnixSeconds(s: number): string {
  const days = Math.floor(s / 86400);
  const rem = s - days * 86400;
  const [y, mo, d] = civilFromDays(days);
  return `${pad(y, 4)}-${pad(mo)}-${pad(d)}T${pad(Math.floor(rem / 3600))}:${pad(Math.floor((rem % 3600) / 60))}:${pad(rem % 60)}Z`;
}

// ---------------------------------------------------------------------------------------------------------------
// Deterministic synthesis

/** A fast, stable, non-cryptographic 64-bit hash (two FNV-1a lanes with a final mix), as hex, for synthetic ids. */
function hash(s: string): string {
  let a = 0x811c9dc5;
  let b = 0x2545f491;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
    b ^= b >>> 13;
  }
  a ^= b >>> 7;
  a = Math.imul(a ^ (a >>> 16), 0x85ebca6b);
  a ^= a >>> 13;
  b = Math.imul(b ^ (b >>> 16), 0xc2b2ae35);
  b ^= a >>> 11;
  return hex32(a) + hex32(b);
}

const HEX_BYTE = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));
function hex32(n: number): string {
  return HEX_BYTE[(n >>> 24) & 255]! + HEX_BYTE[(n >>> 16) & 255]! + HEX_BYTE[(n >>> 8) & 255]! + HEX_BYTE[n & 255]!;
}

/** `hash` memoised, for values shared by many entities (key definitions, products); bounded. */
const shared = new Map<string, string>();
function sharedHash(s: string): string {
  let h = shared.get(s);
  if (h === undefined) {
    if (shared.size >= 10_000) shared.clear();
    h = hash(s);
    shared.set(s, h);
  }
  return h;
}

const SYNTH_EPOCH = 1_704_067_200; // 2024-01-01T00:00:00Z

interface Synth {
  /** Hash of the entity's kind and id, the stem of its synthetic ids. */
  h: string;
  createdAt: string;
  updatedAt: string;
  createdUnix: number;
}

/** Timestamps derived from the id alone (cheap, and stable however the entity's JSON is ordered). */
function synth(kind: string, id: string): Synth {
  const h = hash(`${kind}:${id}`);
  const createdUnix = SYNTH_EPOCH + (Number.parseInt(h.slice(0, 8), 16) % (365 * 86400));
  const updatedUnix = createdUnix + (Number.parseInt(h.slice(8, 16), 16) % (30 * 86400));
  return { h, createdAt: fromUnixSeconds(createdUnix), updatedAt: fromUnixSeconds(updatedUnix), createdUnix };
}

const byteOrder = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

function sortedEntries<T>(o: Record<string, T> | null | undefined): [string, T][] {
  return Object.entries(o ?? {}).sort(([a], [b]) => byteOrder(a, b));
}

function displayName(keys: Record<string, string> | null | undefined, id: string): string {
  const entries = sortedEntries(keys);
  const named = entries.find(([k]) => k === "name");
  return (named ?? entries[0])?.[1] || id;
}

const COMPARABLE_TO_TRAIT_TYPE: Record<string, RestTraitType> = {
  bool: "boolean",
  int: "number",
  date: "date",
  string: "string",
};

function restKeys(
  entityType: TraitEntityType,
  id: string,
  environmentId: string,
  keys: Record<string, string> | null | undefined,
  s: Synth,
): RestEntityKey[] {
  return sortedEntries(keys).map(([key, value], i) => {
    const definitionId = `ekd_${sharedHash(`${environmentId}:${entityType}:${key}`)}`;
    return {
      created_at: s.createdAt,
      definition: { created_at: s.createdAt, entity_type: entityType, id: definitionId, key, updated_at: s.createdAt },
      definition_id: definitionId,
      entity_id: id,
      entity_type: entityType,
      environment_id: environmentId,
      id: `ek_${s.h}${i}`,
      key,
      updated_at: s.updatedAt,
      value,
    };
  });
}

function restTraits(
  entityType: TraitEntityType,
  environmentId: string,
  traits: Trait[] | null | undefined,
  s: Synth,
): { entity_traits: RestEntityTrait[]; traits?: Record<string, string> } {
  const entityTraits: RestEntityTrait[] = [];
  const map: Record<string, string> = {};
  (traits ?? []).forEach((t, i) => {
    const def = t?.trait_definition;
    if (!def) return; // a trait without a definition has no REST form (the mapping drops it too)
    setOwn(map, def.id, t.value);
    entityTraits.push({
      created_at: s.createdAt,
      definition: {
        created_at: s.createdAt,
        display_name: def.id,
        entity_type: entityType,
        hierarchy: [def.id],
        id: def.id,
        trait_type: COMPARABLE_TO_TRAIT_TYPE[def.comparable_type] ?? "string",
        updated_at: s.createdAt,
      },
      definition_id: def.id,
      environment_id: environmentId,
      id: `et_${s.h}${i}`,
      updated_at: s.updatedAt,
      value: t.value,
    });
  });
  return entityTraits.length > 0 ? { entity_traits: entityTraits, traits: map } : { entity_traits: entityTraits };
}

function traitDefRef(d: TraitDefinition | null | undefined): RestTraitDefinitionRef | undefined {
  return d ? { comparable_type: d.comparable_type, entity_type: d.entity_type, id: d.id } : undefined;
}

/** Drops `undefined` values (what Go's `omitempty` leaves out), keeping key order. */
function compact<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}

const opt = <T>(v: T | null | undefined): T | undefined => (v === null ? undefined : v);

function restCondition(c: Condition): RestCondition {
  return compact({
    account_id: c.account_id,
    comparison_trait_definition: traitDefRef(c.comparison_trait_definition),
    condition_type: c.condition_type,
    consumption_rate: opt(c.consumption_rate),
    credit_id: opt(c.credit_id),
    environment_id: c.environment_id,
    event_subtype: opt(c.event_subtype),
    id: c.id,
    metric_period: opt(c.metric_period),
    metric_period_month_reset: opt(c.metric_period_month_reset),
    metric_value: opt(c.metric_value),
    operator: c.operator,
    resource_ids: c.resource_ids ?? [],
    trait_definition: traitDefRef(c.trait_definition),
    trait_value: c.trait_value,
  });
}

function restRule(r: Rule): RestRule {
  return compact({
    account_id: r.account_id,
    condition_groups: (r.condition_groups ?? []).map((g) => ({ conditions: (g.conditions ?? []).map(restCondition) })),
    conditions: (r.conditions ?? []).map(restCondition),
    environment_id: r.environment_id,
    flag_id: opt(r.flag_id),
    id: r.id,
    name: r.name,
    priority: r.priority,
    rule_type: r.rule_type,
    value: r.value,
  });
}

function restEntitlement(e: FeatureEntitlement): RestEntitlement {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(e).sort(([a], [b]) => byteOrder(a, b))) {
    if (v === null || v === undefined) continue;
    if (k === "warning_tiers") {
      if (Array.isArray(v) && v.length > 0) out[k] = v.map((t: WarningTier) => ({ key: t?.key, value: t?.value }));
      continue;
    }
    out[k] = v;
  }
  return out as RestEntitlement;
}

function restMetric(m: CompanyMetric): RestMetric {
  return compact({
    account_id: m.account_id,
    captured_at_max: m.created_at,
    captured_at_min: m.created_at,
    company_id: m.company_id,
    created_at: m.created_at,
    environment_id: m.environment_id,
    event_subtype: m.event_subtype,
    month_reset: m.month_reset,
    period: m.period,
    valid_until: opt(m.valid_until),
    value: m.value,
  });
}

function restProduct(id: string, subscriptionId: string, environmentId: string, s: Synth): RestBillingProduct {
  const ph = sharedHash(`product:${id}`);
  return {
    billing_scheme: "per_unit",
    created_at: s.createdAt,
    currency: "usd",
    environment_id: environmentId,
    external_id: `prod_${ph.slice(0, 14)}`,
    id,
    interval: "month",
    name: id,
    package_size: 1,
    price: 0,
    price_external_id: `price_${ph.slice(2, 16)}`,
    price_id: `bpri_${ph.slice(1, 15)}`,
    price_tier: [],
    provider_type: "schematic",
    quantity: 1,
    subscription_id: subscriptionId,
    updated_at: s.createdAt,
    usage_type: "licensed",
  };
}

function restSubscription(
  c: Company,
  sub: Subscription | null,
  productIds: string[],
  s: Synth,
): RestBillingSubscription {
  const id = sub ? sub.id : `bsub_${s.h}`;
  const start = sub ? (unixSeconds(sub.period_start) ?? 0) : s.createdUnix;
  const end = sub ? (unixSeconds(sub.period_end) ?? 0) : s.createdUnix + 30 * 86400;
  return {
    cancel_at_period_end: false,
    company_id: c.id,
    created_at: s.createdAt,
    currency: "usd",
    customer_external_id: `cus_${s.h.slice(0, 14)}`,
    discounts: [],
    id,
    interval: "month",
    period_end: end,
    period_start: start,
    products: productIds.map((p) => restProduct(p, id, c.environment_id, s)),
    provider_type: "schematic",
    status: "active",
    subscription_external_id: `sub_${s.h.slice(2, 16)}`,
    total_price: 0,
  };
}

function planView(id: string, name: string, planVersionId: string | undefined, s: Synth): RestPlanView {
  return compact({ added_on: s.createdAt, id, included_credit_grants: [], name, plan_version_id: planVersionId });
}

// ---------------------------------------------------------------------------------------------------------------
// Wire → REST

/** A wire company as the REST API's CompanyDetailResponseData. Deterministic: one entity, one set of bytes. */
export function companyToRest(c: Company): RestCompany {
  const s = synth("company", c.id);
  const planIds = c.plan_ids ?? [];
  const versions = c.plan_version_ids ?? [];
  const products = c.billing_product_ids ?? [];
  const basePlan = c.base_plan_id ? c.base_plan_id : null;

  // Base plan carries the first plan version; the others ride on add-ons (the mapping reads plan first, then
  // add-ons, so the order survives). With no base plan, every version is an add-on.
  const addOnVersions = basePlan !== null ? versions.slice(1) : versions;
  const addOnPlanIds = planIds.filter((p) => p !== basePlan);
  const addOns = addOnVersions.map((v, i) =>
    planView(addOnPlanIds[i] ?? `plan_addon_${i + 1}`, addOnPlanIds[i] ?? `Add-on ${i + 1}`, v, s),
  );

  // The subscription and every product go on one subscription view, listed in `billing_subscriptions` (in order,
  // duplicates kept) and, when the company has a subscription, as `billing_subscription` too (then adding nothing).
  const subscription = c.subscription ? restSubscription(c, c.subscription, products, s) : undefined;
  const subscriptions = subscription
    ? [subscription]
    : products.length > 0
      ? [restSubscription(c, null, products, s)]
      : [];

  const traits = restTraits("company", c.environment_id, c.traits, s);
  const balances = sortedEntries(c.credit_balances);
  const out: RestCompany = {
    add_ons: addOns,
    billing_credit_balances: balances.length > 0 ? Object.fromEntries(balances) : undefined,
    billing_subscription: subscription,
    billing_subscriptions: subscriptions,
    created_at: s.createdAt,
    custom_plan_billings: [],
    entitlements: (c.entitlements ?? []).map(restEntitlement),
    entity_traits: traits.entity_traits,
    environment_id: c.environment_id,
    id: c.id,
    keys: restKeys("company", c.id, c.environment_id, c.keys, s),
    metrics: (c.metrics ?? []).map(restMetric),
    name: displayName(c.keys, c.id),
    payment_methods: [],
    plan: basePlan !== null ? planView(basePlan, basePlan, versions[0], s) : undefined,
    plans: planIds.map((id) => ({ id, name: id })),
    rules: (c.rules ?? []).map(restRule),
    traits: traits.traits,
    updated_at: s.updatedAt,
    user_count: 0,
  };
  return compact(out);
}

/** A wire user as the REST API's UserDetailResponseData. Deterministic. */
export function userToRest(u: User): RestUser {
  const s = synth("user", u.id);
  const traits = restTraits("user", u.environment_id, u.traits, s);
  return compact({
    company_memberships: [],
    created_at: s.createdAt,
    entity_traits: traits.entity_traits,
    environment_id: u.environment_id,
    id: u.id,
    keys: restKeys("user", u.id, u.environment_id, u.keys, s),
    name: displayName(u.keys, u.id),
    traits: traits.traits,
    updated_at: s.updatedAt,
  });
}

// ---------------------------------------------------------------------------------------------------------------
// REST → rules engine (lenient)

const L: DecodeMode = "lenient";
type Obj = Record<string, unknown>;

const str = (v: unknown): string =>
  typeof v === "string" ? v : typeof v === "number" || typeof v === "boolean" ? String(v) : "";
const optStr = (v: unknown): string | null => (v === null || v === undefined ? null : str(v));
const int = (v: unknown): number => (typeof v === "number" && Number.isFinite(v) ? Math.trunc(v) : 0);
const optInt = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) ? Math.trunc(v) : null);
const optNum = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) ? v : null);
const list = (v: unknown): unknown[] => (Array.isArray(v) ? v.filter((e) => e !== null && e !== undefined) : []);
const objects = (v: unknown): Obj[] => list(v).filter(isObject);

function time(v: unknown): string {
  if (typeof v !== "string") return GO_ZERO_TIME;
  return goTimeString(v) ?? v;
}
const optTime = (v: unknown): string | null => (typeof v === "string" ? time(v) : null);

/** schematic-replicator `convertTraitTypeToComparableType`. */
export function comparableTypeOf(traitType: unknown): ComparableType {
  switch (traitType) {
    case "boolean":
    case "bool":
      return "bool";
    case "number":
    case "int":
    case "integer":
      return "int";
    case "date":
      return "date";
    default:
      return "string";
  }
}

const CONDITION_TYPES = new Set<string>([
  "base_plan",
  "billing_product",
  "company",
  "credit",
  "metric",
  "plan",
  "plan_version", // kept (docs/design/decisions.md "REST mapping"); the Go replicator maps it to ""
  "trait",
  "user",
]);

const OPERATOR_ALIASES: Record<string, Operator> = {
  eq: "eq",
  equals: "eq",
  ne: "ne",
  not_equals: "ne",
  gt: "gt",
  greater_than: "gt",
  lt: "lt",
  less_than: "lt",
  gte: "gte",
  greater_than_or_equal: "gte",
  lte: "lte",
  less_than_or_equal: "lte",
  is_empty: "is_empty",
  not_empty: "not_empty",
};

function conditionPeriod(v: unknown): MetricPeriod {
  return v === "current_month" || v === "current_day" || v === "current_week" ? v : "all_time";
}

function monthReset(v: unknown): MonthReset {
  return v === "billing_cycle" ? "billing_cycle" : "first_of_month";
}

/**
 * Metrics: unknown periods fall to all_time; `current_week` is kept (docs/design/decisions.md "REST mapping"; Go maps
 * it to all_time).
 */
function metricPeriod(v: unknown): MetricPeriod {
  return conditionPeriod(v);
}

function engineTraitDefRef(v: unknown): TraitDefinition | null {
  if (!isObject(v)) return null;
  return {
    id: str(v.id),
    comparable_type: comparableTypeOf(v.comparable_type),
    entity_type: str(v.entity_type) as TraitEntityType,
  };
}

function engineCondition(c: Obj): Condition {
  const type = str(c.condition_type);
  const op = str(c.operator);
  return {
    id: str(c.id),
    account_id: str(c.account_id),
    environment_id: str(c.environment_id),
    condition_type: (CONDITION_TYPES.has(type) ? type : "") as ConditionType,
    operator: (op === "" ? "" : (OPERATOR_ALIASES[op] ?? "eq")) as Operator,
    resource_ids: decodeStringList(c.resource_ids, "resource_ids", L),
    event_subtype: optStr(c.event_subtype),
    metric_value: optInt(c.metric_value),
    metric_period: c.metric_period === null || c.metric_period === undefined ? null : conditionPeriod(c.metric_period),
    metric_period_month_reset:
      c.metric_period_month_reset === null || c.metric_period_month_reset === undefined
        ? null
        : monthReset(c.metric_period_month_reset),
    credit_id: optStr(c.credit_id),
    consumption_rate: optNum(c.consumption_rate),
    trait_definition: engineTraitDefRef(c.trait_definition),
    trait_value: str(c.trait_value),
    comparison_trait_definition: engineTraitDefRef(c.comparison_trait_definition),
  };
}

function engineRules(v: unknown): Rule[] {
  const out: Rule[] = [];
  for (const r of objects(v)) {
    if (r.rule_type !== "company_override" && r.rule_type !== "company_override_usage_exceeded") continue;
    out.push({
      id: str(r.id),
      flag_id: optStr(r.flag_id),
      account_id: str(r.account_id),
      environment_id: str(r.environment_id),
      rule_type: r.rule_type,
      name: str(r.name),
      priority: int(r.priority),
      conditions: objects(r.conditions).map(engineCondition),
      condition_groups: objects(r.condition_groups).map(
        (g): ConditionGroup => ({ conditions: objects(g.conditions).map(engineCondition) }),
      ),
      value: r.value === true,
    });
  }
  return out;
}

function engineMetrics(v: unknown): CompanyMetric[] {
  return objects(v).map((m) => ({
    account_id: str(m.account_id),
    environment_id: str(m.environment_id),
    company_id: str(m.company_id),
    event_subtype: str(m.event_subtype),
    period: metricPeriod(m.period),
    month_reset: monthReset(m.month_reset),
    value: int(m.value),
    created_at: time(m.created_at),
    valid_until: optTime(m.valid_until),
  }));
}

function engineTraits(v: unknown, entityType: TraitEntityType): Trait[] {
  const out: Trait[] = [];
  for (const t of objects(v)) {
    if (!isObject(t.definition)) continue;
    out.push({
      trait_definition: {
        id: str(t.definition.id),
        comparable_type: comparableTypeOf(t.definition.trait_type),
        entity_type: entityType,
      },
      value: str(t.value),
    });
  }
  return out;
}

function engineKeys(v: unknown): Record<string, string> {
  const keys: Record<string, string> = {};
  for (const k of objects(v)) setOwn(keys, str(k.key), str(k.value));
  return keys;
}

function requireEntity(r: unknown, what: "company" | "user"): Obj & { id: string } {
  if (!isObject(r)) throw new Error(`REST ${what}: expected a JSON object`);
  if (typeof r.id !== "string" || r.id === "") throw new Error(`REST ${what}: field "id" is missing`);
  if (!Array.isArray(r.keys)) throw new Error(`REST ${what} ${r.id}: field "keys" is missing`);
  return r as Obj & { id: string };
}

function subscriptionOf(v: unknown): Subscription | null {
  if (!isObject(v)) return null;
  const start = int(v.period_start);
  const end = int(v.period_end);
  return {
    id: str(v.id),
    period_start: start !== 0 ? fromUnixSeconds(start) : GO_ZERO_TIME,
    period_end: end !== 0 ? fromUnixSeconds(end) : GO_ZERO_TIME,
  };
}

/**
 * REST CompanyDetailResponseData → rules-engine Company (docs/reference/protocol.md §5.3 with
 * docs/design/decisions.md "REST mapping").
 */
export function restCompanyToEngine(r: unknown): Company {
  const c = requireEntity(r, "company");

  const plan = isObject(c.plan) ? c.plan : null;
  const basePlanId = plan && typeof plan.id === "string" && plan.id !== "" ? plan.id : null;

  const planVersionIds: string[] = [];
  const pushVersion = (p: unknown) => {
    if (isObject(p) && typeof p.plan_version_id === "string" && p.plan_version_id !== "") {
      planVersionIds.push(p.plan_version_id);
    }
  };
  pushVersion(plan);
  for (const a of list(c.add_ons)) pushVersion(a);

  const productIds: string[] = [];
  for (const sub of objects(c.billing_subscriptions)) {
    for (const p of objects(sub.products)) if (typeof p.id === "string" && p.id !== "") productIds.push(p.id);
  }
  if (isObject(c.billing_subscription)) {
    for (const p of objects(c.billing_subscription.products)) {
      if (typeof p.id === "string" && p.id !== "" && !productIds.includes(p.id)) productIds.push(p.id);
    }
  }

  const planIds: string[] = [];
  for (const p of objects(c.plans)) if (typeof p.id === "string" && p.id !== "") planIds.push(p.id);

  const balances: Record<string, number> = {};
  if (isObject(c.billing_credit_balances)) {
    for (const [k, v] of Object.entries(c.billing_credit_balances)) {
      if (typeof v === "number" && Number.isFinite(v)) setOwn(balances, k, v);
    }
  }

  return orderCompany({
    id: c.id,
    account_id: "",
    environment_id: str(c.environment_id),
    base_plan_id: basePlanId,
    billing_product_ids: productIds,
    credit_balances: balances,
    entitlements: decodeEntitlements(c.entitlements, "entitlements", L),
    keys: engineKeys(c.keys),
    metrics: engineMetrics(c.metrics),
    plan_ids: planIds,
    plan_version_ids: planVersionIds,
    rules: engineRules(c.rules),
    subscription: subscriptionOf(c.billing_subscription),
    traits: engineTraits(c.entity_traits, "company"),
  });
}

/** REST UserDetailResponseData → rules-engine User (`account_id` "", `rules` []). */
export function restUserToEngine(r: unknown): User {
  const u = requireEntity(r, "user");
  return orderUser({
    id: u.id,
    account_id: "",
    environment_id: str(u.environment_id),
    keys: engineKeys(u.keys),
    traits: engineTraits(u.entity_traits, "user"),
    rules: [],
  });
}

/**
 * A REST row as the rules-engine entity the lanes store: mapped, then checked as every stored entity is (throws
 * EntityError when the engine would refuse it, e.g. an unknown enum value the lenient mapping passed through).
 */
export function restToEngine(kind: "company" | "user", row: unknown): Company | User {
  const mapped = kind === "company" ? restCompanyToEngine(row) : restUserToEngine(row);
  return parseEngineEntity(kind, mapped).entity;
}
