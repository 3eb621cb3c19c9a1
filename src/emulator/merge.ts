/**
 * The emulator's own application of a `partial` change to its stored entity, following the merge rules the
 * clients apply (shared/reference/redis-contract.md §8, protocol.md §4.9), so that the emulator's state equals
 * what a client that applied the pushed partial holds.
 */
import { COMPANY_FIELDS, type Company, type CompanyMetric, type FeatureEntitlement, USER_FIELDS, type User } from "../model/wire.js";

function inOrder<T>(fields: readonly string[], src: Record<string, unknown>): T {
  const out: Record<string, unknown> = {};
  for (const f of fields) if (src[f] !== undefined) out[f] = src[f];
  return out as T;
}

function metricKey(m: { event_subtype: string; period: string; month_reset: string }): string {
  return `${m.event_subtype}\u0000${m.period}\u0000${m.month_reset}`;
}

/** Upsert by (event_subtype, period, month_reset): matches replaced in place, new ones appended. */
function upsertMetrics(base: CompanyMetric[], updates: CompanyMetric[]): CompanyMetric[] {
  const out = base.slice();
  const at = new Map<string, number>();
  for (let i = 0; i < out.length; i++) at.set(metricKey(out[i]!), i);
  for (const m of updates) {
    const k = metricKey(m);
    const i = at.get(k);
    if (i === undefined) {
      at.set(k, out.length);
      out.push(m);
    } else out[i] = m;
  }
  return out;
}

export function mergeCompany(base: Company, partial: Partial<Company>): Company {
  const merged: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(partial)) {
    if (v === undefined) continue;
    switch (k) {
      case "keys":
        merged.keys = { ...base.keys, ...(v as Record<string, string>) };
        break;
      case "credit_balances":
        merged.credit_balances = { ...base.credit_balances, ...(v as Record<string, number>) };
        break;
      case "metrics":
        merged.metrics = upsertMetrics(base.metrics, v as CompanyMetric[]);
        break;
      default:
        merged[k] = v;
    }
  }
  const entitlements = merged.entitlements as FeatureEntitlement[] | undefined;
  if (
    partial.entitlements === undefined &&
    (partial.credit_balances !== undefined || partial.metrics !== undefined) &&
    entitlements &&
    entitlements.length > 0
  ) {
    const metrics = merged.metrics as CompanyMetric[];
    merged.entitlements = entitlements.map((e) => {
      const next = { ...e };
      const balance = e.credit_id != null ? partial.credit_balances?.[e.credit_id] : undefined;
      if (balance !== undefined) next.credit_remaining = balance;
      if (e.event_name != null) {
        const period = e.metric_period ?? "all_time";
        const reset = e.month_reset ?? "first_of_month";
        const m = metrics.find((x) => x.event_subtype === e.event_name && x.period === period && x.month_reset === reset);
        if (m) next.usage = m.value;
      }
      return next;
    });
  }
  return inOrder<Company>(COMPANY_FIELDS, merged);
}

export function mergeUser(base: User, partial: Partial<User>): User {
  const merged: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(partial)) {
    if (v === undefined) continue;
    if (k === "keys") merged.keys = { ...base.keys, ...(v as Record<string, string>) };
    else if (k === "id" || k === "account_id" || k === "environment_id" || k === "traits" || k === "rules") merged[k] = v;
  }
  return inOrder<User>(USER_FIELDS, merged);
}
