/**
 * Partial merge of companies and users: a snake_case port of schematic-go v1.5.2 `datastream.PartialCompany` /
 * `PartialUser` (docs/reference/redis-contract.md §8), the rules the Go replicator applies to `partial` messages.
 *
 * Also home of the small "decode like Go's encoding/json into a rulesengine struct" helpers (`decode*`), which the
 * REST mapping (rest.ts) and the equivalence checks (equivalence.ts) reuse in lenient mode:
 *   - strict (merge): a value of the wrong JSON type throws an Error naming the field, as Go's decoder fails;
 *   - lenient (REST responses): a value of the wrong type becomes the zero value.
 * In both modes absent/`null` gives the Go zero value (`""`, `0`, `false`, `null` for pointers, `[]` for lists,
 * `0001-01-01T00:00:00Z` for a non-pointer time), unknown fields are dropped, and objects come out in Go struct field
 * order. Times are re-formatted the way Go prints a parsed `time.Time` (RFC 3339, trailing fractional zeros trimmed,
 * zero offset as `Z`). Unlike Go, field names are matched exactly (Go matches them case-insensitively), and `null`
 * list elements are dropped rather than kept as `null` (the engine would reject them).
 */
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
  RuleType,
  Subscription,
  Trait,
  TraitDefinition,
  TraitEntityType,
  User,
  WarningTier,
} from "./wire.js";
import { COMPANY_FIELDS } from "./wire.js";

// ---------------------------------------------------------------------------------------------------------------
// Go-style decoding helpers

export type DecodeMode = "strict" | "lenient";

/** Go's zero `time.Time` as encoding/json prints it. */
export const GO_ZERO_TIME = "0001-01-01T00:00:00Z";

type Obj = Record<string, unknown>;

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  return typeof v;
}

function fail(mode: DecodeMode, path: string, expected: string, got: unknown): void {
  if (mode === "strict") throw new Error(`field "${path}": expected ${expected}, got ${describe(got)}`);
}

export function isObject(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function decStr(v: unknown, path: string, mode: DecodeMode, fallback = ""): string {
  if (v === undefined || v === null) return fallback;
  if (typeof v === "string") return v;
  fail(mode, path, "a string", v);
  return typeof v === "number" || typeof v === "boolean" ? String(v) : fallback;
}

function decOptStr(v: unknown, path: string, mode: DecodeMode): string | null {
  if (v === undefined || v === null) return null;
  if (typeof v === "string") return v;
  fail(mode, path, "a string", v);
  return typeof v === "number" || typeof v === "boolean" ? String(v) : null;
}

function decInt(v: unknown, path: string, mode: DecodeMode, fallback = 0): number {
  if (v === undefined || v === null) return fallback;
  if (typeof v === "number" && Number.isInteger(v)) return v;
  fail(mode, path, "an integer", v);
  return typeof v === "number" && Number.isFinite(v) ? Math.trunc(v) : fallback;
}

function decOptInt(v: unknown, path: string, mode: DecodeMode): number | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== "number" || !Number.isFinite(v)) {
    fail(mode, path, "an integer", v);
    return null;
  }
  return decInt(v, path, mode, 0);
}

function decNum(v: unknown, path: string, mode: DecodeMode, fallback = 0): number {
  if (v === undefined || v === null) return fallback;
  if (typeof v === "number" && Number.isFinite(v)) return v;
  fail(mode, path, "a number", v);
  return fallback;
}

function decOptNum(v: unknown, path: string, mode: DecodeMode): number | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== "number" || !Number.isFinite(v)) {
    fail(mode, path, "a number", v);
    return null;
  }
  return v;
}

function decBool(v: unknown, path: string, mode: DecodeMode, fallback = false): boolean {
  if (v === undefined || v === null) return fallback;
  if (typeof v === "boolean") return v;
  fail(mode, path, "a boolean", v);
  return fallback;
}

function decList<T>(
  v: unknown,
  path: string,
  mode: DecodeMode,
  elem: (e: unknown, path: string, mode: DecodeMode) => T,
): T[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) {
    fail(mode, path, "an array", v);
    return [];
  }
  const out: T[] = [];
  v.forEach((e, i) => {
    if (e !== null && e !== undefined) out.push(elem(e, `${path}[${i}]`, mode));
  });
  return out;
}

export function decodeStringList(v: unknown, path: string, mode: DecodeMode): string[] {
  return decList(v, path, mode, (e, p, m) => decStr(e, p, m));
}

function decObj(v: unknown, path: string, mode: DecodeMode): Obj | null {
  if (v === undefined || v === null) return null;
  if (isObject(v)) return v;
  fail(mode, path, "an object", v);
  return null;
}

const RFC3339 = /^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$/;

/**
 * An RFC 3339 timestamp as Go prints it after parsing: at most 9 fractional digits, trailing zeros trimmed, a zero
 * offset as `Z`, other offsets kept. Returns null when `s` is not RFC 3339.
 */
export function goTimeString(s: string): string | null {
  const m = RFC3339.exec(s);
  if (!m) return null;
  const [, date, clock, fracRaw, offRaw] = m;
  let frac = (fracRaw ?? "").slice(0, 9).replace(/0+$/, "");
  frac = frac ? `.${frac}` : "";
  const off = offRaw === undefined || /^[Zz]$/.test(offRaw) || /^[+-]00:00$/.test(offRaw) ? "Z" : offRaw;
  return `${date}T${clock}${frac}${off}`;
}

function decTime(v: unknown, path: string, mode: DecodeMode, fallback = GO_ZERO_TIME): string {
  if (v === undefined || v === null) return fallback;
  if (typeof v === "string") {
    const t = goTimeString(v);
    if (t !== null) return t;
    fail(mode, path, "an RFC 3339 timestamp", v);
    return v;
  }
  fail(mode, path, "an RFC 3339 timestamp", v);
  return fallback;
}

function decOptTime(v: unknown, path: string, mode: DecodeMode): string | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== "string") {
    fail(mode, path, "an RFC 3339 timestamp", v);
    return null;
  }
  return decTime(v, path, mode);
}

/** Sets an own enumerable property, also for the name `__proto__` (plain assignment would hit the setter). */
export function setOwn<T>(o: Record<string, T>, k: string, v: T): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

function decStringMap(v: unknown, path: string, mode: DecodeMode): Record<string, string> | null {
  const o = decObj(v, path, mode);
  if (!o) return null;
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(o)) setOwn(out, k, decStr(val, `${path}.${k}`, mode));
  return out;
}

function decNumberMap(v: unknown, path: string, mode: DecodeMode): Record<string, number> | null {
  const o = decObj(v, path, mode);
  if (!o) return null;
  const out: Record<string, number> = {};
  for (const [k, val] of Object.entries(o)) {
    if (typeof val === "number" || val === null || mode === "strict") setOwn(out, k, decNum(val, `${path}.${k}`, mode));
  }
  return out;
}

export function decodeTraitDefinition(v: unknown, path: string, mode: DecodeMode): TraitDefinition | null {
  const o = decObj(v, path, mode);
  if (!o) return null;
  return {
    id: decStr(o.id, `${path}.id`, mode),
    comparable_type: decStr(o.comparable_type, `${path}.comparable_type`, mode) as ComparableType,
    entity_type: decStr(o.entity_type, `${path}.entity_type`, mode) as TraitEntityType,
  };
}

export function decodeTrait(v: unknown, path: string, mode: DecodeMode): Trait {
  const o = decObj(v, path, mode) ?? {};
  return {
    trait_definition: decodeTraitDefinition(o.trait_definition, `${path}.trait_definition`, mode),
    value: decStr(o.value, `${path}.value`, mode),
  };
}

export function decodeCondition(v: unknown, path: string, mode: DecodeMode): Condition {
  const o = decObj(v, path, mode) ?? {};
  return {
    id: decStr(o.id, `${path}.id`, mode),
    account_id: decStr(o.account_id, `${path}.account_id`, mode),
    environment_id: decStr(o.environment_id, `${path}.environment_id`, mode),
    condition_type: decStr(o.condition_type, `${path}.condition_type`, mode) as ConditionType,
    operator: decStr(o.operator, `${path}.operator`, mode) as Operator,
    resource_ids: decodeStringList(o.resource_ids, `${path}.resource_ids`, mode),
    event_subtype: decOptStr(o.event_subtype, `${path}.event_subtype`, mode),
    metric_value: decOptInt(o.metric_value, `${path}.metric_value`, mode),
    metric_period: decOptStr(o.metric_period, `${path}.metric_period`, mode) as MetricPeriod | null,
    metric_period_month_reset: decOptStr(
      o.metric_period_month_reset,
      `${path}.metric_period_month_reset`,
      mode,
    ) as MonthReset | null,
    credit_id: decOptStr(o.credit_id, `${path}.credit_id`, mode),
    consumption_rate: decOptNum(o.consumption_rate, `${path}.consumption_rate`, mode),
    trait_definition: decodeTraitDefinition(o.trait_definition, `${path}.trait_definition`, mode),
    trait_value: decStr(o.trait_value, `${path}.trait_value`, mode),
    comparison_trait_definition: decodeTraitDefinition(
      o.comparison_trait_definition,
      `${path}.comparison_trait_definition`,
      mode,
    ),
  };
}

function decodeConditionGroup(v: unknown, path: string, mode: DecodeMode): ConditionGroup {
  const o = decObj(v, path, mode) ?? {};
  return { conditions: decList(o.conditions, `${path}.conditions`, mode, decodeCondition) };
}

export function decodeRule(v: unknown, path: string, mode: DecodeMode): Rule {
  const o = decObj(v, path, mode) ?? {};
  return {
    id: decStr(o.id, `${path}.id`, mode),
    flag_id: decOptStr(o.flag_id, `${path}.flag_id`, mode),
    account_id: decStr(o.account_id, `${path}.account_id`, mode),
    environment_id: decStr(o.environment_id, `${path}.environment_id`, mode),
    rule_type: decStr(o.rule_type, `${path}.rule_type`, mode) as RuleType,
    name: decStr(o.name, `${path}.name`, mode),
    priority: decInt(o.priority, `${path}.priority`, mode),
    conditions: decList(o.conditions, `${path}.conditions`, mode, decodeCondition),
    condition_groups: decList(o.condition_groups, `${path}.condition_groups`, mode, decodeConditionGroup),
    value: decBool(o.value, `${path}.value`, mode),
  };
}

export function decodeRules(v: unknown, path: string, mode: DecodeMode): Rule[] {
  return decList(v, path, mode, decodeRule);
}

export function decodeTraits(v: unknown, path: string, mode: DecodeMode): Trait[] {
  return decList(v, path, mode, decodeTrait);
}

export function decodeMetric(v: unknown, path: string, mode: DecodeMode): CompanyMetric {
  const o = decObj(v, path, mode) ?? {};
  return {
    account_id: decStr(o.account_id, `${path}.account_id`, mode),
    environment_id: decStr(o.environment_id, `${path}.environment_id`, mode),
    company_id: decStr(o.company_id, `${path}.company_id`, mode),
    event_subtype: decStr(o.event_subtype, `${path}.event_subtype`, mode),
    period: decStr(o.period, `${path}.period`, mode) as MetricPeriod,
    month_reset: decStr(o.month_reset, `${path}.month_reset`, mode) as MonthReset,
    value: decInt(o.value, `${path}.value`, mode),
    created_at: decTime(o.created_at, `${path}.created_at`, mode),
    valid_until: decOptTime(o.valid_until, `${path}.valid_until`, mode),
  };
}

function decodeWarningTier(v: unknown, path: string, mode: DecodeMode): WarningTier {
  const o = decObj(v, path, mode) ?? {};
  return { key: decStr(o.key, `${path}.key`, mode), value: decInt(o.value, `${path}.value`, mode) };
}

/**
 * A FeatureEntitlement in Go struct order: fields without `omitempty` always present (`null` when unset), the
 * `omitempty` ones (`consumption_rate`, `credit_reserved`, `credit_settled`, `event_subtype`, `warning_tiers`)
 * only when set.
 */
export function decodeEntitlement(v: unknown, path: string, mode: DecodeMode): FeatureEntitlement {
  const o = decObj(v, path, mode) ?? {};
  const consumptionRate = decOptNum(o.consumption_rate, `${path}.consumption_rate`, mode);
  const creditReserved = decOptNum(o.credit_reserved, `${path}.credit_reserved`, mode);
  const creditSettled = decOptNum(o.credit_settled, `${path}.credit_settled`, mode);
  const eventSubtype = decOptStr(o.event_subtype, `${path}.event_subtype`, mode);
  const warningTiers = decList(o.warning_tiers, `${path}.warning_tiers`, mode, decodeWarningTier);
  const e: FeatureEntitlement = {
    allocation: decOptInt(o.allocation, `${path}.allocation`, mode),
    ...(consumptionRate !== null ? { consumption_rate: consumptionRate } : {}),
    credit_id: decOptStr(o.credit_id, `${path}.credit_id`, mode),
    credit_remaining: decOptNum(o.credit_remaining, `${path}.credit_remaining`, mode),
    ...(creditReserved !== null ? { credit_reserved: creditReserved } : {}),
    ...(creditSettled !== null ? { credit_settled: creditSettled } : {}),
    credit_total: decOptNum(o.credit_total, `${path}.credit_total`, mode),
    credit_used: decOptNum(o.credit_used, `${path}.credit_used`, mode),
    event_name: decOptStr(o.event_name, `${path}.event_name`, mode),
    ...(eventSubtype !== null ? { event_subtype: eventSubtype } : {}),
    feature_id: decStr(o.feature_id, `${path}.feature_id`, mode),
    feature_key: decStr(o.feature_key, `${path}.feature_key`, mode),
    metric_period: decOptStr(o.metric_period, `${path}.metric_period`, mode) as MetricPeriod | null,
    metric_reset_at: decOptTime(o.metric_reset_at, `${path}.metric_reset_at`, mode),
    month_reset: decOptStr(o.month_reset, `${path}.month_reset`, mode) as MonthReset | null,
    soft_limit: decOptInt(o.soft_limit, `${path}.soft_limit`, mode),
    usage: decOptInt(o.usage, `${path}.usage`, mode),
    value_type: decStr(o.value_type, `${path}.value_type`, mode) as EntitlementValueType,
  };
  if (warningTiers.length > 0) e.warning_tiers = warningTiers;
  return e;
}

export function decodeEntitlements(v: unknown, path: string, mode: DecodeMode): FeatureEntitlement[] {
  return decList(v, path, mode, decodeEntitlement);
}

/**
 * Decodes `v` into `into` (a copy of the existing subscription, or a zero one), as encoding/json does with a
 * non-nil pointer: sub-fields absent or `null` keep their previous values. `null` for the whole object gives null.
 */
export function decodeSubscription(
  v: unknown,
  path: string,
  mode: DecodeMode,
  into: Subscription | null = null,
): Subscription | null {
  const o = decObj(v, path, mode);
  if (!o) return null;
  const base = into ?? { id: "", period_start: GO_ZERO_TIME, period_end: GO_ZERO_TIME };
  return {
    id: decStr(o.id, `${path}.id`, mode, base.id),
    period_start: decTime(o.period_start, `${path}.period_start`, mode, base.period_start),
    period_end: decTime(o.period_end, `${path}.period_end`, mode, base.period_end),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Companies

/** Builds a Company in Go field order; `entitlements` is left out when empty (Go `omitempty`). */
export function orderCompany(c: Company): Company {
  const out: Record<string, unknown> = {};
  for (const field of COMPANY_FIELDS) {
    if (field === "entitlements") {
      if (c.entitlements && c.entitlements.length > 0) out.entitlements = c.entitlements;
    } else {
      out[field] = c[field];
    }
  }
  return out as unknown as Company;
}

export function orderUser(u: User): User {
  return {
    id: u.id,
    account_id: u.account_id,
    environment_id: u.environment_id,
    keys: u.keys,
    traits: u.traits,
    rules: u.rules,
  };
}

function metricKey(m: CompanyMetric): string {
  return JSON.stringify([m.event_subtype, m.period, m.month_reset]);
}

/** Go `upsertMetrics`: matches by (event_subtype, period, month_reset) replaced in place, others appended. */
function upsertMetrics(existing: CompanyMetric[], incoming: CompanyMetric[]): CompanyMetric[] {
  const result = existing.slice();
  const index = new Map<string, number>();
  result.forEach((m, i) => {
    index.set(metricKey(m), i);
  });
  for (const m of incoming) {
    const idx = index.get(metricKey(m));
    // As in Go, the index is not updated for appended metrics: two new metrics with one key are both appended.
    if (idx !== undefined) result[idx] = m;
    else result.push(m);
  }
  return result;
}

/** Go `syncEntitlementDerivedFields`. */
function syncEntitlements(
  entitlements: FeatureEntitlement[],
  balanceUpdates: Record<string, number> | null,
  metricsUpdated: boolean,
  mergedMetrics: CompanyMetric[],
): FeatureEntitlement[] {
  let lookup: Map<string, number> | null = null;
  if (metricsUpdated) {
    lookup = new Map();
    for (const m of mergedMetrics) lookup.set(metricKey(m), m.value);
  }
  return entitlements.map((ent) => {
    const updated: FeatureEntitlement = { ...ent };
    if (balanceUpdates && ent.credit_id !== null && ent.credit_id !== undefined) {
      if (Object.hasOwn(balanceUpdates, ent.credit_id)) updated.credit_remaining = balanceUpdates[ent.credit_id];
    }
    if (lookup && ent.event_name !== null && ent.event_name !== undefined) {
      const key = JSON.stringify([
        ent.event_name,
        ent.metric_period ?? "all_time",
        ent.month_reset ?? "first_of_month",
      ]);
      const value = lookup.get(key);
      if (value !== undefined) updated.usage = value;
    }
    return updated;
  });
}

function partialObject(partial: unknown, what: string): Obj {
  if (!isObject(partial)) throw new Error(`partial ${what}: expected a JSON object, got ${describe(partial)}`);
  return partial;
}

/**
 * Merges a partial company (snake_case JSON object of changed top-level fields) into `base`, by the schematic-go
 * v1.5.2 rules. Pure: neither argument is mutated. Throws an Error naming the field when a value has the wrong
 * JSON type (Go's merge fails the same way). `credit_lease_balance` and unknown keys are ignored.
 */
export function mergeCompany(base: Company, partial: Record<string, unknown>): Company {
  const p = partialObject(partial, "company");
  const m: Company = structuredClone(base);
  m.keys = { ...(m.keys ?? {}) };
  const mode: DecodeMode = "strict";

  let balanceUpdates: Record<string, number> | null = null;
  let metricsUpdated = false;
  let entitlementsInPartial = false;

  for (const [key, raw] of Object.entries(p)) {
    switch (key) {
      case "base_plan_id":
        m.base_plan_id = decOptStr(raw, key, mode);
        break;
      case "billing_product_ids":
        m.billing_product_ids = decodeStringList(raw, key, mode);
        break;
      case "plan_ids":
        m.plan_ids = decodeStringList(raw, key, mode);
        break;
      case "plan_version_ids":
        m.plan_version_ids = decodeStringList(raw, key, mode);
        break;
      case "credit_balances": {
        const cb = decNumberMap(raw, key, mode);
        m.credit_balances = { ...(m.credit_balances ?? {}), ...(cb ?? {}) };
        balanceUpdates = cb;
        break;
      }
      case "entitlements":
        m.entitlements = decodeEntitlements(raw, key, mode);
        entitlementsInPartial = true;
        break;
      case "metrics":
        m.metrics = upsertMetrics(m.metrics ?? [], decList(raw, key, mode, decodeMetric));
        metricsUpdated = true;
        break;
      case "subscription":
        m.subscription = decodeSubscription(raw, key, mode, m.subscription);
        break;
      default:
        // The fields companies share with users; credit_lease_balance and anything else: ignored, as Go does.
        mergeSharedField(m, key, raw, mode);
        break;
    }
  }

  if (!entitlementsInPartial && (balanceUpdates !== null || metricsUpdated) && (m.entitlements?.length ?? 0) > 0) {
    m.entitlements = syncEntitlements(m.entitlements ?? [], balanceUpdates, metricsUpdated, m.metrics);
  }
  return orderCompany(m);
}

/**
 * The fields companies and users share, merged the same way for both: `id`, `account_id`, `environment_id`
 * replaced (`null` keeps them), `keys` shallow-merged, `traits` and `rules` replaced. Other fields are ignored.
 */
function mergeSharedField(m: Company | User, key: string, raw: unknown, mode: DecodeMode): void {
  switch (key) {
    case "id":
      m.id = decStr(raw, key, mode, m.id);
      break;
    case "account_id":
      m.account_id = decStr(raw, key, mode, m.account_id);
      break;
    case "environment_id":
      m.environment_id = decStr(raw, key, mode, m.environment_id);
      break;
    case "keys":
      m.keys = { ...m.keys, ...(decStringMap(raw, key, mode) ?? {}) };
      break;
    case "traits":
      m.traits = decodeTraits(raw, key, mode);
      break;
    case "rules":
      m.rules = decodeRules(raw, key, mode);
      break;
  }
}

/**
 * Merges a partial user into `base` (schematic-go v1.5.2 `PartialUser`): `id`, `account_id`, `environment_id`
 * replaced (`null` keeps them), `keys` shallow-merged, `traits` and `rules` replaced; everything else ignored.
 */
export function mergeUser(base: User, partial: Record<string, unknown>): User {
  const p = partialObject(partial, "user");
  const m: User = structuredClone(base);
  m.keys = { ...(m.keys ?? {}) };
  const mode: DecodeMode = "strict";
  for (const [key, raw] of Object.entries(p)) mergeSharedField(m, key, raw, mode);
  return orderUser(m);
}
